import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * What this machine remembers about one (local directory, target) pair between runs: when the scan of the last run
 * whose result reached the target's manifest began. A local file changed after that moment (its ctime says so) is
 * compared by content even when its size and mtime match the manifest.
 */
export interface PairState {
  lastScanStart: number;
}

export function readPairState(file: string | null): PairState | undefined {
  if (!file) return undefined;
  try {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Partial<PairState>;
    return typeof doc.lastScanStart === 'number' ? { lastScanStart: doc.lastScanStart } : undefined;
  } catch {
    return undefined;
  }
}

export function writePairState(file: string | null, s: PairState): void {
  if (!file) return;
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(s) + '\n');
    renameSync(tmp, file);
  } catch {
    // A cache that cannot be written costs only extra hashing (or, without it, the quick check alone).
  }
}

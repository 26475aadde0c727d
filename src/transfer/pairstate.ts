import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * What this machine remembers about one (local directory, target) pair between runs: when the scan of the last run
 * whose result reached the target's manifest began. A local file changed after that moment (its ctime says so) is
 * compared by content even when its size and mtime match the manifest.
 */
export interface PairState {
  lastScanStart: number;
  /**
   * Local files found changed that way which the run did not bring in sync (cut short, failed, a conflict, or a
   * pull that keeps a local edit): compared by content again next time, whatever their ctime.
   */
  flagged?: string[];
}

export function readPairState(file: string | null): PairState | undefined {
  if (!file) return undefined;
  try {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Partial<PairState>;
    if (typeof doc.lastScanStart !== 'number') return undefined;
    const flagged = Array.isArray(doc.flagged) ? doc.flagged.filter((x): x is string => typeof x === 'string') : [];
    return { lastScanStart: doc.lastScanStart, ...(flagged.length ? { flagged } : {}) };
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

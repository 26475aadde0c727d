import { appendFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Entry } from '../types.js';

/**
 * Files this machine finished at the target since the target's manifest last recorded its work, one JSON line each,
 * kept beside the chunk cache. A run cut before its manifest was written leaves its completed files there with no
 * record on the server; the next run finds them listed as they were written and takes them as synced instead of
 * reading them back to compare (over a link that keeps dropping, that read-back ate the next run's bytes). A line is
 * trusted only while the target still lists the file with the size and mtime written (see trustedEntries).
 */
export class Journal {
  private lines: string[] = [];
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly file: string | null) {}

  /** The entries recorded, the last line for a path winning; a torn or foreign line is skipped. */
  static read(file: string | null): Map<string, Entry> {
    const out = new Map<string, Entry>();
    if (!file) return out;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return out;
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const doc = JSON.parse(line) as { p?: unknown; e?: Partial<Entry> };
        const e = doc.e;
        if (typeof doc.p !== 'string' || !e || e.type !== 'file' || typeof e.size !== 'number' || typeof e.mtime !== 'number' || typeof e.mode !== 'number') continue;
        if (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) continue;
        out.set(doc.p, e as Entry);
      } catch {
        // The last line of a killed run may be cut short.
      }
    }
    return out;
  }

  /** Records a file finished at the target; written out within a quarter second (and by flush()). */
  add(rel: string, e: Entry): void {
    if (!this.file || e.type !== 'file' || !e.sha256) return;
    this.lines.push(JSON.stringify({ p: rel, e }));
    this.timer ??= setInterval(() => this.flush(), 250);
    this.timer.unref?.();
  }

  /** Writes what was recorded (synchronously: small, and it must not be lost to an exit right after). */
  flush(): void {
    if (!this.file || this.lines.length === 0) return;
    const text = this.lines.join('\n') + '\n';
    this.lines = [];
    try {
      mkdirSync(path.dirname(this.file), { recursive: true });
      appendFileSync(this.file, text);
    } catch {
      // Without it the next run compares those files by content instead: slower, never wrong.
    }
  }

  /** The target's manifest now records everything: the journal starts over. */
  clear(): void {
    this.stop();
    this.lines = [];
    if (this.file) rmSync(this.file, { force: true });
  }

  /** Writes what is left and stops the timer. */
  close(): void {
    this.stop();
    this.flush();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * Journal entries the target still lists exactly as they were written (type, size, mtime) where the manifest's own
 * entry does not: those the run takes as the last synced state.
 */
export function trustedEntries(journal: Map<string, Entry>, remote: ReadonlyMap<string, Entry>, manifest: ReadonlyMap<string, Entry>): Array<[string, Entry]> {
  const same = (a: Entry | undefined, b: Entry) => a?.type === 'file' && a.size === b.size && a.mtime === b.mtime;
  const out: Array<[string, Entry]> = [];
  for (const [p, j] of journal) {
    const r = remote.get(p);
    if (r && same(r, j) && !same(manifest.get(p), j)) out.push([p, j]);
  }
  return out;
}

import { appendFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Entry } from '../types.js';

/**
 * Files this machine finished at the target since the target's manifest last recorded its work, one JSON line each,
 * kept beside the chunk cache. A run cut before its manifest was written leaves its completed files there with no
 * record on the server; the next run finds them listed as they were written and takes them as synced instead of
 * reading them back to compare (over a link that keeps dropping, that read-back ate the next run's bytes). A line is
 * trusted only while the destination still lists the file with the size and mtime written and the local file still
 * has the stamp (size, mtime, ctime) it had when it was sent or written (see trustedEntries).
 */
export interface JournalLine {
  e: Entry;
  /** The local file's stamp (Transport.stamp): read before it was sent (push), or after it was written (pull). */
  s: string;
}

export class Journal {
  private lines: string[] = [];
  private timer: ReturnType<typeof setInterval> | undefined;
  private closed = false;

  constructor(private readonly file: string | null) {}

  /** The entries recorded, the last line for a path winning; a torn or foreign line is skipped. */
  static read(file: string | null): Map<string, JournalLine> {
    const out = new Map<string, JournalLine>();
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
        const doc = JSON.parse(line) as { p?: unknown; e?: Partial<Entry>; s?: unknown };
        const e = doc.e;
        if (typeof doc.p !== 'string' || typeof doc.s !== 'string' || !e || e.type !== 'file' || typeof e.size !== 'number' || typeof e.mtime !== 'number' || typeof e.mode !== 'number') continue;
        if (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) continue;
        out.set(doc.p, { e: e as Entry, s: doc.s });
      } catch {
        // The last line of a killed run may be cut short.
      }
    }
    return out;
  }

  /** Records a file finished at the target; written out within a quarter second (and by flush()). */
  add(rel: string, e: Entry, localStamp: string | null): void {
    if (!this.file || this.closed || e.type !== 'file' || !e.sha256 || !localStamp) return;
    const { ctime: _local, ...entry } = e;
    this.lines.push(JSON.stringify({ p: rel, e: entry, s: localStamp }));
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
    try {
      if (this.file) rmSync(this.file, { force: true });
    } catch {
      // Left behind, its lines are still checked against the listing and the local stamps before any is trusted.
    }
  }

  /** Writes what is left and stops the timer; later adds (a transfer still finishing) are dropped. */
  close(): void {
    this.stop();
    this.flush();
    this.closed = true;
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * Journal entries the destination still lists exactly as they were written (type, size, mtime) and which the
 * manifest does not already record: those the run takes as the last synced state. `dst`: the destination's listing
 * (the remote on a push, the local tree on a pull). `changed`: the local file no longer has the stamp recorded (an
 * edit since, perhaps one that kept size and mtime): it must be compared by content, not by the quick check.
 */
export async function trustedEntries(
  journal: Map<string, JournalLine>,
  dst: ReadonlyMap<string, Entry>,
  manifest: ReadonlyMap<string, Entry>,
  localStamp: (rel: string) => Promise<string | null>,
): Promise<Array<{ path: string; entry: Entry; changed: boolean }>> {
  const same = (a: Entry | undefined, b: Entry) => a?.type === 'file' && a.size === b.size && a.mtime === b.mtime;
  const out: Array<{ path: string; entry: Entry; changed: boolean }> = [];
  for (const [path, { e, s }] of journal) {
    if (!same(dst.get(path), e) || same(manifest.get(path), e)) continue;
    out.push({ path, entry: e, changed: (await localStamp(path).catch(() => null)) !== s });
  }
  return out;
}

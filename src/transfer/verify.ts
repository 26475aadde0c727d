import { createHash } from 'node:crypto';
import type { Entry, Tree } from '../types.js';
import type { FileReader, Transport } from '../transport/types.js';
import { sameContent } from '../plan/plan.js';
import { mapLimit } from '../util/limit.js';
import { specForUpdate, type ChunkerSpec } from '../chunking/params.js';
import { DELTA_MIN_FILE_SIZE } from '../plan/delta.js';
import type { ChunkList } from './chunkcache.js';
import { ctimeStamp } from './execute.js';

/**
 * Filesystems stamp ctime from a coarse clock that may lag the one Date.now() reads by a tick (1–10 ms): a write
 * just after a run began must still count as after it. Not more: files written just before a run would otherwise
 * all be hashed again by the next one.
 */
export const CTIME_SLACK_MS = 20;
/**
 * Files are hashed for comparison many at a time, a file costing two round trips (open, read): up to 64 KiB 1,024
 * at once (256 left the link half idle when adopting 9,000 files), up to 1 MiB 64 at once, bigger ones 4 at once.
 */
const HASH_TINY_MAX = 64 << 10;
const HASH_SMALL_MAX = 1 << 20;
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export async function hashFile(t: Transport, rel: string, size: number): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of t.openRead(rel, size)) h.update(chunk);
  return h.digest('hex');
}

/** Records a hash in a tree as a new entry (the tree's old entry object is left as it was). */
export function withHash(t: Tree, rel: string, sha256: string): void {
  const e = t.get(rel);
  if (e) t.set(rel, { ...e, sha256 });
}

export interface VerifyInput {
  direction: 'push' | 'pull';
  local: Transport;
  src: Transport;
  dst: Transport;
  srcTree: Tree;
  dstTree: Tree;
  /** What the pair last agreed on. */
  base: Tree;
  /** When the last run from here began (pair state): local files with a later ctime are compared by content. */
  lastScan?: number;
  /** Paths an earlier run left flagged, or the journal found touched since: compared by content too. */
  stillFlagged: Set<string>;
  checksum: boolean;
  localChunks: (rel: string, spec: ChunkerSpec, reader?: FileReader) => Promise<ChunkList>;
}

export interface Verified {
  /** Copies of the listings with the hashes learned (new entries; the scan's own trees are not changed). */
  srcTree: Tree;
  dstTree: Tree;
  /** Local files found changed under an unchanged size and mtime, with their hash ('' when unreadable). */
  flagged: Map<string, string>;
  /**
   * Destination files read back and found to hold the source's bytes under the source's size and mtime, with the
   * local file's stamp from before it was read (its scan's on a push): for the journal, so that the next run does
   * not read them back again if this one is cut before its manifest.
   */
  adopted: Map<string, string>;
  /** Destination files read back to compare, and their bytes (diagnostics). */
  readBack: { files: number; bytes: number };
}

/**
 * The verify stage: where size and mtime cannot tell, the bytes decide. Three kinds of path are hashed:
 * - a local file whose size and mtime match the manifest but whose ctime says it was written after the last run
 *   here began (an edit within one second at the same size, or one that put the mtime back): pushed if it differs,
 *   a conflict on pull rather than overwritten;
 * - on a push, a touched file (same size, new mtime): its time is fixed instead of resending it;
 * - a destination file wsync did not write (or that changed since) with the source's size: the same bytes are
 *   adopted (the time and mode fixed, nothing sent), only different bytes are a conflict; with --checksum, every
 *   file of equal size and mtime.
 */
export async function resolveByHash(i: VerifyInput): Promise<Verified> {
  const srcTree = new Map(i.srcTree);
  const dstTree = new Map(i.dstTree);
  const { base } = i;
  const flagged = new Map<string, string>();
  if (i.lastScan !== undefined || i.stillFlagged.size > 0) {
    const lastScan = i.lastScan;
    const localSide = i.direction === 'push' ? srcTree : dstTree;
    const otherSide = i.direction === 'push' ? dstTree : srcTree;
    const suspects = [...localSide].filter(([p, e]) => {
      const b = base.get(p);
      const recent = (lastScan !== undefined && e.ctime !== undefined && e.ctime >= lastScan - CTIME_SLACK_MS) || i.stillFlagged.has(p);
      return e.type === 'file' && recent && b?.type === 'file' && !!b.sha256 && b.size === e.size && b.mtime === e.mtime && !e.sha256;
    });
    await mapLimit(suspects, 8, async ([p, e]) => {
      try {
        const h = await hashFile(i.local, p, e.size);
        withHash(localSide, p, h);
        const b = base.get(p)!;
        if (h !== b.sha256) flagged.set(p, h);
        const other = otherSide.get(p);
        if (h !== b.sha256 && other?.type === 'file' && !other.sha256 && other.size === b.size && other.mtime === b.mtime) withHash(otherSide, p, b.sha256!);
      } catch {
        // Unreadable now: nothing is planned for it, so it is carried over to be compared next time.
        flagged.set(p, '');
      }
    });
  }

  if (i.direction === 'push') {
    const candidates = [...srcTree].filter(([p, e]) => {
      const b = base.get(p);
      const d = dstTree.get(p);
      return e.type === 'file' && b?.type === 'file' && b.sha256 && b.size === e.size && b.mtime !== e.mtime && d && d.type === 'file' && d.size === b.size && d.mtime === b.mtime;
    });
    await mapLimit(candidates, 8, async ([p, e]) => {
      try {
        // A big file is cut while it is hashed anyway: if its content did change, the delta needs that list.
        const h = e.size >= DELTA_MIN_FILE_SIZE ? (await i.localChunks(p, specForUpdate(base.get(p)!.chunker, e.size))).sha256 : await hashFile(i.local, p, e.size);
        withHash(srcTree, p, h);
      } catch {
        // Unreadable now: the transfer will report it.
      }
    });
  }

  const ambiguous = [...srcTree].filter(([path, e]) => {
    const d = dstTree.get(path);
    if (e.type !== 'file' || d?.type !== 'file' || d.size !== e.size) return false;
    const b = base.get(path);
    const clean = b !== undefined && sameContent(d, b);
    return d.mtime === e.mtime ? e.size > 0 && (i.checksum || !clean) : !clean;
  });
  const adopted = new Map<string, string>();
  const readBack = { files: 0, bytes: 0 };
  const localStamp = async (path: string) => (i.direction === 'push' ? ctimeStamp(i.srcTree.get(path)) : i.local.stamp(path).catch(() => null));
  const one = async ([path, e]: [string, Entry]) => {
    if (e.size === 0) {
      if (!e.sha256) withHash(srcTree, path, EMPTY_SHA256);
      withHash(dstTree, path, EMPTY_SHA256);
      return;
    }
    try {
      const before = await localStamp(path);
      readBack.files++;
      readBack.bytes += e.size;
      const [hs, hd] = await Promise.all([e.sha256 ?? hashFile(i.src, path, e.size), hashFile(i.dst, path, e.size)]);
      withHash(srcTree, path, hs);
      withHash(dstTree, path, hd);
      // A local file changed while it was read may not be recorded under the stamp it had before.
      if (hs === hd && before !== null && dstTree.get(path)?.mtime === e.mtime && (await localStamp(path)) === before) adopted.set(path, before);
    } catch {
      // Unreadable or changing: leave the quick check's verdict; the transfer reports real failures.
    }
  };
  const tiny = ambiguous.filter(([, e]) => e.size <= HASH_TINY_MAX);
  const small = ambiguous.filter(([, e]) => e.size > HASH_TINY_MAX && e.size <= HASH_SMALL_MAX);
  const big = ambiguous.filter(([, e]) => e.size > HASH_SMALL_MAX);
  await Promise.all([mapLimit(tiny, 1024, one), mapLimit(small, 64, one), mapLimit(big, 4, one)]);
  return { srcTree, dstTree, flagged, adopted, readBack };
}

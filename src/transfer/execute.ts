import type { Entry, Problem, Tree } from '../types.js';
import type { FileReader, StagedFile, Transport } from '../transport/types.js';
import { WsyncError, abortedError, errorMessage } from '../errors.js';
import type { Conflict, Op, Plan } from '../plan/plan.js';
import { STATE_DIR } from '../manifest/manifest.js';
import { mapLimit, Semaphore } from '../util/limit.js';
import { ancestors, baseName, comparePaths, parentOf } from '../util/paths.js';
import { type ChunkerSpec, sameSpec, specForUpdate } from '../chunking/params.js';
import { DELTA_MIN_FILE_SIZE, planDelta, validateDelta } from '../plan/delta.js';
import { type ChunkCache, fromChunked, toChunkRefs, type ChunkList } from './chunkcache.js';
import { chunkReader, hashingStream, verifiedLiterals } from './delta.js';
import type { Speculations } from './speculate.js';
import { CommitWindow } from './window.js';
import type { Journal } from './journal.js';
import type { SyncEvent, SyncStats } from './engine.js';

/**
 * Copies longer than this are split: the server runs each copy-data synchronously and serves nothing else on that
 * channel meanwhile. 64 MiB is well under a second on any disk; each extra op costs ~90 bytes.
 */
export const MAX_COPY_LENGTH = 64 * 2 ** 20;
/** Uploads of files this big go into partials that an interrupted run leaves for the next to go on from. */
export const RESUME_MIN_SIZE = 4 << 20;
/** What of a partial's end is read back and compared before it is gone on with. */
const RESUME_CHECK_BYTES = 256 << 10;
/** Attribute updates (one request each) in flight at once. */
const META_CONCURRENCY = 4096;

/** A local file's version as a scan saw it, for the journal (a push): its ctime, which every write moves. */
export function ctimeStamp(e: Entry | undefined): string | null {
  return e?.type === 'file' && e.ctime !== undefined ? `ctime ${e.ctime}` : null;
}

/** Counters of a run that has done nothing yet. */
export function emptyStats(): SyncStats {
  return { filesSent: 0, bytesSent: 0, filesDelta: 0, bytesReused: 0, dirsCreated: 0, symlinksSent: 0, attributesUpdated: 0, deleted: 0, conflicts: 0, failed: 0, filesScanned: 0 };
}

function trashStamp(): string {
  return new Date().toISOString().replace(/[:.]/g, '-');
}

/**
 * The chunk list of a local file: from the cache while its stamp is unchanged, else read once (and cached). A file
 * that changed while it was read yields no list: it would describe bytes that never existed together. Chunking is
 * CPU-bound on the one thread: two at once (more would only multiply read buffers, 2 MiB per file).
 */
export function localChunker(local: Transport, getCache: () => Promise<ChunkCache>): (rel: string, spec: ChunkerSpec, reader?: FileReader) => Promise<ChunkList> {
  const chunking = new Semaphore(2);
  return async (rel, spec, reader) => {
    const r = reader ?? (await local.openReader(rel));
    try {
      const cache = await getCache();
      const hit = cache.fileContent(rel, r.stamp, spec);
      if (hit) return hit;
      const list = fromChunked(await chunking.with(() => chunkReader(r, spec)));
      if ((await local.stamp(rel)) !== r.stamp) throw new WsyncError('E_CHANGED_DURING_SYNC', `${local.describe(rel)} changed while it was being read`);
      cache.addFile(rel, r.stamp, list);
      return list;
    } finally {
      if (!reader) await r.close();
    }
  };
}

export interface ExecuteOptions {
  plan: Plan;
  /** Where the data comes from and where it goes; one of them is `local`. */
  from: Transport;
  to: Transport;
  /** The local side: its stamps, its chunk cache and the journal describe it. */
  local: Transport;
  /** What the pair last agreed on (the manifest and journal), for failed paths and the checks before replacing. */
  base: Tree;
  /** The destination as listed: what must still be there right before a replacement or deletion. */
  dstTree: Tree;
  /** Shared with the caller's result: scan problems come in, per-path failures and conflicts are added. */
  problems: Problem[];
  conflicts: Conflict[];
  stats: SyncStats;
  force: boolean;
  concurrency: number;
  journal: Journal;
  getCache: () => Promise<ChunkCache>;
  /** The chunk list of a local file (from the cache while its stamp is unchanged). */
  localChunks: (rel: string, spec: ChunkerSpec, reader?: FileReader) => Promise<ChunkList>;
  speculations?: Speculations;
  /**
   * Small files already written under a temp name on the destination while the batch was planned (a held
   * session's batch: see batch.ts), with the hash of what they hold; undefined for a path that has none, or whose
   * staged copy is not of this entry (then it is removed). Those given are renamed in, not sent again.
   */
  staged?: (rel: string, e: Entry) => Promise<{ file: StagedFile; sha256: string } | undefined>;
  /** Big uploads: the partial each goes into, and the sizes of the partials the listing found. */
  partials: Map<string, string>;
  partialSizes: Map<string, number>;
  emit: (ev: SyncEvent) => void;
  trace: (what: string, path?: string) => void;
  afterTransfer?: (path: string) => void;
  /** A file's data has all been read and handed to the destination (or the path is done with). */
  onSent?: (rel: string) => void;
  mark?: (phase: string) => void;
  /**
   * Stops the run: no operation starts once it is aborted, those in flight finish, and run() then rejects with
   * E_ABORTED (deletes never go after it); the checkpoint says what was done.
   */
  signal?: AbortSignal;
}


export interface Execution {
  /** The plan's next manifest, changed by what happened: a failed path keeps what it had. */
  readonly next: Tree;
  /** Paths that failed (or stood under one that did). */
  readonly failed: Set<string>;
  /** What is true right now: done operations as planned, pending ones as they were. */
  checkpoint(): Tree;
  /**
   * Carries the plan out: mkdirs and files in one stream in plan order (each waiting only for its parent), file
   * attributes beside them, directory modes after, deletes last and only after a clean run. Throws on a lost link;
   * every other failure is a path's. Resolves with the note of deletions held back, if any.
   */
  run(): Promise<string | undefined>;
}

/**
 * The execute stage: direction-free (data goes `from` → `to`; what only a local source or destination can do, such
 * as deltas from the chunk cache, is decided by which side is `local`), with its state in the returned object.
 */
export function startExecution(o: ExecuteOptions): Execution {
  const p = o.plan;
  const src = o.from;
  const dst = o.to;
  const fromLocal = o.from === o.local;
  const { base, dstTree, problems, conflicts, stats, journal, getCache, localChunks, emit, trace } = o;
  const failed = new Set<string>();
  const next = p.next;
  const pending = new Set<string>([...p.prepare, ...p.mkdirs, ...p.transfers, ...p.metas, ...p.deletes].map((op) => op.path));
  // What is true right now: done operations as planned, pending ones as they were. Written every few seconds
  // so that a run killed mid-way costs the next one only the last few seconds of work.
  const checkpoint = (): Tree => {
    const t: Tree = new Map();
    for (const [path, e] of next) if (!pending.has(path)) t.set(path, e);
    for (const path of pending) {
      const b = base.get(path);
      if (b) t.set(path, b);
    }
    return t;
  };
  const fail = (op: Op, err: unknown) => {
    failed.add(op.path);
    if (err instanceof WsyncError && err.code === 'E_CONFLICT') {
      // Found during the transfer (a rebuild's check of the old file): the same outcome as a planned conflict.
      // With the check's own words (what was found there).
      const c: Conflict = { path: op.path, kind: 'changed-during-run', op: op.kind === 'remove' ? 'delete' : 'replace', side: dst === o.local ? 'local' : 'remote', found: errorMessage(err) };
      conflicts.push(c);
      stats.conflicts++;
      emit({ type: 'item', action: '!', path: op.path, kind: 'file', conflict: c });
    } else {
      stats.failed++;
      const code = err instanceof WsyncError ? err.code : 'E_INTERNAL';
      problems.push({ path: op.path, code, message: errorMessage(err) });
      emit({ type: 'item', action: 'x', path: op.path, kind: op.kind === 'mkdir' ? 'dir' : 'file', reason: errorMessage(err) });
    }
    const b = base.get(op.path);
    if (b && !(op.kind === 'remove' && !op.backup && dstTree.get(op.path) === undefined)) next.set(op.path, b);
    else next.delete(op.path);
  };
  const blockedByFailure = (path: string) => ancestors(path).some((a) => failed.has(a));
  const fatal = (err: unknown) => err instanceof WsyncError && (err.code === 'E_REMOTE_LOST' || err.code === 'E_CONNECT');
  const trash = `${STATE_DIR}/trash/${trashStamp()}`;

  /** Operations the signal kept from starting: they stay pending (the checkpoint keeps what they had). */
  let skipped = 0;
  const runOp = async (op: Op): Promise<void> => {
    if (o.signal?.aborted) {
      skipped++;
      return;
    }
    if (blockedByFailure(op.path)) {
      failed.add(op.path);
      const b = base.get(op.path);
      if (b) next.set(op.path, b);
      else next.delete(op.path);
      o.onSent?.(op.path);
      return;
    }
    try {
      await execOp(op);
    } catch (err) {
      if (fatal(err)) throw err;
      fail(op, err);
    } finally {
      pending.delete(op.path);
      o.onSent?.(op.path);
    }
  };

  const bytesTotal = p.transfers.reduce((n, op) => n + (op.kind === 'put' ? op.entry.size : 0), 0);
  const filesTotal = p.transfers.length;
  let bytesDone = 0;
  let filesDone = 0;
  let lastProgress = 0;
  const progress = (force = false) => {
    const now = Date.now();
    if (!force && now - lastProgress < 200) return;
    lastProgress = now;
    emit({ type: 'progress', files: filesDone, filesTotal, bytes: bytesDone, bytesTotal });
  };

  /**
   * How much of a partial upload (`partialRel`, found by the listing) can be trusted as the start of the local file:
   * its name already ties it to this version of the file, and its first 64 KiB and last 256 KiB are read back and
   * compared (a torn or foreign tail, or another writer, shows there). 0: start over.
   */
  const trustedPrefix = async (partialRel: string, rel: string, size: number): Promise<number> => {
    const held = o.partialSizes.get(partialRel) ?? 0;
    if (held <= 0 || held > size) return 0;
    const ranges: Array<[number, number]> = [[0, Math.min(held, 64 * 1024)]];
    if (held > 64 * 1024) ranges.push([Math.max(64 * 1024, held - RESUME_CHECK_BYTES), held]);
    const [there, here] = await Promise.all([dst.openReader(partialRel), o.local.openReader(rel)]).catch(() => [null, null] as const);
    try {
      if (!there || !here) return 0;
      for (const [a, b] of ranges) {
        for (let pos = a; pos < b; ) {
          const n = Math.min(b - pos, dst.caps.maxRead);
          const [x, y] = await Promise.all([there.read(pos, n), here.read(pos, n)]);
          if (x.length !== n || !x.equals(y)) return 0;
          pos += n;
        }
      }
      return held;
    } catch {
      return 0;
    } finally {
      await Promise.all([there?.close().catch(() => undefined), here?.close().catch(() => undefined)]);
    }
  };

  /** What a put finds at the destination and must still find right before its rename, and where a change goes. */
  const destinationCheck = (op: Extract<Op, { kind: 'put' }>, backup: boolean) => {
    // What the plan saw at the destination must still be there right before the rename (unless --force moves it
    // to the trash): an edit made there meanwhile is a conflict, not something to overwrite.
    const d = dstTree.get(op.path);
    const expect = backup ? undefined : op.replace && d && d.type !== 'dir' ? { type: d.type, size: d.size, mtime: d.mtime } : op.replace ? undefined : null;
    // Under --force a change found there goes to the trash instead, and the file is replaced all the same.
    const changedTo = o.force && expect ? `${trash}/${op.path}` : undefined;
    return { backupTo: backup ? `${trash}/${op.path}` : undefined, expect, changedTo };
  };

  /** A put done: recorded as what the destination holds now, counted and reported. */
  const putDone = (op: Extract<Op, { kind: 'put' }>, done: Entry, stamp: string | null, sent: number): void => {
    next.set(op.path, done);
    journal.add(op.path, done, stamp);
    stats.filesSent++;
    stats.bytesSent += sent;
    filesDone++;
    progress();
    emit({ type: 'item', action: op.replace ? '*' : '+', path: op.path, kind: 'file', bytes: op.entry.size });
  };

  const putWhole = async (op: Extract<Op, { kind: 'put' }>, backup: boolean): Promise<void> => {
    const e = op.entry;
    // Big files are cut while they stream, so that the next change to them can go as a delta.
    const spec = e.size >= DELTA_MIN_FILE_SIZE ? specForUpdate(base.get(op.path)?.chunker, e.size) : undefined;
    // A staged copy only where nothing is moved aside first (no --force): if its rename fails for another reason
    // than a conflict (one the server cannot do across directories), the file goes the usual way.
    const early = spec || backup || o.force ? undefined : await o.staged?.(op.path, e);
    if (early) {
      let committed = false;
      try {
        committed = await early.file.commit(destinationCheck(op, backup));
      } catch (err) {
        if ((err instanceof WsyncError && err.code === 'E_CONFLICT') || dst.lost) throw err;
        trace('staged copy not renamed in; sent again', op.path);
      }
      if (committed) {
        o.onSent?.(op.path);
        bytesDone += e.size;
        putDone(op, { ...e, sha256: early.sha256 }, fromLocal ? ctimeStamp(e) : await o.local.stamp(op.path).catch(() => null), e.size);
        o.afterTransfer?.(op.path);
        return;
      }
    }
    const stamp = spec && fromLocal ? await o.local.stamp(op.path).catch(() => null) : null;
    // The local version being sent (a push: as scanned), for the journal: a later change must not be taken for synced.
    const sentStamp = fromLocal ? ctimeStamp(e) : null;
    // An upload an interrupted run began for this same version goes on from where its partial ends.
    const partialRel = o.partials.get(op.path);
    const partial = partialRel ? { name: baseName(partialRel), from: await trustedPrefix(partialRel, op.path, e.size) } : undefined;
    const from = partial?.from ?? 0;
    // The source's reader fails at its end if the file was modified while it was read, and the hash of what was
    // read must be the one the plan knows (if it knows one): either way nothing is renamed into place, so no
    // mix of two versions lands (and none is recorded in the manifest).
    const hs = hashingStream(src.openRead(op.path, e.size, e.mtime), spec, (n) => {
      bytesDone += n;
      progress();
    });
    const data = (async function* () {
      // The whole file is read (its hash and chunks cover it all); what the partial holds is not sent again.
      let at = 0;
      for await (const chunk of hs.stream) {
        const end = at + chunk.length;
        if (end > from) yield at >= from ? chunk : chunk.subarray(from - at);
        at = end;
      }
      if (e.sha256 && hs.result().sha256 !== e.sha256) {
        throw new WsyncError('E_CHANGED_DURING_SYNC', `${src.describe(op.path)} changed while it was being sent (its content is not what was scanned); it goes on the next run`);
      }
      o.onSent?.(op.path);
    })();
    if (from > 0) trace('resumed', op.path);
    await dst.writeFile(op.path, data, { mode: e.mode, mtime: e.mtime, size: e.size }, { ...destinationCheck(op, backup), partial });
    const { sha256, chunked } = hs.result();
    const done: Entry = chunked ? { ...e, sha256, chunker: chunked.spec } : { ...e, sha256 };
    putDone(op, done, fromLocal ? sentStamp : await o.local.stamp(op.path).catch(() => null), e.size - from);
    if (chunked) {
      const cache = await getCache();
      const list = fromChunked(chunked);
      // The list is what the destination now holds; for a push it may also describe the local file.
      if (stamp && (await o.local.stamp(op.path).catch(() => null)) === stamp) cache.addFile(op.path, stamp, list);
      else cache.addContent(list);
    }
    o.afterTransfer?.(op.path);
  };

  /**
   * Rebuilds a changed big file on the server from its previous version: copy-data for what is unchanged, writes
   * for the rest. Returns false when a whole upload is the better or the only option: no copy-data, no usable
   * chunk list for the remote version (never pushed from here, or cache lost), or too little to reuse.
   */
  const putDelta = async (op: Extract<Op, { kind: 'put' }>): Promise<boolean> => {
    const e = op.entry;
    const b = base.get(op.path);
    const d = dstTree.get(op.path);
    if (!fromLocal || !dst.caps.copyData || !op.replace || op.backup || e.size < DELTA_MIN_FILE_SIZE) return false;
    // The plan only replaces a clean file; the rebuild checks again on the server, at the moment it reads.
    if (b?.type !== 'file' || !b.sha256 || !b.chunker || d?.type !== 'file' || d.size !== b.size || d.mtime !== b.mtime) return false;
    const spec = specForUpdate(b.chunker, e.size);
    if (!sameSpec(spec, b.chunker)) return false;
    const early = o.speculations?.take(op.path, b, d, e, spec);
    if (early) {
      const staged = await early.staged.catch(() => undefined);
      // Still the version that was cut (otherwise the copies may not match what the file now holds), and the old
      // remote file still the one the copies came from.
      const oldStill = async () => {
        if (!early.recheck) return true;
        const now = await dst.lstat(op.path).catch(() => null);
        return now?.type === 'file' && now.size === early.old.size && now.mtime === early.old.mtime;
      };
      if (staged && (await o.local.stamp(op.path).catch(() => null)) === early.stamp && (await oldStill())) {
        trace('speculation used', op.path);
        await staged.commit();
        deltaDone(op, early.cur.sha256, spec, early.delta.literalBytes + early.delta.copyBytes, early.delta, ctimeStamp(e));
        return true;
      }
      trace('speculation discarded', op.path);
      // A failed stage is redone below, which reports whatever is wrong (e.g. an outside edit) the usual way.
      await staged?.abort();
    }
    const old = (await getCache()).content(b.sha256, spec);
    if (!old) return false;
    const reader = await o.local.openReader(op.path);
    try {
      const cur = await localChunks(op.path, spec, reader);
      if (cur.size !== e.size) throw new WsyncError('E_CHANGED_DURING_SYNC', `${o.local.describe(op.path)} changed size since it was scanned`);
      const chunks = toChunkRefs(cur);
      const dp = planDelta(toChunkRefs(old), chunks, { maxCopyLength: MAX_COPY_LENGTH });
      if (!dp.worthIt) return false;
      validateDelta(dp.ops, old.size, e.size);
      const literal = verifiedLiterals(reader, chunks, o.local.describe(op.path), (n) => {
        bytesDone += n;
        progress();
      });
      await dst.rebuildFile(op.path, { size: b.size, mtime: b.mtime }, dp.ops, literal, { mode: e.mode, mtime: e.mtime, size: e.size });
      deltaDone(op, cur.sha256, spec, dp.copyBytes, dp, ctimeStamp(e));
      return true;
    } finally {
      await reader.close();
    }
  };

  /** Bookkeeping of a finished rebuild; `progressBytes`: what progress has not counted yet. */
  const deltaDone = (op: Extract<Op, { kind: 'put' }>, sha256: string, spec: ChunkerSpec, progressBytes: number, dp: { literalBytes: number; copyBytes: number }, stamp: string | null) => {
    const done: Entry = { ...op.entry, sha256, chunker: spec };
    next.set(op.path, done);
    journal.add(op.path, done, stamp);
    stats.filesSent++;
    stats.filesDelta++;
    stats.bytesSent += dp.literalBytes;
    stats.bytesReused += dp.copyBytes;
    bytesDone += progressBytes;
    filesDone++;
    progress();
    emit({ type: 'item', action: '*', path: op.path, kind: 'file', bytes: dp.literalBytes, reused: dp.copyBytes });
    o.afterTransfer?.(op.path);
  };

  const execOp = async (op: Op): Promise<void> => {
    switch (op.kind) {
      case 'remove': {
        const existed = dstTree.get(op.path);
        if (!op.backup && existed && existed.type !== 'dir') {
          // Re-checked right before: a file edited since the listing is someone's work, not ours to delete.
          const now = await dst.lstat(op.path);
          if (now && !(now.type === existed.type && now.mtime === existed.mtime && now.size === existed.size)) {
            throw new WsyncError('E_CONFLICT', `${dst.describe(op.path)} was changed by someone else while this run was working; not deleted`);
          }
        }
        if (op.backup) await dst.rename(op.path, `${trash}/${op.path}`);
        else if (op.type === 'dir') await dst.remove(op.path, 'dir');
        else await dst.remove(op.path, 'file');
        if (existed) stats.deleted++;
        emit({ type: 'item', action: '-', path: op.path, kind: existed?.type ?? (op.type === 'dir' ? 'dir' : 'file') });
        return;
      }
      case 'mkdir':
        await dst.mkdir(op.path, op.mode);
        stats.dirsCreated++;
        emit({ type: 'item', action: '+', path: op.path, kind: 'dir' });
        return;
      case 'link':
        await dst.symlink(op.path, op.entry.target ?? '', { backupTo: op.backup ? `${trash}/${op.path}` : undefined });
        stats.symlinksSent++;
        emit({ type: 'item', action: op.replace ? '*' : '+', path: op.path, kind: 'symlink' });
        return;
      case 'put': {
        try {
          if (await putDelta(op)) return;
        } catch (err) {
          const code = err instanceof WsyncError ? err.code : undefined;
          if (code === 'E_CONFLICT' && o.force) {
            // The old remote copy changed after the listing. --force means: keep it in the trash and replace it.
            await putWhole(op, true);
            return;
          }
          // A server that advertises copy-data but fails it (some filesystems, quotas on the temp) must not make
          // the file unsendable run after run: the whole upload is the fallback that always works.
          if (code !== 'E_REMOTE_IO') throw err;
          emit({ type: 'notice', message: `${op.path}: delta transfer failed (${errorMessage(err)}); sending the whole file` });
        }
        await putWhole(op, op.backup);
        return;
      }
      case 'meta':
        await dst.setMeta(op.path, { mode: op.mode, mtime: op.mtime });
        stats.attributesUpdated++;
        emit({ type: 'item', action: '.', path: op.path, kind: op.entry.type });
        return;
    }
  };

  const run = async (): Promise<string | undefined> => {
    let deletesSkipped: string | undefined;
    for (const op of p.prepare) await runOp(op);
    // Directories and files in one stream: each waits only for its own parent directory, so transfers start
    // as soon as the first directories exist instead of after all of them.
    const dirReady = new Map<string, Promise<void>>();
    const dirDone = new Map<string, () => void>();
    for (const op of p.mkdirs) dirReady.set(op.path, new Promise<void>((r) => dirDone.set(op.path, r)));
    const depth = (s: string) => s.split('/').length;
    const ordered = [...p.mkdirs].sort((a, b) => depth(a.path) - depth(b.path) || comparePaths(a.path, b.path));
    // A file's new time or mode goes along with the transfers (one round trip saved); a directory's mode only
    // after them, since a mode that drops write permission would refuse the files still being written into it.
    const isDirMeta = (op: Op) => op.kind === 'meta' && op.entry.type === 'dir';
    const fileMetas = p.metas.filter((op) => !isDirMeta(op));
    const dirMetas = p.metas.filter(isDirMeta);
    // Files go in the order planned, as many at once as the link holds (window.ts): a cut then loses only what
    // was in flight, and the next run starts where this one stopped instead of with every file half sent.
    const window = new CommitWindow(dst.link ?? src.link);
    // A file's new time or mode is one request: they go beside the transfers, many more at once (9,000 of them,
    // 1,024 at a time, took 0.7 s of adopting a tree whose copy had other mtimes).
    const metasDone = mapLimit(fileMetas, Math.min(META_CONCURRENCY, 4 * o.concurrency), async (op) => {
      await dirReady.get(parentOf(op.path));
      await runOp(op);
    });
    // Observed at once: a lost link fails them while the transfers are still going (awaited below).
    metasDone.catch(() => undefined);
    await mapLimit([...ordered, ...p.transfers], o.concurrency, async (op) => {
      await dirReady.get(parentOf(op.path));
      // A big file counts only up to the size from which an upload resumes (what a cut costs of it is bounded by
      // then) and a delta's bytes are mostly copied on the server: neither holds every small file behind it.
      const ticket = op.kind === 'put' ? await window.enter(Math.min(op.entry.size, RESUME_MIN_SIZE)) : undefined;
      try {
        await runOp(op);
      } finally {
        ticket?.leave();
        dirDone.get(op.path)?.();
      }
    });
    await metasDone;
    o.mark?.('transfers');
    if (o.signal?.aborted) throw abortedError();
    // Before directory modes (one may forbid removing the temp) and deletes (an rmdir would find it).
    await o.speculations?.discardAll();
    await mapLimit(dirMetas, o.concurrency, runOp);
    progress(true);

    if (p.deletes.length > 0) {
      // Held back after any failure (a transfer, mkdir or attribute update that did not happen, or a path found
      // changed during the transfer): the tree is not the one the run meant to mirror. A conflict found by the
      // plan holds back only its own path (and what is below it): an untracked file on the destination must not
      // stop every deletion run after run, and a wrong source directory is caught by the delete limit.
      if (problems.length > 0 || failed.size > 0) {
        deletesSkipped = `${p.deletes.length} deletion(s) skipped because of the errors above`;
        for (const op of p.deletes) {
          const b = base.get(op.path);
          if (b) next.set(op.path, b);
        }
        emit({ type: 'notice', message: deletesSkipped });
      } else {
        // Children before parents: one at a time per directory chain, so rmdir finds its directory empty.
        const depthOf = (s: string) => s.split('/').length;
        const levels = [...new Set(p.deletes.map((op) => depthOf(op.path)))].sort((a, b) => b - a);
        for (const lv of levels) await mapLimit(p.deletes.filter((op) => depthOf(op.path) === lv), o.concurrency, runOp);
      }
    }
    if (skipped > 0) throw abortedError();
    return deletesSkipped;
  };

  return { next, failed, checkpoint, run };
}

import { createHash } from 'node:crypto';
import os from 'node:os';
import type { Entry, Problem, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';
import { IgnoreRules, type FilterOptions } from '../scan/ignore.js';
import { walk, filterTree, Prefetcher } from '../scan/walk.js';
import { plan, sameContent, type Conflict, type Op, type Plan } from '../plan/plan.js';
import { readManifest, writeManifest, STATE_DIR } from '../manifest/manifest.js';
import { acquireLock } from '../manifest/lock.js';
import { mapLimit } from '../util/limit.js';
import { ancestors, comparePaths, parentOf } from '../util/paths.js';

export const WSYNC_VERSION = '0.1.0';

export type Direction = 'push' | 'pull';

/** What happened to one path; the same records feed the itemized dry run, -v and --json. */
export interface ItemEvent {
  type: 'item';
  /** '+' created, '*' changed, '-' deleted, '.' attributes only, '!' conflict, 'x' failed. */
  action: '+' | '*' | '-' | '.' | '!' | 'x';
  path: string;
  kind: 'file' | 'dir' | 'symlink';
  bytes?: number;
  reason?: string;
}

export interface ProgressEvent {
  type: 'progress';
  files: number;
  filesTotal: number;
  bytes: number;
  bytesTotal: number;
}

export interface NoticeEvent {
  type: 'notice';
  message: string;
}

export type SyncEvent = ItemEvent | ProgressEvent | NoticeEvent;

export interface SyncStats {
  filesSent: number;
  bytesSent: number;
  dirsCreated: number;
  symlinksSent: number;
  attributesUpdated: number;
  deleted: number;
  conflicts: number;
  failed: number;
  /** Bytes the run would move / moved, and files it examined. */
  filesScanned: number;
}

export interface SyncResult {
  direction: Direction;
  dryRun: boolean;
  /** True when every path is in sync (no conflicts, no per-path failures). */
  ok: boolean;
  stats: SyncStats;
  conflicts: Conflict[];
  problems: Problem[];
  /** Set when --delete removals were held back because something else failed. */
  deletesSkipped?: string;
  durationMs: number;
  /** Milliseconds from the start at which each phase ended (for diagnosing slow links). */
  timings: Record<string, number>;
}

export interface EngineOptions {
  direction: Direction;
  local: Transport;
  remote: Transport;
  delete: boolean;
  force: boolean;
  dryRun: boolean;
  filter: FilterOptions;
  /** Files in flight at once. */
  concurrency: number;
  lockWaitSeconds: number;
  breakLock: boolean;
  onEvent?: (ev: SyncEvent) => void;
  /** Test hook: called after each completed transfer (e.g. to kill a run mid-way). */
  afterTransfer?: (path: string) => void;
}

function hashingStream(src: AsyncIterable<Buffer>, onBytes: (n: number) => void): { stream: AsyncIterable<Buffer>; digest: () => string } {
  const h = createHash('sha256');
  let done = false;
  return {
    stream: (async function* () {
      for await (const chunk of src) {
        h.update(chunk);
        onBytes(chunk.length);
        yield chunk;
      }
      done = true;
    })(),
    digest: () => {
      if (!done) throw new Error('digest before the stream ended');
      return h.digest('hex');
    },
  };
}

async function hashFile(t: Transport, rel: string, size: number): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of t.openRead(rel, size)) h.update(chunk);
  return h.digest('hex');
}

function trashStamp(): string {
  return new Date().toISOString().replace(/[:.]/g, '-');
}

/**
 * push and pull: scan both sides, plan, then transfer with everything pipelined, deletes last and only after a
 * clean run, and the manifest rewritten to what is now true.
 */
export async function runSync(o: EngineOptions): Promise<SyncResult> {
  const started = Date.now();
  const emit = o.onEvent ?? (() => undefined);
  const src = o.direction === 'push' ? o.local : o.remote;
  const dst = o.direction === 'push' ? o.remote : o.local;
  const dstName = o.direction === 'push' ? 'remote' : 'local';
  const problems: Problem[] = [];
  const timings: Record<string, number> = {};
  const mark = (phase: string) => (timings[phase] = Date.now() - started);
  let conflicts: Conflict[] = [];
  const stats: SyncStats = { filesSent: 0, bytesSent: 0, dirsCreated: 0, symlinksSent: 0, attributesUpdated: 0, deleted: 0, conflicts: 0, failed: 0, filesScanned: 0 };

  // The local side of a push must exist; the remote side of a pull must exist.
  const srcRoot = await src.lstat('');
  if (!srcRoot || srcRoot.type !== 'dir') {
    if (o.direction === 'push') {
      throw new WsyncError('E_LOCAL_MISSING', `local directory ${src.describe()} does not exist`, { hint: 'check the first argument' });
    }
    throw new WsyncError('E_TARGET', `remote directory ${src.describe()} does not exist`, { hint: 'check the remote path (relative paths start at the login\'s home)' });
  }

  // The local tree is scanned while the remote side is being prepared and locked.
  const localRules = new IgnoreRules(o.filter);
  const localWalkP = walk(o.local, { rules: localRules, concurrency: 16 });
  localWalkP.catch(() => undefined);
  let release: (() => Promise<void>) | undefined;
  if (!o.dryRun) {
    if (o.direction === 'pull') await o.local.ensureRoot();
    release = await acquireLock(o.remote, { op: o.direction, waitSeconds: o.lockWaitSeconds, breakLock: o.breakLock });
  }
  mark('locked');
  try {
    const remoteRules = new IgnoreRules(o.filter);
    // The remote listing comes only after the lock: a listing taken earlier could miss another run's last writes.
    // Directories known from the local tree and the manifest are listed at once instead of level by level.
    const prefetcher = new Prefetcher(o.remote);
    const dirsOf = (t: Tree) => [...t].filter(([, e]) => e.type === 'dir').map(([p]) => p);
    const manifestP = readManifest(o.remote);
    manifestP.then((m) => {
      mark('manifestRead');
      if (m) prefetcher.prefetch(dirsOf(m.entries));
    }, () => undefined);
    localWalkP.then((w) => {
      mark('localScanned');
      prefetcher.prefetch(dirsOf(w.tree));
    }, () => undefined);
    const [localWalk, remoteWalk, manifest] = await Promise.all([
      localWalkP,
      walk(o.remote, { rules: remoteRules, concurrency: 512, prefetcher }),
      manifestP,
    ]);
    mark('scanned');
    const localTree = filterTree(localWalk.tree, remoteRules);
    const remoteTree = filterTree(remoteWalk.tree, localRules);
    problems.push(...localWalk.problems, ...remoteWalk.problems);
    const base: Tree = new Map();
    for (const [p, e] of manifest?.entries ?? []) {
      if (!localRules.isExcludedDeep(p, e.type === 'dir') && !remoteRules.isExcludedDeep(p, e.type === 'dir')) base.set(p, e);
    }
    const srcTree = o.direction === 'push' ? localTree : remoteTree;
    const dstTree = o.direction === 'push' ? remoteTree : localTree;
    stats.filesScanned = srcTree.size;

    // A touched file (same size, new mtime) is hashed locally so the plan can fix its time instead of resending.
    if (o.direction === 'push') {
      const candidates = [...srcTree].filter(([p, e]) => {
        const b = base.get(p);
        const d = dstTree.get(p);
        return e.type === 'file' && b?.type === 'file' && b.sha256 && b.size === e.size && b.mtime !== e.mtime && d && d.type === 'file' && d.size === b.size && d.mtime === b.mtime;
      });
      await mapLimit(candidates, 8, async ([p, e]) => {
        try {
          e.sha256 = await hashFile(o.local, p, e.size);
        } catch {
          // Unreadable now: the transfer will report it.
        }
      });
    }

    // Size and mtime agree but the destination changed since the last sync (or wsync never wrote it): two edits
    // in the same second, or a copy made by another tool. Only the bytes can tell, so compare hashes.
    const ambiguous = [...srcTree].filter(([path, e]) => {
      const d = dstTree.get(path);
      const b = base.get(path);
      return e.type === 'file' && e.size > 0 && d?.type === 'file' && d.size === e.size && d.mtime === e.mtime && !(b && sameContent(d, b));
    });
    await mapLimit(ambiguous, 16, async ([path, e]) => {
      try {
        const [hs, hd] = await Promise.all([hashFile(src, path, e.size), hashFile(dst, path, e.size)]);
        e.sha256 = hs;
        dstTree.get(path)!.sha256 = hd;
      } catch {
        // Unreadable or changing: leave the quick check's verdict; the transfer reports real failures.
      }
    });

    mark('verified');
    const p = plan({
      src: srcTree,
      dst: dstTree,
      base,
      delete: o.delete,
      force: o.force,
      blocked: [...localWalk.blocked, ...remoteWalk.blocked],
      dstName,
    });
    for (const c of p.conflicts) emit({ type: 'item', action: '!', path: c.path, kind: (srcTree.get(c.path) ?? dstTree.get(c.path))?.type ?? 'file', reason: c.reason });
    stats.conflicts = p.conflicts.length;
    conflicts = p.conflicts;

    if (o.delete && !o.force && p.deleteCount > 0 && p.deleteCount * 2 > p.dstFileCount) {
      throw new WsyncError('E_DELETE_LIMIT', `--delete would remove ${p.deleteCount} of the ${p.dstFileCount} files on the ${dstName} side`, {
        hint: 'that is more than half: check the source directory and filters, or add --force if this is intended',
      });
    }

    if (o.dryRun) {
      reportDryRun(p, srcTree, dstTree, stats, emit);
      return finish();
    }

    await Promise.all([
      ...remoteWalk.temps.map((t) => o.remote.remove(t, 'file').catch(() => undefined)),
      ...localWalk.temps.map((t) => o.local.remove(t, 'file').catch(() => undefined)),
    ]);

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
    const writer = { host: os.hostname(), wsync: WSYNC_VERSION, op: o.direction };
    let checkpointing: Promise<void> | undefined;
    const timer = setInterval(() => {
      if (checkpointing) return;
      checkpointing = writeManifest(o.remote, { entries: checkpoint() }, writer)
        .catch(() => undefined)
        .finally(() => (checkpointing = undefined));
    }, 3000);
    timer.unref();
    const fail = (op: Op, err: unknown) => {
      failed.add(op.path);
      stats.failed++;
      const code = err instanceof WsyncError ? err.code : 'E_INTERNAL';
      problems.push({ path: op.path, code, message: errorMessage(err) });
      emit({ type: 'item', action: 'x', path: op.path, kind: op.kind === 'mkdir' ? 'dir' : 'file', reason: errorMessage(err) });
      const b = base.get(op.path);
      if (b && !(op.kind === 'remove' && !op.backup && dstTree.get(op.path) === undefined)) next.set(op.path, b);
      else next.delete(op.path);
    };
    const blockedByFailure = (path: string) => ancestors(path).some((a) => failed.has(a));
    const fatal = (err: unknown) => err instanceof WsyncError && (err.code === 'E_REMOTE_LOST' || err.code === 'E_CONNECT');
    const trash = `${STATE_DIR}/trash/${trashStamp()}`;

    const runOp = async (op: Op): Promise<void> => {
      if (blockedByFailure(op.path)) {
        failed.add(op.path);
        const b = base.get(op.path);
        if (b) next.set(op.path, b);
        else next.delete(op.path);
        return;
      }
      try {
        await execOp(op);
      } catch (err) {
        if (fatal(err)) throw err;
        fail(op, err);
      } finally {
        pending.delete(op.path);
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

    const execOp = async (op: Op): Promise<void> => {
      switch (op.kind) {
        case 'remove': {
          const existed = dstTree.get(op.path);
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
          const e = op.entry;
          const hs = hashingStream(src.openRead(op.path, e.size), (n) => {
            bytesDone += n;
            progress();
          });
          await dst.writeFile(op.path, hs.stream, { mode: e.mode, mtime: e.mtime, size: e.size }, { backupTo: op.backup ? `${trash}/${op.path}` : undefined });
          next.set(op.path, { ...e, sha256: hs.digest() });
          stats.filesSent++;
          stats.bytesSent += e.size;
          filesDone++;
          progress();
          emit({ type: 'item', action: op.replace ? '*' : '+', path: op.path, kind: 'file', bytes: e.size });
          o.afterTransfer?.(op.path);
          return;
        }
        case 'meta':
          await dst.setMeta(op.path, { mode: op.mode, mtime: op.mtime });
          stats.attributesUpdated++;
          emit({ type: 'item', action: '.', path: op.path, kind: op.entry.type });
          return;
      }
    };

    try {
      for (const op of p.prepare) await runOp(op);
      // Directories and files in one stream: each waits only for its own parent directory, so transfers start
      // as soon as the first directories exist instead of after all of them.
      const dirReady = new Map<string, Promise<void>>();
      const dirDone = new Map<string, () => void>();
      for (const op of p.mkdirs) dirReady.set(op.path, new Promise<void>((r) => dirDone.set(op.path, r)));
      const depth = (s: string) => s.split('/').length;
      const ordered = [...p.mkdirs].sort((a, b) => depth(a.path) - depth(b.path) || comparePaths(a.path, b.path));
      await mapLimit([...ordered, ...p.transfers], o.concurrency, async (op) => {
        await dirReady.get(parentOf(op.path));
        try {
          await runOp(op);
        } finally {
          dirDone.get(op.path)?.();
        }
      });
      mark('transfers');
      await mapLimit(p.metas, o.concurrency, runOp);
      progress(true);

      let deletesSkipped: string | undefined;
      if (p.deletes.length > 0) {
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
      clearInterval(timer);
      await checkpointing;
      mark('deletes');
      if (!manifest || !sameTree(next, manifest.entries)) await writeManifest(o.remote, { entries: next }, writer);
      mark('manifest');
      return finish(deletesSkipped);
    } catch (err) {
      clearInterval(timer);
      await checkpointing;
      // A run cut short still records what it completed (when the server is still there to take it).
      await writeManifest(o.remote, { entries: checkpoint() }, writer).catch(() => undefined);
      throw err;
    }
  } finally {
    if (release) await release().catch(() => undefined);
  }

  function finish(deletesSkipped?: string): SyncResult {
    const ok = stats.conflicts === 0 && problems.length === 0;
    return { direction: o.direction, dryRun: o.dryRun, ok, stats, conflicts, problems, deletesSkipped, durationMs: Date.now() - started, timings };
  }
}

function sameTree(a: Tree, b: Tree): boolean {
  if (a.size !== b.size) return false;
  for (const [p, e] of a) {
    const f = b.get(p);
    if (!f || f.type !== e.type || f.size !== e.size || f.mtime !== e.mtime || f.mode !== e.mode || f.target !== e.target || f.sha256 !== e.sha256) return false;
  }
  return true;
}

function reportDryRun(p: Plan, src: Tree, dst: Tree, stats: SyncStats, emit: (ev: SyncEvent) => void): void {
  const all = [...p.prepare, ...p.mkdirs, ...p.transfers, ...p.metas, ...p.deletes].sort((a, b) => comparePaths(a.path, b.path));
  for (const op of all) {
    const kind: Entry['type'] = op.kind === 'mkdir' ? 'dir' : op.kind === 'remove' ? dst.get(op.path)?.type ?? 'file' : op.entry.type;
    if (op.kind === 'remove') {
      stats.deleted++;
      emit({ type: 'item', action: '-', path: op.path, kind });
    } else if (op.kind === 'mkdir') {
      stats.dirsCreated++;
      emit({ type: 'item', action: '+', path: op.path, kind });
    } else if (op.kind === 'meta') {
      stats.attributesUpdated++;
      emit({ type: 'item', action: '.', path: op.path, kind });
    } else {
      if (op.kind === 'put') {
        stats.filesSent++;
        stats.bytesSent += op.entry.size;
      } else stats.symlinksSent++;
      emit({ type: 'item', action: op.replace ? '*' : '+', path: op.path, kind, bytes: op.kind === 'put' ? op.entry.size : undefined });
    }
  }
  void src;
}

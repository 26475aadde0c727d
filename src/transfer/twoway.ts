import os from 'node:os';
import type { Entry, Problem, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, abortedError } from '../errors.js';
import { IgnoreRules } from '../scan/ignore.js';
import { walk, filterTree, skippedNotices } from '../scan/walk.js';
import { sameContent, type Conflict, type Plan } from '../plan/plan.js';
import { conflictCopyName, reconcile, type SyncConflict } from '../plan/reconcile.js';
import { writeManifest } from '../manifest/manifest.js';
import { mapLimit } from '../util/limit.js';
import { ChunkCache, cacheFileFor, usableCacheDir } from './chunkcache.js';
import { Journal } from './journal.js';
import { startExecution, emptyStats, localChunker } from './execute.js';
import { hashFile } from './verify.js';
import { startLocked } from './overlaps.js';
import { ancestorFileFor, readAncestor, remoteIdentity, writeAncestor } from './ancestor.js';
import { reportDryRun, resolveAsides, WSYNC_VERSION, type EngineOptions, type SyncEvent, type SyncStats } from './engine.js';

/**
 * As for push and pull (EngineOptions), with `force` lifting the empty-side refusal and the delete limit (per
 * side), and `cacheDir` saying where the pair's ancestor is kept.
 */
export interface TwoWayOptions
  extends Pick<EngineOptions, 'local' | 'remote' | 'force' | 'dryRun' | 'filter' | 'concurrency' | 'lockWaitSeconds' | 'breakLock' | 'session' | 'cacheTarget' | 'cacheDir' | 'onEvent' | 'onTrace' | 'signal'> {
  /** Conflict copies are named with this time and host (default: now, this host). */
  now?: Date;
  host?: string;
}

export interface TwoWayResult {
  dryRun: boolean;
  /** True when both sides now hold the same tree: no conflict, no failure. */
  ok: boolean;
  /** No ancestor was known for this pair (nothing is deleted on a first contact: only one side's files are seen). */
  firstContact: boolean;
  /** What went to the remote, and what came to the local side. */
  toRemote: SyncStats;
  toLocal: SyncStats;
  conflicts: SyncConflict[];
  /**
   * Paths the one-way steps left alone: found changed right before they would have been replaced or deleted
   * (changed-during-run), or old versions an interrupted replacement had kept aside (kept-aside, kept under a
   * conflict name, synced by the next run).
   */
  leftAlone: Conflict[];
  problems: Problem[];
  durationMs: number;
}

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/**
 * A two-way sync, one shot: both trees scanned under the target's lock, reconciled against this pair's ancestor
 * (reconcile.ts), conflict copies made on the remote by rename, then the two one-way plans carried out by the same
 * executor as push and pull (which re-checks every destination path right before replacing or deleting it), and the
 * ancestor advanced only where both sides now hold the same entry.
 */
export async function runTwoWay(o: TwoWayOptions): Promise<TwoWayResult> {
  const started = Date.now();
  const emit = o.onEvent ?? (() => undefined);
  const trace = o.onTrace ?? (() => undefined);
  await Promise.all([o.local.beginRun?.(), o.remote.beginRun?.()]);
  const root = await o.local.lstat('');
  if (!root || root.type !== 'dir') throw new WsyncError('E_LOCAL_MISSING', `local directory ${o.local.describe()} does not exist`, { hint: 'check the first argument' });
  const target = o.cacheTarget ?? o.remote.describe();
  const cacheDir = o.cacheDir === undefined ? usableCacheDir() : o.cacheDir;
  const cacheFile = cacheDir ? cacheFileFor(cacheDir, o.local.root, target) : null;
  const ancestorFile = cacheFile ? ancestorFileFor(cacheFile) : null;

  const locked = startLocked(o.remote, { op: 'sync', waitSeconds: o.lockWaitSeconds, breakLock: o.breakLock, session: o.session, dryRun: o.dryRun, noTemp: true });
  const lock = await locked.lock;
  try {
    const localRules = new IgnoreRules(o.filter);
    const remoteRules = new IgnoreRules(o.filter);
    const remoteRoot = await o.remote.lstat('');
    const [lw, rw, remoteId] = await Promise.all([
      walk(o.local, { rules: localRules, concurrency: 16 }),
      remoteRoot?.type === 'dir' ? walk(o.remote, { rules: remoteRules, concurrency: 512 }) : undefined,
      remoteIdentity(o.remote, !o.dryRun),
    ]);
    for (const ev of skippedNotices('push', lw, rw ?? { ...lw, skipped: [] })) emit(ev);
    const problems: Problem[] = [...lw.problems, ...(rw?.problems ?? [])];
    let local = filterTree(lw.tree, remoteRules);
    let remote = rw ? filterTree(rw.tree, localRules) : new Map<string, Entry>();
    const excluded = (p: string, isDir: boolean) => localRules.isExcludedDeep(p, isDir) || remoteRules.isExcludedDeep(p, isDir);
    const stored = readAncestor(ancestorFile);
    const known = stored && remoteId && stored.remoteId === remoteId ? stored : null;
    if (stored && !known) emit({ type: 'notice', message: 'the target is not the one this directory last synced with (its .wsync/id differs): syncing as on first contact, nothing is deleted' });
    const ancestor: Tree = new Map();
    for (const [p, e] of known?.entries ?? []) if (!excluded(p, e.type === 'dir')) ancestor.set(p, e);
    trace(known ? `ancestor: ${ancestor.size} entries` : 'ancestor: none (first contact)');

    // Where both sides changed a file to the same size, the bytes decide (a copy made on both sides, the same
    // checkout at two times): hashed on both sides, the remote's read back.
    ({ local, remote } = await hashBothChanged(o, local, remote, ancestor));

    // Safety rails: a side that is suddenly empty while the ancestor lists files is an unmounted disk or a wrong
    // path far more often than a wish to delete everything.
    if (!o.force && ancestor.size > 0) {
      const files = (t: Tree) => [...t.values()].filter((e) => e.type !== 'dir').length;
      if (files(ancestor) > 0) {
        if (files(local) === 0) throw new WsyncError('E_EMPTY_ROOT', `the local directory ${o.local.describe()} is empty, but the last sync left ${files(ancestor)} files there`, { hint: 'check that it is the right directory (a disk not mounted?); add --force to delete them on the remote too' });
        if (files(remote) === 0) throw new WsyncError('E_EMPTY_ROOT', `the remote directory ${o.remote.describe()} is empty, but the last sync left ${files(ancestor)} files there`, { hint: 'check the target path; add --force to delete them locally too' });
      }
    }

    // What killed runs left: temp files and partial uploads (nothing else writes them while the lock is held; on
    // the local side, as push and pull do), and old versions a replacement kept aside (the ancestor's own version
    // is removed, anything else kept under a conflict name, reported).
    const keptAside: Conflict[] = [];
    if (!o.dryRun) {
      await Promise.all([
        ...[...(rw?.temps ?? []), ...(rw?.partials ?? []).map((x) => x.path)].map((t) => o.remote.remove(t, 'file').catch(() => undefined)),
        ...lw.temps.map((t) => o.local.remove(t, 'file').catch(() => undefined)),
      ]);
      keptAside.push(...(await resolveAsides(o.remote, rw?.asides ?? [], ancestor)), ...(await resolveAsides(o.local, lw.asides, ancestor)));
      for (const c of keptAside) emit({ type: 'item', action: '!', path: c.path, kind: 'file', conflict: c, to: c.side });
    }

    const now = o.now ?? new Date();
    const host = o.host ?? os.hostname();
    const rec = reconcile({ ancestor, local, remote, copyName: (p) => conflictCopyName(p, now, host), unlisted: [...lw.blocked, ...(rw?.blocked ?? [])] });
    for (const c of rec.conflicts) emit({ type: 'notice', message: describeSyncConflict(c) });
    for (const [plan, side] of [[rec.toRemote, 'remote'], [rec.toLocal, 'local']] as const) {
      if (plan.tooManyDeletes && !o.force) {
        throw new WsyncError('E_DELETE_LIMIT', `the sync would remove ${plan.deleteCount} of the ${plan.dstFileCount} files on the ${side} side`, { hint: 'that is more than half: check both directories and the filters, or add --force if this is intended' });
      }
    }
    const toRemote = emptyStats();
    const toLocal = emptyStats();
    const tagged = (to: 'local' | 'remote') => (ev: SyncEvent) => emit(ev.type === 'item' ? { ...ev, to } : ev);
    const result = (leftAlone: Conflict[]): TwoWayResult => ({
      dryRun: o.dryRun,
      ok: rec.conflicts.length === 0 && problems.length === 0 && leftAlone.length === 0,
      firstContact: !known,
      toRemote,
      toLocal,
      conflicts: rec.conflicts,
      leftAlone,
      problems,
      durationMs: Date.now() - started,
    });
    if (o.dryRun) {
      for (const { from, to } of rec.renames) emit({ type: 'item', action: '+', path: to, kind: 'file', to: 'remote', renamedFrom: from });
      reportDryRun(rec.toRemote, local, rec.remoteTree, toRemote, tagged('remote'));
      reportDryRun(rec.toLocal, remote, local, toLocal, tagged('local'));
      return result([]);
    }
    if (o.signal?.aborted) throw abortedError();

    // Conflict copies first: the remote's version of a file edited on both sides moves aside (content kept by the
    // rename itself); only then can the local version go to its name. A failed rename stops the sync before
    // anything is written.
    for (const { from, to } of rec.renames) {
      await o.remote.rename(from, to);
      emit({ type: 'item', action: '+', path: to, kind: 'file', to: 'remote', renamedFrom: from });
    }
    const getCache = (() => {
      let c: Promise<ChunkCache> | undefined;
      return () => (c ??= ChunkCache.load(null, { local: o.local.root, target }));
    })();
    const localChunks = localChunker(o.local, getCache);
    const leftAlone: Conflict[] = [...keptAside];
    const execute = (plan: Plan, from: Transport, to: Transport, base: Tree, dstTree: Tree, stats: SyncStats, side: 'local' | 'remote') =>
      startExecution({
        plan,
        from,
        to,
        local: o.local,
        base,
        dstTree,
        problems,
        conflicts: leftAlone,
        stats,
        force: false,
        concurrency: o.concurrency,
        journal: new Journal(null),
        getCache,
        localChunks,
        partials: new Map(),
        partialSizes: new Map(),
        emit: tagged(side),
        trace,
        signal: o.signal,
      });
    const up = execute(rec.toRemote, o.local, o.remote, rec.remoteBase, rec.remoteTree, toRemote, 'remote');
    await up.run();
    const down = execute(rec.toLocal, o.remote, o.local, ancestor, local, toLocal, 'local');
    await down.run();

    // The new ancestor: where both sides now hold the same entry, that entry; elsewhere (a failure, a path left
    // alone) the old one, so that the next sync finds the difference again.
    const next: Tree = new Map();
    for (const p of new Set([...up.next.keys(), ...down.next.keys(), ...ancestor.keys()])) {
      const l = down.next.get(p);
      const r = up.next.get(p);
      if (l && r && sameContent(l, r)) next.set(p, l.sha256 || !r.sha256 ? l : { ...l, sha256: r.sha256 });
      else if (!l && !r) continue;
      else {
        const a = ancestor.get(p);
        if (a) next.set(p, a);
      }
    }
    // The remote's manifest says what the remote now holds, for pushes and pulls from here or elsewhere.
    await writeManifest(o.remote, { entries: up.next }, { host: os.hostname(), wsync: WSYNC_VERSION, op: 'sync' });
    if (ancestorFile && remoteId) writeAncestor(ancestorFile, { remoteId, entries: next });
    else emit({ type: 'notice', message: 'no cache directory to keep what was agreed on: the next sync will again see only additions (nothing deleted)' });
    return result(leftAlone);
  } finally {
    await lock?.release().catch(() => undefined);
    locked.done();
  }
}

/** Files both sides changed to the same size: hashed on both sides so that the same bytes are agreed on. */
async function hashBothChanged(o: TwoWayOptions, local: Tree, remote: Tree, ancestor: Tree): Promise<{ local: Tree; remote: Tree }> {
  const pairs = [...local].filter(([p, l]) => {
    const r = remote.get(p);
    if (l.type !== 'file' || r?.type !== 'file' || l.size !== r.size || sameContent(l, r)) return false;
    const a = ancestor.get(p);
    return !a || (!sameContent(a, l) && !sameContent(a, r));
  });
  if (pairs.length === 0) return { local, remote };
  const L = new Map(local);
  const R = new Map(remote);
  await mapLimit(pairs, 64, async ([p, l]) => {
    try {
      const [hl, hr] = l.size === 0 ? [EMPTY_SHA256, EMPTY_SHA256] : await Promise.all([hashFile(o.local, p, l.size), hashFile(o.remote, p, l.size)]);
      L.set(p, { ...l, sha256: hl });
      R.set(p, { ...remote.get(p)!, sha256: hr });
    } catch {
      // Unreadable now: compared by size and mtime (different: both kept).
    }
  });
  return { local: L, remote: R };
}

export function describeSyncConflict(c: SyncConflict): string {
  if (c.kind === 'both-edited') return `conflict: ${c.path}: changed on both sides; the local version stays, the remote's is kept as ${c.copy} (on both sides)`;
  const what = (e: Entry | undefined) => (e ? (e.type === 'dir' ? 'a directory' : e.type === 'symlink' ? 'a link' : 'a file') : 'nothing');
  return `conflict: ${c.path}: changed on both sides (${what(c.local)} here, ${what(c.remote)} there); left as it is on both sides`;
}

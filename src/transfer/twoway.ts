import os from 'node:os';
import type { Entry, Problem, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, abortedError, errorMessage } from '../errors.js';
import { isLinkError } from '../session/session.js';
import { IgnoreRules } from '../scan/ignore.js';
import { walk, filterTree, skippedNotices } from '../scan/walk.js';
import { sameContent, type Conflict, type Plan } from '../plan/plan.js';
import { conflictCopyName, reconcile, sameBytes, type SyncConflict } from '../plan/reconcile.js';
import { STATE_DIR, writeManifest } from '../manifest/manifest.js';
import { mapLimit } from '../util/limit.js';
import { baseName, isTempName, isUnder } from '../util/paths.js';
import { ChunkCache, cacheFileFor, pairFileFor, usableCacheDir } from './chunkcache.js';
import { Journal } from './journal.js';
import { startExecution, emptyStats, localChunker } from './execute.js';
import { CTIME_SLACK_MS, EMPTY_SHA256, hashFile } from './verify.js';
import { startLocked } from './overlaps.js';
import { readAncestor, remoteIdentity, writeAncestor } from './ancestor.js';
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
  const ancestorFile = cacheFile ? pairFileFor(cacheFile, '.ancestor.json.gz') : null;

  // A root that is something else (a file, or a link: pull refuses it too) is never taken for an empty tree, and
  // is refused before the lock would make `.wsync/` in it (or through it).
  const remoteRoot = await o.remote.lstat('');
  if (remoteRoot && remoteRoot.type !== 'dir') throw new WsyncError('E_TARGET', `remote ${o.remote.describe()} is not a directory${remoteRoot.type === 'symlink' ? ' (a symlink: name the directory it points to)' : ''}`, { hint: 'check the remote path' });
  const locked = startLocked(o.remote, { op: 'sync', waitSeconds: o.lockWaitSeconds, breakLock: o.breakLock, session: o.session, dryRun: o.dryRun, noTemp: true });
  const lock = await locked.lock;
  try {
    const localRules = new IgnoreRules(o.filter);
    const remoteRules = new IgnoreRules(o.filter);
    const manifestP = locked.manifest(lock).catch(() => null);
    const [lw, rw, remoteId, manifest] = await Promise.all([
      walk(o.local, { rules: localRules, concurrency: 16 }),
      remoteRoot || lock ? walk(o.remote, { rules: remoteRules, concurrency: 512, knownLinks: () => manifestP.then((m) => m?.entries) }) : undefined,
      remoteIdentity(o.remote, !o.dryRun),
      manifestP,
    ]);
    for (const ev of skippedNotices('push', lw, rw ?? { ...lw, skipped: [] })) emit(ev);
    const problems: Problem[] = [...lw.problems, ...(rw?.problems ?? [])];
    let local = filterTree(lw.tree, remoteRules);
    let remote = rw ? filterTree(rw.tree, localRules) : new Map<string, Entry>();
    // The remote's manifest knows the hash of what wsync wrote there: a listed file that still has the size and
    // mtime recorded carries it (as a push trusts it), so that comparing by content does not read it back.
    if (manifest) {
      remote = new Map(remote);
      for (const [p, m] of manifest.entries) {
        const r = remote.get(p);
        if (r?.type === 'file' && m.type === 'file' && m.sha256 && !r.sha256 && sameContent(r, m)) remote.set(p, { ...r, sha256: m.sha256 });
      }
    }
    const excluded = (p: string, isDir: boolean) => localRules.isExcludedDeep(p, isDir) || remoteRules.isExcludedDeep(p, isDir);
    const stored = readAncestor(ancestorFile);
    const known = stored && remoteId && stored.remoteId === remoteId ? stored : null;
    if (stored && !known) emit({ type: 'notice', message: 'the target is not the one this directory last synced with (its .wsync/id differs): syncing as on first contact, nothing is deleted' });
    const ancestor: Tree = new Map();
    for (const [p, e] of known?.entries ?? []) if (!excluded(p, e.type === 'dir')) ancestor.set(p, e);
    trace(known ? `ancestor: ${ancestor.size} entries` : 'ancestor: none (first contact)');

    // Where size and mtime cannot tell, the bytes decide (see hashWhereNeeded).
    const hashed = await hashWhereNeeded(o, local, remote, ancestor, known?.lastScan, new Set(known?.flagged ?? []));
    ({ local, remote } = hashed);
    for (const [p, e] of hashed.ancestorHashes) ancestor.set(p, e);
    if (hashed.readBack) trace(`read back ${hashed.readBack} remote files to compare`);

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
      const stateTemps = ((await o.remote.readdir(STATE_DIR).catch(() => null)) ?? []).map((d) => `${STATE_DIR}/${d.name}`).filter((rel) => isTempName(baseName(rel)));
      await Promise.all([
        ...[...(rw?.temps ?? []), ...(rw?.partials ?? []).map((x) => x.path), ...stateTemps].map((t) => o.remote.remove(t, 'file').catch(() => undefined)),
        ...lw.temps.map((t) => o.local.remove(t, 'file').catch(() => undefined)),
      ]);
      keptAside.push(...(await resolveAsides(o.remote, rw?.asides ?? [], ancestor)), ...(await resolveAsides(o.local, lw.asides, ancestor)));
      for (const c of keptAside) emit({ type: 'item', action: '!', path: c.path, kind: 'file', conflict: c, to: c.side });
    }

    const now = o.now ?? new Date();
    const host = o.host ?? os.hostname();
    const unlisted = [...lw.blocked, ...(rw?.blocked ?? [])];
    const reconcileWith = (remoteNow: Tree) => reconcile({ ancestor, local, remote: remoteNow, copyName: (p) => conflictCopyName(p, now, host), unlisted, touchedLocal: hashed.touchedLocal });
    let rec = reconcileWith(remote);
    for (const [plan, side] of [[rec.toRemote, 'remote'], [rec.toLocal, 'local']] as const) {
      if (plan.tooManyDeletes && !o.force) {
        throw new WsyncError('E_DELETE_LIMIT', `the sync would remove ${plan.deleteCount} of the ${plan.dstFileCount} files on the ${side} side`, { hint: 'that is more than half: check both directories and the filters, or add --force if this is intended' });
      }
    }
    const toRemote = emptyStats();
    const toLocal = emptyStats();
    const leftAlone: Conflict[] = [...keptAside];
    const tagged = (to: 'local' | 'remote') => (ev: SyncEvent) => emit(ev.type === 'item' ? { ...ev, to } : ev);
    const result = (): TwoWayResult => ({
      dryRun: o.dryRun,
      ok: conflicts().length === 0 && problems.length === 0 && leftAlone.length === 0,
      firstContact: !known,
      toRemote,
      toLocal,
      conflicts: conflicts(),
      leftAlone,
      problems,
      durationMs: Date.now() - started,
    });
    // Conflict copies already made when a later rename failed and everything was reconciled again: still reported.
    const madeCopies: SyncConflict[] = [];
    const conflicts = () => [...madeCopies.filter((m) => !rec.conflicts.some((c) => c.path === m.path)), ...rec.conflicts];
    const settled = () => {
      for (const c of conflicts()) emit({ type: 'notice', message: describeSyncConflict(c) });
      // What the one-way planner itself leaves alone (a directory to replace that holds a change it could not see
      // listed): reported, never dropped.
      for (const c of [...rec.toRemote.conflicts, ...rec.toLocal.conflicts]) {
        leftAlone.push(c);
        emit({ type: 'item', action: '!', path: c.path, kind: 'file', conflict: c, to: c.side });
      }
    };
    if (o.dryRun) {
      settled();
      for (const { from, to } of rec.renames) emit({ type: 'item', action: '+', path: to, kind: 'file', to: 'remote', renamedFrom: from });
      reportDryRun(rec.toRemote, local, rec.remoteTree, toRemote, tagged('remote'));
      reportDryRun(rec.toLocal, remote, local, toLocal, tagged('local'));
      return result();
    }
    if (o.signal?.aborted) throw abortedError();

    // Conflict copies first: the remote's version of a file edited on both sides moves aside (content kept by the
    // rename itself); only then can the local version go to its name. A rename that fails leaves that path alone
    // (a problem, reported): everything is reconciled again with the renames made so far.
    let remoteNow = remote;
    for (let again = true; again; ) {
      again = false;
      for (const { from, to } of rec.renames) {
        try {
          await o.remote.rename(from, to);
        } catch (err) {
          if (isLinkError(err)) throw err;
          problems.push({ path: from, code: err instanceof WsyncError ? err.code : 'E_REMOTE_IO', message: `cannot keep the remote's version as ${to}: ${errorMessage(err)}; left as it is on both sides` });
          unlisted.push(from);
          rec = reconcileWith(remoteNow);
          again = true;
          break;
        }
        const made = rec.conflicts.find((c) => c.kind === 'both-edited' && c.path === from && c.copy === to);
        if (made) madeCopies.push(made);
        remoteNow = new Map(remoteNow);
        remoteNow.set(to, remoteNow.get(from)!);
        remoteNow.delete(from);
        emit({ type: 'item', action: '+', path: to, kind: 'file', to: 'remote', renamedFrom: from });
      }
    }
    settled();
    const getCache = (() => {
      let c: Promise<ChunkCache> | undefined;
      return () => (c ??= ChunkCache.load(null, { local: o.local.root, target }));
    })();
    const localChunks = localChunker(o.local, getCache);
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
    const down = execute(rec.toLocal, o.remote, o.local, rec.localBase, local, toLocal, 'local');
    await down.run();

    // The new ancestor: where both sides now hold the same entry, that entry; elsewhere (a failure, a path left
    // alone) the old one, so that the next sync finds the difference again.
    const next: Tree = new Map();
    const keptOld = new Set<string>();
    for (const p of new Set([...up.next.keys(), ...down.next.keys(), ...ancestor.keys()])) {
      const l = down.next.get(p);
      const r = up.next.get(p);
      if (l && r && sameContent(l, r)) next.set(p, l.sha256 || !r.sha256 ? l : { ...l, sha256: r.sha256 });
      else if (!l && !r) continue;
      else {
        keptOld.add(p);
        const a = ancestor.get(p);
        if (a) next.set(p, a);
      }
    }
    // Local files this sync did not bring into agreement keep an entry older than this sync's start: the next sync
    // compares them by content (a same-second edit among them is not lost behind the new lastScan).
    const aloneRoots = [...rec.blocked, ...leftAlone.map((c) => c.path)];
    const unresolved = (p: string) => keptOld.has(p) || up.failed.has(p) || down.failed.has(p) || aloneRoots.some((b) => p === b || isUnder(p, b));
    const flagged = [...local].filter(([p, e]) => e.type === 'file' && unresolved(p)).map(([p]) => p);
    // The remote's manifest says what the remote now holds, for pushes and pulls from here or elsewhere.
    await writeManifest(o.remote, { entries: up.next }, { host: os.hostname(), wsync: WSYNC_VERSION, op: 'sync' });
    if (ancestorFile && remoteId) writeAncestor(ancestorFile, { remoteId, entries: next, lastScan: started, flagged });
    else if (!remoteId) emit({ type: 'notice', message: "the target's .wsync/id is not one wsync wrote: what was agreed on is not kept, and the next sync again deletes nothing" });
    else emit({ type: 'notice', message: 'no cache directory to keep what was agreed on: the next sync will again see only additions (nothing deleted)' });
    return result();
  } finally {
    await lock?.release().catch(() => undefined);
    locked.done();
  }
}

/**
 * Where size and mtime cannot tell, the bytes decide:
 * - local files of the ancestor's size with another mtime (a touch, or an edit at the same size), and those written
 *   since the last sync began with the ancestor's size and mtime (an edit within the same second), or that the last
 *   sync left out of agreement (flagged): hashed locally;
 *   where such a same-second suspect meets an ancestor without a hash, the remote's copy (if still the ancestor's)
 *   is read back for it, and without one either the file counts as changed (touchedLocal);
 * - remote files of the ancestor's size with another mtime, where the local side changed too (a touch there must
 *   not turn the local edit into a conflict): read back;
 * - files of one size on both sides, where there is no ancestor or both changed: hashed on both sides (the same
 *   checkout at two times is agreed on; different bytes under one mtime are not taken for the same).
 */
async function hashWhereNeeded(o: TwoWayOptions, local: Tree, remote: Tree, ancestor: Tree, lastScan: number | undefined, flagged: ReadonlySet<string>) {
  const L = new Map(local);
  const R = new Map(remote);
  const ancestorHashes = new Map<string, Entry>();
  const touchedLocal = new Set<string>();
  let readBack = 0;
  const hashInto = async (t: Tree, side: Transport, p: string) => {
    const e = t.get(p)!;
    if (e.type !== 'file' || e.sha256) return;
    if (side === o.remote) readBack++;
    const h = e.size === 0 ? EMPTY_SHA256 : await hashFile(side, p, e.size);
    t.set(p, { ...t.get(p)!, sha256: h });
  };
  const quietly = (f: Promise<void>) => f.catch(() => undefined); // unreadable now: the quick check decides
  const suspects: string[] = [];
  const first: string[] = [];
  for (const [p, l] of L) {
    const a = ancestor.get(p);
    if (l.type !== 'file' || a?.type !== 'file' || l.size !== a.size) continue;
    if (l.mtime !== a.mtime) first.push(p);
    else if (flagged.has(p) || (lastScan !== undefined && l.ctime !== undefined && l.ctime >= lastScan - CTIME_SLACK_MS)) {
      first.push(p);
      suspects.push(p);
    }
  }
  await mapLimit(first, 8, (p) => quietly(hashInto(L, o.local, p)));
  // A local file found changed under the ancestor's size: a remote copy that the quick check calls the ancestor's
  // is taken to hold the ancestor's bytes (as verify.ts does), so that the planner sees the two differ.
  for (const p of first) {
    const a = ancestor.get(p)!;
    const l = L.get(p)!;
    const r = R.get(p);
    if (a.sha256 && l.sha256 && l.sha256 !== a.sha256 && r?.type === 'file' && !r.sha256 && sameContent(r, a)) R.set(p, { ...r, sha256: a.sha256 });
  }
  await mapLimit(suspects, 64, async (p) => {
    const a = ancestor.get(p)!;
    const l = L.get(p)!;
    const r = R.get(p);
    if (a.sha256 || !l.sha256) return;
    if (r?.type === 'file' && sameContent(r, a)) {
      await quietly(hashInto(R, o.remote, p));
      const hr = R.get(p)!.sha256;
      if (hr) ancestorHashes.set(p, { ...a, sha256: hr });
      else touchedLocal.add(p);
    } else touchedLocal.add(p);
  });
  const bytesOf = (p: string) => ancestorHashes.get(p) ?? ancestor.get(p);
  const moved = (x: Entry | undefined, a: Entry | undefined) => (!x || !a ? x !== a : !sameBytes(x, a));
  // Each (side, path) once: two rules may both ask for one remote file.
  const second = new Map<string, [Tree, Transport, string]>();
  const ask = (t: Tree, side: Transport, p: string) => second.set(`${side === o.remote ? 'r' : 'l'}\0${p}`, [t, side, p]);
  for (const p of new Set([...L.keys(), ...R.keys()])) {
    const l = L.get(p);
    const r = R.get(p);
    const a = bytesOf(p);
    const localMoved = moved(l, a) || touchedLocal.has(p);
    if (r?.type === 'file' && a?.type === 'file' && r.size === a.size && r.mtime !== a.mtime && localMoved) ask(R, o.remote, p);
    if (l?.type === 'file' && r?.type === 'file' && l.size === r.size && (!a || (localMoved && moved(r, a)))) {
      ask(L, o.local, p);
      ask(R, o.remote, p);
    }
  }
  await mapLimit([...second.values()], 64, ([t, side, p]) => quietly(hashInto(t, side, p)));
  return { local: L, remote: R, ancestorHashes, touchedLocal, readBack };
}

export function describeSyncConflict(c: SyncConflict): string {
  if (c.kind === 'both-edited') return `conflict: ${c.path}: changed on both sides; the local version stays, the remote's is kept as ${c.copy} (on both sides)`;
  const what = (e: Entry | undefined) => (e ? (e.type === 'dir' ? 'a directory' : e.type === 'symlink' ? 'a link' : 'a file') : 'nothing');
  return `conflict: ${c.path}: changed on both sides (${what(c.local)} here, ${what(c.remote)} there); left as it is on both sides`;
}

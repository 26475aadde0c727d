import os from 'node:os';
import type { Problem, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError } from '../errors.js';
import { IgnoreRules, type FilterOptions } from '../scan/ignore.js';
import { scanPaths } from '../scan/walk.js';
import { plan, type Conflict } from '../plan/plan.js';
import { readManifest, writeManifest } from '../manifest/manifest.js';
import { acquireLock } from '../manifest/lock.js';
import { ancestors, joinRel } from '../util/paths.js';
import { ChunkCache } from '../transfer/chunkcache.js';
import { Journal } from '../transfer/journal.js';
import { localChunker, startExecution } from '../transfer/execute.js';
import { WSYNC_VERSION } from '../version.js';
import type { SyncEvent, SyncResult, SyncStats } from '../transfer/engine.js';
import type { Session } from './session.js';

export interface PathsOptions {
  /** Paths (relative to the local directory) that may have changed: created, edited, deleted or moved. */
  paths: Iterable<string>;
  delete?: boolean;
  force?: boolean;
  filter?: FilterOptions;
  concurrency?: number;
  onEvent?: (ev: SyncEvent) => void;
}

/** What a session keeps between batches: rules with the ignore files of the directories seen so far. */
interface BatchState {
  rules: IgnoreRules;
  /** Directories whose ignore files are in `rules`. */
  loaded: Set<string>;
}
const states = new WeakMap<Session, Map<string, BatchState>>();

function stateFor(session: Session, filter: FilterOptions): BatchState {
  let byFilter = states.get(session);
  if (!byFilter) states.set(session, (byFilter = new Map()));
  const key = JSON.stringify(filter);
  let st = byFilter.get(key);
  if (!st) byFilter.set(key, (st = { rules: new IgnoreRules(filter), loaded: new Set() }));
  return st;
}

/** Reads the ignore files of the directories above `paths` that were not read yet (all at once). */
async function loadRules(t: Transport, st: BatchState, paths: string[]): Promise<void> {
  const dirs = new Set<string>();
  for (const p of paths) for (const d of ['', ...ancestors(p)]) if (!st.loaded.has(d)) dirs.add(d);
  const names = ['.gitignore', '.wsyncignore'].filter((n) => st.rules.wants(n));
  const read = await Promise.all([...dirs].flatMap((d) => names.map(async (n) => ({ d, n, text: await t.readFile(joinRel(d, n)).catch(() => null) }))));
  // Shallow first: the walk adds them in this order too.
  read.sort((a, b) => a.d.split('/').length - b.d.split('/').length);
  for (const { d, n, text } of read) if (text) st.rules.addRules(d, n, text.toString('utf8'));
  for (const d of dirs) st.loaded.add(d);
}

/** True when `p` is one of `scope` or below one of them. */
function inScope(p: string, scope: Set<string>): boolean {
  return scope.has(p) || ancestors(p).some((a) => scope.has(a));
}

/**
 * A push of only the given paths (what a watch sends after file events), with no walk of either tree and no
 * listing of the remote: the paths are lstat'd on both sides (a directory among them, or a new directory above
 * one, is walked whole), planned against what the target's manifest says wsync last wrote, carried out by the same
 * execute stage as a full push, and recorded in the manifest. Deletions only with `delete`; the delete limit is
 * judged against the whole target. Ignore rules come from the local side (read along the paths' directories once
 * per session, re-read when an ignore file is among the paths).
 */
export async function pushPaths(session: Session, o: PathsOptions): Promise<SyncResult> {
  const started = Date.now();
  const timings: Record<string, number> = {};
  const mark = (phase: string) => (timings[phase] = Date.now() - started);
  const emit = o.onEvent ?? (() => undefined);
  const filter = o.filter ?? { gitignore: true, excludes: [], includes: [] };
  const concurrency = o.concurrency ?? 1024;
  const paths = [...new Set(o.paths)].filter((p) => p !== '');
  const stats: SyncStats = { filesSent: 0, bytesSent: 0, filesDelta: 0, bytesReused: 0, dirsCreated: 0, symlinksSent: 0, attributesUpdated: 0, deleted: 0, conflicts: 0, failed: 0, filesScanned: 0 };
  const problems: Problem[] = [];
  const local = session.local;
  const remote = await session.remote();
  const st = stateFor(session, filter);
  // The manifest is read right behind the lock's create on one channel (answered in that order: what the lock
  // protects, one round trip sooner), as a full push does; read again if the lock was not taken at once.
  const pin = remote.pinned?.();
  const lockP = acquireLock(pin ?? remote, { op: 'push', waitSeconds: 0, breakLock: false, session: session.id });
  lockP.catch(() => undefined);
  const earlyManifest = pin ? readManifest(pin) : undefined;
  earlyManifest?.catch(() => undefined);
  await loadRules(local, st, paths);
  const lock = await lockP;
  mark('locked');
  try {
    const manifest = await (earlyManifest && lock.firstTry ? earlyManifest : readManifest(remote));
    const base: Tree = manifest?.entries ?? new Map();
    // New directories above a path (the target does not have them) are part of the batch: walked whole.
    const scope = new Set(paths);
    for (const p of paths) for (const a of ancestors(p)) if (!base.has(a)) scope.add(a);
    const [here, there] = await Promise.all([scanPaths(local, scope, { rules: st.rules, concurrency: 64 }), scanPaths(remote, scope, { rules: st.rules, concurrency: 64 })]);
    mark('scanned');
    problems.push(...here.problems, ...there.problems);
    const baseIn: Tree = new Map();
    let baseFiles = 0;
    for (const [p, e] of base) {
      if (e.type !== 'dir') baseFiles++;
      if (inScope(p, scope) && !st.rules.isExcludedDeep(p, e.type === 'dir')) baseIn.set(p, e);
    }
    stats.filesScanned = here.tree.size;
    const p = plan({ src: here.tree, dst: there.tree, base: baseIn, delete: o.delete ?? false, force: o.force ?? false, blocked: [...here.blocked, ...there.blocked], dstName: 'remote' });
    if ((o.delete ?? false) && !o.force && p.deleteCount > 0 && p.deleteCount * 2 > baseFiles) {
      throw new WsyncError('E_DELETE_LIMIT', `--delete would remove ${p.deleteCount} of the ${baseFiles} files on the remote side`, {
        hint: 'that is more than half: check the source directory and filters, or add --force if this is intended',
      });
    }
    const conflicts: Conflict[] = p.conflicts;
    stats.conflicts = conflicts.length;
    for (const c of conflicts) emit({ type: 'item', action: '!', path: c.path, kind: (here.tree.get(c.path) ?? there.tree.get(c.path))?.type ?? 'file', reason: c.reason });
    const getCache = (): Promise<ChunkCache> => session.cache() ?? ChunkCache.load(null, { local: local.root, target: session.targetLabel });
    const exec = startExecution({
      plan: p,
      from: local,
      to: remote,
      local,
      base: baseIn,
      dstTree: there.tree,
      problems,
      conflicts,
      stats,
      force: o.force ?? false,
      concurrency,
      journal: new Journal(null),
      getCache,
      localChunks: localChunker(local, getCache),
      partials: new Map(),
      partialSizes: new Map(),
      emit,
      trace: () => undefined,
      mark,
    });
    let deletesSkipped: string | undefined;
    let failed: { err: unknown } | undefined;
    try {
      deletesSkipped = await exec.run();
    } catch (err) {
      failed = { err };
    }
    // What the target now holds at these paths replaces what the manifest said of them (failed paths, and those
    // not reached, keep theirs); the rest of the manifest is untouched.
    const now = failed ? exec.checkpoint() : exec.next;
    const next: Tree = new Map(base);
    for (const k of [...baseIn.keys(), ...here.tree.keys(), ...there.tree.keys()]) {
      const e = now.get(k);
      if (e) next.set(k, e);
      else next.delete(k);
    }
    const written = remote.lost ? undefined : writeManifest(remote, { entries: next }, { host: os.hostname(), wsync: WSYNC_VERSION, op: 'push' });
    if (failed) {
      await written?.catch(() => undefined);
      throw failed.err;
    }
    await written;
    mark('manifest');
    const ok = stats.conflicts === 0 && problems.length === 0;
    return { direction: 'push', dryRun: false, ok, stats, conflicts, problems, deletesSkipped, durationMs: Date.now() - started, timings };
  } finally {
    await lock.release().catch(() => undefined);
  }
}

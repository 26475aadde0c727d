import { createHash } from 'node:crypto';
import type { Entry, Problem, Tree } from '../types.js';
import type { StagedFile, Transport } from '../transport/types.js';
import { WsyncError } from '../errors.js';
import { IgnoreRules, type FilterOptions } from '../scan/ignore.js';
import { filterTree, scanPaths } from '../scan/walk.js';
import { plan, sameContent, type Conflict } from '../plan/plan.js';
import { DELTA_MIN_FILE_SIZE } from '../plan/delta.js';
import { STATE_DIR, ignoreLocalStateDir } from '../manifest/manifest.js';
import { ancestors, isSafeRelPath, joinRel } from '../util/paths.js';
import { ChunkCache } from '../transfer/chunkcache.js';
import { emptyStats, localChunker, startExecution } from '../transfer/execute.js';
import { resolveByHash } from '../transfer/verify.js';
import type { Direction, SyncEvent, SyncResult } from '../transfer/engine.js';
import type { Session } from './session.js';
import { Hold } from './hold.js';

export interface PathsOptions {
  /** Paths (relative to the local directory) that may have changed: created, edited, deleted or moved. */
  paths: Iterable<string>;
  delete?: boolean;
  force?: boolean;
  filter?: FilterOptions;
  concurrency?: number;
  /** Seconds to wait for another run's lock (default 0), or remove a stale one another host left. */
  wait?: number;
  breakLock?: boolean;
  onEvent?: (ev: SyncEvent) => void;
  /** Stops the batch (ExecuteOptions.signal). */
  signal?: AbortSignal;
}

/** What a session keeps between batches, per side: rules with the ignore files of the directories seen so far. */
interface BatchState {
  rules: IgnoreRules;
  /** Directories whose ignore files are in `rules`. */
  loaded: Set<string>;
}
const states = new WeakMap<Session, Map<string, BatchState>>();

/**
 * Forgets the ignore rules a session's batches read (after a full run, which read every ignore file itself): an
 * edited ignore file is then read again by the next batch, on both sides.
 */
export function forgetBatchRules(session: Session): void {
  states.delete(session);
}

function stateFor(session: Session, filter: FilterOptions, side: 'local' | 'remote'): BatchState {
  let byFilter = states.get(session);
  if (!byFilter) states.set(session, (byFilter = new Map()));
  const key = `${side} ${JSON.stringify(filter)}`;
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
 * judged against the whole target. Each side's ignore files (read along the paths' directories once per session,
 * re-read when an ignore file is among the paths) apply to its own scan and filter the other side's tree, as in a
 * full push. On a held session (Session.hold) it takes neither lock nor manifest and stages small files early
 * (stageEdits). No dry run yet, no partial uploads.
 */
export function pushPaths(session: Session, o: PathsOptions): Promise<SyncResult> {
  return runPaths(session, 'push', o);
}

/**
 * The same for a pull: only the given paths (relative to both roots: what a poll of the remote found changed, or
 * what a caller knows another client wrote) are looked at on both sides and brought from the target, checked
 * against what the manifest says before anything local is replaced or deleted.
 */
export function pullPaths(session: Session, o: PathsOptions): Promise<SyncResult> {
  return runPaths(session, 'pull', o);
}

async function runPaths(session: Session, direction: Direction, o: PathsOptions): Promise<SyncResult> {
  const started = Date.now();
  const timings: Record<string, number> = {};
  const mark = (phase: string) => (timings[phase] = Date.now() - started);
  const emit = o.onEvent ?? (() => undefined);
  const filter = o.filter ?? { gitignore: true, excludes: [], includes: [] };
  const concurrency = o.concurrency ?? 1024;
  const paths = [...new Set(o.paths)].filter((p) => p !== '');
  const unsafe = paths.filter((p) => !isSafeRelPath(p));
  if (unsafe.length > 0) throw new WsyncError('E_USAGE', `not a path inside the directory: ${unsafe.slice(0, 3).join(', ')}${unsafe.length > 3 ? ` (and ${unsafe.length - 3} more)` : ''}`);
  const stats = emptyStats();
  const problems: Problem[] = [];
  const local = session.local;
  const remote = await session.remote();
  // Each side's ignore files apply to its own scan, and each side's tree is filtered by the other's rules too, as
  // in a full push: an ignore file edited on one side is never taken for the other's.
  const st = stateFor(session, filter, 'local');
  const rst = stateFor(session, filter, 'remote');
  const push = direction === 'push';
  const from = push ? local : remote;
  const to = push ? remote : local;
  // What the transports remember of the trees is from before this batch.
  await Promise.all([local.beginRun?.(), remote.beginRun?.()]);
  const root = await from.lstat('');
  if (!root || root.type !== 'dir') {
    if (push) throw new WsyncError('E_LOCAL_MISSING', `local directory ${local.describe()} does not exist`, { hint: 'check the first argument' });
    throw new WsyncError('E_TARGET', `remote directory ${remote.describe()} does not exist`, { hint: "check the remote path (relative paths start at the login's home)" });
  }
  if (!push) await local.ensureRoot();
  // The session's hold on the target (its lock and manifest in memory), or a hold for this batch alone: the lock,
  // and the manifest read right behind it on one channel, as a full push takes them.
  const held = session.held && !session.held.done ? session.held : undefined;
  const taking = held ? held.on(remote).then(() => held) : Hold.take(remote, { wait: o.wait, breakLock: o.breakLock, session: session.id, journalFile: session.journalFile(), op: direction });
  taking.catch(() => undefined);
  await Promise.all([loadRules(local, st, paths), loadRules(remote, rst, paths)]);
  const hold = await taking;
  mark('locked');
  let recorded = false;
  let staging = new Map<string, Staging>();
  try {
    const base: Tree = hold.base;
    // Directories above a path that the manifest does not know as directories (new ones, or a link or file that
    // became one) are part of the batch: walked whole. The others are looked at themselves (`shallow`): a directory
    // replaced by a symlink on the remote is then a conflict, never a way out of the target.
    const scope = new Set(paths);
    const shallow = new Set<string>();
    for (const p of paths) for (const a of ancestors(p)) (base.get(a)?.type === 'dir' ? shallow : scope).add(a);
    for (const d of scope) shallow.delete(d);
    for (const d of shallow) scope.add(d);
    const knownLinks = () => Promise.resolve(base);
    const thereP = scanPaths(remote, scope, { rules: rst.rules, concurrency: 64, shallow, knownLinks });
    thereP.catch(() => undefined);
    const here = await scanPaths(local, scope, { rules: st.rules, concurrency: 64, shallow });
    // Held (the lock is ours): small edited files go up under temp names while the remote is looked at.
    const localTree = filterTree(here.tree, rst.rules);
    staging = held && push ? stageEdits(local, remote, localTree, base, paths) : new Map();
    const there = await thereP;
    mark('scanned');
    problems.push(...here.problems, ...there.problems);
    const remoteTree = filterTree(there.tree, st.rules);
    if (here.rulesChanged || there.rulesChanged) emit({ type: 'notice', message: `an ignore file changed: paths outside this batch that it includes or leaves out are synced by the next full ${direction}` });
    const [srcScan, src, dst] = push ? [here, localTree, remoteTree] : [there, remoteTree, localTree];
    const blocked = [...here.blocked, ...there.blocked];
    // A directory looked at only itself that the source now has as something else (a file, a link): all of it on
    // the destination is what would be replaced, so it is walked there, and what changed below it holds it back
    // (as in a full run), instead of only the reported children going.
    const retyped = [...shallow].filter((d) => {
      const e = srcScan.tree.get(d);
      return e !== undefined && e.type !== 'dir';
    });
    if (retyped.length > 0) {
      const whole = await scanPaths(to, new Set(retyped), { rules: push ? rst.rules : st.rules, concurrency: 64, knownLinks });
      problems.push(...whole.problems);
      blocked.push(...whole.blocked);
      for (const [p, e] of filterTree(whole.tree, push ? st.rules : rst.rules)) dst.set(p, e);
      for (const d of retyped) shallow.delete(d);
    }
    // A parent the source no longer has is left out: its deletion is reported (and carried out) as a path of its own.
    const gone = new Set([...shallow].filter((d) => !srcScan.tree.has(d)));
    for (const d of gone) dst.delete(d);
    const deep = new Set([...scope].filter((d) => !shallow.has(d)));
    const baseIn: Tree = new Map();
    let baseFiles = 0;
    for (const [p, e] of base) {
      if (e.type !== 'dir') baseFiles++;
      const wanted = inScope(p, deep) || (shallow.has(p) && !gone.has(p));
      if (wanted && !st.rules.isExcludedDeep(p, e.type === 'dir') && !rst.rules.isExcludedDeep(p, e.type === 'dir')) baseIn.set(p, e);
    }
    stats.filesScanned = src.size;
    const getCache = (): Promise<ChunkCache> => session.cache() ?? ChunkCache.load(null, { local: local.root, target: session.targetLabel });
    const localChunks = localChunker(local, getCache);
    // The paths were reported as changed: a same-size edit within the same second is found by its bytes, identical
    // copies are adopted, touched files get their time fixed (the verify stage of a full push).
    // On a pull, the local files hashed are those the remote changed (an unchanged one is not replaced anyway).
    const changedOnSrc = (p: string) => {
      const e = src.get(p);
      const b = baseIn.get(p);
      return !e || !b || !sameContent(e, b);
    };
    const flaggedLocal = push ? [...src.keys()] : [...dst.keys()].filter(changedOnSrc);
    const v = await resolveByHash({ direction, local, src: from, dst: to, srcTree: src, dstTree: dst, base: baseIn, stillFlagged: new Set(flaggedLocal), checksum: false, localChunks });
    mark('verified');
    const dstName = push ? 'remote' : 'local';
    const p = plan({ src: v.srcTree, dst: v.dstTree, base: baseIn, delete: o.delete ?? false, force: o.force ?? false, blocked, dstName });
    if ((o.delete ?? false) && !o.force && p.deleteCount > 0 && p.deleteCount * 2 > baseFiles) {
      throw new WsyncError('E_DELETE_LIMIT', `--delete would remove ${p.deleteCount} of the ${baseFiles} files on the ${dstName} side`, {
        hint: 'that is more than half: check the source directory and filters, or add --force if this is intended',
      });
    }
    const conflicts: Conflict[] = p.conflicts;
    stats.conflicts = conflicts.length;
    for (const c of conflicts) emit({ type: 'item', action: '!', path: c.path, kind: (src.get(c.path) ?? dst.get(c.path))?.type ?? 'file', conflict: c });
    const exec = startExecution({
      plan: p,
      from,
      to,
      local,
      base: baseIn,
      dstTree: v.dstTree,
      problems,
      conflicts,
      stats,
      force: o.force ?? false,
      concurrency,
      journal: hold.journal,
      getCache,
      localChunks,
      partials: new Map(),
      partialSizes: new Map(),
      staged: (rel, e) => takeStaged(staging, rel, e),
      emit,
      trace: () => undefined,
      mark,
      signal: o.signal,
    });
    // Staged copies the plan does not send go before anything else happens (a directory mode the batch sets could
    // keep them from being removed later).
    const puts = new Set(p.transfers.filter((op) => op.kind === 'put').map((op) => op.path));
    await dropStaged(staging, (rel) => !puts.has(rel));
    let deletesSkipped: string | undefined;
    let failed: { err: unknown } | undefined;
    try {
      deletesSkipped = await exec.run();
      if (!push) await ignoreLocalStateDir(local);
    } catch (err) {
      failed = { err };
    }
    // What the target now holds at these paths replaces what the manifest said of them (failed paths, and those
    // not reached, keep theirs); the rest of the manifest is untouched.
    const now = failed ? exec.checkpoint() : exec.next;
    const next: Tree = new Map(base);
    for (const k of [...baseIn.keys(), ...src.keys(), ...dst.keys()]) {
      const e = now.get(k);
      if (e) next.set(k, e);
      else next.delete(k);
    }
    await dropStaged(staging);
    hold.record(next);
    recorded = true;
    if (failed) {
      if (!held) await hold.release().catch(() => undefined);
      throw failed.err;
    }
    // A batch of its own writes the manifest and lets go; a held one leaves the manifest to the hold's next write.
    if (!held) await hold.release();
    mark('manifest');
    const ok = stats.conflicts === 0 && problems.length === 0;
    return { direction, dryRun: false, ok, stats, conflicts, problems, deletesSkipped, durationMs: Date.now() - started, timings };
  } finally {
    await dropStaged(staging);
    if (!held && !recorded) await hold.release().catch(() => undefined);
  }
}

/**
 * Small files a held batch stages: at most this many (a bigger burst goes the usual way), below the size from which
 * files are cut into chunks as they are sent (those are never staged).
 */
const STAGE_MAX_FILES = 64;

/** A local file's bytes on their way into a temp on the remote, and the scanned entry they are the content of. */
interface Staging {
  entry: Entry;
  staged: Promise<{ file: StagedFile; sha256: string } | undefined>;
}

/**
 * Starts writing the batch's small edited files into temps on the remote before the plan is known (it waits for
 * the remote's lstats), one round trip saved of the two a file takes after them: what a watch's save waits for.
 * Only files whose bytes, as read, are the version the scan saw (its size, mtime and ctime after the read), in
 * directories the manifest has; the plan then takes them (execute's `staged`) or they are removed unseen.
 */
function stageEdits(local: Transport, remote: Transport, src: Tree, base: Tree, paths: string[]): Map<string, Staging> {
  const out = new Map<string, Staging>();
  for (const rel of paths) {
    if (out.size >= STAGE_MAX_FILES) break;
    // Reported as changed: even at the size and second the manifest has, it most likely was (a save within a second).
    const e = src.get(rel);
    if (e?.type !== 'file' || e.size >= DELTA_MIN_FILE_SIZE) continue;
    if (!ancestors(rel).every((a) => base.get(a)?.type === 'dir')) continue;
    const staged = (async () => {
      const data = await local.readFile(rel);
      const now = await local.lstat(rel);
      if (!data || data.length !== e.size || now?.size !== e.size || now.mtime !== e.mtime || now.ctime !== e.ctime) return undefined;
      const sha256 = createHash('sha256').update(data).digest('hex');
      // Over SFTP into .wsync/ (a directory of the target's own), renamed across once the plan has seen that the
      // file's directory is a real one: never written through a directory someone swapped for a symlink.
      return { file: await remote.stageSmall(rel, data, { mode: e.mode, mtime: e.mtime, tempIn: STATE_DIR }), sha256 };
    })().catch(() => undefined);
    out.set(rel, { entry: e, staged });
  }
  return out;
}

/** The staged copy of `rel` if it holds entry `e` (as scanned, and as hashed if it was); one that does not is removed. */
async function takeStaged(staging: Map<string, Staging>, rel: string, e: Entry): Promise<{ file: StagedFile; sha256: string } | undefined> {
  const s = staging.get(rel);
  if (!s) return undefined;
  staging.delete(rel);
  const got = await s.staged;
  if (!got) return undefined;
  const x = s.entry;
  if (e.type === 'file' && e.size === x.size && e.mtime === x.mtime && e.mode === x.mode && e.ctime === x.ctime && (!e.sha256 || e.sha256 === got.sha256)) return got;
  await got.file.abort();
  return undefined;
}

/** Removes the staged copies not taken (those of the paths `which` picks; all by default). */
async function dropStaged(staging: Map<string, Staging>, which: (rel: string) => boolean = () => true): Promise<void> {
  const left = [...staging].filter(([rel]) => which(rel));
  for (const [rel] of left) staging.delete(rel);
  await Promise.all(left.map(async ([, s]) => (await s.staged)?.file.abort().catch(() => undefined)));
}

import { createHash } from 'node:crypto';
import os from 'node:os';
import type { Entry, Problem, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, abortedError } from '../errors.js';
import { IgnoreRules, type FilterOptions } from '../scan/ignore.js';
import { walk, filterTree, Prefetcher, skippedNotices } from '../scan/walk.js';
import { plan, type Conflict, type Op, type Plan } from '../plan/plan.js';
import { encodeManifest, ignoreLocalStateDir, ignoreStateDir, writeManifest, MANIFEST_PATH, STATE_DIR, type Manifest } from '../manifest/manifest.js';
import type { Lock } from '../manifest/lock.js';
import { mapLimit } from '../util/limit.js';
import { asideOf, baseName, comparePaths, isTempName, joinRel, parentOf, partialNameFor } from '../util/paths.js';
import { conflictName } from '../transport/rebuild.js';
import { sameSpec } from '../chunking/params.js';
import { ChunkCache, cacheFileFor, contentKey, pairFileFor, usableCacheDir } from './chunkcache.js';
import { Speculations } from './speculate.js';
import { readPairState, writePairState } from './pairstate.js';
import { Journal, trustedEntries } from './journal.js';
import { startExecution, ctimeStamp, emptyStats, localChunker, MAX_COPY_LENGTH, RESUME_MIN_SIZE } from './execute.js';
import { resolveByHash, withHash } from './verify.js';
import { prewriteManifest, startCheckpoints, startLocked } from './overlaps.js';
import type { ConnectionEvent } from '../session/session.js';

export { WSYNC_VERSION } from '../version.js';
import { WSYNC_VERSION } from '../version.js';

export type Direction = 'push' | 'pull';

/** What happened to one path; the same records feed the itemized dry run, -v and --json. */
export interface ItemEvent {
  type: 'item';
  /** '+' created, '*' changed, '-' deleted, '.' attributes only, '!' conflict, 'x' failed. */
  action: '+' | '*' | '-' | '.' | '!' | 'x';
  path: string;
  kind: 'file' | 'dir' | 'symlink';
  /** Bytes sent: the whole file, or for a delta the literal bytes only. */
  bytes?: number;
  /** Delta transfers: bytes the server copied from its previous version instead. */
  reused?: number;
  /** 'x': what failed, in the words of the error. */
  reason?: string;
  /** '!': the conflict, as data (cli/conflicts.ts phrases it). */
  conflict?: Conflict;
  /** Two-way sync: the side the change was made to. */
  to?: 'local' | 'remote';
  /** Two-way sync: a conflict copy made by renaming this path. */
  renamedFrom?: string;
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

export type SyncEvent = ItemEvent | ProgressEvent | NoticeEvent | ConnectionEvent;

export interface SyncStats {
  filesSent: number;
  /** File content sent: whole files, plus the literal bytes of delta transfers. */
  bytesSent: number;
  /** Of filesSent, those rebuilt on the destination from their previous version (delta transfer). */
  filesDelta: number;
  /** Bytes delta transfers took from the destination's previous versions instead of sending them. */
  bytesReused: number;
  dirsCreated: number;
  symlinksSent: number;
  attributesUpdated: number;
  deleted: number;
  conflicts: number;
  failed: number;
  /** Bytes the run would move / moved, and files it examined. */
  filesScanned: number;
  /** Paths on the source side that .gitignore/.wsyncignore files left out (a directory counts once). */
  ignored?: number;
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
  /** Milliseconds from the start at which each phase ended (for diagnosing slow links); `connect` is its own span. */
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
  /** The Session the run belongs to: a lock one of its earlier runs left when its link was lost is its own. */
  session?: string;
  /**
   * Compare by content (rsync's --checksum): files of the same size and mtime on both sides are hashed on both,
   * so an edit that kept both (same second, same size) is still sent. Reads every such file on both sides.
   */
  checksum?: boolean;
  onEvent?: (ev: SyncEvent) => void;
  /** Test hook: called after each completed transfer (e.g. to kill a run mid-way). */
  afterTransfer?: (path: string) => void;
  /**
   * Directory of the local chunk cache; undefined for the default (usableCacheDir), null for none. Without a
   * cache a changed big file is uploaded whole.
   */
  cacheDir?: string | null;
  /** Names the target in the chunk cache's key; default: the remote transport's description. */
  cacheTarget?: string;
  /** A cache already loaded (and prewarmed) while the connection was being set up. */
  cache?: Promise<ChunkCache>;
  /** Loads the cache when the run first needs it (a Session's, kept across its runs); default: from cacheDir. */
  loadCache?: () => Promise<ChunkCache> | undefined;
  /** Test hook: how the run used its shortcuts ('speculation used', 'speculation discarded', 'manifest prewritten'). */
  onTrace?: (what: string, path?: string) => void;
  /** Stops the run (ExecuteOptions.signal): it rejects with E_ABORTED once what is in flight is done and recorded. */
  signal?: AbortSignal;
}



/**
 * push and pull: scan both sides, plan, then transfer with everything pipelined, deletes last and only after a
 * clean run, and the manifest rewritten to what is now true. Read top to bottom, this is the order things go on
 * the wire; what overlaps what is in the named steps below it.
 */
export async function runSync(o: EngineOptions): Promise<SyncResult> {
  const r = newRun(o);
  await checkRoots(r);
  // The lock request goes out first; the local scan, early rebuilds and remote listings start behind it.
  const early = startEarly(r);
  const lock = await early.lockHeld();
  r.mark('locked');
  try {
    const seen = await scanBoth(r, early, lock);
    const p = await decide(r, seen, early);
    if (o.dryRun) {
      reportDryRun(p, p.srcTree, p.dstTree, r.stats, r.emit);
      return r.finish();
    }
    if (o.signal?.aborted) throw abortedError();
    const partials = await clearLeftovers(r, seen, p, early);
    return r.finish(await executeAndRecord(r, seen, p, early, partials));
  } finally {
    await wrapUp(r, early);
  }
}

/** What the steps of one run share: its options, sides, counters, and what it learns for the next run. */
interface Run {
  o: EngineOptions;
  started: number;
  emit: (ev: SyncEvent) => void;
  trace: (what: string, path?: string) => void;
  mark: (phase: string) => void;
  src: Transport;
  dst: Transport;
  dstName: 'local' | 'remote';
  push: boolean;
  problems: Problem[];
  conflicts: Conflict[];
  stats: SyncStats;
  timings: Record<string, number>;
  localRules: IgnoreRules;
  remoteRules: IgnoreRules;
  /** The pair's files beside its chunk cache (null without a cache directory). */
  cacheFile: string | null;
  pairFile: string | null;
  journalFile: string | null;
  journal: Journal;
  getCache: () => Promise<ChunkCache>;
  /** Set once the run first needs the cache (a run that moves or hashes no big file never reads or writes it). */
  cacheP: Promise<ChunkCache> | undefined;
  localChunks: ReturnType<typeof localChunker>;
  /** Local files the ctime check found changed under an unchanged size and mtime, with their local content hash. */
  flagged: Map<string, string>;
  /** What the cache must keep when saved: local files still in the tree, and every content these trees refer to. */
  livePaths: (rel: string) => boolean;
  liveTrees: Tree[];
  /** The manifest the target has at the end (for the chunk cache); unset when this run wrote nothing. */
  finalTree: Tree | undefined;
  /** The links of replaced files, removed in the background (waited for at the end). */
  settling: Promise<void> | undefined;
  finish(deletesSkipped?: string): SyncResult;
}

function newRun(o: EngineOptions): Run {
  const started = Date.now();
  const timings: Record<string, number> = {};
  const push = o.direction === 'push';
  const cacheDir = o.cacheDir === undefined ? usableCacheDir() : o.cacheDir;
  const cacheLabel = { local: o.local.root, target: o.cacheTarget ?? o.remote.describe() };
  const cacheFile = cacheDir ? cacheFileFor(cacheDir, cacheLabel.local, cacheLabel.target) : null;
  const journalFile = cacheFile ? pairFileFor(cacheFile, '.journal') : null;
  const getCache = () => (r.cacheP ??= o.loadCache?.() ?? ChunkCache.load(cacheFile, cacheLabel));
  const r: Run = {
    o,
    started,
    emit: o.onEvent ?? (() => undefined),
    trace: o.onTrace ?? (() => undefined),
    mark: (phase) => (timings[phase] = Date.now() - started),
    src: push ? o.local : o.remote,
    dst: push ? o.remote : o.local,
    dstName: push ? 'remote' : 'local',
    push,
    problems: [],
    conflicts: [],
    stats: emptyStats(),
    timings,
    localRules: new IgnoreRules(o.filter),
    remoteRules: new IgnoreRules(o.filter),
    cacheFile,
    pairFile: cacheFile ? pairFileFor(cacheFile, '.pair.json') : null,
    journalFile,
    journal: new Journal(o.dryRun ? null : journalFile),
    cacheP: o.cache,
    getCache,
    localChunks: localChunker(o.local, getCache),
    flagged: new Map(),
    livePaths: () => true,
    liveTrees: [],
    finalTree: undefined,
    settling: undefined,
    finish(deletesSkipped) {
      const ok = r.stats.conflicts === 0 && r.problems.length === 0;
      return { direction: o.direction, dryRun: o.dryRun, ok, stats: r.stats, conflicts: r.conflicts, problems: r.problems, deletesSkipped, durationMs: Date.now() - started, timings };
    },
  };
  return r;
}

/** The local side of a push must exist, and the remote side of a pull; a pull makes its local root. */
async function checkRoots(r: Run): Promise<void> {
  const { o } = r;
  // A session's transports outlive a run: what they remember of either tree is from before it.
  await Promise.all([o.local.beginRun?.(), o.remote.beginRun?.()]);
  const srcRoot = await r.src.lstat('');
  if (!srcRoot || srcRoot.type !== 'dir') {
    if (r.push) throw new WsyncError('E_LOCAL_MISSING', `local directory ${r.src.describe()} does not exist`, { hint: 'check the first argument' });
    throw new WsyncError('E_TARGET', `remote directory ${r.src.describe()} does not exist`, { hint: "check the remote path (relative paths start at the login's home)" });
  }
  if (!o.dryRun && !r.push) await o.local.ensureRoot();
}

/** What starts before the lock is held: the lock request itself, the local scan, early rebuilds, remote listings. */
interface Early {
  locked: ReturnType<typeof startLocked>;
  lockHeld(): Promise<Lock | undefined>;
  /** Releases the lock once (the final manifest's rename may already have: a second unlink could remove the lock of a run that took over in between). */
  release: (() => Promise<void>) | undefined;
  released: Promise<void> | undefined;
  specs: Speculations | undefined;
  /** The staged rebuilds, started (waited for only when the prewarm got to them). */
  specsReady(): Promise<void>;
  localWalk: ReturnType<typeof walk>;
  /** Where the local scan's directories go: listed on the remote once a prefetcher is there, kept until then. */
  dirs: { prefetcher?: Prefetcher; early: string[] };
}

function startEarly(r: Run): Early {
  const { o } = r;
  r.mark('lockRequested');
  const locked = startLocked(o.remote, { op: o.direction, waitSeconds: o.lockWaitSeconds, breakLock: o.breakLock, session: o.session, dryRun: o.dryRun });
  const lockP = locked.lock;
  // Changed big files the cache knows start their rebuilds now (once the prewarm has cut them), to be adopted or
  // dropped once the plan is made.
  const specs = lockP && o.cache && r.push && o.remote.caps.copyData ? new Speculations() : undefined;
  let prewarmed = false;
  const specsStarted =
    specs && lockP && o.cache
      ? o.cache
          .then((c) => {
            prewarmed = true;
            return specs.start(o.local, o.remote, c, lockP, MAX_COPY_LENGTH);
          })
          .then(() => {
            for (const [rel] of specs.contents()) r.trace('speculation staged', rel);
          })
          .catch(() => undefined)
      : undefined;
  // Each local directory is also listed on the remote side as soon as the scan finds it (once the lock is held):
  // in a synced tree the two sides have the same directories, and waiting for the whole local scan or the manifest
  // before listing any cost a tenth of a second on a no-op push of 9,000 files.
  // The lock request goes out first; the local scan (synchronous, CPU-bound) runs while it travels.
  const dirs: Early['dirs'] = { early: [] };
  const localWalk = walk(o.local, { rules: r.localRules, concurrency: 16, onDir: (rel) => (dirs.prefetcher ? dirs.prefetcher.prefetch([rel]) : dirs.early.push(rel)) });
  localWalk.catch(() => undefined);
  const e: Early = {
    locked,
    release: undefined,
    released: undefined,
    specs,
    // Starting them takes a local lstat per big file; a prewarm still cutting a huge file is not waited for.
    specsReady: async () => {
      if (prewarmed) await specsStarted;
      specs?.stop();
    },
    localWalk,
    dirs,
    lockHeld: async () => {
      const lock = await lockP?.catch(async (err) => {
        await Promise.all([(await locked.tmp)?.abort(), specs?.discardAll()]);
        throw err;
      });
      if (lock) e.release = () => (e.released ??= lock.release());
      return lock;
    },
  };
  return e;
}

/** Both trees as this run sees them, and what the pair last agreed on. */
interface Seen {
  localWalk: Awaited<ReturnType<typeof walk>>;
  remoteWalk: Awaited<ReturnType<typeof walk>>;
  manifest: Manifest | null;
  localTree: Tree;
  remoteTree: Tree;
  /** The manifest (filtered by both sides' rules), with what the journal says an earlier cut run finished. */
  base: Tree;
  /** Journaled files touched locally since they were synced: compared by content. */
  touchedSince: Set<string>;
  /** Temps of killed runs' manifests in .wsync/ (undefined on a dry run). */
  stateTemps: Promise<string[] | undefined>;
  /** `.wsync/.gitignore` written where it was missing. */
  stateIgnored: Promise<void> | undefined;
}

/** The remote listing (only once the lock is held), the manifest behind the lock, the local scan; then the base. */
async function scanBoth(r: Run, early: Early, lock: Lock | undefined): Promise<Seen> {
  const { o } = r;
  // A listing taken before the lock could miss another run's last writes. Directories known from the local tree
  // and the manifest are listed at once instead of level by level.
  const prefetcher = new Prefetcher(o.remote);
  // Temp files in .wsync/ are manifests of runs that were killed (with the lock held, any but ours are dead).
  const stateList = o.dryRun ? undefined : o.remote.readdir(STATE_DIR).catch(() => null);
  const stateTemps = (stateList ?? Promise.resolve(undefined)).then((l) =>
    l === undefined ? undefined : (l ?? []).map((d) => `${STATE_DIR}/${d.name}`).filter((rel) => isTempName(baseName(rel)) && rel !== early.locked.tmpName),
  );
  stateTemps.catch(() => undefined);
  // `.wsync/` holds only ignored files for git: `git status` in a work tree there does not list it, and `git add -A`
  // does not commit the manifest.
  const stateIgnored = stateList?.then((l) => (l && !l.some((d) => d.name === '.gitignore') ? ignoreStateDir(o.remote) : undefined));
  stateIgnored?.catch(() => undefined);
  prefetcher.prefetch(early.dirs.early);
  early.dirs.prefetcher = prefetcher;
  const dirsOf = (t: Tree) => [...t].filter(([, e]) => e.type === 'dir').map(([p]) => p);
  const manifestP = early.locked.manifest(lock);
  manifestP.then((m) => {
    r.mark('manifestRead');
    if (m) prefetcher.prefetch(dirsOf(m.entries));
  }, () => undefined);
  early.localWalk.then((w) => {
    r.mark('localScanned');
    prefetcher.prefetch(dirsOf(w.tree));
  }, () => undefined);
  const [localWalk, remoteWalk, manifest] = await Promise.all([early.localWalk, walk(o.remote, { rules: r.remoteRules, concurrency: 512, prefetcher, knownLinks: () => manifestP.then((m) => m?.entries) }), manifestP]);
  r.mark('scanned');
  // FIFOs, sockets and devices are never synced: each is named (-v, --json) or counted (render.ts).
  for (const ev of skippedNotices(o.direction, localWalk, remoteWalk)) r.emit(ev);
  const localTree = filterTree(localWalk.tree, r.remoteRules);
  const remoteTree = filterTree(remoteWalk.tree, r.localRules);
  r.problems.push(...localWalk.problems, ...remoteWalk.problems);
  const excluded = (p: string, isDir: boolean) => r.localRules.isExcludedDeep(p, isDir) || r.remoteRules.isExcludedDeep(p, isDir);
  const base: Tree = new Map();
  for (const [p, e] of manifest?.entries ?? []) if (!excluded(p, e.type === 'dir')) base.set(p, e);
  // Files an earlier run from here finished but could not record (it was cut before its manifest): as written,
  // while the destination lists them so. A local file touched since it was sent or written is compared by
  // content (with the ctime suspects); on a push its version is the scan's (its ctime: no syscall per file).
  const localNow = r.push ? async (rel: string) => ctimeStamp(localTree.get(rel)) : (rel: string) => o.local.stamp(rel);
  const lines = Journal.read(r.journalFile);
  const journaled = await trustedEntries(lines, r.push ? remoteTree : localTree, manifest?.entries ?? new Map(), localNow);
  if (lines.size) r.trace(`journal: ${journaled.length} of ${lines.size} files taken as synced`);
  const touchedSince = new Set<string>();
  for (const { path: p, entry, changed } of journaled) {
    if (excluded(p, false)) continue;
    base.set(p, entry);
    if (changed) touchedSince.add(p);
  }
  r.stats.filesScanned = (r.push ? localTree : remoteTree).size;
  r.stats.ignored = (r.push ? localWalk : remoteWalk).ignored;
  return { localWalk, remoteWalk, manifest, localTree, remoteTree, base, touchedSince, stateTemps, stateIgnored };
}

/** The verify stage (where size and mtime cannot tell, the bytes decide), the plan, and its conflicts reported. */
async function decide(r: Run, seen: Seen, early: Early): Promise<Plan & { srcTree: Tree; dstTree: Tree }> {
  const { o } = r;
  let srcTree = r.push ? seen.localTree : seen.remoteTree;
  let dstTree = r.push ? seen.remoteTree : seen.localTree;
  await early.specsReady();
  // A file with a staged rebuild was cut in this version (its stamp is checked again before the rename): its
  // hash is known now, which lets the final manifest be written ahead.
  for (const [rel, c] of early.specs?.contents() ?? []) {
    const e = srcTree.get(rel);
    if (e?.type === 'file' && e.sha256 === undefined && e.size === c.size && e.mtime === c.mtime) withHash(srcTree, rel, c.sha256);
  }
  // Ctime suspects, touched files, adoptions (verify.ts).
  const pairState = readPairState(r.pairFile);
  const verified = await resolveByHash({
    direction: o.direction,
    local: o.local,
    src: r.src,
    dst: r.dst,
    srcTree,
    dstTree,
    base: seen.base,
    lastScan: pairState?.lastScanStart,
    stillFlagged: new Set([...(pairState?.flagged ?? []), ...seen.touchedSince]),
    checksum: o.checksum ?? false,
    localChunks: r.localChunks,
  });
  srcTree = verified.srcTree;
  dstTree = verified.dstTree;
  for (const [p, h] of verified.flagged) r.flagged.set(p, h);
  // Read back and found the same: journaled like a file this run sent, so that a run cut before its manifest does
  // not leave the next one to read them back again (over a link that keeps dropping, those reads ate every run).
  for (const [p, stamp] of verified.adopted) r.journal.add(p, dstTree.get(p)!, stamp);
  if (verified.readBack.files) r.trace(`read back ${verified.readBack.files} files (${verified.readBack.bytes} bytes) to compare; ${verified.adopted.size} the same`);
  r.mark('verified');
  const p = plan({ src: srcTree, dst: dstTree, base: seen.base, delete: o.delete, force: o.force, blocked: [...seen.localWalk.blocked, ...seen.remoteWalk.blocked], dstName: r.dstName });
  r.livePaths = (rel) => seen.localTree.has(rel);
  r.liveTrees.push(seen.base, p.next);
  // Old versions a replacement cut short kept aside (see the transports' replaceChecked), on either side.
  if (!o.dryRun) {
    const kept = await Promise.all([resolveAsides(o.remote, seen.remoteWalk.asides, seen.manifest?.entries), resolveAsides(o.local, seen.localWalk.asides, seen.manifest?.entries)]);
    p.conflicts.push(...kept.flat());
  }
  for (const c of p.conflicts) r.emit({ type: 'item', action: '!', path: c.path, kind: (srcTree.get(c.path) ?? dstTree.get(c.path))?.type ?? 'file', conflict: c });
  r.stats.conflicts = p.conflicts.length;
  r.conflicts = p.conflicts;
  if (p.tooManyDeletes) {
    throw new WsyncError('E_DELETE_LIMIT', `--delete would remove ${p.deleteCount} of the ${p.dstFileCount} files on the ${r.dstName} side`, {
      hint: 'that is more than half: check the source directory and filters, or add --force if this is intended',
    });
  }
  return Object.assign(p, { srcTree, dstTree });
}

/**
 * Big uploads go into partials named after the local version they send: one an interrupted run left for the same
 * version is gone on with (putWhole); any other is removed, with the temps killed runs left on either side.
 */
async function clearLeftovers(r: Run, seen: Seen, p: Plan, early: Early): Promise<Map<string, string>> {
  const { o } = r;
  const partialFor = new Map<string, string>();
  if (r.push && o.remote.caps.partialWrites) {
    await mapLimit(
      p.transfers.filter((op): op is Extract<Op, { kind: 'put' }> => op.kind === 'put' && op.entry.type === 'file' && op.entry.size >= RESUME_MIN_SIZE),
      16,
      async (op) => {
        const stamp = await o.local.stamp(op.path).catch(() => null);
        if (stamp) partialFor.set(op.path, partialNameFor(op.path, createHash('sha256').update(`${op.path}\0${stamp}\0${op.entry.size}`).digest('hex')));
      },
    );
  }
  const wanted = new Set(partialFor.values());
  const stalePartials = r.push ? seen.remoteWalk.partials.filter((x) => !wanted.has(x.path)).map((x) => x.path) : [];
  const ownTemps = early.specs?.temps() ?? new Set<string>();
  await Promise.all([
    ...[...seen.remoteWalk.temps.filter((t) => !ownTemps.has(t)), ...stalePartials, ...((await seen.stateTemps) ?? [])].map((t) => o.remote.remove(t, 'file').catch(() => undefined)),
    ...seen.localWalk.temps.map((t) => o.local.remove(t, 'file').catch(() => undefined)),
  ]);
  return partialFor;
}

/**
 * The execute stage, checkpointed every few seconds, then the manifest: renamed from its temp when it was written
 * ahead as predicted, else written now, with the lock's removal right behind it on the same channel. A run cut
 * short still records what it completed where the server can still take it. Resolves with the note of deletions
 * held back, if any.
 */
async function executeAndRecord(r: Run, seen: Seen, p: Plan & { srcTree: Tree; dstTree: Tree }, early: Early, partials: Map<string, string>): Promise<string | undefined> {
  const { o } = r;
  const manifestTmp = early.locked.tmp;
  const exec = startExecution({
    plan: p,
    from: r.src,
    to: r.dst,
    local: o.local,
    base: seen.base,
    dstTree: p.dstTree,
    problems: r.problems,
    conflicts: r.conflicts,
    stats: r.stats,
    force: o.force,
    concurrency: o.concurrency,
    journal: r.journal,
    getCache: r.getCache,
    localChunks: r.localChunks,
    speculations: early.specs,
    partials,
    partialSizes: new Map(seen.remoteWalk.partials.map((x) => [x.path, x.size])),
    emit: r.emit,
    trace: r.trace,
    afterTransfer: o.afterTransfer,
    onSent: (rel) => prewrite.sent(rel),
    mark: r.mark,
    signal: o.signal,
  });
  const { next, failed } = exec;
  const writer = { host: os.hostname(), wsync: WSYNC_VERSION, op: o.direction };
  const prewrite = prewriteManifest({ plan: p, base: seen.base, srcTree: p.srcTree, local: o.local, push: r.push, tmp: manifestTmp, writer });
  // Written every few seconds so that a run killed mid-way costs the next one only the last few seconds of work.
  const checkpoints = startCheckpoints(o.remote, () => exec.checkpoint(), writer);
  try {
    const deletesSkipped = await exec.run();
    await checkpoints.stop();
    // The links of replaced files go in the background (waited for when the run ends, not here: a round trip on
    // every run that replaced a file). A run cut in that round trip leaves one behind, which the next run finds
    // different from the manifest and keeps as a conflict copy: an extra file, never a lost one.
    r.settling = r.dst.settle?.().catch(() => undefined);
    await seen.stateIgnored?.catch(() => undefined);
    if (!r.push) await ignoreLocalStateDir(o.local);
    r.mark('deletes');
    if (!seen.manifest || !sameTree(next, seen.manifest.entries)) {
      const tmp = await manifestTmp;
      // The lock goes right behind the rename on the same channel: the server runs them in that order.
      const unlock = () => early.release?.().catch(() => undefined) ?? Promise.resolve();
      const predicted = await prewrite.result;
      // `next` is p.next changed only by the transfers' results and by failures: comparing those paths suffices.
      const asPredicted = predicted && failed.size === 0 && !deletesSkipped && p.transfers.every((op) => sameEntry(next.get(op.path), predicted.get(op.path)));
      if (tmp && predicted && asPredicted) {
        r.trace('manifest prewritten');
        await tmp.commit(null, MANIFEST_PATH, undefined, unlock);
      } else if (tmp && !prewrite.wrote) await tmp.commit(encodeManifest({ entries: next }, writer), MANIFEST_PATH, undefined, unlock);
      else await writeManifest(o.remote, { entries: next }, writer);
    }
    r.finalTree = next;
    r.journal.clear();
    r.mark('manifest');
    return deletesSkipped;
  } catch (err) {
    await checkpoints.stop();
    // A run cut short still records what it completed (when the server is still there to take it), unless the
    // lock is already given up (the final manifest's rename failed after the lock went behind it).
    if (!early.released) {
      await r.dst.settle?.().catch(() => undefined);
      const cp = exec.checkpoint();
      await writeManifest(o.remote, { entries: cp }, writer).then(
        () => {
          r.finalTree = cp;
          r.journal.clear();
        },
        () => (r.finalTree = new Map()),
      );
    }
    throw err;
  }
}

/**
 * However the run ended: the journal closed, the unused manifest temp and the lock removed (one round trip), and
 * what the next run starts from saved (the pair state, the chunk cache).
 */
async function wrapUp(r: Run, early: Early): Promise<void> {
  const { o } = r;
  r.journal.close();
  await r.settling;
  await Promise.all([(await early.locked.tmp)?.abort().catch(() => undefined), early.release?.().catch(() => undefined), early.specs?.discardAll()]);
  // Done with (a session's later runs must not keep every run's undo step).
  early.locked.done();
  // The manifest now describes what this run found: later local writes are the ones to check. A pull's own
  // writes are behind it (else the next run would hash everything it wrote); a push reads, so its start counts.
  // A file found that way and not brought in sync (a conflict, a failure, a run cut before its turn, a pull that
  // keeps a local edit: its content is not what the target now records) is carried over by name, so the next run
  // compares it again rather than take it for clean once the ctime moment has moved past it.
  const finalTree = r.finalTree;
  if (finalTree && !o.dryRun) {
    const carried = [...r.flagged].filter(([p, h]) => finalTree.get(p)?.sha256 !== h).map(([p]) => p);
    writePairState(r.pairFile, { lastScanStart: r.push ? r.started : Date.now(), ...(carried.length ? { flagged: carried } : {}) });
  }
  if (r.cacheP) {
    const cache = await r.cacheP;
    // What the target holds now, for the next run's early rebuilds (unknown after a failed manifest write: none).
    if (finalTree) cache.setRemote(finalTree);
    await cache.save(r.livePaths, contentKeys(r.liveTrees));
  }
}

/**
 * Each aside left by a replacement that never finished (the run died between linking the old file aside and
 * looking at it): the version wsync itself recorded there (same type, size and mtime as the manifest entry of the
 * name it was made for) holds nothing of anyone else's and is removed; anything else may be someone's edit, so it
 * is kept under a conflict name and reported.
 */
export async function resolveAsides(t: Transport, asides: Array<{ path: string; entry: Entry }>, recorded: Tree | undefined): Promise<Conflict[]> {
  const out: Conflict[] = [];
  await mapLimit(asides, 64, async ({ path, entry }) => {
    const { original, shown } = asideOf(baseName(path));
    const target = joinRel(parentOf(path), original ?? shown);
    const b = original !== undefined ? recorded?.get(target) : undefined;
    try {
      if (b && b.type === entry.type && b.mtime === entry.mtime && (b.type !== 'file' || b.size === entry.size)) {
        await t.remove(path, 'file');
        return;
      }
      const keep = conflictName(target, new Date(), t.kind === 'sftp' ? 'remote' : 'local');
      if (await t.lstat(keep)) return; // an earlier run's; left where it is
      await t.rename(path, keep);
      out.push({ path: target, kind: 'kept-aside', op: 'replace', side: t.kind === 'sftp' ? 'remote' : 'local', keptAt: keep });
    } catch {
      // Left for the next run.
    }
  });
  return out;
}

function* contentKeys(trees: Tree[]): Generator<string> {
  for (const t of trees) for (const e of t.values()) if (e.type === 'file' && e.sha256 && e.chunker) yield contentKey(e.sha256, e.chunker);
}

function sameTree(a: Tree, b: Tree): boolean {
  if (a.size !== b.size) return false;
  for (const [p, e] of a) if (!sameEntry(e, b.get(p))) return false;
  return true;
}

/** Equal as manifest entries (what encodeManifest records). */
function sameEntry(e: Entry | undefined, f: Entry | undefined): boolean {
  if (!e || !f) return e === f;
  if (f.type !== e.type || f.size !== e.size || f.mtime !== e.mtime || f.mode !== e.mode || f.target !== e.target || f.sha256 !== e.sha256) return false;
  return !(f.chunker || e.chunker) || !!(f.chunker && e.chunker && sameSpec(f.chunker, e.chunker));
}

export function reportDryRun(p: Plan, src: Tree, dst: Tree, stats: SyncStats, emit: (ev: SyncEvent) => void): void {
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

import { createHash } from 'node:crypto';
import os from 'node:os';
import type { Entry, Problem, Tree } from '../types.js';
import type { FileReader, Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';
import { IgnoreRules, type FilterOptions } from '../scan/ignore.js';
import { walk, filterTree, Prefetcher, skippedNotices } from '../scan/walk.js';
import { plan, sameContent, type Conflict, type Op, type Plan } from '../plan/plan.js';
import { encodeManifest, readManifest, writeManifest, MANIFEST_PATH, STATE_DIR } from '../manifest/manifest.js';
import { acquireLock } from '../manifest/lock.js';
import { onInterrupt } from '../util/interrupt.js';
import { mapLimit, Semaphore } from '../util/limit.js';
import { ancestors, asideOf, baseName, comparePaths, isTempName, joinRel, parentOf, partialNameFor, tempNameFor } from '../util/paths.js';
import { conflictName } from '../transport/rebuild.js';
import { type ChunkerSpec, sameSpec, specForUpdate } from '../chunking/params.js';
import { DELTA_MIN_FILE_SIZE, planDelta, validateDelta } from '../plan/delta.js';
import { ChunkCache, cacheFileFor, contentKey, defaultCacheDir, fromChunked, toChunkRefs, type ChunkList } from './chunkcache.js';
import { chunkReader, hashingStream, verifiedLiterals } from './delta.js';
import { Speculations } from './speculate.js';
import { readPairState, writePairState } from './pairstate.js';
import { CommitWindow } from './window.js';
import { Journal, trustedEntries } from './journal.js';

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
  /**
   * Compare by content (rsync's --checksum): files of the same size and mtime on both sides are hashed on both,
   * so an edit that kept both (same second, same size) is still sent. Reads every such file on both sides.
   */
  checksum?: boolean;
  onEvent?: (ev: SyncEvent) => void;
  /** Test hook: called after each completed transfer (e.g. to kill a run mid-way). */
  afterTransfer?: (path: string) => void;
  /**
   * Directory of the local chunk cache; undefined for the default (defaultCacheDir), null for none. Without a
   * cache a changed big file is uploaded whole.
   */
  cacheDir?: string | null;
  /** Names the target in the chunk cache's key; default: the remote transport's description. */
  cacheTarget?: string;
  /** A cache already loaded (and prewarmed) while the connection was being set up. */
  cache?: Promise<ChunkCache>;
  /** Test hook: how the run used its shortcuts ('speculation used', 'speculation discarded', 'manifest prewritten'). */
  onTrace?: (what: string, path?: string) => void;
}

/**
 * Copies longer than this are split: the server runs each copy-data synchronously and serves nothing else on that
 * channel meanwhile. 64 MiB is well under a second on any disk; each extra op costs ~90 bytes.
 */
const MAX_COPY_LENGTH = 64 * 2 ** 20;

/** Limits of the extra local read that lets the final manifest be written ahead (see runSync). */
const PREDICT_MAX_FILES = 2000;
/**
 * Filesystems stamp ctime from a coarse clock that may lag the one Date.now() reads by a tick (1–10 ms): a write
 * just after a run began must still count as after it. Not more: files written just before a run would otherwise
 * all be hashed again by the next one.
 */
const CTIME_SLACK_MS = 20;
/** Files up to this size are hashed for comparison many at a time; bigger ones a few at a time. */
const HASH_SMALL_MAX = 1 << 20;
/** Uploads of files this big go into partials that an interrupted run leaves for the next to go on from. */
const RESUME_MIN_SIZE = 4 << 20;
/** What of a partial's end is read back and compared before it is gone on with. */
const RESUME_CHECK_BYTES = 256 << 10;
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const PREDICT_MAX_BYTES = 32 * 2 ** 20;

async function hashFile(t: Transport, rel: string, size: number): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of t.openRead(rel, size)) h.update(chunk);
  return h.digest('hex');
}

/** A local file's version as a scan saw it, for the journal (a push): its ctime, which every write moves. */
function ctimeStamp(e: Entry | undefined): string | null {
  return e?.type === 'file' && e.ctime !== undefined ? `ctime ${e.ctime}` : null;
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
  const stats: SyncStats = { filesSent: 0, bytesSent: 0, filesDelta: 0, bytesReused: 0, dirsCreated: 0, symlinksSent: 0, attributesUpdated: 0, deleted: 0, conflicts: 0, failed: 0, filesScanned: 0 };

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
  if (!o.dryRun && o.direction === 'pull') await o.local.ensureRoot();
  // The lock request goes out first; the local scan (synchronous, CPU-bound) runs while it travels.
  mark('lockRequested');
  // Over SFTP the manifest is read right behind the lock's create, on the same channel: sftp-server handles a
  // channel's requests in the order they arrive, and both go through the channel's FIFO in the order issued here,
  // so when the first create takes the lock, the read saw what the lock protects, one round trip sooner. Otherwise
  // (the lock was waited for or broken; a local target, whose requests have no order) it is read again below.
  const pin = o.dryRun ? undefined : o.remote.pinned?.();
  const lockP = o.dryRun ? undefined : acquireLock(pin ?? o.remote, { op: o.direction, waitSeconds: o.lockWaitSeconds, breakLock: o.breakLock });
  lockP?.catch(() => undefined);
  const earlyManifestP = pin ? readManifest(pin) : undefined;
  earlyManifestP?.catch(() => undefined);
  // Changed big files the cache knows start their rebuilds now (once the prewarm has cut them), to be adopted or
  // dropped once the plan is made.
  const trace = o.onTrace ?? (() => undefined);
  const specs = lockP && o.cache && o.direction === 'push' && o.remote.caps.copyData ? new Speculations() : undefined;
  let prewarmed = false;
  const specsStarted =
    specs && lockP && o.cache
      ? o.cache
          .then((c) => {
            prewarmed = true;
            return specs.start(o.local, o.remote, c, lockP, MAX_COPY_LENGTH);
          })
          .then(() => {
            for (const [rel] of specs.contents()) trace('speculation staged', rel);
          })
          .catch(() => undefined)
      : undefined;
  // The new manifest's temp file is created as soon as the lock is held, while the listings are under way (on a
  // first run .wsync/ is not there yet and the end falls back to writeManifest): at the end it needs only its data
  // and the rename, one trip less. Not before the lock: the run holding it would take the temp for a leftover of a
  // killed run and remove it (with --wait, the manifest of one run then mixed with another's).
  const manifestTmpName = tempNameFor(MANIFEST_PATH);
  const manifestTmpP = pin && lockP
    ? lockP.then(() => pin.openExclusive(manifestTmpName)).then(
        (f) => {
          // Ctrl-C removes it with the lock; only a killed run leaves it behind, and the next run removes it.
          if (f) onInterrupt(async () => void (await f.abort()));
          return f;
        },
        () => null,
      )
    : undefined;
  // Each local directory is also listed on the remote side as soon as the scan finds it (once the lock is held):
  // in a synced tree the two sides have the same directories, and waiting for the whole local scan or the manifest
  // before listing any cost a tenth of a second on a no-op push of 9,000 files.
  const localDirs: string[] = [];
  let onLocalDir: (rel: string) => void = (rel) => localDirs.push(rel);
  const localWalkP = walk(o.local, { rules: localRules, concurrency: 16, onDir: (rel) => onLocalDir(rel) });
  localWalkP.catch(() => undefined);
  // Opened on first use: a run that moves or hashes no big file never reads or writes it.
  const cacheDir = o.cacheDir === undefined ? defaultCacheDir() : o.cacheDir;
  const cacheLabel = { local: o.local.root, target: o.cacheTarget ?? o.remote.describe() };
  const cacheFile = cacheDir ? cacheFileFor(cacheDir, cacheLabel.local, cacheLabel.target) : null;
  const pairFile = cacheFile ? cacheFile.replace(/\.json\.gz$/, '.pair.json') : null;
  const journalFile = cacheFile ? cacheFile.replace(/\.json\.gz$/, '.journal') : null;
  const journal = new Journal(o.dryRun ? null : journalFile);
  /** Local files the ctime check found changed under an unchanged size and mtime, with their local content hash. */
  const flagged = new Map<string, string>();
  let cacheP: Promise<ChunkCache> | undefined = o.cache;
  const getCache = () => (cacheP ??= ChunkCache.load(cacheFile, cacheLabel));
  // What the cache must keep when saved: local files still in the tree, and every content the manifest (old or
  // new) refers to, since a failed transfer leaves the old remote version in place.
  let livePaths: (rel: string) => boolean = () => true;
  // Chunking is CPU-bound on this one thread: more at once would only multiply read buffers (2 MiB per file).
  const chunking = new Semaphore(2);
  const liveTrees: Tree[] = [];
  /**
   * Chunk list of a local file: from the cache while its stamp is unchanged, else read once (and cached). A file
   * that changed while it was read yields no list: it would describe bytes that never existed together.
   */
  const localChunks = async (rel: string, spec: ChunkerSpec, reader?: FileReader): Promise<ChunkList> => {
    const r = reader ?? (await o.local.openReader(rel));
    try {
      const cache = await getCache();
      const hit = cache.fileContent(rel, r.stamp, spec);
      if (hit) return hit;
      const list = fromChunked(await chunking.with(() => chunkReader(r, spec)));
      if ((await o.local.stamp(rel)) !== r.stamp) throw new WsyncError('E_CHANGED_DURING_SYNC', `${o.local.describe(rel)} changed while it was being read`);
      cache.addFile(rel, r.stamp, list);
      return list;
    } finally {
      if (!reader) await r.close();
    }
  };
  /**
   * Hashes both copies of each path, many at once: over SFTP a small file's hash costs a round trip or two, so 16 at
   * a time made adopting a 9,000-file tree take a minute. Big files go a few at a time (their reads fill the link).
   */
  const hashBoth = async (items: Array<{ path: string; e: Entry; d: Entry }>): Promise<void> => {
    const one = async ({ path, e, d }: { path: string; e: Entry; d: Entry }) => {
      if (e.size === 0) {
        e.sha256 ??= EMPTY_SHA256;
        d.sha256 = EMPTY_SHA256;
        return;
      }
      try {
        const [hs, hd] = await Promise.all([e.sha256 ?? hashFile(src, path, e.size), hashFile(dst, path, e.size)]);
        e.sha256 = hs;
        d.sha256 = hd;
      } catch {
        // Unreadable or changing: leave the quick check's verdict; the transfer reports real failures.
      }
    };
    const small = items.filter((i) => i.e.size <= HASH_SMALL_MAX);
    const big = items.filter((i) => i.e.size > HASH_SMALL_MAX);
    await Promise.all([mapLimit(small, 256, one), mapLimit(big, 4, one)]);
  };
  const lock = await lockP?.catch(async (err) => {
    await Promise.all([(await manifestTmpP)?.abort(), specs?.discardAll()]);
    throw err;
  });
  // Once only: the final manifest's rename may already have released it, and a second unlink could remove the
  // lock of a run that took over in between.
  let released: Promise<void> | undefined;
  const release = lock ? () => (released ??= lock.release()) : undefined;
  let settling: Promise<void> | undefined;
  /** The manifest the target has at the end (for the chunk cache); unset when this run wrote nothing. */
  let finalTree: Tree | undefined;
  mark('locked');
  try {
    const remoteRules = new IgnoreRules(o.filter);
    // The remote listing comes only after the lock: a listing taken earlier could miss another run's last writes.
    // Directories known from the local tree and the manifest are listed at once instead of level by level.
    const prefetcher = new Prefetcher(o.remote);
    // Temp files in .wsync/ are manifests of runs that were killed (with the lock held, any but ours are dead).
    const stateList = o.dryRun ? undefined : o.remote.readdir(STATE_DIR).catch(() => null);
    const stateTemps = stateList?.then((l) => (l ?? []).map((d) => `${STATE_DIR}/${d.name}`).filter((rel) => isTempName(baseName(rel)) && rel !== manifestTmpName));
    // `.wsync/` holds only ignored files for git: `git status` in a work tree there does not list it, and `git add -A`
    // does not commit the manifest.
    const stateIgnored = stateList?.then((l) => (l && !l.some((d) => d.name === '.gitignore') ? ignoreStateDir(o.remote) : undefined));
    stateIgnored?.catch(() => undefined);
    prefetcher.prefetch(localDirs);
    onLocalDir = (rel) => prefetcher.prefetch([rel]);
    const dirsOf = (t: Tree) => [...t].filter(([, e]) => e.type === 'dir').map(([p]) => p);
    const manifestP = earlyManifestP && lock?.firstTry ? earlyManifestP : readManifest(o.remote);
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
    // FIFOs, sockets and devices are never synced: each is named (-v, --json) or counted (render.ts).
    for (const ev of skippedNotices(o.direction, localWalk, remoteWalk)) emit(ev);
    const localTree = filterTree(localWalk.tree, remoteRules);
    const remoteTree = filterTree(remoteWalk.tree, localRules);
    problems.push(...localWalk.problems, ...remoteWalk.problems);
    const base: Tree = new Map();
    for (const [p, e] of manifest?.entries ?? []) {
      if (!localRules.isExcludedDeep(p, e.type === 'dir') && !remoteRules.isExcludedDeep(p, e.type === 'dir')) base.set(p, e);
    }
    // Files an earlier run from here finished but could not record (it was cut before its manifest): as written,
    // while the destination lists them so. A local file touched since it was sent or written is compared by
    // content below (with the ctime suspects); on a push its version is the scan's (its ctime: no syscall per file).
    const localNow = o.direction === 'push' ? async (rel: string) => ctimeStamp(localTree.get(rel)) : (rel: string) => o.local.stamp(rel);
    const journaled = await trustedEntries(Journal.read(journalFile), o.direction === 'push' ? remoteTree : localTree, manifest?.entries ?? new Map(), localNow);
    const touchedSince = new Set<string>();
    for (const { path: p, entry, changed } of journaled) {
      if (localRules.isExcludedDeep(p, false) || remoteRules.isExcludedDeep(p, false)) continue;
      base.set(p, entry);
      if (changed) touchedSince.add(p);
    }
    const srcTree = o.direction === 'push' ? localTree : remoteTree;
    const dstTree = o.direction === 'push' ? remoteTree : localTree;
    stats.filesScanned = srcTree.size;
    stats.ignored = (o.direction === 'push' ? localWalk : remoteWalk).ignored;
    // Starting them takes a local lstat per big file; a prewarm still cutting a huge file is not waited for.
    if (prewarmed) await specsStarted;
    specs?.stop();
    // A file with a staged rebuild was cut in this version (its stamp is checked again before the rename): its
    // hash is known now, which lets the final manifest be written ahead (below).
    for (const [rel, c] of specs?.contents() ?? []) {
      const e = srcTree.get(rel);
      if (e?.type === 'file' && e.sha256 === undefined && e.size === c.size && e.mtime === c.mtime) e.sha256 = c.sha256;
    }

    // A local file whose size and mtime match the manifest but whose ctime says it was written after the last run
    // here began (an edit within one second at the same size, or one that put the mtime back) is compared by
    // content: pushed if it differs, a conflict on pull rather than overwritten. Both copies of such a path then
    // carry a hash, so the plan compares content. Without a previous run from this machine: the quick check alone
    // (and the files the journal found touched since they were sent or written, and those an earlier run left flagged).
    const pairState = readPairState(pairFile);
    const lastScan = pairState?.lastScanStart;
    const stillFlagged = new Set([...(pairState?.flagged ?? []), ...touchedSince]);
    flagged.clear();
    if (lastScan !== undefined || stillFlagged.size > 0) {
      const localSide = o.direction === 'push' ? srcTree : dstTree;
      const otherSide = o.direction === 'push' ? dstTree : srcTree;
      const suspects = [...localSide].filter(([p, e]) => {
        const b = base.get(p);
        const recent = (lastScan !== undefined && e.ctime !== undefined && e.ctime >= lastScan - CTIME_SLACK_MS) || stillFlagged.has(p);
        return e.type === 'file' && recent && b?.type === 'file' && !!b.sha256 && b.size === e.size && b.mtime === e.mtime && !e.sha256;
      });
      await mapLimit(suspects, 8, async ([p, e]) => {
        try {
          const h = await hashFile(o.local, p, e.size);
          e.sha256 = h;
          const b = base.get(p)!;
          if (h !== b.sha256) flagged.set(p, h);
          const other = otherSide.get(p);
          if (h !== b.sha256 && other?.type === 'file' && !other.sha256 && other.size === b.size && other.mtime === b.mtime) other.sha256 = b.sha256;
        } catch {
          // Unreadable now: nothing is planned for it, so it is carried over to be compared next time.
          flagged.set(p, '');
        }
      });
    }

    // A touched file (same size, new mtime) is hashed locally so the plan can fix its time instead of resending.
    if (o.direction === 'push') {
      const candidates = [...srcTree].filter(([p, e]) => {
        const b = base.get(p);
        const d = dstTree.get(p);
        return e.type === 'file' && b?.type === 'file' && b.sha256 && b.size === e.size && b.mtime !== e.mtime && d && d.type === 'file' && d.size === b.size && d.mtime === b.mtime;
      });
      await mapLimit(candidates, 8, async ([p, e]) => {
        try {
          // A big file is cut while it is hashed anyway: if its content did change, the delta needs that list.
          if (e.size >= DELTA_MIN_FILE_SIZE) e.sha256 = (await localChunks(p, specForUpdate(base.get(p)!.chunker, e.size))).sha256;
          else e.sha256 = await hashFile(o.local, p, e.size);
        } catch {
          // Unreadable now: the transfer will report it.
        }
      });
    }

    // Size and mtime agree but the destination changed since the last sync (or wsync never wrote it): two edits
    // in the same second, or a copy made by another tool. Only the bytes can tell, so compare hashes.
    // Likewise a destination file wsync did not write (or that changed since) with the source's size but another
    // mtime: a tree made by `git clone`, `cp` without -p, rsync without -t, or a rerun after an interruption. The same
    // bytes are adopted (the mtime and mode fixed, nothing sent); only different bytes are a conflict.
    const ambiguous = [...srcTree].filter(([path, e]) => {
      const d = dstTree.get(path);
      if (e.type !== 'file' || d?.type !== 'file' || d.size !== e.size) return false;
      const b = base.get(path);
      const clean = b !== undefined && sameContent(d, b);
      return d.mtime === e.mtime ? e.size > 0 && (o.checksum || !clean) : !clean;
    });
    await hashBoth(ambiguous.map(([path, e]) => ({ path, e, d: dstTree.get(path)! })));

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
    carryChunkers(p.next, base);
    livePaths = (rel) => localTree.has(rel);
    liveTrees.push(base, p.next);
    // Old versions a replacement cut short kept aside (see the transports' replaceChecked), on either side.
    if (!o.dryRun) {
      const kept = await Promise.all([resolveAsides(o.remote, remoteWalk.asides, manifest?.entries), resolveAsides(o.local, localWalk.asides, manifest?.entries)]);
      p.conflicts.push(...kept.flat());
    }
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

    // Big uploads go into partials named after the local version they send: one an interrupted run left for the
    // same version is gone on with (putWhole); any other is removed with the temps.
    const partialFor = new Map<string, string>();
    if (o.direction === 'push' && o.remote.caps.partialWrites) {
      await mapLimit(
        p.transfers.filter((op): op is Extract<Op, { kind: 'put' }> => op.kind === 'put' && op.entry.type === 'file' && op.entry.size >= RESUME_MIN_SIZE),
        16,
        async (op) => {
          const stamp = await o.local.stamp(op.path).catch(() => null);
          if (stamp) partialFor.set(op.path, partialNameFor(op.path, createHash('sha256').update(`${op.path}\0${stamp}\0${op.entry.size}`).digest('hex')));
        },
      );
    }
    const wantedPartials = new Set(partialFor.values());
    const stalePartials = o.direction === 'push' ? remoteWalk.partials.filter((x) => !wantedPartials.has(x.path)).map((x) => x.path) : [];
    const ownTemps = specs?.temps() ?? new Set<string>();
    await Promise.all([
      ...[...remoteWalk.temps.filter((t) => !ownTemps.has(t)), ...stalePartials, ...((await stateTemps) ?? [])].map((t) => o.remote.remove(t, 'file').catch(() => undefined)),
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
    // When every file to be sent has a known hash, the manifest the run will end with is known before the files
    // arrive: written into its temp meanwhile, it needs only the rename at the end (a round trip less), provided
    // everything went as planned. Files whose hash the plan does not know are hashed for this when they are few and
    // small (a local read beside the transfers; a file that changes in between only voids the prediction). It is
    // sent once the transfers' data has gone, before their answers are back: it is incompressible, and ahead of
    // text files it would switch SSH compression to stored for them.
    let tmpWritten = false;
    const unsent = new Set(p.transfers.map((op) => op.path));
    let allSent!: () => void;
    const allSentP = new Promise<void>((r) => (allSent = r));
    const sent = (rel: string) => {
      if (unsent.delete(rel) && unsent.size === 0) allSent();
    };
    if (unsent.size === 0) allSent();
    const prewritten = (async (): Promise<Tree | undefined> => {
      // Nothing to overlap without transfers (a no-op run of a big tree should not pay for copies and compares).
      if (p.transfers.length === 0) return undefined;
      const unknown = p.transfers.filter((op) => op.kind === 'put' && !op.entry.sha256).map((op) => op.path);
      const bytes = unknown.reduce((n, rel) => n + srcTree.get(rel)!.size, 0);
      if (unknown.length > 0 && (o.direction !== 'push' || unknown.length > PREDICT_MAX_FILES || bytes > PREDICT_MAX_BYTES)) return undefined;
      const hashes = new Map<string, string>();
      await mapLimit(unknown, 16, async (rel) => hashes.set(rel, await hashFile(o.local, rel, srcTree.get(rel)!.size)));
      const predicted = predictNext(p, base, hashes);
      if (!predicted) return undefined;
      const tmp = await manifestTmpP;
      if (!tmp) return undefined;
      await allSentP;
      tmpWritten = true;
      await tmp.write(encodeManifest({ entries: predicted }, writer));
      return predicted;
    })().catch(() => undefined);
    let checkpointing: Promise<void> | undefined;
    // Building and compressing a checkpoint is main-thread work (~0.8 s for 100,000 entries): spaced out to at
    // least 20 times its cost, so that it never takes more than ~5 % of the run.
    let nextCheckpoint = 0;
    const timer = setInterval(() => {
      if (checkpointing || Date.now() < nextCheckpoint) return;
      const t0 = Date.now();
      checkpointing = writeManifest(o.remote, { entries: checkpoint() }, writer)
        .catch(() => undefined)
        .finally(() => (checkpointing = undefined));
      nextCheckpoint = Date.now() + 20 * (Date.now() - t0);
    }, 3000);
    timer.unref();
    const fail = (op: Op, err: unknown) => {
      failed.add(op.path);
      if (err instanceof WsyncError && err.code === 'E_CONFLICT') {
        // Found during the transfer (a rebuild's check of the old file): the same outcome as a planned conflict.
        conflicts.push({ path: op.path, reason: errorMessage(err) });
        stats.conflicts++;
        emit({ type: 'item', action: '!', path: op.path, kind: 'file', reason: errorMessage(err) });
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

    const runOp = async (op: Op): Promise<void> => {
      if (blockedByFailure(op.path)) {
        failed.add(op.path);
        const b = base.get(op.path);
        if (b) next.set(op.path, b);
        else next.delete(op.path);
        sent(op.path);
        return;
      }
      try {
        await execOp(op);
      } catch (err) {
        if (fatal(err)) throw err;
        fail(op, err);
      } finally {
        pending.delete(op.path);
        sent(op.path);
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
      const held = remoteWalk.partials.find((x) => x.path === partialRel)?.size ?? 0;
      if (held <= 0 || held > size) return 0;
      const ranges: Array<[number, number]> = [[0, Math.min(held, 64 * 1024)]];
      if (held > 64 * 1024) ranges.push([Math.max(64 * 1024, held - RESUME_CHECK_BYTES), held]);
      const [there, here] = await Promise.all([o.remote.openReader(partialRel), o.local.openReader(rel)]).catch(() => [null, null] as const);
      try {
        if (!there || !here) return 0;
        for (const [a, b] of ranges) {
          for (let pos = a; pos < b; ) {
            const n = Math.min(b - pos, o.remote.caps.maxRead);
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

    const putWhole = async (op: Extract<Op, { kind: 'put' }>, backup: boolean): Promise<void> => {
      const e = op.entry;
      // Big files are cut while they stream, so that the next change to them can go as a delta.
      const spec = e.size >= DELTA_MIN_FILE_SIZE ? specForUpdate(base.get(op.path)?.chunker, e.size) : undefined;
      const stamp = spec && o.direction === 'push' ? await o.local.stamp(op.path).catch(() => null) : null;
      // The local version being sent (a push: as scanned), for the journal: a later change must not be taken for synced.
      const sentStamp = o.direction === 'push' ? ctimeStamp(e) : null;
      // An upload an interrupted run began for this same version goes on from where its partial ends.
      const partialRel = partialFor.get(op.path);
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
        sent(op.path);
      })();
      // What the plan saw at the destination must still be there right before the rename (unless --force moves it
      // to the trash): an edit made there meanwhile is a conflict, not something to overwrite.
      const d = dstTree.get(op.path);
      const expect = backup ? undefined : op.replace && d && d.type !== 'dir' ? { type: d.type, size: d.size, mtime: d.mtime } : op.replace ? undefined : null;
      // Under --force a change found there goes to the trash instead, and the file is replaced all the same.
      const changedTo = o.force && expect ? `${trash}/${op.path}` : undefined;
      if (from > 0) trace('resumed', op.path);
      await dst.writeFile(op.path, data, { mode: e.mode, mtime: e.mtime, size: e.size }, { backupTo: backup ? `${trash}/${op.path}` : undefined, expect, changedTo, partial });
      const { sha256, chunked } = hs.result();
      const done: Entry = chunked ? { ...e, sha256, chunker: chunked.spec } : { ...e, sha256 };
      next.set(op.path, done);
      journal.add(op.path, done, o.direction === 'push' ? sentStamp : await o.local.stamp(op.path).catch(() => null));
      if (chunked) {
        const cache = await getCache();
        const list = fromChunked(chunked);
        // The list is what the destination now holds; for a push it may also describe the local file.
        if (stamp && (await o.local.stamp(op.path).catch(() => null)) === stamp) cache.addFile(op.path, stamp, list);
        else cache.addContent(list);
      }
      stats.filesSent++;
      stats.bytesSent += e.size - from;
      filesDone++;
      progress();
      emit({ type: 'item', action: op.replace ? '*' : '+', path: op.path, kind: 'file', bytes: e.size });
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
      if (o.direction !== 'push' || !dst.caps.copyData || !op.replace || op.backup || e.size < DELTA_MIN_FILE_SIZE) return false;
      // The plan only replaces a clean file; the rebuild checks again on the server, at the moment it reads.
      if (b?.type !== 'file' || !b.sha256 || !b.chunker || d?.type !== 'file' || d.size !== b.size || d.mtime !== b.mtime) return false;
      const spec = specForUpdate(b.chunker, e.size);
      if (!sameSpec(spec, b.chunker)) return false;
      const early = specs?.take(op.path, b, d, e, spec);
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

    try {
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
      const window = new CommitWindow(o.remote.link);
      await mapLimit([...ordered, ...fileMetas, ...p.transfers], o.concurrency, async (op) => {
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
      mark('transfers');
      // Before directory modes (one may forbid removing the temp) and deletes (an rmdir would find it).
      await specs?.discardAll();
      await mapLimit(dirMetas, o.concurrency, runOp);
      progress(true);

      let deletesSkipped: string | undefined;
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
      clearInterval(timer);
      await checkpointing;
      // The links of replaced files go in the background (waited for when the run ends, not here: a round trip on
      // every run that replaced a file). A run cut in that round trip leaves one behind, which the next run finds
      // different from the manifest and keeps as a conflict copy: an extra file, never a lost one.
      settling = dst.settle?.().catch(() => undefined);
      await stateIgnored?.catch(() => undefined);
      // A pull that moved local files to .wsync/trash/ made the local .wsync/: hidden from git the same way.
      if (o.direction === 'pull' && (await o.local.lstat(STATE_DIR).catch(() => null)) && !(await o.local.lstat(`${STATE_DIR}/.gitignore`).catch(() => null))) {
        await ignoreStateDir(o.local).catch(() => undefined);
      }
      mark('deletes');
      if (!manifest || !sameTree(next, manifest.entries)) {
        const tmp = await manifestTmpP;
        // The lock goes right behind the rename on the same channel: the server runs them in that order.
        const unlock = () => release?.().catch(() => undefined) ?? Promise.resolve();
        const predicted = await prewritten;
        // `next` is p.next changed only by the transfers' results and by failures: comparing those paths suffices.
        const asPredicted = predicted && failed.size === 0 && !deletesSkipped && p.transfers.every((op) => sameEntry(next.get(op.path), predicted.get(op.path)));
        if (tmp && predicted && asPredicted) {
          trace('manifest prewritten');
          await tmp.commit(null, MANIFEST_PATH, undefined, unlock);
        } else if (tmp && !tmpWritten) await tmp.commit(encodeManifest({ entries: next }, writer), MANIFEST_PATH, undefined, unlock);
        else await writeManifest(o.remote, { entries: next }, writer);
      }
      finalTree = next;
      journal.clear();
      mark('manifest');
      return finish(deletesSkipped);
    } catch (err) {
      clearInterval(timer);
      await checkpointing;
      // A run cut short still records what it completed (when the server is still there to take it), unless the
      // lock is already given up (the final manifest's rename failed after the lock went behind it).
      if (!released) {
        await dst.settle?.().catch(() => undefined);
        const cp = checkpoint();
        await writeManifest(o.remote, { entries: cp }, writer).then(
          () => {
            finalTree = cp;
            journal.clear();
          },
          () => (finalTree = new Map()),
        );
      }
      throw err;
    }
  } finally {
    journal.close();
    await settling;
    // An unused temp (nothing changed, or an error) goes in the same round trip as the lock.
    await Promise.all([(await manifestTmpP)?.abort().catch(() => undefined), release?.().catch(() => undefined), specs?.discardAll()]);
    // The manifest now describes what this run found: later local writes are the ones to check. A pull's own
    // writes are behind it (else the next run would hash everything it wrote); a push reads, so its start counts.
    // A file found that way and not brought in sync (a conflict, a failure, a run cut before its turn, a pull that
    // keeps a local edit: its content is not what the target now records) is carried over by name, so the next run
    // compares it again rather than take it for clean once the ctime moment has moved past it.
    if (finalTree && !o.dryRun) {
      const carried = [...flagged].filter(([p, h]) => finalTree!.get(p)?.sha256 !== h).map(([p]) => p);
      writePairState(pairFile, { lastScanStart: o.direction === 'pull' ? Date.now() : started, ...(carried.length ? { flagged: carried } : {}) });
    }
    if (cacheP) {
      const cache = await cacheP;
      // What the target holds now, for the next run's early rebuilds (unknown after a failed manifest write: none).
      if (finalTree) cache.setRemote(finalTree);
      await cache.save(livePaths, contentKeys(liveTrees));
    }
  }

  function finish(deletesSkipped?: string): SyncResult {
    const ok = stats.conflicts === 0 && problems.length === 0;
    return { direction: o.direction, dryRun: o.dryRun, ok, stats, conflicts, problems, deletesSkipped, durationMs: Date.now() - started, timings };
  }
}

/**
 * Each aside left by a replacement that never finished (the run died between linking the old file aside and
 * looking at it): the version wsync itself recorded there (same type, size and mtime as the manifest entry of the
 * name it was made for) holds nothing of anyone else's and is removed; anything else may be someone's edit, so it
 * is kept under a conflict name and reported.
 */
async function resolveAsides(t: Transport, asides: Array<{ path: string; entry: Entry }>, recorded: Tree | undefined): Promise<Conflict[]> {
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
      out.push({ path: target, reason: `an interrupted run had kept a version of it that may hold someone's edit: now at ${keep}` });
    } catch {
      // Left for the next run.
    }
  });
  return out;
}

/** Writes `.wsync/.gitignore` ("*": everything in it, itself included, is ignored by git). */
async function ignoreStateDir(t: Transport): Promise<void> {
  await t.writeSmall(`${STATE_DIR}/.gitignore`, Buffer.from('# wsync state: not part of the tree\n*\n'));
}

/**
 * The plan builds next-manifest entries from listings, which know nothing of chunkers. Where the content is the
 * one the old entry describes, its chunker still applies (the chunk list is cached by content).
 */
function carryChunkers(next: Tree, base: Tree): void {
  for (const [p, n] of next) {
    const b = base.get(p);
    if (n.type !== 'file' || n.chunker || b?.type !== 'file' || !b.chunker || !b.sha256 || n.size !== b.size) continue;
    const same = n.sha256 ? n.sha256 === b.sha256 : n.mtime === b.mtime;
    if (same) next.set(p, { ...n, sha256: b.sha256, chunker: b.chunker });
  }
}

/**
 * The manifest a run will write if every operation succeeds, or undefined while some file to be sent has no known
 * hash (most do not: they are hashed as they are sent). Mirrors what putWhole and putDelta record.
 */
function predictNext(p: Plan, base: Tree, hashes: Map<string, string>): Tree | undefined {
  const t: Tree = new Map(p.next);
  for (const op of p.transfers) {
    if (op.kind !== 'put') continue;
    const sha256 = op.entry.sha256 ?? hashes.get(op.path);
    if (!sha256) return undefined;
    const e = { ...op.entry, sha256 };
    t.set(op.path, e.size >= DELTA_MIN_FILE_SIZE ? { ...e, chunker: specForUpdate(base.get(op.path)?.chunker, e.size) } : e);
  }
  return t;
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

/**
 * Moving a branch in a repository reached as plain files, the way git would: under `refs/heads/<b>.lock` with the
 * old value re-checked (compare-and-swap), with reflog lines, and when the branch is checked out, with the work
 * tree and index brought along (updateInstead) under `index.lock`. Used for the remote side of `git push` and the
 * local side of `git fetch --ff`.
 */
import { WsyncError } from '../errors.js';
import { configBool, reflogLine } from './refs.js';
import { FileRepo, type RefLock, type StagedObjects } from './filerepo.js';
import type { DirEntry } from '../transport/types.js';
import { baseName, isPartialName, isTempName } from '../util/paths.js';
import { LOCK_PATH } from '../manifest/lock.js';
import type { RefContent } from './refs.js';
import { IndexFormatError, parseIndex, serializeIndex, type IndexEntry } from './index-file.js';
import { ZERO_OID } from './objects.js';
import { commitTree, flattenTree, type FlatTree, type ObjectSource } from './tree.js';
import { applyWorktreeUpdate, indexAfter, listWorktree, planWorktreeUpdate, type StagedWorktree, type WorktreeListing } from './worktree.js';

export interface BranchUpdate {
  branch: string;
  /** The value the caller based its decision on; null when the branch must not exist yet. */
  oldOid: string | null;
  newOid: string;
  /** Objects of the new commit (and the old one, when it has them). */
  src: ObjectSource;
  /** Objects of the old commit when `src` may lack them (a forced push over commits only the remote has). */
  oldSrc?: ObjectSource;
  /** HEAD as already read (undefined: read it here). */
  head?: RefContent | null;
  /** Locks already taken by lockAndRead (they are released here in any case). */
  locked?: LockedRead;
  /** Work started before the remote's state was known, on a guess of the branch's old value. */
  speculation?: Speculation;
  /** The listing of the git dir's worktrees/, if already asked for. */
  worktrees?: Promise<DirEntry[] | null>;
  /**
   * Stages the objects the new commit needs. It runs alongside the locking and the work tree checks; the objects
   * are committed (made visible) only once the update is accepted, and withdrawn if it is refused.
   */
  upload?: () => Promise<StagedObjects>;
  identity: string;
  message: string;
  /** Shown with refusals: how to resolve them on that side. */
  hint?: string;
  /** Test hooks: run at the named point, with the locks held where the name says so. */
  hooks?: UpdateHooks;
  /** Records when a phase ends (result.timings). */
  mark?: (phase: string) => void;
  /** Remove git lock files older than STALE_LOCK_SECONDS (left by a crash) instead of failing on them. */
  breakLock?: boolean;
}

export interface Speculation {
  /** The old value the work assumed; it is used only if that is what the remote holds. */
  oldOid: string | null;
  trees: Promise<[FlatTree, FlatTree]>;
  listing: Promise<WorktreeListing>;
  staged: Promise<StagedWorktree | undefined>;
}

export interface UpdateHooks {
  /** After the pre-lock reads, before any lock is taken. */
  beforeLock?: () => Promise<void> | void;
  /** With the locks held, before the work tree is touched. */
  locked?: () => Promise<void> | void;
}

export interface BranchUpdateResult {
  /** Null when the branch is not checked out there (ref only). */
  worktree: { written: number; removed: number; copied: number } | null;
}

/** Linked worktrees keep their own HEAD and index: wsync updates only the main one, so a branch used there is refused. */
async function checkLinkedWorktrees(repo: FileRepo, ref: string, listing?: Promise<DirEntry[] | null>): Promise<void> {
  const list = await (listing ?? repo.t.readdir(repo.p('worktrees')));
  for (const w of list ?? []) {
    if (w.entry.type !== 'dir') continue;
    const head = await repo.t.readFile(repo.p(`worktrees/${w.name}/HEAD`));
    if (head && head.toString('utf8').trim() === `ref: ${ref}`) {
      throw new WsyncError('E_GIT_REJECTED', `branch ${ref.slice(11)} is checked out in the linked worktree ${w.name} at ${repo.describe()}`, {
        hint: 'wsync updates only the main work tree; switch that worktree to another branch',
      });
    }
  }
}

function parseIndexOrRefuse(repo: FileRepo, data: Buffer | null): IndexEntry[] | null {
  if (!data) return null;
  try {
    return parseIndex(data).entries;
  } catch (err) {
    if (err instanceof IndexFormatError) {
      throw new WsyncError('E_GIT_UNSUPPORTED', `${repo.describe('index')}: ${err.message}`, {
        hint: 'on that side run: git update-index --index-version 2 --no-split-index (and git sparse-checkout disable)',
      });
    }
    throw err;
  }
}

/** The locks for a branch update, and what was read after taking them. */
export interface LockedRead {
  ref: RefLock;
  index: RefLock | null;
  /** HEAD, the branch's value and the index, as they are under the locks. */
  head: RefContent | null;
  current: string | null;
  indexData: Buffer | null;
  indexMtime: number;
}

/**
 * Takes the branch's lock (and index.lock, as git commit takes them both: a git process there then fails cleanly),
 * then reads what they protect. Over a transport that keeps request order, the reads go out right behind the lock
 * requests: one round trip for both. If a lock is refused, the other is given back.
 */
export async function lockAndRead(repo: FileRepo, ref: string, withIndex: boolean, opts: { parents?: boolean; breakStale?: boolean } = {}): Promise<LockedRead> {
  const view = repo.t.pinned?.();
  const r = view ? new FileRepo(view, repo.layout) : repo;
  r.ledger = repo.ledger;
  const take = (f: string) => (opts.parents === false ? r.lockHere(f, opts) : r.lock(f, opts));
  const locks = (withIndex ? ['index', ref] : [ref]).map(take);
  for (const l of locks) l.catch(() => undefined);
  const readAll = () =>
    Promise.all([
      r.readHead(),
      r.readRef(ref),
      withIndex ? r.t.readFile(r.p('index')) : null,
      withIndex ? r.t.lstat(r.p('index')) : null,
    ]);
  // Reads sent behind the lock requests are under the locks; not when a stale lock may be broken and retaken.
  let reads = view && !opts.breakStale ? readAll() : undefined;
  reads?.catch(() => undefined);
  const got = await Promise.allSettled(locks);
  const failed = got.find((g) => g.status === 'rejected') as PromiseRejectedResult | undefined;
  if (failed) {
    await Promise.all(got.map((g) => (g.status === 'fulfilled' ? g.value.release() : undefined)));
    await reads?.catch(() => undefined);
    throw failed.reason;
  }
  const held = got.map((g) => (g as PromiseFulfilledResult<RefLock>).value);
  try {
    // A lock taken only after removing one a cut push left: what was read behind the first try is not under it.
    if (held.some((l) => l.retaken)) {
      await reads?.catch(() => undefined);
      reads = undefined;
    }
    reads ??= readAll();
    const [head, current, indexData, indexSt] = await reads;
    return { ref: held[held.length - 1], index: withIndex ? held[0] : null, head, current, indexData, indexMtime: indexSt?.mtime || Number.MAX_SAFE_INTEGER };
  } catch (err) {
    await Promise.all(held.map((l) => l.release()));
    throw err;
  }
}

/**
 * Round trips decide the time here, so the independent steps overlap: the upload, the locks and the reads
 * under them, and the listing of the work tree (from the trees, known locally) all run at once. The checks that
 * need the locks (the ref's value, the index) are made on what was read after taking them.
 */
export async function updateBranch(repo: FileRepo, u: BranchUpdate): Promise<BranchUpdateResult> {
  const ref = `refs/heads/${u.branch}`;
  const head = u.locked ? u.locked.head : u.head !== undefined ? u.head : await repo.readHead();
  const current = !repo.layout.bare && head?.symref === ref;
  // receive.denyCurrentBranch as git reads it, except that unset means updateInstead: that is what wsync sets up,
  // and it refuses anything a work tree update could lose.
  const deny = (repo.layout.config.get('receive.denycurrentbranch') ?? 'updateinstead').toLowerCase();
  const refused = current && (deny === 'refuse' || deny === 'true');
  // ignore/warn/false: git moves the ref and leaves the work tree as it is; so does wsync.
  const checkedOut = current && deny === 'updateinstead';
  if (!u.locked) await u.hooks?.beforeLock?.();
  const upload = u.upload?.() ?? Promise.resolve(undefined);
  const oldSrc = u.oldSrc ?? u.src;
  // A speculation made for another old value (or for a work tree that is not checked out) is dropped.
  const spec = checkedOut && u.speculation?.oldOid === u.oldOid ? u.speculation : undefined;
  const dropped = u.speculation && !spec ? u.speculation.staged.then((s) => s?.abort()) : undefined;
  const trees = checkedOut
    ? (spec?.trees ??
      Promise.all([
        u.oldOid ? commitTree(oldSrc, u.oldOid).then((t) => flattenTree(oldSrc, t)) : Promise.resolve<FlatTree>(new Map()),
        commitTree(u.src, u.newOid).then((t) => flattenTree(u.src, t)),
      ]))
    : undefined;
  const listing = spec?.listing ?? trees?.then(([o, n]) => listWorktree(repo.t, o, n));
  const staged = spec?.staged ?? Promise.resolve(undefined);
  const linked = checkLinkedWorktrees(repo, ref, u.worktrees);
  // Settled in any case before returning: nothing may still be writing when the caller closes the connection.
  const pending = [upload, trees, listing, linked, staged, dropped].filter(Boolean) as Promise<unknown>[];
  for (const p of pending) p.catch(() => undefined);
  let locked: LockedRead | undefined = u.locked;
  let accepted = false;
  let completed = false;
  try {
    // Inside the try: what was taken or staged ahead is given back on the way out.
    if (refused) {
      throw new WsyncError('E_GIT_REJECTED', `refusing to update the checked-out branch ${u.branch} at ${repo.describe()} (receive.denyCurrentBranch=${deny})`, {
        hint: 'let pushes update its work tree there: git config receive.denyCurrentBranch updateInstead',
      });
    }
    locked ??= await lockAndRead(repo, ref, checkedOut, { breakStale: u.breakLock });
    if (!checkedOut && locked.index) {
      await locked.index.release();
      locked.index = null;
    }
    await linked;
    if (locked.current !== u.oldOid) {
      throw new WsyncError('E_GIT_REJECTED', `${ref} at ${repo.describe()} moved while this ran (now ${locked.current ?? 'missing'}, expected ${u.oldOid ?? 'missing'}): stale info`, {
        hint: 'fetch, integrate the new commits, and try again',
      });
    }
    u.mark?.('locked');
    await u.hooks?.locked?.();
    let worktree: BranchUpdateResult['worktree'] = null;
    const commits: Promise<void>[] = [];
    // Visible once the update is accepted; the ref waits for them.
    let objectsIn: Promise<unknown>;
    if (checkedOut) {
      const [oldTree, newTree] = await trees!;
      u.mark?.('trees');
      const state = { index: parseIndexOrRefuse(repo, locked.indexData), indexMtime: locked.indexMtime };
      const lst = await listing!;
      u.mark?.('listed');
      const plan = await planWorktreeUpdate(repo.t, state, oldTree, newTree, { gitDirName: repo.gitDir, hint: u.hint, listing: lst });
      // Past the checks. The work tree is written while the objects still upload: only the index and the ref
      // refer to them. As in git's updateInstead, a failure after this point can leave the work tree ahead of
      // the index; `git status` there then shows it, and the next push refuses until it is resolved.
      accepted = true;
      u.mark?.('checked');
      const ahead = await staged.catch(() => undefined);
      const mtime = ahead?.mtime ?? Math.floor(Date.now() / 1000) - 1;
      const entries = await indexAfter(state, plan, u.src, mtime);
      objectsIn = upload.then((st) => st?.commit());
      const wt = { written: plan.writes.length, removed: plan.removes.filter((p) => !newTree.has(p)).length, copied: 0 };
      // A failed upload fails the push through objectsIn; here it only means no copies from the pack.
      const fromPack = { blobs: upload.then((st) => st?.stored).catch(() => undefined), committed: objectsIn, onCopied: () => wt.copied++ };
      const applied = applyWorktreeUpdate(repo.t, plan, u.src, mtime, ahead, fromPack).then(() => u.mark?.('worktree'));
      commits.push(sweepStaleTemps(repo, lst, ahead?.temps ?? new Set()));
      // The lock files get their content now and are renamed over index and ref once what they describe is there.
      commits.push(applied, objectsIn.then(() => undefined));
      // The index waits for the objects too: an index naming blobs that are not there (a failed upload) would
      // leave the repository refusing every later push ("staged changes").
      const indexIn = locked.index!.commit(serializeIndex(entries), Promise.all([applied, objectsIn]));
      commits.push(indexIn);
      worktree = wt;
      // The ref after the index, as git's updateInstead: a cut between them leaves a state the next push finishes.
      commits.push(locked.ref.commit(Buffer.from(`${u.newOid}\n`), Promise.all([applied, objectsIn, indexIn])));
    } else {
      accepted = true;
      objectsIn = upload.then((st) => st?.commit());
      commits.push(locked.ref.commit(Buffer.from(`${u.newOid}\n`), objectsIn));
    }
    if (configBool(repo.layout.config.get('core.logallrefupdates'), !repo.layout.bare)) {
      const line = reflogLine(u.oldOid ?? ZERO_OID, u.newOid, u.identity, u.message);
      commits.push(repo.appendReflog(ref, line));
      if (head?.symref === ref) commits.push(repo.appendReflog('HEAD', line));
    }
    const settled = await Promise.allSettled(commits);
    const failed = settled.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    completed = true;
    return { worktree };
  } finally {
    await Promise.allSettled(pending);
    // Refused: the staged objects and files go too, so the remote is left as it was.
    if (!accepted) await (await upload.catch(() => undefined))?.abort();
    if (!completed) await (await staged.catch(() => undefined))?.abort();
    if (locked) await Promise.all([locked.ref.release(), locked.index?.release()]);
  }
}

/**
 * A wsync temp file this old in a work tree was left by a run that died, even while a directory sync (`wsync push`,
 * which holds `.wsync/lock`) may be writing there: live ones are renamed within moments.
 */
const STALE_TEMP_SECONDS = 3600;

/**
 * Removes temp files (and big uploads' partials) a killed or cut wsync left in the work tree: git shows them as
 * untracked. Only under the locks this push holds, only wsync's own names, never this push's own (`own`). Any age:
 * another git push staging there cannot use its temps without these locks, and gives them up when it fails to take
 * them; but while a directory sync holds its lock there, only old ones. Best effort.
 */
async function sweepStaleTemps(repo: FileRepo, listing: WorktreeListing, own: ReadonlySet<string>): Promise<void> {
  const syncing = (await repo.t.lstat(LOCK_PATH).catch(() => null)) !== null;
  const cutoff = syncing ? Math.floor(Date.now() / 1000) - STALE_TEMP_SECONDS : Infinity;
  const stale = [...listing.entries].filter(([p, e]) => e.type === 'file' && (isTempName(baseName(p)) || isPartialName(baseName(p))) && !own.has(p) && e.mtime < cutoff).map(([p]) => p);
  await Promise.all(stale.map((p) => repo.t.remove(p, 'file').catch(() => undefined)));
}

/** Sets a ref that no work tree depends on (remote-tracking refs), under its lock, with a reflog line. */
export async function setRef(repo: FileRepo, ref: string, oid: string, identity: string, message: string): Promise<string | null> {
  const lock = await repo.lock(ref);
  try {
    repo.forget();
    const old = await repo.readRef(ref);
    if (old === oid) return old;
    await lock.commit(Buffer.from(`${oid}\n`));
    if (configBool(repo.layout.config.get('core.logallrefupdates'), !repo.layout.bare)) {
      await repo.appendReflog(ref, reflogLine(old ?? ZERO_OID, oid, identity, message));
    }
    return old;
  } finally {
    await lock.release();
  }
}

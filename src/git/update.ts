/**
 * Moving a branch in a repository reached as plain files, the way git would: under `refs/heads/<b>.lock` with the
 * old value re-checked (compare-and-swap), with reflog lines, and when the branch is checked out, with the work
 * tree and index brought along (updateInstead) under `index.lock`. Used for the remote side of `git push` and the
 * local side of `git fetch --ff`.
 */
import { WsyncError } from '../errors.js';
import { configBool, reflogLine } from './refs.js';
import { FileRepo, type RefLock } from './filerepo.js';
import { IndexFormatError, parseIndex, serializeIndex } from './index-file.js';
import { ZERO_OID } from './objects.js';
import { commitTree, flattenTree, type FlatTree, type ObjectSource } from './tree.js';
import { applyWorktreeUpdate, planWorktreeUpdate } from './worktree.js';

export interface BranchUpdate {
  branch: string;
  /** The value the caller based its decision on; null when the branch must not exist yet. */
  oldOid: string | null;
  newOid: string;
  /** Objects of the new commit (and the old one, when it has them). */
  src: ObjectSource;
  /** Objects of the old commit when `src` may lack them (a forced push over commits only the remote has). */
  oldSrc?: ObjectSource;
  identity: string;
  message: string;
  /** Shown with refusals: how to resolve them on that side. */
  hint?: string;
  /** Test hooks: run at the named point, with the locks held where the name says so. */
  hooks?: UpdateHooks;
}

export interface UpdateHooks {
  /** After the pre-lock reads, before any lock is taken. */
  beforeLock?: () => Promise<void> | void;
  /** With the locks held, before the work tree is touched. */
  locked?: () => Promise<void> | void;
}

export interface BranchUpdateResult {
  /** Null when the branch is not checked out there (ref only). */
  worktree: { written: number; removed: number } | null;
}

async function indexMtimeOf(repo: FileRepo): Promise<number> {
  const st = await repo.t.lstat(repo.p('index'));
  return st?.mtime ?? 0;
}

/** Linked worktrees keep their own HEAD and index: wsync updates only the main one, so a branch used there is refused. */
async function checkLinkedWorktrees(repo: FileRepo, ref: string): Promise<void> {
  const list = await repo.t.readdir(repo.p('worktrees'));
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

export async function updateBranch(repo: FileRepo, u: BranchUpdate): Promise<BranchUpdateResult> {
  const ref = `refs/heads/${u.branch}`;
  const head = await repo.readHead();
  const checkedOut = !repo.layout.bare && head?.symref === ref;
  await checkLinkedWorktrees(repo, ref);
  await u.hooks?.beforeLock?.();
  // index.lock first, as git commit takes them: a git process on the other side then fails cleanly, never half-way.
  const locks: RefLock[] = [];
  try {
    if (checkedOut) locks.push(await repo.lock('index'));
    const refLock = await repo.lock(ref);
    locks.push(refLock);
    repo.forget();
    const current = await repo.readRef(ref);
    if (current !== u.oldOid) {
      throw new WsyncError('E_GIT_REJECTED', `${ref} at ${repo.describe()} moved while this ran (now ${current ?? 'missing'}, expected ${u.oldOid ?? 'missing'}): stale info`, {
        hint: 'fetch, integrate the new commits, and try again',
      });
    }
    await u.hooks?.locked?.();
    let worktree: BranchUpdateResult['worktree'] = null;
    if (checkedOut) {
      const [indexData, indexMtime] = await Promise.all([repo.t.readFile(repo.p('index')), indexMtimeOf(repo)]);
      let index = null;
      if (indexData) {
        try {
          index = parseIndex(indexData).entries;
        } catch (err) {
          if (err instanceof IndexFormatError) {
            throw new WsyncError('E_GIT_UNSUPPORTED', `${repo.describe('index')}: ${err.message}`, {
              hint: 'on that side run: git update-index --index-version 2 --no-split-index (and git sparse-checkout disable)',
            });
          }
          throw err;
        }
      }
      const oldSrc = u.oldSrc ?? u.src;
      const [oldTree, newTree] = await Promise.all([
        u.oldOid ? commitTree(oldSrc, u.oldOid).then((t) => flattenTree(oldSrc, t)) : Promise.resolve<FlatTree>(new Map()),
        commitTree(u.src, u.newOid).then((t) => flattenTree(u.src, t)),
      ]);
      const state = { index, indexMtime: indexMtime || Number.MAX_SAFE_INTEGER };
      const plan = await planWorktreeUpdate(repo.t, state, oldTree, newTree, { gitDirName: repo.gitDir, hint: u.hint });
      const entries = await applyWorktreeUpdate(repo.t, state, plan, u.src);
      await refLock.commit(Buffer.from(`${u.newOid}\n`));
      await locks[0].commit(serializeIndex(entries));
      worktree = { written: plan.writes.length, removed: plan.removes.filter((p) => !newTree.has(p)).length };
    } else {
      await refLock.commit(Buffer.from(`${u.newOid}\n`));
    }
    if (configBool(repo.layout.config.get('core.logallrefupdates'), !repo.layout.bare)) {
      const line = reflogLine(u.oldOid ?? ZERO_OID, u.newOid, u.identity, u.message);
      await Promise.all([repo.appendReflog(ref, line), head?.symref === ref ? repo.appendReflog('HEAD', line) : undefined]);
    }
    return { worktree };
  } finally {
    await Promise.all(locks.map((l) => l.release()));
  }
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

/**
 * `wsync git fetch`: git's "dumb" walker over SFTP. Read the remote branch, walk back from its tip until reaching
 * objects the local repository has, copy only the missing ones (loose files, or ranged reads out of packs after a
 * remote `git gc`), verify every id, then set refs/remotes/<name>/<branch> and optionally fast-forward.
 */
import { WsyncError } from '../errors.js';
import { parseTarget, type Target } from '../target.js';
import { mapLimit } from '../util/limit.js';
import { FileRepo, type RepoObjects } from './filerepo.js';
import type { LocalRepo } from './local.js';
import { parseCommit, parseTag, parseTree, type GitObject } from './objects.js';
import { revList } from './objects-to-send.js';
import { PackWriter } from './pack.js';
import { defaultRemoteName, dial, resolveBranch, UNPACK_LIMIT, type GitConnectOptions } from './push.js';
import { MODE_GITLINK, treeMode } from './tree.js';
import { setRef, updateBranch } from './update.js';

export interface GitFetchOptions extends GitConnectOptions {
  repo?: string;
  /** Remote branch (default: the current local branch, else the remote's checked-out branch). */
  branch?: string;
  remoteName?: string;
  /** Also fast-forward the local branch (and its work tree when checked out) when that loses nothing. */
  ff?: boolean;
  /** Remove local git lock files older than a minute (left by a crash) instead of failing on them. */
  breakLock?: boolean;
  /** Called as each step ends, with its name (the keys of `timings`): what a progress line shows. */
  onPhase?: (done: string) => void;
}

export interface GitFetchResult {
  target: string;
  branch: string;
  trackingRef: string;
  oldOid: string | null;
  newOid: string;
  /** Commits this fetch brought into the local repository (reachable from the tip, not from the tracking ref or the local branch), newest first. */
  commits: Array<{ oid: string; subject: string }>;
  objects: number;
  /** What --ff did; 'not-requested' without it. */
  ff: 'not-requested' | 'up-to-date' | 'created' | 'fast-forward' | 'ahead' | 'diverged';
  worktree: { written: number; removed: number } | null;
  timings: Record<string, number>;
}

/** Objects read at once per history level; the transport bounds what each channel has in flight. */
const PARALLEL = 512;

export async function gitFetch(target: Target | string, o: GitFetchOptions = {}): Promise<GitFetchResult> {
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const mark = (k: string) => {
    timings[k] = Date.now() - t0;
    o.onPhase?.(k);
  };
  const spec = typeof target === 'string' ? parseTarget(target) : target;
  const { connecting } = await dial(spec, o);
  let local: LocalRepo, identity: string;
  try {
    const { LocalRepo } = await import('./local.js');
    local = await LocalRepo.open(o.repo ?? '.');
    identity = await local.identity();
  } catch (err) {
    void connecting.then((t) => t.close()).catch(() => undefined);
    throw err;
  }
  const t = await connecting;
  mark('connect');
  try {
    // One round of requests for the usual layout (a work tree with .git), made before knowing it is that: the
    // branch, the object listing and then every loose object this side lacks.
    const guess = new FileRepo(t, { gitDir: '.git', bare: false, config: new Map() });
    const guessedBranch = o.branch ?? (await local.currentBranch()) ?? undefined;
    const early = {
      tip: guessedBranch ? guess.readRef(`refs/heads/${guessedBranch}`) : undefined,
      objects: guess.objectReader().then(async (objs) => {
        await objs.prefetch(await missingLoose(local, objs));
        return objs;
      }),
    };
    early.tip?.catch(() => undefined);
    early.objects.catch(() => undefined);
    const repo = await FileRepo.open(t).catch(async (err) => {
      await (await early.objects.catch(() => undefined))?.close();
      throw err;
    });
    const speculated = repo?.gitDir === '.git';
    if (!speculated) await (await early.objects.catch(() => undefined))?.close();
    if (!repo) throw new WsyncError('E_GIT_REPO', `no git repository at ${t.describe()}`, { hint: 'push a branch there first: wsync git push <remote>' });
    let branch = o.branch;
    if (!branch) {
      const current = await local.currentBranch();
      const head = current ? null : await repo.readHead();
      branch = current ?? (head?.symref?.startsWith('refs/heads/') ? head.symref.slice(11) : undefined);
    }
    branch = await resolveBranch(local, branch);
    const tip = speculated && branch === guessedBranch && early.tip ? await early.tip : await repo.readRef(`refs/heads/${branch}`);
    if (!tip) {
      if (speculated) await (await early.objects.catch(() => undefined))?.close();
      throw new WsyncError('E_GIT_REPO', `no branch ${branch} at ${t.describe()}`);
    }
    const objects = speculated ? await early.objects : await repo.objectReader();
    let fetched: Map<string, GitObject>;
    try {
      if (!speculated) await objects.prefetch(await missingLoose(local, objects));
      mark('list');
      fetched = await walk(local, objects, tip);
    } finally {
      await objects.close();
    }
    mark('walk');
    await writeLocally(local, fetched);
    mark('write');

    const remoteName = o.remoteName ?? defaultRemoteName(spec);
    const trackingRef = `refs/remotes/${remoteName}/${branch}`;
    const before = await local.resolve(trackingRef);
    const localTip = await local.resolve(`refs/heads/${branch}`);
    const haves = [before, localTip].filter((x): x is string => !!x);
    // What this fetch brought: a new branch cut from history the local repository already holds lists only the
    // commits made on top (as `git log` after `git fetch` would show them to be new), not that whole history.
    const commits = (await revList(local, tip, haves))
      .filter((c) => fetched.has(c.oid))
      .reverse()
      .map((c) => ({ oid: c.oid, subject: parseCommit(c.body).message.split('\n')[0] }));
    await setRef(local.files, trackingRef, tip, identity, `fetch: ${t.describe()} ${branch}`);
    const result: GitFetchResult = {
      target: t.describe(),
      branch,
      trackingRef,
      oldOid: before,
      newOid: tip,
      commits,
      objects: fetched.size,
      ff: 'not-requested',
      worktree: null,
      timings,
    };
    if (o.ff) {
      if (localTip === tip) result.ff = 'up-to-date';
      else if (localTip && !(await local.isAncestor(localTip, tip))) result.ff = (await local.isAncestor(tip, localTip)) ? 'ahead' : 'diverged';
      else {
        const r = await updateBranch(local.files, {
          branch,
          oldOid: localTip,
          newOid: tip,
          src: local,
          identity,
          message: `merge ${trackingRef.slice(13)}: Fast-forward`,
          hint: 'commit or stash the local changes (or move the untracked files away), then fetch with --ff again',
          breakLock: o.breakLock,
        });
        result.worktree = r.worktree;
        result.ff = localTip ? 'fast-forward' : 'created';
      }
    }
    mark('done');
    return result;
  } finally {
    await t.close();
    await local.close();
  }
}

/**
 * Loose objects the local side lacks are nearly always the new work: they are read all at once rather than one
 * history step (one round trip) at a time.
 */
async function missingLoose(local: LocalRepo, objects: RepoObjects): Promise<string[]> {
  const wanted: string[] = [];
  for (const oid of objects.looseOids) if (!(await local.has(oid))) wanted.push(oid);
  return wanted;
}

/**
 * Everything reachable from `tip` that the local repository lacks, read a history level at a time. A commit or
 * tree the local side has is not entered: a repository that has an object has everything it reaches.
 */
async function walk(local: LocalRepo, remote: { read(oid: string): Promise<GitObject> }, tip: string): Promise<Map<string, GitObject>> {
  const out = new Map<string, GitObject>();
  const seen = new Set<string>();
  let wave = [tip];
  while (wave.length) {
    const next: string[] = [];
    await mapLimit(wave, PARALLEL, async (oid) => {
      if (seen.has(oid)) return;
      seen.add(oid);
      if (await local.has(oid)) return;
      const obj = await remote.read(oid);
      out.set(oid, obj);
      if (obj.type === 'commit') {
        const c = parseCommit(obj.body);
        next.push(c.tree, ...c.parents);
      } else if (obj.type === 'tree') {
        for (const e of parseTree(obj.body)) if (treeMode(e.mode) !== MODE_GITLINK) next.push(e.oid);
      } else if (obj.type === 'tag') {
        next.push(parseTag(obj.body).object);
      }
    });
    wave = next.filter((x) => !seen.has(x));
  }
  return out;
}

async function writeLocally(local: LocalRepo, objects: Map<string, GitObject>): Promise<void> {
  if (objects.size === 0) return;
  if (objects.size < UNPACK_LIMIT) {
    await local.files.writeLoose([...objects].map(([oid, o]) => ({ oid, type: o.type, body: o.body })));
  } else {
    const w = new PackWriter();
    for (const [oid, obj] of objects) w.add(oid, obj.type, obj.body);
    const { pack, idx, name } = w.finish();
    await local.files.writePack(name, pack, idx);
  }
  await local.forgetCache();
}

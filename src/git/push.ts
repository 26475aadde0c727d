/**
 * `wsync git push`: send the objects the remote lacks (judged from its refs as they are now), then move its branch
 * with compare-and-swap, bringing a checked-out work tree along the way git's updateInstead does.
 */
import { createHash } from 'node:crypto';
import type { SyncOptions } from '../api.js';
import { openTarget } from '../transport/open.js';
import { WsyncError } from '../errors.js';
import { formatTarget, parseTarget, type Target } from '../target.js';
import { LockLedger } from './lockledger.js';
import { FileRepo, type StagedObjects } from './filerepo.js';
import type { LocalRepo } from './local.js';
import { objectsToSend, revList, type CommitInfo, type ObjectToSend } from './objects-to-send.js';
import { PackWriter } from './pack.js';
import { isValidBranchName, parseRefFile, type RefContent } from './refs.js';
import { commitTree, flattenTree, MODE_EXEC, MODE_FILE, peelToCommit, type FlatTree } from './tree.js';
import { lockAndRead, setRef, updateBranch, type LockedRead, type Speculation, type UpdateHooks } from './update.js';
import { listWorktree, stageWorktree } from './worktree.js';
import type { Transport } from '../transport/types.js';

/** Below this many objects they go loose, as git's receive.unpackLimit does: no pack to index or repack. */
export const UNPACK_LIMIT = 100;

export type GitConnectOptions = Pick<
  SyncOptions,
  'sshConfig' | 'identity' | 'acceptNew' | 'interactive' | 'hostKeyPrompt' | 'authPrompt' | 'channels' | 'compress' | 'useSshBinary'
>;

export interface GitPushOptions extends GitConnectOptions {
  /** Local repository (default: the one containing the current directory). */
  repo?: string;
  /** Branch to push (default: the current one). */
  branch?: string;
  /** Allow a non-fast-forward update. */
  force?: boolean;
  /** Name for refs/remotes/<name>/ in the local repository (default: derived from the target). */
  remoteName?: string;
  /** Remove git lock files on the remote older than a minute (left by a crash) instead of failing on them. */
  breakLock?: boolean;
  /** Test hooks. */
  hooks?: UpdateHooks;
  /** Called as each step ends, with its name (the keys of `timings`): what a progress line shows. */
  onPhase?: (done: string) => void;
}

export interface GitPushResult {
  target: string;
  branch: string;
  oldOid: string | null;
  newOid: string;
  status: 'up-to-date' | 'created' | 'fast-forward' | 'forced';
  /** A repository was created at the target. */
  initialized: boolean;
  commits: number;
  objects: number;
  /** Bytes of object data written (pack + idx, or loose files). */
  bytes: number;
  packed: boolean;
  /** Work tree changes on the remote; null when the branch is not checked out there. */
  /** Files written and removed in the remote work tree; `copied`: of the written, built on the server from the pushed pack. */
  worktree: { written: number; removed: number; copied: number } | null;
  timings: Record<string, number>;
}

/** refs/remotes/<name>/: the host alias, or "local" for a directory target. */
export function defaultRemoteName(t: Target): string {
  if (t.kind === 'local') return 'local';
  const name = t.host.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[.-]+/, '').replace(/\.lock$/, '-lock');
  return name || 'remote';
}

export async function resolveBranch(local: LocalRepo, branch: string | undefined): Promise<string> {
  const b = branch ?? (await local.currentBranch());
  if (!b) throw new WsyncError('E_USAGE', 'HEAD is detached: name the branch to use', { hint: 'wsync git push <remote> <branch>' });
  const short = b.startsWith('refs/heads/') ? b.slice(11) : b;
  if (!isValidBranchName(short)) throw new WsyncError('E_USAGE', `${JSON.stringify(b)} is not a valid branch name`);
  return short;
}

/**
 * Starts connecting and resolves once the socket is being dialled (at once for a local target): the handshake's
 * round trips then overlap the caller's local work, loading isomorphic-git included.
 */
export async function dial(spec: Target, o: GitConnectOptions): Promise<{ connecting: Promise<Transport> }> {
  let dialing!: () => void;
  const dialed = new Promise<void>((resolve) => (dialing = resolve));
  // git traffic is a few MB: zlib level 6 (git's own) costs little CPU there and packs text a fifth tighter than 1.
  const connecting = openTarget(spec, { ...o, onDialing: dialing, compressReplies: true, compressLevel: 6 });
  connecting.catch(() => undefined).finally(dialing);
  await dialed;
  // Wrapped: an async function would otherwise wait for the whole connection.
  return { connecting };
}

class ObjectSink {
  private loose: ObjectToSend[] = [];
  private pack?: PackWriter;
  private finished?: { pack: Buffer; idx: Buffer; name: string };
  /** Path → blob of the files of the pushed tip, when they go first and whole (see storeTip). */
  private tip?: Map<string, string>;
  count = 0;

  /**
   * Into a remote that has nothing yet, the tip's files go first, whole, as zlib *stored* blocks: their bytes then
   * sit in the pack as they are, and the server builds the work tree from it with copy-data instead of receiving
   * every file a second time. Older versions become deltas against them where that is smaller (git's own order:
   * newest whole). On a compressed link the stored bytes cost what zlib'd ones would.
   */
  async storeTip(files: ReadonlyMap<string, string>, read: (oid: string) => Promise<Buffer>): Promise<void> {
    this.tip = new Map(files);
    this.pack ??= new PackWriter();
    for (const oid of new Set(files.values())) {
      this.count++;
      this.pack.addStored(oid, 'blob', await read(oid));
    }
  }

  add(o: ObjectToSend): void {
    if (this.pack?.storedRanges.has(o.oid)) return;
    this.count++;
    const alt = o.path !== undefined ? this.tip?.get(o.path) : undefined;
    if (this.pack) return this.pack.add(o.oid, o.type, o.body, o.deltaBase, alt);
    this.loose.push(o);
    if (this.loose.length >= UNPACK_LIMIT) {
      this.pack = new PackWriter();
      for (const l of this.loose) this.pack.add(l.oid, l.type, l.body, l.deltaBase);
      this.loose = [];
    }
  }
  /** Staged: nothing is visible to git on the remote until the push is accepted and commit() runs. */
  async upload(repo: FileRepo, existingDirs?: ReadonlySet<string>): Promise<StagedObjects & { packed: boolean }> {
    if (!this.pack) return { ...(await repo.stageLoose(this.loose, existingDirs)), packed: false };
    // Kept: a staging on a wrong guess of the layout is done again with the same bytes.
    this.finished ??= this.pack.finish();
    const { pack, idx, name } = this.finished;
    const stored = this.pack.storedRanges.size ? { pack: repo.p(`objects/pack/pack-${name}.pack`), ranges: this.pack.storedRanges } : undefined;
    return { ...(await repo.stagePack(name, pack, idx)), packed: true, stored };
  }
}

export async function gitPush(target: Target | string, o: GitPushOptions = {}): Promise<GitPushResult> {
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const mark = (k: string) => {
    timings[k] = Date.now() - t0;
    o.onPhase?.(k);
  };
  const spec = typeof target === 'string' ? parseTarget(target) : target;
  // Connecting takes many round trips; the local repository is read meanwhile.
  const { connecting } = await dial(spec, o);
  let local: LocalRepo, branch: string, newOid: string | null, identity: string;
  try {
    // isomorphic-git loads while the SSH handshake waits on the network.
    const { LocalRepo } = await import('./local.js');
    local = await LocalRepo.open(o.repo ?? '.');
    branch = await resolveBranch(local, o.branch);
    newOid = await local.resolve(`refs/heads/${branch}`);
    if (!newOid) throw new WsyncError('E_GIT_REPO', `no branch ${branch} in ${local.dir}`);
    identity = await local.identity();
  } catch (err) {
    void connecting.then((t) => t.close()).catch(() => undefined);
    throw err;
  }
  const ref = `refs/heads/${branch}`;
  const tracking = `refs/remotes/${o.remoteName ?? defaultRemoteName(spec)}/${branch}`;
  // While connecting, plan as if the remote branch were where this repository last saw it (its remote-tracking
  // ref); used only if that turns out to be true, or if there is no repository there yet and no such ref.
  const guessedOld = await local.resolve(tracking);
  const guessKnown = guessedOld ? await local.has(guessedOld) : false;
  const speculation = planObjects(local, newOid, guessKnown ? [guessedOld!] : []);
  const guessIsAncestor = guessKnown ? local.isAncestor(guessedOld!, newOid) : Promise.resolve(false);
  speculation.catch(() => undefined);
  guessIsAncestor.catch(() => undefined);
  const t = await connecting.catch(async (err) => {
    await Promise.allSettled([speculation, guessIsAncestor]);
    await local.close();
    throw err;
  });
  mark('connect');
  try {
    // One round of requests for the usual layout (a work tree with .git), made before knowing it is that: where
    // the transport keeps request order, the locks are taken and what they protect read in that same round.
    const soft = <T>(p: Promise<T>) => p.catch(() => null);
    const guess = new FileRepo(t, { gitDir: '.git', bare: false, config: new Map() });
    // The locks taken there are written down here, so that a push cut short does not lock the next one out.
    const ledger = LockLedger.for(local.gitdir, createHash('sha256').update(t.describe()).digest('hex').slice(0, 16));
    guess.ledger = ledger;
    if (t.pinned) await o.hooks?.beforeLock?.();
    const early = t.pinned ? lockAndRead(guess, ref, true, { parents: false }) : undefined;
    early?.catch(() => undefined);
    // Meanwhile, on the same guess as the plan: the objects and the changed work tree files go up under temp
    // names, and the work tree is listed. All of it is withdrawn if the guess is wrong or the push is refused.
    const ahead = early && guessedOld !== newOid ? startAhead(t, guess, local, speculation, guessedOld, newOid) : undefined;
    let objectsTaken = false;
    let worktreeTaken = false;
    const linked = early ? soft(t.readdir('.git/worktrees')) : undefined;
    const [found, headData, packedData, looseData, objectDirs] = await Promise.all([
      FileRepo.open(t),
      early ? null : soft(t.readFile(`.git/HEAD`)),
      soft(t.readFile(`.git/packed-refs`)),
      early ? null : soft(t.readFile(`.git/${ref}`)),
      soft(t.readdir(`.git/objects`)),
    ]).catch(async (err) => {
      // E.g. a repository format we refuse: give back the locks taken on the guess, and what went ahead.
      const h = await early?.catch(() => undefined);
      if (h) await Promise.all([h.ref.release(), h.index?.release()]);
      await withdraw(ahead);
      throw err;
    });
    let locked: LockedRead | undefined;
    const held = await early?.catch(async (err) => {
      // A lock held by someone else is an answer; a missing directory only means the guess was wrong.
      if (found?.gitDir === '.git' && err instanceof WsyncError && err.code === 'E_LOCKED' && !o.breakLock) {
        await withdraw(ahead);
        throw err;
      }
      return undefined;
    });
    let repo: FileRepo;
    let head: RefContent | null;
    let oldOid: string | null;
    let existingDirs: Set<string>;
    const initialized = !found;
    if (held && found?.gitDir !== '.git') await Promise.all([held.ref.release(), held.index?.release()]);
    else locked = held;
    try {
      if (found) found.ledger = ledger;
      if (!found) {
        repo = await FileRepo.init(t, branch);
        repo.ledger = ledger;
        head = { symref: ref };
        oldOid = null;
        existingDirs = new Set();
      } else {
        repo = found;
        const speculated = repo.gitDir === '.git';
        if (speculated) repo.prime({ packedRefs: packedData });
        if (locked) {
          head = locked.head;
          oldOid = locked.current;
        } else {
          head = speculated && headData ? parseRefFile(headData) : await repo.readHead();
          const loose = speculated && looseData ? parseRefFile(looseData) : null;
          oldOid = loose?.oid ?? (await repo.readRef(ref));
        }
        const dirs = speculated ? objectDirs : await t.readdir(repo.p('objects'));
        existingDirs = new Set((dirs ?? []).filter((d) => d.entry.type === 'dir').map((d) => d.name));
      }
    } catch (err) {
      if (locked) await Promise.all([locked.ref.release(), locked.index?.release()]);
      await withdraw(ahead);
      throw err;
    }
    mark('refs');
    const result: GitPushResult = {
      target: t.describe(),
      branch,
      oldOid,
      newOid,
      status: 'up-to-date',
      initialized,
      commits: 0,
      objects: 0,
      bytes: 0,
      packed: false,
      worktree: null,
      timings,
    };
    // From here the locks (if taken early) are updateBranch's to release, or released here on the way out.
    let handedOver = false;
    try {
      if (oldOid === newOid) return result;

      const oldKnown = oldOid ? await local.has(oldOid) : false;
      const isAncestor = (a: string) => (a === guessedOld ? guessIsAncestor : local.isAncestor(a, newOid));
      if (oldOid && !o.force) {
        if (!oldKnown) {
          throw new WsyncError('E_GIT_REJECTED', `${ref} at ${t.describe()} has commits this repository does not have (fetch first)`, {
            hint: `wsync git fetch ${formatTarget(spec)} ${branch}, integrate them, then push again (or --force to drop them)`,
          });
        }
        if (!(await isAncestor(oldOid))) {
          throw new WsyncError('E_GIT_REJECTED', `${ref} at ${t.describe()} is not an ancestor of the local ${branch} (non-fast-forward)`, {
            hint: 'fetch and integrate the remote commits, or use --force to replace them',
          });
        }
      }
      result.status = !oldOid ? 'created' : o.force && !(oldKnown && (await isAncestor(oldOid))) ? 'forced' : 'fast-forward';

      // The speculative plan sends everything not reachable from the guess: right whenever the guess is the
      // remote's value, or an empty remote (a superset of what other remote refs would allow, never less).
      // Without a guess, the plan still holds when the remote has nothing this repository knows (an empty one).
      const haves = guessedOld || initialized ? undefined : await remoteHaves(repo, local, oldKnown ? oldOid : null);
      const reuse = guessedOld ? guessedOld === oldOid : initialized || haves!.length === 0;
      const { commits, sink } = reuse ? await speculation : await planObjects(local, newOid, haves ?? (await remoteHaves(repo, local, oldKnown ? oldOid : null)));
      Object.assign(result, { commits: commits.length, objects: sink.count });
      mark('plan');
      const staged = reuse && repo.gitDir === '.git' ? ahead?.objects : undefined;

      const oldSrc = oldOid && !oldKnown ? await repo.objectReader() : undefined;
      try {
        // updateBranch releases the locks and withdraws what it was given, whatever happens.
        handedOver = true;
        objectsTaken = !!staged;
        worktreeTaken = !!ahead;
        const r = await updateBranch(repo, {
          branch,
          oldOid,
          newOid,
          src: local,
          oldSrc,
          head,
          locked,
          speculation: ahead?.worktree,
          worktrees: repo.gitDir === '.git' ? linked : undefined,
          upload: async () => {
            // Staged ahead, unless that failed (no repository there yet): then now, into the one just made.
            const up = staged ? await staged.catch(() => sink.upload(repo, existingDirs)) : await sink.upload(repo, existingDirs);
            Object.assign(result, { bytes: up.bytes, packed: up.packed });
            mark('objects');
            return up;
          },
          identity,
          message: 'push',
          hint: 'commit, stash or discard the changes on the remote (or move the untracked files away), then push again',
          hooks: o.hooks,
          mark,
          breakLock: o.breakLock,
        });
        result.worktree = r.worktree;
      } finally {
        await oldSrc?.close();
      }
      mark('update');
    } finally {
      if (!handedOver && locked) await Promise.all([locked.ref.release(), locked.index?.release()]);
      // Work done ahead that nobody took over is withdrawn.
      if (ahead && !objectsTaken) await (await ahead.objects.catch(() => undefined))?.abort();
      if (ahead && !worktreeTaken) await (await ahead.worktree.staged.catch(() => undefined))?.abort();
    }
    await setRef(local.files, tracking, newOid, identity, 'update by push');
    mark('done');
    return result;
  } finally {
    await t.close();
    await Promise.allSettled([speculation, guessIsAncestor]);
    await local.close();
  }
}

interface Ahead {
  objects: Promise<StagedObjects & { packed: boolean }>;
  worktree: Speculation;
}

/** Starts, on the guessed old value, what does not depend on the remote's answers (see gitPush). */
function startAhead(t: Transport, guess: FileRepo, local: LocalRepo, plan: Promise<{ sink: ObjectSink }>, guessedOld: string | null, newOid: string): Ahead {
  const objects = plan.then(({ sink }) => sink.upload(guess));
  const trees = Promise.all([
    guessedOld ? commitTree(local, guessedOld).then((tr) => flattenTree(local, tr)) : Promise.resolve<FlatTree>(new Map()),
    commitTree(local, newOid).then((tr) => flattenTree(local, tr)),
  ]);
  const listing = trees.then(([o, n]) => listWorktree(t, o, n));
  const mtime = Math.floor(Date.now() / 1000) - 1;
  // Only over an existing work tree: an initial push's files are written once the repository exists.
  const staged = guessedOld ? trees.then(([o, n]) => stageWorktree(t, o, n, local, mtime)).catch(() => undefined) : Promise.resolve(undefined);
  for (const p of [objects, trees, listing, staged]) p.catch(() => undefined);
  return { objects, worktree: { oldOid: guessedOld, trees, listing, staged } };
}

async function withdraw(ahead: Ahead | undefined): Promise<void> {
  if (!ahead) return;
  await Promise.all([ahead.objects.then((s) => s.abort()).catch(() => undefined), ahead.worktree.staged.then((s) => s?.abort()).catch(() => undefined)]);
}

async function planObjects(local: LocalRepo, tip: string, haves: string[]): Promise<{ commits: CommitInfo[]; sink: ObjectSink }> {
  const commits = await revList(local, tip, haves);
  const sink = new ObjectSink();
  // Nothing there yet: every file of the tip is new, and a work tree there would be built from the pack.
  if (haves.length === 0 && commits.length > 0) {
    const files = new Map<string, string>();
    for (const [path, e] of await flattenTree(local, await commitTree(local, tip))) if (e.mode === MODE_FILE || e.mode === MODE_EXEC) files.set(path, e.oid);
    if (files.size >= UNPACK_LIMIT) await sink.storeTip(files, async (oid) => (await local.read(oid)).body);
  }
  await objectsToSend(local, commits, (obj) => sink.add(obj));
  return { commits, sink };
}

/**
 * Commits the remote has, as far as the local repository knows them: the branch's old value when known here,
 * else every remote ref (one more listing). Refs are read as they are now on the remote, never from local
 * remote-tracking refs, which may be stale.
 */
async function remoteHaves(repo: FileRepo, local: LocalRepo, knownOld: string | null): Promise<string[]> {
  const haves = new Set<string>(knownOld ? [knownOld] : []);
  const { refs, peeled } = knownOld ? await repo.listPackedRefs() : await repo.listRefs();
  for (const [name, oid] of refs) {
    const v = peeled.get(name) ?? oid;
    if (await local.has(v)) haves.add(await peelToCommit(local, v).catch(() => v));
  }
  return [...haves];
}

/**
 * git's `receive.denyCurrentBranch=updateInstead` done from the outside: check that the work tree and index match
 * the old commit (push_to_deploy's refresh, diff-files, diff-index), check that no untracked file is in the way
 * (read-tree -u -m), then write only the paths that differ between the old and new trees, and build the new index.
 * Used on the remote work tree for `git push`, and on the local one for `git fetch --ff`.
 */
import path from 'node:path';
import { WsyncError } from '../errors.js';
import type { StagedFile, Transport } from '../transport/types.js';
import type { Entry } from '../types.js';
import { mapLimit } from '../util/limit.js';
import { ancestors, baseName, joinRel, parentOf, tempNameFor } from '../util/paths.js';
import { hashObject } from './objects.js';
import type { IndexEntry } from './index-file.js';
import type { StoredBlobs } from './filerepo.js';
import { MODE_EXEC, MODE_FILE, MODE_GITLINK, MODE_LINK, type FlatEntry, type FlatTree, type ObjectSource } from './tree.js';

/** Round trips dominate over SFTP; the transport bounds what each channel has in flight. */
const PARALLEL = 512;
/** Paths listed in a refusal; the rest are counted. */
const SHOW = 20;

export interface WorktreeState {
  /** Index entries as read (null: no index file). */
  index: IndexEntry[] | null;
  /** Whole-second mtime of the index file: entries at or after it are racily clean and get hashed. */
  indexMtime: number;
}

export interface WorktreePlan {
  /** Paths to remove (files, symlinks, gitlink dirs). */
  removes: string[];
  /** Paths to write or re-mode, with their new entry. */
  writes: Array<{ path: string; entry: FlatEntry; modeOnly: boolean }>;
  /** What every index entry was found to be on disk (for entries kept as they are). */
  listing: Map<string, Entry>;
}

function refuse(reason: string, paths: string[], hint?: string): never {
  const shown = paths.slice(0, SHOW).map((p) => `\n  ${p}`).join('');
  const more = paths.length > SHOW ? `\n  … and ${paths.length - SHOW} more` : '';
  throw new WsyncError('E_GIT_REJECTED', `${reason}${shown}${more}`, { hint });
}

export interface WorktreeListing {
  /** Every child of the listed directories, by path. */
  entries: Map<string, Entry>;
  /** Directories that exist and were listed. */
  listed: Set<string>;
}

/**
 * Lists, in parallel, every directory that holds a path of either tree: that is what the checks need (tracked
 * files, and whatever sits where the new tree puts something). The trees are known before the index is read.
 */
export async function listWorktree(t: Transport, oldTree: FlatTree, newTree: FlatTree): Promise<WorktreeListing> {
  const dirs = new Set<string>(['']);
  const add = (p: string) => {
    for (const a of ancestors(p)) dirs.add(a);
  };
  for (const p of oldTree.keys()) add(p);
  for (const [p, e] of newTree) if (oldTree.get(p)?.oid !== e.oid || oldTree.get(p)?.mode !== e.mode) add(p);
  const entries = new Map<string, Entry>();
  const listed = new Set<string>();
  // All at once: each listing is a round trip or two, and the transport bounds what is in flight per channel.
  await mapLimit([...dirs], 1024, async (d) => {
    const list = await t.readdir(d);
    if (!list) return;
    listed.add(d);
    for (const { name, entry } of list) entries.set(d ? `${d}/${name}` : name, entry);
  });
  // A server that reads a link's target back joined onto its directory (ProFTPD; Entry.linkDir): the target git
  // has for the path, where it is one of what that answer can have been written as (the blob's hash says).
  for (const [p, e] of entries) {
    if (e.type !== 'symlink' || e.linkDir === undefined) continue;
    const known = oldTree.get(p) ?? newTree.get(p);
    const asRead = e.target ?? '';
    const rel = path.posix.relative(e.linkDir, asRead);
    // The answer is normalised: `sub/` and `./sub` read back as `/…/sub`.
    const candidates = [asRead, `${asRead}/`, rel, `${rel}/`, `./${rel}`, `./${rel}/`];
    const written = known && candidates.find((c) => c !== '' && hashObject('blob', Buffer.from(c)) === known.oid);
    entries.set(p, { type: 'symlink', size: e.size, mtime: e.mtime, mode: e.mode, target: written ?? asRead });
  }
  return { entries, listed };
}

/** diff-index --cached: how the index differs from `tree` (empty when it is that tree). */
function stagedAgainst(index: IndexEntry[], byPath: Map<string, IndexEntry>, tree: FlatTree): string[] {
  const staged: string[] = [];
  for (const e of index) {
    const t0 = tree.get(e.path);
    if (!t0) staged.push(`new file: ${e.path}`);
    else if (t0.oid !== e.oid || t0.mode !== e.mode || e.intentToAdd) staged.push(`modified: ${e.path}`);
  }
  for (const p of tree.keys()) if (!byPath.has(p)) staged.push(`deleted: ${p}`);
  return staged;
}

/** The work tree's `d` at `p` is the tree's entry `n` (kind, exec bit, content); both absent counts as the same. */
async function asInTree(t: Transport, p: string, d: Entry | undefined, n: FlatEntry | undefined): Promise<boolean> {
  if (!n || !d) return !n && !d;
  if (!sameKind(d, n.mode)) return false;
  if (n.mode === MODE_GITLINK) return true;
  if (n.mode !== MODE_LINK && ((d.mode & 0o100) !== 0) !== (n.mode === MODE_EXEC)) return false;
  const body = n.mode === MODE_LINK ? Buffer.from(d.target ?? '') : await t.readFile(p).catch(() => null);
  return !!body && hashObject('blob', body) === n.oid;
}

function sameKind(e: Entry, mode: number): boolean {
  if (mode === MODE_LINK) return e.type === 'symlink';
  if (mode === MODE_GITLINK) return e.type === 'dir';
  return e.type === 'file';
}

/**
 * Refuses, with git's reasons, when updating from `oldTree` to `newTree` could lose anything: unmerged or staged
 * index entries, tracked files changed on disk, untracked files where the new tree puts something.
 * `gitDir` is skipped when listing (it is never part of the work tree).
 */
export async function planWorktreeUpdate(
  t: Transport,
  state: WorktreeState,
  oldTree: FlatTree,
  newTree: FlatTree,
  opts: { gitDirName: string; hint?: string; listing?: WorktreeListing },
): Promise<WorktreePlan> {
  const index = state.index ?? [];
  const unmerged = index.filter((e) => e.stage !== 0).map((e) => e.path);
  if (unmerged.length) refuse('the work tree has unmerged paths (a merge in progress):', [...new Set(unmerged)], opts.hint);

  // diff-index --cached: the index must be the old commit's tree, or already the new one's (an update that got as
  // far as the index and no further: this one finishes it).
  const byPath = new Map(index.map((e) => [e.path, e]));
  const staged = stagedAgainst(index, byPath, oldTree);
  if (staged.length && stagedAgainst(index, byPath, newTree).length) refuse('Working directory has staged changes:', staged, opts.hint);
  const indexIsNew = staged.length > 0;

  const changed = new Set<string>();
  for (const [p, e] of newTree) {
    const o = oldTree.get(p);
    if (!o || o.oid !== e.oid || o.mode !== e.mode) changed.add(p);
  }
  for (const p of oldTree.keys()) if (!newTree.has(p)) changed.add(p);

  // The staged check above ensures the index holds exactly the old tree's paths, so the listing covers it.
  const { entries: disk, listed } = opts.listing ?? (await listWorktree(t, oldTree, newTree));

  // update-index --refresh + diff-files: every tracked path must still be what the index says, or already what
  // the new tree has there (an update that wrote the work tree and failed before the index: this one finishes it).
  const suspects: IndexEntry[] = [];
  const differing: Array<{ path: string; why: string }> = [];
  for (const e of index) {
    if (e.mode === MODE_GITLINK || e.skipWorktree) continue;
    const d = disk.get(e.path);
    if (!d || !sameKind(d, e.mode)) {
      differing.push({ path: e.path, why: d ? 'typechange' : 'deleted' });
      continue;
    }
    if (e.mode !== MODE_LINK && ((d.mode & 0o100) !== 0) !== (e.mode === MODE_EXEC)) {
      differing.push({ path: e.path, why: 'mode changed' });
      continue;
    }
    const size = e.mode === MODE_LINK ? Buffer.byteLength(d.target ?? '') : d.size;
    // The index keeps sizes modulo 2^32, as git does.
    if (size % 0x100000000 !== e.size) {
      differing.push({ path: e.path, why: 'modified' });
      continue;
    }
    if (d.mtime !== e.mtimeSeconds || d.mtime >= state.indexMtime) suspects.push(e);
  }
  await mapLimit(suspects, PARALLEL, async (e) => {
    const d = disk.get(e.path)!;
    const body = e.mode === MODE_LINK ? Buffer.from(d.target ?? '') : await t.readFile(e.path);
    if (!body || hashObject('blob', body) !== e.oid) differing.push({ path: e.path, why: 'modified' });
  });
  const isNew = (p: string) => asInTree(t, p, disk.get(p), newTree.get(p));
  const unstaged: string[] = [];
  await mapLimit(differing, PARALLEL, async ({ path: p, why }) => {
    if (!changed.has(p) || !(await isNew(p))) unstaged.push(`${why}: ${p}`);
  });
  if (unstaged.length) refuse('Working directory has unstaged changes:', unstaged.sort(), opts.hint);

  // read-tree -u -m: nothing untracked may be overwritten or lost.
  const tracked = (p: string) => byPath.has(p);
  const untrackedUnder = (dir: string, out: string[]): void => {
    for (const [p, e] of disk) {
      if (parentOf(p) !== dir || p === opts.gitDirName) continue;
      if (e.type === 'dir' && byPath.get(p)?.mode !== MODE_GITLINK) {
        if (listed.has(p)) untrackedUnder(p, out);
        else out.push(`${p}/`);
      } else if (!tracked(p)) out.push(p);
    }
  };
  const inTheWay: string[] = [];
  // Untracked, but already what the new tree has there (written by an update that failed before its index).
  const alreadyNew = new Set<string>();
  await mapLimit([...changed].filter((p) => !tracked(p) && disk.get(p) && disk.get(p)!.type !== 'dir'), PARALLEL, async (p) => {
    if (await isNew(p)) alreadyNew.add(p);
  });
  for (const p of changed) {
    const n = newTree.get(p);
    if (!n) continue;
    const d = disk.get(p);
    if (d && !tracked(p) && !alreadyNew.has(p)) {
      if (d.type === 'dir' && n.mode !== MODE_GITLINK) {
        // A tracked directory becoming a file: fine when it holds only tracked files (all deleted by the update).
        const lost: string[] = [];
        if (listed.has(p)) untrackedUnder(p, lost);
        else lost.push(`${p}/`);
        inTheWay.push(...lost);
      } else if (!(d.type === 'dir' && n.mode === MODE_GITLINK)) {
        inTheWay.push(p);
      }
    }
    for (const a of ancestors(p)) {
      const da = disk.get(a);
      if (da && da.type !== 'dir' && !tracked(a)) inTheWay.push(a);
    }
  }
  // An index already the new tree no longer tracks what the new tree deletes: whatever is there now is someone's.
  if (indexIsNew) for (const p of oldTree.keys()) if (!newTree.has(p) && disk.has(p)) inTheWay.push(p);
  if (inTheWay.length) refuse('untracked working tree files would be overwritten or lost:', [...new Set(inTheWay)].sort(), opts.hint);

  const removes: string[] = [];
  const writes: WorktreePlan['writes'] = [];
  for (const p of changed) {
    const o = oldTree.get(p);
    const n = newTree.get(p);
    if (!n) {
      removes.push(p);
      continue;
    }
    // A file replacing a gitlink directory, or the reverse, goes through a removal first.
    if (o && (o.mode === MODE_GITLINK) !== (n.mode === MODE_GITLINK)) removes.push(p);
    const modeOnly = !!o && o.oid === n.oid && o.mode !== n.mode && o.mode !== MODE_LINK && n.mode !== MODE_LINK && o.mode !== MODE_GITLINK && n.mode !== MODE_GITLINK;
    writes.push({ path: p, entry: n, modeOnly });
  }
  // A tracked file where the new tree needs a directory is removed too.
  for (const w of writes) for (const a of ancestors(w.path)) if (oldTree.has(a) && !newTree.has(a) && !removes.includes(a)) removes.push(a);
  return { removes, writes, listing: disk };
}

/** Files of the new tree written ahead under temp names (before the checks), renamed into place by the update. */
export interface StagedWorktree {
  mtime: number;
  files: Map<string, StagedFile>;
  /** The temp files it wrote (paths in the work tree): its own, never swept as left by a dead run. */
  temps: Set<string>;
  abort(): Promise<void>;
}

/**
 * Paths a speculative staging can write ahead: regular files that change content, whose place is not taken by a
 * directory of the old tree and whose parents are not files of the old tree (those need removals first).
 */
function stageable(oldTree: FlatTree, newTree: FlatTree): Array<[string, FlatEntry]> {
  const oldDirs = new Set<string>();
  for (const p of oldTree.keys()) for (const a of ancestors(p)) oldDirs.add(a);
  const out: Array<[string, FlatEntry]> = [];
  for (const [p, e] of newTree) {
    if (e.mode !== MODE_FILE && e.mode !== MODE_EXEC) continue;
    const o = oldTree.get(p);
    if (o && (o.oid === e.oid || o.mode === MODE_GITLINK)) continue;
    if (oldDirs.has(p) || ancestors(p).some((a) => oldTree.has(a))) continue;
    out.push([p, e]);
  }
  return out;
}

/**
 * Writes the changed files of `oldTree` -> `newTree` under temp names next to their places, with the mtime the
 * index will record. Nothing is visible until the update renames them; abort() removes them again, and the
 * directories it had to create. Used while the locks and listings are still on their way.
 */
export async function stageWorktree(t: Transport, oldTree: FlatTree, newTree: FlatTree, src: ObjectSource, mtime: number): Promise<StagedWorktree> {
  const files = new Map<string, StagedFile>();
  const temps = new Set<string>();
  const created = new Set<string>();
  const oldDirs = new Set<string>();
  for (const p of oldTree.keys()) for (const a of ancestors(p)) oldDirs.add(a);
  const jobs = stageable(oldTree, newTree);
  for (const [p] of jobs) for (const a of ancestors(p)) if (!oldDirs.has(a)) created.add(a);
  const abort = async () => {
    await Promise.all([...files.values()].map((f) => f.abort()));
    for (const d of [...created].sort((a, b) => b.length - a.length)) await t.remove(d, 'dir').catch(() => undefined);
  };
  try {
    await mapLimit(jobs, PARALLEL, async ([p, e]) => {
      const obj = await src.read(e.oid);
      const tempName = baseName(tempNameFor(p));
      temps.add(joinRel(parentOf(p), tempName));
      files.set(p, await t.stageSmall(p, obj.body, { mode: e.mode === MODE_EXEC ? 0o755 : 0o644, mtime, parents: true, tempName }));
    });
  } catch (err) {
    await abort();
    throw err;
  }
  return { mtime, files, temps, abort };
}

function entryFor(path: string, e: FlatEntry, size: number, mtime: number): IndexEntry {
  return { path, oid: e.oid, mode: e.mode, size, mtimeSeconds: mtime, ctimeSeconds: mtime, mtimeNanoseconds: 0, ctimeNanoseconds: 0, dev: 0, ino: 0, uid: 0, gid: 0, stage: 0, assumeValid: false, skipWorktree: false, intentToAdd: false };
}

/**
 * The index after a plan is applied, known before it is: files get `mtime` (set explicitly when written), a
 * mode-only change keeps the file's mtime, symlinks and gitlinks record 0 (git re-checks such an entry by content
 * once, which for a symlink is one readlink).
 */
export async function indexAfter(state: WorktreeState, plan: WorktreePlan, src: ObjectSource, mtime: number): Promise<IndexEntry[]> {
  const out = new Map<string, IndexEntry>();
  const removed = new Set(plan.removes);
  for (const e of state.index ?? []) if (!removed.has(e.path)) out.set(e.path, e);
  await mapLimit(plan.writes, PARALLEL, async ({ path, entry, modeOnly }) => {
    if (entry.mode === MODE_GITLINK) return void out.set(path, entryFor(path, entry, 0, 0));
    if (modeOnly) {
      const d = plan.listing.get(path)!;
      return void out.set(path, entryFor(path, entry, d.size, d.mtime));
    }
    const size = (await src.read(entry.oid)).body.length;
    out.set(path, entryFor(path, entry, size, entry.mode === MODE_LINK ? 0 : mtime));
  });
  return [...out.values()];
}

/**
 * Applies a plan: removals first, then directories, then the writes (a staged file is just renamed into place).
 * Files get mtime `mtime`; callers pass one second before now, because git treats an entry whose mtime is not
 * older than the index file as racily clean and re-hashes it, and an edit after this run still gets a newer mtime.
 */
export async function applyWorktreeUpdate(
  t: Transport,
  plan: WorktreePlan,
  src: ObjectSource,
  mtime: number,
  staged?: StagedWorktree,
  fromPack?: { blobs: Promise<StoredBlobs | undefined>; committed: Promise<unknown>; onCopied?: () => void },
): Promise<void> {
  const removeSet = new Set(plan.removes);
  // Staged files never sit at or under a path being removed (see stageable), so they go in alongside the removals.
  const writing = new Set(plan.writes.map((w) => w.path));
  const ahead = [...(staged?.files ?? [])].filter(([p]) => writing.has(p));
  const renamed = mapLimit(ahead, PARALLEL, ([, f]) => f.commit());
  renamed.catch(() => undefined);
  await mapLimit(plan.removes, PARALLEL, async (p) => {
    const d = plan.listing.get(p);
    await t.remove(p, d?.type === 'dir' ? 'dir' : 'file').catch((err) => {
      if (d?.type !== 'dir') throw err;
    });
  });
  // Directories emptied by the removals go too, deepest level first; one still holding untracked files stays, as
  // in git.
  const emptied = new Set<string>();
  for (const p of removeSet) for (const a of ancestors(p)) emptied.add(a);
  const newDirs = new Set<string>();
  for (const w of plan.writes) for (const a of ancestors(w.path)) newDirs.add(a);
  const emptiedByDepth = new Map<number, string[]>();
  for (const d of emptied) {
    if (newDirs.has(d)) continue;
    const depth = d.split('/').length;
    emptiedByDepth.set(depth, [...(emptiedByDepth.get(depth) ?? []), d]);
  }
  for (const depth of [...emptiedByDepth.keys()].sort((a, b) => b - a)) {
    await mapLimit(emptiedByDepth.get(depth)!, PARALLEL, (d) => t.remove(d, 'dir').catch(() => undefined));
  }
  // Directories needed by the new tree whose path is a directory that was just freed, or never existed (staging
  // made its own).
  const made = new Set<string>();
  for (const p of staged?.files.keys() ?? []) for (const a of ancestors(p)) made.add(a);
  const byDepth = new Map<number, string[]>();
  for (const d of newDirs) {
    const on = plan.listing.get(d);
    if ((on?.type === 'dir' && !removeSet.has(d)) || made.has(d)) continue;
    const depth = d.split('/').length;
    byDepth.set(depth, [...(byDepth.get(depth) ?? []), d]);
  }
  for (const depth of [...byDepth.keys()].sort((a, b) => a - b)) await mapLimit(byDepth.get(depth)!, PARALLEL, (d) => t.mkdir(d, 0o755));

  await mapLimit(plan.writes, PARALLEL, async ({ path, entry, modeOnly }) => {
    if (entry.mode === MODE_GITLINK) return void (await t.mkdir(path, 0o755));
    if (modeOnly) return t.setMeta(path, { mode: entry.mode === MODE_EXEC ? 0o755 : 0o644 });
    if (staged?.files.has(path)) return;
    const obj = await src.read(entry.oid);
    if (obj.type !== 'blob') throw new WsyncError('E_GIT_CORRUPT', `${path}: ${entry.oid} is a ${obj.type}, not a blob`);
    if (entry.mode === MODE_LINK) return t.symlink(path, obj.body.toString('utf8'));
    const mode = entry.mode === MODE_EXEC ? 0o755 : 0o644;
    const stored = fromPack && t.caps.copyData ? await fromPack.blobs.catch(() => undefined) : undefined;
    const ranges = stored?.ranges.get(entry.oid);
    if (stored && ranges) {
      // The pack just pushed holds these bytes as they are: the server copies them out, none cross the link again.
      await fromPack!.committed;
      await t.writeFromRanges(path, stored.pack, ranges, { mode, mtime, size: obj.body.length });
      return fromPack!.onCopied?.();
    }
    await t.writeFile(path, (async function* () { yield obj.body; })(), { mode, mtime, size: obj.body.length });
  });
  await renamed;
}

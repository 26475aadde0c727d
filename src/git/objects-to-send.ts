/**
 * What a push must send: `git rev-list <tip> ^<haves>` for commits, then for each new commit the trees and blobs
 * that differ from every parent at the same path. A parent either is new too (and sends its own objects) or is
 * reachable from a have, whose whole closure the remote already holds; so nothing is missed, and only a path
 * reverting to an old version re-sends an object the remote has.
 */
import { parseCommit, parseTree, type GitObject, type ObjectType } from './objects.js';
import { MODE_GITLINK, MODE_TREE, readTyped, treeMode, type ObjectSource } from './tree.js';

export interface CommitInfo {
  oid: string;
  tree: string;
  parents: string[];
  time: number;
  body: Buffer;
}

/**
 * Commits reachable from `tip` and from none of `haves`, parents before children. Date-ordered painting as in
 * git: walk newest first, carry "uninteresting" down from the haves, stop a little after only uninteresting
 * commits are queued. A clock-skewed history can only make it return extra commits, never miss one.
 */
export async function revList(src: ObjectSource, tip: string, haves: readonly string[]): Promise<CommitInfo[]> {
  const info = new Map<string, CommitInfo>();
  const uninteresting = new Set<string>();
  const queued = new Set<string>();
  const queue: Array<{ oid: string; time: number }> = [];
  const load = async (oid: string): Promise<CommitInfo> => {
    let c = info.get(oid);
    if (!c) {
      const body = await readTyped(src, oid, 'commit');
      const p = parseCommit(body);
      c = { oid, tree: p.tree, parents: p.parents, time: p.committerTime, body };
      info.set(oid, c);
    }
    return c;
  };
  // Queued commits not (yet) known to be uninteresting: the walk ends when there are none.
  const interestingQueued = new Set<string>();
  const enqueue = async (oid: string) => {
    if (queued.has(oid)) return;
    queued.add(oid);
    const c = await load(oid);
    if (!uninteresting.has(oid)) interestingQueued.add(oid);
    // Kept sorted oldest..newest so pop() takes the newest; binary search, as histories run to many thousands.
    let lo = 0;
    let hi = queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (queue[mid].time <= c.time) lo = mid + 1;
      else hi = mid;
    }
    queue.splice(lo, 0, { oid, time: c.time });
  };
  const markUninteresting = (oid: string) => {
    const stack = [oid];
    while (stack.length) {
      const o = stack.pop()!;
      if (uninteresting.has(o)) continue;
      uninteresting.add(o);
      interestingQueued.delete(o);
      // Parents already walked as interesting must learn it too; unwalked ones learn it when they are queued.
      const c = info.get(o);
      if (c && processed.has(o)) stack.push(...c.parents);
    }
  };
  const processed = new Set<string>();
  for (const h of haves) {
    markUninteresting(h);
    await enqueue(h);
  }
  if (!uninteresting.has(tip)) await enqueue(tip);
  const order: string[] = [];
  // Past the last interesting commit, a few more uninteresting steps (git calls it slop): with timestamps that tie
  // or go backwards, the have side may still reach commits taken as new. Missing that only sends extra objects.
  let slop = 100;
  while (queue.length > 0 && (interestingQueued.size > 0 || slop-- > 0)) {
    const { oid } = queue.pop()!;
    interestingQueued.delete(oid);
    const c = info.get(oid)!;
    processed.add(oid);
    if (uninteresting.has(oid)) for (const p of c.parents) markUninteresting(p);
    else order.push(oid);
    await Promise.all(c.parents.map(enqueue));
  }
  // Parents before children, whatever the timestamps say (commits made within one second share one): the pack
  // writer can only use a delta base it has already written.
  const selected = order.filter((o) => !uninteresting.has(o)).reverse();
  const inSet = new Set(selected);
  const done = new Set<string>();
  const out: CommitInfo[] = [];
  for (const start of selected) {
    const stack = [start];
    while (stack.length) {
      const o = stack[stack.length - 1];
      if (done.has(o)) {
        stack.pop();
        continue;
      }
      const next = info.get(o)!.parents.find((p) => inSet.has(p) && !done.has(p));
      if (next) {
        stack.push(next);
        continue;
      }
      stack.pop();
      done.add(o);
      out.push(info.get(o)!);
    }
  }
  return out;
}

export interface ObjectToSend {
  oid: string;
  type: ObjectType;
  body: Buffer;
  /** The same path's version in the first parent, when it is sent too: a good delta base. */
  deltaBase?: string;
  /** A blob's path in the commit that introduced it. */
  path?: string;
}

/**
 * Trees and blobs of `commits` (oldest first) that no parent has at the same path, each after its delta base,
 * followed by the commits. Gitlinks are skipped: the submodule's commit is not in this repository.
 */
export async function objectsToSend(src: ObjectSource, commits: readonly CommitInfo[], emit: (o: ObjectToSend) => void): Promise<void> {
  const seen = new Set<string>();
  const treeCache = new Map<string, Map<string, { mode: number; oid: string }>>();
  const entries = async (oid: string) => {
    let m = treeCache.get(oid);
    if (!m) {
      const body = await readTyped(src, oid, 'tree');
      m = new Map(parseTree(body).map((e) => [e.name, { mode: treeMode(e.mode), oid: e.oid }]));
      treeCache.set(oid, m);
      if (treeCache.size > 20000) treeCache.delete(treeCache.keys().next().value!);
    }
    return m;
  };
  const read = async (oid: string, type: ObjectType): Promise<GitObject> => ({ type, body: await readTyped(src, oid, type) });
  const walk = async (tree: string, parentTrees: string[], prefix: string): Promise<void> => {
    if (seen.has(tree) || parentTrees.includes(tree)) return;
    seen.add(tree);
    const [mine, ...theirs] = await Promise.all([entries(tree), ...parentTrees.map(entries)]);
    const jobs: Array<Promise<void>> = [];
    const blobs: Array<{ oid: string; base?: string; path: string }> = [];
    for (const [name, e] of mine) {
      if (e.mode === MODE_GITLINK) continue;
      const same = theirs.map((t) => t.get(name));
      if (same.some((s) => s?.oid === e.oid)) continue;
      if (e.mode === MODE_TREE) {
        jobs.push(walk(e.oid, same.filter((s) => s?.mode === MODE_TREE).map((s) => s!.oid), `${prefix}${name}/`));
      } else if (!seen.has(e.oid)) {
        seen.add(e.oid);
        const base = same[0] && same[0].mode !== MODE_TREE && same[0].mode !== MODE_GITLINK ? same[0].oid : undefined;
        blobs.push({ oid: e.oid, base, path: prefix + name });
      }
    }
    // A delta base always belongs to an older commit, handled in an earlier call, so it is emitted first.
    const base = parentTrees[0];
    const treeObj = await read(tree, 'tree');
    emit({ oid: tree, type: 'tree', body: treeObj.body, deltaBase: base });
    for (const b of blobs) {
      const o = await read(b.oid, 'blob');
      emit({ oid: b.oid, type: 'blob', body: o.body, deltaBase: b.base, path: b.path });
    }
    await Promise.all(jobs);
  };
  for (const c of commits) {
    const parentTrees = await Promise.all(c.parents.map(async (p) => parseCommit(await readTyped(src, p, 'commit')).tree));
    await walk(c.tree, parentTrees, '');
    emit({ oid: c.oid, type: 'commit', body: c.body });
  }
}

import type { Entry, Problem, Tree } from '../types.js';
import type { DirListing, SpecialKind, Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';
import { ancestors, isAsideName, isPartialName, isSafeName, isTempName, joinRel, recoverLinkTarget } from '../util/paths.js';
import { mapLimit } from '../util/limit.js';
import { IgnoreRules } from './ignore.js';

export interface WalkResult {
  tree: Tree;
  /** False when the root itself does not exist. */
  rootExists: boolean;
  problems: Problem[];
  /** Temp files an interrupted run left behind. */
  temps: string[];
  /** Partial uploads an interrupted run left (paths.ts partialNameFor), with their sizes: resumed, or removed. */
  partials: Array<{ path: string; size: number }>;
  /** Directories that could not be listed: nothing below them may be created, changed or deleted. */
  blocked: string[];
  /** FIFOs, sockets and devices (not excluded by the rules): never synced, but the run says so. */
  skipped: Array<{ path: string; kind: SpecialKind }>;
  /** Paths a .gitignore/.wsyncignore file left out (a directory counts once: what is below it is never listed). */
  ignored: number;
  /** Old versions an interrupted replacement kept aside (asideNameFor): resolved by the engine, never synced. */
  asides: Array<{ path: string; entry: import('../types.js').Entry }>;
}

/** The notice a sync emits for each special file it leaves out (a NoticeEvent with the details for --json). */
export interface SkippedNotice {
  type: 'notice';
  message: string;
  skipped: { path: string; kind: SpecialKind; side: 'local' | 'remote' };
}

export function isSkippedNotice(ev: { type: string }): ev is SkippedNotice {
  return ev.type === 'notice' && typeof (ev as Partial<SkippedNotice>).skipped === 'object';
}

/**
 * One notice per special file of either side, in path order. Those of the destination (which the run neither
 * reads nor replaces) say which side they are on.
 */
export function skippedNotices(direction: 'push' | 'pull', local: WalkResult, remote: WalkResult): SkippedNotice[] {
  const source = direction === 'push' ? 'local' : 'remote';
  const out: SkippedNotice[] = [];
  for (const [side, w] of [['local', local], ['remote', remote]] as const) {
    for (const { path, kind } of w.skipped) {
      const where = side === source ? '' : `, on the ${side} side`;
      out.push({ type: 'notice', message: `skipped: ${path}: not a regular file, directory or symlink (${kind}${where})`, skipped: { path, kind, side } });
    }
  }
  return out.sort((a, b) => (a.skipped.path < b.skipped.path ? -1 : a.skipped.path > b.skipped.path ? 1 : 0));
}

/**
 * Listings asked for ahead of the walk. A breadth-first walk needs one round trip pair per tree level; when the
 * directories are already known (from the manifest or the other side's tree) all of them can be listed at once,
 * which turns a no-op scan of a deep tree into a couple of round trips. A guess that is wrong costs one wasted
 * listing, never a wrong result: only directories the walk itself reaches are used.
 */
export class Prefetcher {
  private listings = new Map<string, Promise<DirListing | null>>();
  private asked = new Set<string>();
  constructor(private readonly t: Transport) {}
  prefetch(dirs: Iterable<string>): void {
    for (const d of dirs) {
      if (this.asked.has(d)) continue;
      this.asked.add(d);
      const p = this.t.readdir(d);
      p.catch(() => undefined); // observed when the walk reaches it
      this.listings.set(d, p);
    }
  }
  take(dir: string): Promise<DirListing | null> {
    this.asked.add(dir);
    const p = this.listings.get(dir);
    if (p) {
      this.listings.delete(dir);
      return p;
    }
    return this.t.readdir(dir);
  }
}

export interface WalkOptions {
  rules: IgnoreRules;
  /** Directories listed at once; over SFTP this is what pipelines the scan. */
  concurrency: number;
  prefetcher?: Prefetcher;
  /** Told of each directory the walk will list (the root first), as soon as it is found. */
  onDir?: (rel: string) => void;
  /**
   * Walk only the subtree at this directory (default: the whole tree). The rules must already hold the ignore
   * files of the directories above it (a session's rules, filled by a full walk).
   */
  under?: string;
  /**
   * What wsync last wrote here (the manifest's entries), asked for only when a server answers a symlink's target
   * joined onto its directory (Entry.linkDir): the target as written is taken from there where it matches, and a
   * link it does not match is reported and left alone (blocked), never read as a different link.
   */
  knownLinks?: () => Promise<ReadonlyMap<string, Entry> | undefined>;
}

/**
 * A symlink whose server answered its target joined onto its directory (Entry.linkDir): the target wsync wrote
 * there where it matches that answer, else the problem to report (the link is then left alone).
 */
async function settleLink(t: Transport, rel: string, entry: Entry, knownLinks: WalkOptions['knownLinks']): Promise<Entry | Problem> {
  const known = (await knownLinks?.().catch(() => undefined))?.get(rel);
  const knownTarget = known?.type === 'symlink' ? known.target : undefined;
  // Unreadable (a dangling link where READLINK follows links): the one wsync wrote, if it is still that one.
  const target = entry.target === '' ? (known?.mtime === entry.mtime ? knownTarget : undefined) : recoverLinkTarget(entry.linkDir ?? '', entry.target ?? '', knownTarget);
  if (target !== undefined) return { type: 'symlink', size: entry.size, mtime: entry.mtime, mode: entry.mode, target };
  const how = entry.target === '' ? 'this server cannot read back where this symlink points (its target is missing)' : `this server rewrites symlink targets (it reads this one back as ${JSON.stringify(entry.target)})`;
  return { path: rel, code: 'E_REMOTE_IO', message: `${t.describe(rel)}: ${how}, and it is not the link wsync wrote there, so what it points to cannot be told; left alone` };
}

/**
 * Lists a whole tree through a transport, breadth first with many directories in flight, applying ignore rules
 * as it descends (an excluded directory is never entered). Names that could escape the root are reported, not
 * followed. Symlinks are leaves.
 */
export async function walk(t: Transport, opts: WalkOptions): Promise<WalkResult> {
  const tree: Tree = new Map();
  const problems: Problem[] = [];
  const temps: string[] = [];
  const partials: Array<{ path: string; size: number }> = [];
  const blocked: string[] = [];
  const skipped: WalkResult['skipped'] = [];
  let ignored = 0;
  const asides: WalkResult['asides'] = [];
  const lister = opts.prefetcher ?? new Prefetcher(t);
  const top = opts.under ?? '';
  opts.onDir?.(top);
  const rootEntries = await lister.take(top);
  if (rootEntries === null) return { tree, rootExists: false, problems, temps, partials, blocked, skipped, ignored, asides };

  const excluded = (rel: string, isDir: boolean) => opts.rules.isExcluded(rel, isDir);

  const visit = async (dir: string, entries: Awaited<ReturnType<Transport['readdir']>>, enqueue: (d: string) => void) => {
    if (!entries) return; // vanished between listings: the parent's entry stays, its content is unknown
    const ignoreFiles = entries.filter((e) => e.entry.type === 'file' && opts.rules.wants(e.name));
    await Promise.all(
      ignoreFiles.map(async (e) => {
        const text = await t.readFile(joinRel(dir, e.name));
        if (text) opts.rules.addRules(dir, e.name, text.toString('utf8'));
      }),
    );
    for (const { name, entry } of entries) {
      const rel = joinRel(dir, name);
      if (!isSafeName(name)) {
        problems.push({ path: rel, code: 'E_UNSAFE_PATH', message: `refusing unsafe name ${JSON.stringify(name)} in ${t.describe(dir)}` });
        continue;
      }
      if (isTempName(name)) {
        temps.push(rel);
        continue;
      }
      if (isPartialName(name)) {
        if (entry.type === 'file') partials.push({ path: rel, size: entry.size });
        continue;
      }
      if (isAsideName(name)) {
        asides.push({ path: rel, entry });
        continue;
      }
      if (excluded(rel, entry.type === 'dir')) {
        if (opts.rules.lastFromFiles) ignored++;
        continue;
      }
      if (entry.linkDir !== undefined) {
        const settled = await settleLink(t, rel, entry, opts.knownLinks);
        if ('code' in settled) {
          problems.push(settled);
          blocked.push(rel);
        } else tree.set(rel, settled);
        continue;
      }
      tree.set(rel, entry);
      if (entry.type === 'dir') enqueue(rel);
    }
    for (const { name, kind } of entries.skipped ?? []) {
      const rel = joinRel(dir, name);
      if (isSafeName(name) && !isTempName(name) && !excluded(rel, false)) skipped.push({ path: rel, kind });
    }
  };

  await new Promise<void>((resolve, reject) => {
    const queue: string[] = [];
    let active = 0;
    let failed = false;
    const enqueue = (d: string) => {
      opts.onDir?.(d);
      queue.push(d);
      pump();
    };
    const pump = () => {
      if (failed) return;
      while (active < opts.concurrency && queue.length > 0) {
        const d = queue.shift()!;
        active++;
        lister.take(d)
          .then((entries) => visit(d, entries, enqueue))
          .catch((err) => {
            if (err instanceof WsyncError && (err.code === 'E_REMOTE_PERMISSION' || err.code === 'E_LOCAL_IO')) {
              problems.push({ path: d, code: err.code, message: errorMessage(err) });
              blocked.push(d);
              return;
            }
            failed = true;
            reject(err);
          })
          .finally(() => {
            active--;
            if (!failed && active === 0 && queue.length === 0) resolve();
            else pump();
          });
      }
    };
    // The root's visit counts as work in flight like the others: it may wait (a link's target) after it has
    // queued directories, which must not end the walk while it has entries left to add.
    active++;
    visit(top, rootEntries, enqueue)
      .then(() => {
        active--;
        if (!failed && active === 0 && queue.length === 0) resolve();
        else pump();
      })
      .catch(reject);
  });
  return { tree, rootExists: true, problems, temps, partials, blocked, skipped, ignored, asides };
}

/** Drops paths the other side's rules exclude (its rules were not known while this tree was walked). */
export function filterTree(tree: Tree, rules: IgnoreRules): Tree {
  const out: Tree = new Map();
  for (const [rel, e] of tree) if (!rules.isExcludedDeep(rel, e.type === 'dir')) out.set(rel, e);
  return out;
}

export interface PathsScan {
  /**
   * Each path asked for that is there (and not excluded), and everything below those that are directories, with
   * fresh entries.
   */
  tree: Tree;
  /** Paths asked for that are not there (deleted, moved away, or below something that is no longer a directory). */
  gone: string[];
  /** Paths asked for that the rules exclude, or that are wsync's own temps: neither synced nor deleted. */
  excluded: string[];
  problems: Problem[];
  /** Paths (or directories below them) that could not be read: nothing at or below them may be changed. */
  blocked: string[];
  /**
   * An ignore file among the paths was added, changed or removed: what it says about paths not in this batch may
   * have changed too, so the caller's next scan should be a full one.
   */
  rulesChanged: boolean;
}

/**
 * A targeted scan, for a batch of changed paths (a watch's events) instead of the whole tree: the paths and their
 * directories are lstat'd at once, and a directory among the paths is walked whole (one created or moved in
 * brings its content). As in a full walk, nothing is followed through a symlink: a path below one (or below a
 * file) is gone. The rules must already hold the ignore files of the paths' directories (a session's, from a full
 * walk); ignore files among the paths are read first and replace (or drop) what they said.
 */
export async function scanPaths(t: Transport, paths: Iterable<string>, opts: { rules: IgnoreRules; concurrency: number; shallow?: Set<string>; knownLinks?: WalkOptions['knownLinks'] }): Promise<PathsScan> {
  const out: PathsScan = { tree: new Map(), gone: [], excluded: [], problems: [], blocked: [], rulesChanged: false };
  const wanted: string[] = [];
  for (const p of new Set(paths)) {
    if (p === '') continue;
    if (p.split('/').some((n) => !isSafeName(n))) out.problems.push({ path: p, code: 'E_UNSAFE_PATH', message: `refusing unsafe path ${JSON.stringify(p)} in ${t.describe()}` });
    else if (p.split('/').some((n) => isTempName(n) || isPartialName(n) || isAsideName(n))) out.excluded.push(p);
    else wanted.push(p);
  }
  // Every path and every directory above one, lstat'd at once.
  const asked = new Set(wanted);
  for (const p of wanted) for (const a of ancestors(p)) asked.add(a);
  const found = new Map<string, Entry | null | Error>();
  await mapLimit([...asked], Math.max(1, opts.concurrency), async (p) => {
    try {
      found.set(p, await t.lstat(p));
    } catch (err) {
      if (err instanceof WsyncError && (err.code === 'E_REMOTE_PERMISSION' || err.code === 'E_LOCAL_IO')) found.set(p, err);
      else throw err;
    }
  });
  /** Reachable by a walk: every directory above it is a directory (not a symlink, a file, or missing). */
  const reachable = (p: string) => ancestors(p).every((a) => {
    const e = found.get(a);
    return e !== null && !(e instanceof Error) && e?.type === 'dir';
  });
  // Ignore files first: an edited .gitignore changes what the other paths are. Only regular files count, as in a walk.
  for (const p of wanted) {
    const i = p.lastIndexOf('/');
    const name = p.slice(i + 1);
    if (!opts.rules.wants(name)) continue;
    const dir = i < 0 ? '' : p.slice(0, i);
    const e = found.get(p);
    if (e instanceof Error) continue; // unreadable: its old rules stay
    const text = e?.type === 'file' && reachable(p) ? await t.readFile(p).catch(() => undefined) : null;
    if (text === undefined) continue;
    if (text) opts.rules.addRules(dir, name, text.toString('utf8'));
    else opts.rules.dropRules(dir, name);
    out.rulesChanged = true;
  }
  const dirs: string[] = [];
  for (const p of wanted) {
    const e = found.get(p);
    const blockedAbove = ancestors(p).find((a) => found.get(a) instanceof Error);
    const open = blockedAbove === undefined && reachable(p);
    // Unreadable (or below something unreadable): reported once, and nothing at or below it changes. Below a
    // symlink, a file or nothing, a path is simply not there (its own lstat may fail with ENOTDIR).
    if (blockedAbove !== undefined || (open && e instanceof Error)) {
      const at = blockedAbove ?? p;
      const err = found.get(at) as WsyncError;
      if (!out.blocked.includes(at)) {
        out.blocked.push(at);
        out.problems.push({ path: at, code: err.code, message: errorMessage(err) });
      }
      continue;
    }
    let there = open && e && !(e instanceof Error) ? e : null;
    if (there?.linkDir !== undefined) {
      const settled = await settleLink(t, p, there, opts.knownLinks);
      if ('code' in settled) {
        out.blocked.push(p);
        out.problems.push(settled);
        continue;
      }
      there = settled;
    }
    // A path that is gone is excluded when the rules exclude it as a file or as a directory (it was one of them).
    const excluded = there ? opts.rules.isExcludedDeep(p, there.type === 'dir') : opts.rules.isExcludedDeep(p, false) || opts.rules.isExcludedDeep(p, true);
    if (excluded) out.excluded.push(p);
    else if (!there) out.gone.push(p);
    else {
      out.tree.set(p, there);
      // `shallow`: directories asked for themselves only (a batch's parents), not for what they hold.
      if (there.type === 'dir' && !opts.shallow?.has(p)) dirs.push(p);
    }
  }
  // A directory inside another one asked for is walked with it.
  const dirSet = new Set(dirs);
  const tops = dirs.filter((d) => !ancestors(d).some((a) => dirSet.has(a)));
  for (const d of tops) {
    const w = await walk(t, { rules: opts.rules, concurrency: opts.concurrency, under: d });
    for (const [rel, e] of w.tree) out.tree.set(rel, e);
    out.problems.push(...w.problems);
    out.blocked.push(...w.blocked);
  }
  return out;
}

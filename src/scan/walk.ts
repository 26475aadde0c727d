import type { Problem, Tree } from '../types.js';
import type { DirListing, SpecialKind, Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';
import { isAsideName, isPartialName, isSafeName, isTempName, joinRel } from '../util/paths.js';
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
  opts.onDir?.('');
  const rootEntries = await lister.take('');
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
    visit('', rootEntries, enqueue)
      .then(() => {
        if (active === 0 && queue.length === 0) resolve();
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

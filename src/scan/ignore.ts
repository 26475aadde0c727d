import ignore, { type Ignore } from 'ignore';
import picomatch from 'picomatch';
import { ancestors, baseName, isAsideName, isPartialName, isTempName, parentOf } from '../util/paths.js';
import { STATE_DIR } from '../manifest/manifest.js';

export interface FilterOptions {
  /** Honour .gitignore files (.wsyncignore files are always honoured). */
  gitignore: boolean;
  /** --exclude globs: no '/' matches a name at any depth; with '/' matches from the root; a trailing '/' only directories. */
  excludes: string[];
  /** --include globs: same syntax; re-include what .gitignore or --exclude left out (not inside an excluded directory). */
  includes: string[];
  /**
   * The same globs in the order given, rsync's model: the first that matches decides (include or exclude), and a
   * path none matches is left to the ignore files. When set, `excludes` and `includes` are not consulted.
   */
  rules?: Array<{ include: boolean; glob: string }>;
}

export const IGNORE_FILES = ['.gitignore', '.wsyncignore'] as const;

type Glob = { dirOnly: boolean; match: (p: string) => boolean; anchored: boolean };

function compileGlob(glob: string): Glob {
  let g = glob.trim();
  const dirOnly = g.endsWith('/');
  if (dirOnly) g = g.replace(/\/+$/, '');
  const anchored = g.includes('/');
  if (g.startsWith('/')) g = g.slice(1);
  return { dirOnly, anchored, match: picomatch(g, { dot: true }) };
}

function globHits(globs: Glob[], rel: string, isDir: boolean): boolean {
  for (const g of globs) {
    if (g.dirOnly && !isDir) continue;
    if (g.match(g.anchored ? rel : baseName(rel))) return true;
  }
  return false;
}

/**
 * Which paths take part in a sync. Rules from .gitignore/.wsyncignore are kept per directory and applied with
 * git's precedence: deeper files over shallower ones, later lines over earlier ones, .wsyncignore over
 * .gitignore in the same directory. Paths are checked one level at a time by the walker, so a file below an
 * excluded directory is never reached (git cannot re-include it either).
 */
export class IgnoreRules {
  private perDir = new Map<string, Ignore[]>();
  private byFile = new Map<string, { git?: Ignore; wsync?: Ignore }>();
  /** Verdicts on directories for isExcludedDeep: every path below shares its ancestors' checks. */
  private dirCache = new Map<string, boolean>();
  private excludes: Glob[];
  private includes: Glob[];
  private ordered: Array<{ include: boolean; glob: Glob }> | undefined;

  constructor(readonly opts: FilterOptions) {
    this.excludes = opts.excludes.map(compileGlob);
    this.includes = opts.includes.map(compileGlob);
    this.ordered = opts.rules?.map((r) => ({ include: r.include, glob: compileGlob(r.glob) }));
  }

  wants(name: string): boolean {
    return name === '.wsyncignore' || (name === '.gitignore' && this.opts.gitignore);
  }

  /** Sets the rules of one ignore file (replacing what it said before: an edited .gitignore takes effect). */
  addRules(dir: string, file: string, text: string): void {
    if (!this.wants(file)) return;
    this.setRules(dir, file, ignore({ allowRelativePaths: true }).add(text));
  }

  /** Forgets the rules of an ignore file that was deleted. */
  dropRules(dir: string, file: string): void {
    if (this.byFile.get(dir)?.[file === '.wsyncignore' ? 'wsync' : 'git']) this.setRules(dir, file, undefined);
  }

  private setRules(dir: string, file: string, ig: Ignore | undefined): void {
    this.dirCache.clear();
    const f = this.byFile.get(dir) ?? {};
    if (file === '.wsyncignore') f.wsync = ig;
    else f.git = ig;
    this.byFile.set(dir, f);
    // .wsyncignore is applied second whatever the listing order, so that it overrides .gitignore.
    const list = [f.git, f.wsync].filter((x): x is Ignore => x !== undefined);
    if (list.length) this.perDir.set(dir, list);
    else this.perDir.delete(dir);
  }

  /** Set by isExcluded: the last verdict came from a .gitignore/.wsyncignore file (for counting what they left out). */
  lastFromFiles = false;

  /** Excluded because of the path itself (its ancestors are assumed to be included). */
  isExcluded(rel: string, isDir: boolean): boolean {
    this.lastFromFiles = false;
    const name = baseName(rel);
    if (name === '.git') return true;
    if (rel === STATE_DIR) return true;
    if (isTempName(name) || isAsideName(name) || isPartialName(name)) return true;
    if (this.ordered) {
      for (const r of this.ordered) if (globHits([r.glob], rel, isDir)) return !r.include;
    } else {
      if (globHits(this.includes, rel, isDir)) return false;
      if (globHits(this.excludes, rel, isDir)) return true;
    }
    let state = false;
    if (this.perDir.size === 0) return state;
    for (const dir of ['', ...ancestors(rel)]) {
      const rules = this.perDir.get(dir);
      if (!rules) continue;
      const sub = (dir === '' ? rel : rel.slice(dir.length + 1)) + (isDir ? '/' : '');
      for (const ig of rules) {
        const r = ig.test(sub);
        if (r.ignored) state = true;
        else if (r.unignored) state = false;
      }
    }
    this.lastFromFiles = state;
    return state;
  }

  /** Excluded because of the path or any directory above it. */
  isExcludedDeep(rel: string, isDir: boolean): boolean {
    const parent = parentOf(rel);
    return (parent !== '' && this.dirExcludedDeep(parent)) || this.isExcluded(rel, isDir);
  }

  /** Memoized per directory, and through its parent's verdict: one lookup per path of a tree, not one per level. */
  private dirExcludedDeep(dir: string): boolean {
    let v = this.dirCache.get(dir);
    if (v === undefined) {
      const parent = parentOf(dir);
      v = (parent !== '' && this.dirExcludedDeep(parent)) || this.isExcluded(dir, true);
      this.dirCache.set(dir, v);
    }
    return v;
  }
}

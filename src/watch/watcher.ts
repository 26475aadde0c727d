/**
 * Local file events as hints: "this path may have changed" (a directory: anything below it may have). One OS
 * watch per directory that is not ignored (inotify on Linux: chokidar would spend one per file as well, 20,201
 * watches and 3.8 s for 20,000 files where this takes 201 and milliseconds: ../shared/reference/watch-and-two-way.md
 * §6), or, where the OS offers it (macOS, Windows), one recursive watch of the root. Ignored directories are never
 * watched, so a `node_modules` cannot exhaust inotify. Events are never the truth: the batch that follows looks at
 * the paths themselves.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { IGNORE_FILES, type IgnoreRules } from '../scan/ignore.js';
import { baseName, joinRel, parentOf } from '../util/paths.js';

export interface ChangeWatcher {
  /** Directories watched (one OS watch each; 1 for a recursive watch). */
  readonly watches: number;
  /** Stops every watch. */
  close(): void;
}

export interface WatchHandlers {
  /** Paths relative to the root that may have changed. */
  changed(paths: string[]): void;
  /** A watch failed (the inotify limit, a directory that could not be read): the caller should compare everything. */
  failed(err: Error, dir: string): void;
}

/** Per-directory watches where a recursive one costs one watch per directory anyway (Linux), else one recursive watch. */
export async function watchTree(root: string, rules: IgnoreRules, h: WatchHandlers): Promise<ChangeWatcher> {
  return process.platform === 'darwin' || process.platform === 'win32' ? recursiveWatch(root, rules, h) : new DirWatches(root, rules, h).start();
}

function toRel(p: string): string {
  return path.sep === '/' ? p : p.split(path.sep).join('/');
}

/** Reads the ignore files among a directory's names into `rules` (replacing what they said before). */
async function loadIgnoreFiles(root: string, rel: string, names: Iterable<string>, rules: IgnoreRules): Promise<void> {
  for (const n of names) {
    if (!(IGNORE_FILES as readonly string[]).includes(n) || !rules.wants(n)) continue;
    const text = await fsp.readFile(path.join(root, rel, n), 'utf8').catch(() => null);
    if (text === null) rules.dropRules(rel, n);
    else rules.addRules(rel, n, text);
  }
}

/** How often the root itself is looked at: replaced (its watch then sees nothing) or gone. */
const ROOT_CHECK_MS = 2000;

class DirWatches implements ChangeWatcher {
  /** Watched directories, with the inode each watch is on (a directory replaced by another has a dead watch). */
  private readonly dirs = new Map<string, { w: fs.FSWatcher; ino: number }>();
  private closed = false;
  private rootTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly root: string,
    private readonly rules: IgnoreRules,
    private readonly h: WatchHandlers,
  ) {}

  get watches(): number {
    return this.dirs.size;
  }

  async start(): Promise<this> {
    await this.add('');
    this.rootTimer = setInterval(() => void this.checkRoot(), ROOT_CHECK_MS);
    this.rootTimer.unref();
    return this;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.rootTimer);
    for (const { w } of this.dirs.values()) w.close();
    this.dirs.clear();
  }

  /** The root replaced (rm -rf, then mkdir): watched again and compared whole; gone: said (the batch fails on it). */
  private async checkRoot(): Promise<void> {
    const st = await fsp.lstat(this.root).catch(() => null);
    const had = this.dirs.get('');
    if (this.closed || (st?.isDirectory() && had && had.ino === st.ino)) return;
    this.drop('');
    if (st?.isDirectory()) await this.add('');
    this.h.changed(['']);
  }

  /**
   * Watches `rel` and the directories below it that are not ignored; returns the paths found below it (a directory
   * that appeared after its parent was read: what it holds may have been written before its watch existed).
   */
  private async add(rel: string): Promise<string[]> {
    if (this.closed || this.dirs.has(rel) || (rel !== '' && this.rules.isExcludedDeep(rel, true))) return [];
    const abs = path.join(this.root, rel);
    let w: fs.FSWatcher;
    let ino: number;
    try {
      ino = (await fsp.lstat(abs)).ino;
      // Before the listing: whatever is created after it is reported by the watch.
      w = fs.watch(abs, { persistent: true }, (_type, name) => this.onEvent(rel, name === null ? null : toRel(String(name))));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      this.h.failed(err as Error, rel);
      return [];
    }
    w.on('error', (err) => {
      this.drop(rel);
      this.h.failed(err, rel);
    });
    if (this.dirs.has(rel)) {
      // Added meanwhile (an event and a walk both found it).
      w.close();
      return [];
    }
    this.dirs.set(rel, { w, ino });
    const found: string[] = [];
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(abs, { withFileTypes: true });
    } catch {
      // Gone again (its removal is reported by the parent's watch), or unreadable (the batch reports it).
      this.drop(rel);
      return found;
    }
    await loadIgnoreFiles(this.root, rel, entries.map((e) => e.name), this.rules);
    const subdirs: string[] = [];
    for (const e of entries) {
      const child = joinRel(rel, e.name);
      found.push(child);
      if (e.isDirectory()) subdirs.push(child);
    }
    for (const d of subdirs) found.push(...(await this.add(d)));
    return found;
  }

  /** Stops watching `rel` and what is below it. */
  private drop(rel: string): void {
    for (const [d, { w }] of this.dirs) {
      if (d === rel || (rel === '' ? true : d.startsWith(`${rel}/`))) {
        w.close();
        this.dirs.delete(d);
      }
    }
  }

  private onEvent(dir: string, name: string | null): void {
    if (this.closed) return;
    if (name === null) {
      // The OS could not say which entry (an overflowed queue): the whole directory may have changed.
      this.h.changed([dir]);
      return;
    }
    const rel = joinRel(dir, name);
    this.h.changed([rel]);
    if ((IGNORE_FILES as readonly string[]).includes(baseName(rel))) {
      // An ignore file edited: its rules now, and directories it no longer leaves out are watched from now on.
      void loadIgnoreFiles(this.root, parentOf(rel), [baseName(rel)], this.rules).then(() => this.rewatch(parentOf(rel)));
      return;
    }
    // A directory that appeared is watched, and what it already holds reported; one that went (or became a file or
    // link, or was replaced by another directory: its watch is on the old one) is dropped first.
    void fsp.lstat(path.join(this.root, rel)).then(
      async (st) => {
        const had = this.dirs.get(rel);
        if (had && (!st.isDirectory() || had.ino !== st.ino)) this.drop(rel);
        if (!st.isDirectory()) return;
        const found = await this.add(rel);
        if (found.length) this.h.changed(found);
      },
      () => this.drop(rel),
    );
  }

  /** Watches directories below `rel` that are not watched yet and no longer ignored; reports what they hold. */
  private async rewatch(rel: string): Promise<void> {
    const walk = async (d: string): Promise<void> => {
      if (this.closed || this.rules.isExcludedDeep(d, true)) return;
      if (!this.dirs.has(d)) {
        const found = await this.add(d);
        this.h.changed([d, ...found]);
        return;
      }
      const entries = await fsp.readdir(path.join(this.root, d), { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) await walk(joinRel(d, e.name));
    };
    await walk(rel);
  }
}

/** One recursive watch of the root (macOS FSEvents, Windows ReadDirectoryChangesW); ignored paths filtered here. */
async function recursiveWatch(root: string, rules: IgnoreRules, h: WatchHandlers): Promise<ChangeWatcher> {
  const w = fs.watch(root, { recursive: true, persistent: true }, (_type, name) => {
    if (name === null) return h.changed(['']);
    const rel = toRel(String(name));
    if (rules.isExcludedDeep(rel, false)) return;
    h.changed([rel]);
    const base = baseName(rel);
    if ((IGNORE_FILES as readonly string[]).includes(base)) void loadIgnoreFiles(root, parentOf(rel), [base], rules);
  });
  w.on('error', (err) => h.failed(err, ''));
  // The ignore files that are there now (a walk of the directories that are not ignored).
  const walk = async (rel: string): Promise<void> => {
    const entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true }).catch(() => []);
    await loadIgnoreFiles(root, rel, entries.map((e) => e.name), rules);
    for (const e of entries) {
      const child = joinRel(rel, e.name);
      if (e.isDirectory() && !rules.isExcludedDeep(child, true)) await walk(child);
    }
  };
  await walk('');
  return { watches: 1, close: () => w.close() };
}

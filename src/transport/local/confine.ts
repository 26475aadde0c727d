/**
 * Keeps the local side's writes inside its root when a directory under it is swapped for a symlink (or a file)
 * while a run is going: a check made once and then trusted would be followed by every later open, rename or mkdir.
 *
 * 'fd' (Linux): each directory is opened component by component, each relative to its parent's open fd
 * (`/proc/self/fd/<parent>/<name>`) with O_PATH|O_DIRECTORY|O_NOFOLLOW, starting from an fd of the root; entries
 * are then reached as `/proc/self/fd/<dir>/<name>`, so only the final name is looked up at the moment of the
 * write and a directory renamed away keeps receiving what was meant for it, inside the root. The fds are cached
 * (an LRU of at most MAX_OPEN_DIRS; an evicted one is opened again from its nearest cached ancestor, which checks
 * it again), pinned while an operation uses them, dropped when the directory is removed or renamed, and closed
 * by close() or after a few idle seconds (the engine does not close its local transport).
 *
 * 'recheck' (no /proc/self/fd: macOS, Windows): operations use plain paths, and the whole ancestor chain is
 * checked with lstat (each a real directory, same device and inode) when the directory is taken, right before a
 * rename and right after each create or rename (verify()); on any change the call fails with E_UNSAFE_PATH, and
 * what it created (a temp file, a directory, a temp symlink, an exclusive file) is removed again before any data
 * goes into it. Best effort by nature: a swap in the moment between a check and the call that follows it can
 * still let an unlink, a rename, a chmod or an append through; the fd mode has no such moment. The checks are
 * synchronous on purpose: a few lstat calls from the page cache cost microseconds, and a thread-pool round trip
 * for each, per file, would cost far more.
 */
import { promises as fsp, constants as C, open as openCb, close as closeCb, fstat as fstatCb, existsSync, lstatSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { WsyncError } from '../../errors.js';
import { ancestors, baseName, localJoin, parentOf } from '../../util/paths.js';
import path from 'node:path';

export type ConfineMode = 'fd' | 'recheck';
/** Create missing directories: none, all of them (mode 0755), or only the last one. */
export type Create = boolean | 'last';

export interface DirLease {
  /** The directory itself: `/proc/self/fd/N` ('fd') or its plain path ('recheck'). */
  readonly path: string;
  /** The path of the entry `name` in it. */
  at(name: string): string;
  /** 'recheck': throws E_UNSAFE_PATH when an ancestor is no longer the directory it was when the lease was taken. */
  verify(): void;
  /** Done with it (idempotent): from now on its fd may be closed. */
  release(): void;
}

export interface Confiner {
  readonly mode: ConfineMode;
  /** The directory `rel`, each component a real directory under the root; `forRel` names the write in messages. */
  dir(rel: string, forRel: string, create?: Create): Promise<DirLease>;
  /** After `parent.at(name)` was created as directory `rel`: sets its mode (not followed through a symlink) and keeps it. */
  made(parent: DirLease, name: string, rel: string, mode: number): Promise<void>;
  /** `rel` was removed or renamed: forget it and everything under it. */
  forget(rel: string): void;
  /** True (and forgotten) when the lease's directory has been removed meanwhile, e.g. by someone else. */
  stale(d: DirLease): Promise<boolean>;
  close(): Promise<void>;
}

/** Turns an fs error into the transport's E_LOCAL_IO (local.ts's, so that all its messages read alike). */
export type IoError = (err: unknown, what: string) => WsyncError;

export function errCode(err: unknown): string | undefined {
  if (err instanceof WsyncError) return (err.cause as NodeJS.ErrnoException | undefined)?.code;
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function notReal(forRel: string, dir: string): WsyncError {
  return new WsyncError('E_UNSAFE_PATH', `refusing to write ${forRel}: ${dir} is not a real directory (a symlink or file)`);
}

function changed(forRel: string, dir: string): WsyncError {
  return new WsyncError('E_UNSAFE_PATH', `refusing to write ${forRel}: ${dir} changed while it was being written (replaced or turned into a symlink)`);
}

/** A failure opening or creating one directory component, turned into the caller's error by dir(). */
class DirError extends Error {
  constructor(readonly rel: string, readonly errno: NodeJS.ErrnoException, readonly what: string) {
    super(errno.message);
  }
}

function toWsync(err: unknown, forRel: string, root: string, ioError: IoError): unknown {
  if (!(err instanceof DirError)) return err;
  const code = err.errno.code;
  if (code === 'ELOOP' || code === 'ENOTDIR') return notReal(forRel, err.rel);
  return ioError(err.errno, `${err.what} ${localJoin(root, err.rel)}`);
}

// ---------------------------------------------------------------------------------------------------------------
// 'fd'

/** Linux O_PATH (the same value on every architecture Node runs on); whether it is honoured is probed once. */
export const O_PATH = 0o10000000;
const DIR_FLAGS = O_PATH | C.O_DIRECTORY | (C.O_NOFOLLOW ?? 0);
/** Directory fds kept open per transport (pinned ones may exceed it while in use). */
export const MAX_OPEN_DIRS = 256;
/** The cached fds are all closed when no directory was asked for during a whole period of this length. */
const IDLE_MS = 2000;

let fdProbe: boolean | undefined;

/** /proc/self/fd exists, O_PATH is honoured and a directory is reachable through its fd: 'fd' mode works. */
export function fdConfinementAvailable(): boolean {
  if (fdProbe !== undefined) return fdProbe;
  fdProbe = false;
  if (process.platform !== 'linux' || !existsSync('/proc/self/fd')) return false;
  let fd = -1;
  try {
    fd = openSync('/', O_PATH | C.O_DIRECTORY);
    try {
      readSync(fd, Buffer.alloc(1), 0, 1, null);
      return false; // read an O_PATH fd?! the flag was ignored
    } catch (err) {
      // An O_PATH fd refuses reads with EBADF; a plain directory fd would say EISDIR.
      if ((err as NodeJS.ErrnoException).code !== 'EBADF') return false;
    }
    fdProbe = statSync(`/proc/self/fd/${fd}/.`).isDirectory();
  } catch {
    fdProbe = false;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
  return fdProbe;
}

function openFd(p: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => openCb(p, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
}

function closeFd(fd: number): Promise<void> {
  return new Promise((resolve) => closeCb(fd, () => resolve()));
}

function fstatFd(fd: number): Promise<Stats> {
  return new Promise((resolve, reject) => fstatCb(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

interface DirFd {
  readonly rel: string;
  readonly fd: number;
  readonly path: string;
  /** Operations using it now: it is not closed before they are done. */
  refs: number;
  /** In the cache (otherwise closed when the last user is done). */
  cached: boolean;
  closed: boolean;
}

class FdLease implements DirLease {
  readonly path: string;
  private readonly base: string;
  private held = true;
  constructor(readonly entry: DirFd, private readonly unref: (e: DirFd) => void) {
    this.path = entry.path;
    this.base = entry.path + '/';
  }
  at(name: string): string {
    return this.base + name;
  }
  verify(): void {}
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.unref(this.entry);
  }
}

export class FdConfiner implements Confiner {
  readonly mode = 'fd' as const;
  /** LRU: most recently used last. The root ('') is in it too, and never evicted. */
  private dirs = new Map<string, DirFd>();
  private opening = new Map<string, Promise<unknown>>();
  /** Bumped when directories are forgotten: an open started before then is used once, not cached. */
  private epoch = 0;
  private uses = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly root: string, private readonly ioError: IoError) {}

  async dir(rel: string, forRel: string, create: Create = false): Promise<DirLease> {
    let e: DirFd;
    try {
      e = await this.get(rel, create);
    } catch (err) {
      throw toWsync(err, forRel, this.root, this.ioError);
    }
    return this.lease(e);
  }

  private lease(e: DirFd): DirLease {
    return new FdLease(e, (x) => this.unref(x));
  }

  /** The entry for `rel` with one more user. */
  private async get(rel: string, create: Create): Promise<DirFd> {
    for (;;) {
      const hit = this.dirs.get(rel);
      if (hit) {
        if (rel !== '') {
          this.dirs.delete(rel);
          this.dirs.set(rel, hit);
        }
        hit.refs++;
        this.uses++;
        return hit;
      }
      const pending = this.opening.get(rel);
      if (!pending) return this.open(rel, create);
      try {
        // Then from the cache (or opened again if it was not cached).
        await pending;
      } catch (err) {
        // Someone else's open without create found nothing: ours may create it.
        if (!(create && err instanceof DirError && err.errno.code === 'ENOENT')) throw err;
      }
    }
  }

  /** Opens `rel` once however many ask at the same time. */
  private open(rel: string, create: Create): Promise<DirFd> {
    const p = this.openDir(rel, create);
    const settled = p.then(() => undefined);
    const clear = () => {
      if (this.opening.get(rel) === settled) this.opening.delete(rel);
    };
    // Registered before any waiter's: the entry is gone from `opening` when they look again.
    settled.then(clear, clear);
    this.opening.set(rel, settled);
    return p;
  }

  private async openDir(rel: string, create: Create): Promise<DirFd> {
    const epoch = this.epoch;
    let fd: number;
    if (rel === '') {
      fd = await openFd(this.root, O_PATH | C.O_DIRECTORY).catch((err: NodeJS.ErrnoException) => {
        throw new DirError('', err, 'cannot reach');
      });
    } else {
      fd = await this.openChild(rel, create, true);
    }
    this.uses++;
    const e: DirFd = { rel, fd, path: `/proc/self/fd/${fd}`, refs: 1, cached: false, closed: false };
    if (epoch === this.epoch) this.insert(e);
    return e;
  }

  /** Opens (creating it when asked) the last component of `rel` through its parent's fd. */
  private async openChild(rel: string, create: Create, retry: boolean): Promise<number> {
    const parent = await this.get(parentOf(rel), create === 'last' ? false : create);
    const p = `${parent.path}/${baseName(rel)}`;
    try {
      try {
        return await openFd(p, DIR_FLAGS);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code !== 'ENOENT') throw new DirError(rel, e, 'cannot reach');
        // The parent itself may have been removed (and made again) by someone else: then open it afresh, once.
        if (!(retry && (await this.gone(parent)))) {
          if (!create) throw new DirError(rel, e, 'cannot reach');
          await fsp.mkdir(p, 0o755).catch((err2: NodeJS.ErrnoException) => {
            if (err2.code !== 'EEXIST') throw new DirError(rel, err2, 'cannot create');
          });
          return await openFd(p, DIR_FLAGS).catch((err2: NodeJS.ErrnoException) => {
            throw new DirError(rel, err2, 'cannot reach');
          });
        }
      }
    } finally {
      this.unref(parent);
    }
    this.forget(parent.rel);
    return this.openChild(rel, create, false);
  }

  private async gone(e: DirFd): Promise<boolean> {
    try {
      return (await fstatFd(e.fd)).nlink === 0;
    } catch {
      return false;
    }
  }

  async stale(d: DirLease): Promise<boolean> {
    if (!(d instanceof FdLease)) return false;
    const e = d.entry;
    if (!(await this.gone(e))) return false;
    this.forget(e.rel);
    return true;
  }

  async made(parent: DirLease, name: string, rel: string, mode: number): Promise<void> {
    let fd: number;
    try {
      fd = await openFd(parent.at(name), DIR_FLAGS);
    } catch (err) {
      throw toWsync(new DirError(rel, err as NodeJS.ErrnoException, 'cannot reach'), rel, this.root, this.ioError);
    }
    try {
      // Through the fd: the directory just made, whatever its name now leads to.
      await fsp.chmod(`/proc/self/fd/${fd}`, mode);
    } catch (err) {
      await closeFd(fd);
      throw this.ioError(err, `cannot create directory ${localJoin(this.root, rel)}`);
    }
    this.forget(rel, false);
    this.insert({ rel, fd, path: `/proc/self/fd/${fd}`, refs: 0, cached: false, closed: false });
  }

  private insert(e: DirFd): void {
    const old = this.dirs.get(e.rel);
    if (old) this.drop(old);
    e.cached = true;
    this.dirs.set(e.rel, e);
    if (this.dirs.size > MAX_OPEN_DIRS) {
      for (const x of this.dirs.values()) {
        if (this.dirs.size <= MAX_OPEN_DIRS) break;
        if (x.rel !== '' && x.refs === 0) this.drop(x);
      }
    }
    this.arm();
  }

  private drop(e: DirFd): void {
    if (this.dirs.get(e.rel) === e) this.dirs.delete(e.rel);
    e.cached = false;
    if (e.refs === 0) void this.closeEntry(e);
  }

  private unref(e: DirFd): void {
    e.refs--;
    if (e.refs === 0 && !e.cached) void this.closeEntry(e);
  }

  private closeEntry(e: DirFd): Promise<void> {
    if (e.closed) return Promise.resolve();
    e.closed = true;
    return closeFd(e.fd);
  }

  forget(rel: string, bump = true): void {
    // Opens in flight may have reached the directory before it went: they are used once, not cached.
    if (bump && this.opening.size > 0) this.epoch++;
    const under = rel === '' ? '' : rel + '/';
    for (const [k, e] of this.dirs) if (k === rel || k.startsWith(under)) this.drop(e);
  }

  /** A timer that closes the cache once writes stop (the engine never closes its local transport). */
  private arm(): void {
    if (this.timer) return;
    let seen = this.uses;
    this.timer = setInterval(() => {
      if (this.uses !== seen) {
        seen = this.uses;
        return;
      }
      for (const e of this.dirs.values()) if (e.refs === 0) this.drop(e);
      if (this.dirs.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    }, IDLE_MS);
    this.timer.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.epoch++;
    const closing: Array<Promise<void>> = [];
    for (const e of this.dirs.values()) {
      e.cached = false;
      if (e.refs === 0) closing.push(this.closeEntry(e));
    }
    this.dirs.clear();
    await Promise.all(closing);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// 'recheck'

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export class RecheckConfiner implements Confiner {
  readonly mode = 'recheck' as const;

  constructor(private readonly root: string, private readonly ioError: IoError) {}

  private abs(rel: string): string {
    return localJoin(this.root, rel);
  }

  async dir(rel: string, forRel: string, create: Create = false): Promise<DirLease> {
    const chain = rel === '' ? [] : [...ancestors(rel), rel];
    const ids: string[] = [];
    const verifyUpTo = (n: number) => {
      for (let i = 0; i < n; i++) {
        let st: Stats | null;
        try {
          st = lstatOrNull(this.abs(chain[i]));
        } catch {
          st = null;
        }
        if (!st || !st.isDirectory() || `${st.dev}:${st.ino}` !== ids[i]) throw changed(forRel, chain[i]);
      }
    };
    for (let i = 0; i < chain.length; i++) {
      const p = this.abs(chain[i]);
      let st: Stats | null;
      try {
        st = lstatOrNull(p);
      } catch (err) {
        throw this.ioError(err, `cannot reach ${p}`);
      }
      if (!st && (create === true || (create === 'last' && i === chain.length - 1))) {
        let made = false;
        await fsp.mkdir(p, 0o755).then(
          () => (made = true),
          (err: NodeJS.ErrnoException) => {
            if (err.code !== 'EEXIST') throw this.ioError(err, `cannot create ${p}`);
          },
        );
        try {
          verifyUpTo(i);
        } catch (err) {
          // Made through a directory swapped meanwhile: take it back (it is empty, and ours).
          if (made) await fsp.rmdir(p).catch(() => undefined);
          throw err;
        }
        st = lstatOrNull(p);
      }
      if (!st) throw this.ioError(Object.assign(new Error(`no such directory '${p}'`), { code: 'ENOENT' }), `cannot reach ${p}`);
      if (!st.isDirectory()) throw notReal(forRel, chain[i]);
      ids.push(`${st.dev}:${st.ino}`);
    }
    const dirPath = this.abs(rel);
    return {
      path: dirPath,
      at: (name) => path.join(dirPath, name),
      verify: () => verifyUpTo(chain.length),
      release: () => undefined,
    };
  }

  async made(parent: DirLease, name: string, rel: string, mode: number): Promise<void> {
    const p = parent.at(name);
    try {
      parent.verify();
    } catch (err) {
      await fsp.rmdir(p).catch(() => undefined);
      throw err;
    }
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch (err) {
      throw this.ioError(err, `cannot create directory ${p}`);
    }
    if (!st.isDirectory()) throw notReal(rel, rel);
    try {
      // lchmod (macOS) does not follow a symlink put in its place meanwhile; elsewhere chmod is all there is.
      await (process.platform === 'darwin' ? fsp.lchmod(p, mode) : fsp.chmod(p, mode));
    } catch (err) {
      throw this.ioError(err, `cannot create directory ${p}`);
    }
    parent.verify();
  }

  forget(): void {}

  async stale(): Promise<boolean> {
    return false;
  }

  async close(): Promise<void> {}
}

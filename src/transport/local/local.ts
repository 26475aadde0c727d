import { promises as fsp, constants as C, readdirSync, lstatSync, readlinkSync, openSync, readSync, fstatSync, closeSync } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { Entry } from '../../types.js';
import type { Capabilities, ExclusiveFile, StagedFile, DirListing, FileReader, LiteralSource, OldVersion, RebuildOp, Transport, WriteMeta, WriteOptions } from '../types.js';
import { specialKindOf } from '../types.js';
import { WsyncError } from '../../errors.js';
import { Semaphore } from '../../util/limit.js';
import { asideNameFor, baseName, joinRel, localJoin, parentOf, tempNameFor, tooLongText } from '../../util/paths.js';
import { asExpected, checkExpected, checkRebuildOps, conflictName, dataWritten, outsideEdit } from '../rebuild.js';
import { FdConfiner, O_PATH, RecheckConfiner, errCode, fdConfinementAvailable, type ConfineMode, type Confiner, type Create, type DirLease } from './confine.js';

const BLOCK = 1 << 20;
const LOCAL_FILES_IN_FLIGHT = 128;
/**
 * Files up to this size are read with blocking calls: open, read, fstat and close of a cached small file take
 * ~10 µs in the kernel, while the same four as promises cost ~140 µs of main-thread time in thread-pool hops and
 * promise machinery; on a push of thousands of small files that was the largest CPU cost after compression.
 */
const SYNC_READ_MAX = 64 * 1024;

export function entryFromStats(st: Stats, target?: string): Entry | null {
  const mtime = Math.floor(st.mtimeMs / 1000);
  const mode = st.mode & 0o7777;
  if (st.isFile()) return { type: 'file', size: st.size, mtime, mode, ctime: st.ctimeMs };
  if (st.isDirectory()) return { type: 'dir', size: 0, mtime, mode };
  if (st.isSymbolicLink()) return { type: 'symlink', size: 0, mtime, mode, target: target ?? '' };
  return null; // sockets, fifos, devices are not synced
}

/** The file opened for reading is the version that was scanned: `size` bytes, and mtime `mtime` (when known). */
function checkVersion(rel: string, st: import('node:fs').BigIntStats, size: number, mtime: number | undefined): void {
  if (Number(st.size) !== size) throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} changed size since it was scanned; it goes on the next run`);
  if (mtime !== undefined && floorSeconds(st.mtimeNs) !== mtime) {
    throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} was modified since it was scanned; it goes on the next run`);
  }
}

/** Whole seconds, rounded down as entryFromStats does (BigInt division rounds a negative time the other way). */
function floorSeconds(ns: bigint): number {
  const q = ns / 1_000_000_000n;
  return Number(ns < 0n && q * 1_000_000_000n !== ns ? q - 1n : q);
}

/**
 * Nothing wrote to the file while it was read (size, mtime and ctime in nanoseconds unchanged; ctime also catches
 * a writer that put the mtime back): otherwise what was read may mix two versions.
 */
function checkUnchanged(rel: string, before: import('node:fs').BigIntStats, after: import('node:fs').BigIntStats): void {
  if (after.size !== before.size || after.mtimeNs !== before.mtimeNs || after.ctimeNs !== before.ctimeNs || after.ino !== before.ino) {
    throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} was modified while it was being read; it goes on the next run`);
  }
}

/** The rest of an iteration whose first step was taken; `source.ended` once the source said it was done. */
async function* resumed(first: IteratorResult<Buffer>, it: AsyncIterator<Buffer>, source: { ended: boolean }): AsyncGenerator<Buffer> {
  if (first.done) return;
  yield first.value;
  for (;;) {
    const n = await it.next();
    if (n.done) {
      source.ended = true;
      return;
    }
    yield n.value;
  }
}

/** lstat as a comparable entry; null when nothing is there. */
async function lstatEntry(p: string): Promise<Entry | null> {
  try {
    return entryFromStats(await fsp.lstat(p));
  } catch (err) {
    if (errCode(err) === 'ENOENT') return null;
    throw err;
  }
}

function stampOf(st: import('node:fs').BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

async function writeAll(fh: fsp.FileHandle, buf: Buffer, pos: number): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, pos + off);
    off += bytesWritten;
  }
}

function ioError(err: unknown, what: string): WsyncError {
  const e = err as NodeJS.ErrnoException & { dest?: string };
  if (e.code === 'ENAMETOOLONG') return new WsyncError('E_LOCAL_IO', `${what}: ${tooLongText([e.path, e.dest])}`, { cause: err });
  return new WsyncError('E_LOCAL_IO', `${what}: ${e.code ?? ''} ${e.message ?? String(err)}`.trim(), { cause: err });
}

const NOFOLLOW = C.O_NOFOLLOW ?? 0;

/** A temp file written next to its final name, in a directory held until it is renamed in or removed. */
interface Temp {
  d: DirLease;
  name: string;
}

export interface LocalTransportOptions {
  /**
   * How writes are kept inside the root when directories under it are swapped for symlinks (see confine.ts):
   * 'auto' (the default) is 'fd' where /proc/self/fd and O_PATH work (Linux), 'recheck' elsewhere. Asking for
   * 'recheck' is for tests of the fallback.
   */
  confine?: 'auto' | ConfineMode;
}

/**
 * The local filesystem as a Transport. Used for the local side of every sync and, with a plain path as the
 * target, as the remote side too, so the whole engine runs without a server.
 */
export class LocalTransport implements Transport {
  readonly kind = 'local' as const;
  readonly caps: Capabilities = { copyData: true, fsync: true, maxRead: BLOCK, maxWrite: BLOCK };
  readonly root: string;
  /**
   * Files being written or streamed at once. The engine keeps up to --concurrency (1024) files in flight for the
   * link's sake; a local disk gains nothing past a few dozen, and each one holds a file and a directory descriptor
   * (1024 of each went past a default `ulimit -n` of 1024).
   */
  private readonly fileSlots = new Semaphore(LOCAL_FILES_IN_FLIGHT);
  /** How writes are confined to the root: 'fd' (Linux) or 'recheck'. */
  readonly confinement: ConfineMode;
  private readonly confine: Confiner;
  private lastYield = Date.now();

  constructor(root: string, opts: LocalTransportOptions = {}) {
    this.root = path.resolve(root);
    const want = opts.confine ?? 'auto';
    const fd = want !== 'recheck' && fdConfinementAvailable();
    if (want === 'fd' && !fd) throw new WsyncError('E_INTERNAL', 'directory fd confinement needs /proc/self/fd and O_PATH (Linux)');
    this.confinement = fd ? 'fd' : 'recheck';
    this.confine = fd ? new FdConfiner(this.root, ioError) : new RecheckConfiner(this.root, ioError);
  }

  describe(rel = ''): string {
    return localJoin(this.root, rel);
  }

  private abs(rel: string): string {
    return localJoin(this.root, rel);
  }

  async readdir(rel: string): Promise<DirListing | null> {
    // Synchronous calls on purpose: one directory's lstats take microseconds from the page cache, while the
    // thread-pool round trip per call made scans several times slower and competed with SSH traffic. Every few
    // milliseconds the scan steps aside, so that replies from the server (lock, manifest) are handled meanwhile.
    if (Date.now() - this.lastYield > 5) {
      await new Promise((r) => setImmediate(r));
      this.lastYield = Date.now();
    }
    const dir = this.abs(rel);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw ioError(err, `cannot list ${dir}`);
    }
    const out: DirListing = [];
    for (const name of names) {
      const p = path.join(dir, name);
      try {
        const st = lstatSync(p);
        const entry = entryFromStats(st, st.isSymbolicLink() ? readlinkSync(p) : undefined);
        if (entry) out.push({ name, entry });
        else (out.skipped ??= []).push({ name, kind: specialKindOf(st.mode) });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, `cannot stat ${p}`);
      }
    }
    return out;
  }

  async lstat(rel: string): Promise<Entry | null> {
    try {
      const st = await fsp.lstat(this.abs(rel));
      const target = st.isSymbolicLink() ? await fsp.readlink(this.abs(rel)) : undefined;
      return entryFromStats(st, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw ioError(err, `cannot stat ${this.abs(rel)}`);
    }
  }

  async readFile(rel: string): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.abs(rel));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw ioError(err, `cannot read ${this.abs(rel)}`);
    }
  }

  async *openRead(rel: string, size: number, mtime?: number): AsyncIterable<Buffer> {
    if (size <= SYNC_READ_MAX) {
      yield this.readSmall(rel, size, mtime);
      return;
    }
    await this.fileSlots.acquire();
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.abs(rel), C.O_RDONLY | (C.O_NOFOLLOW ?? 0));
    } catch (err) {
      this.fileSlots.release();
      throw ioError(err, `cannot open ${this.abs(rel)}`);
    }
    try {
      const before = await fh.stat({ bigint: true });
      checkVersion(rel, before, size, mtime);
      let pos = 0;
      while (pos < size) {
        const want = Math.min(BLOCK, size - pos);
        const buf = Buffer.allocUnsafe(want);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) {
          throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} shrank while it was being read`);
        }
        pos += bytesRead;
        yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
      }
      checkUnchanged(rel, before, await fh.stat({ bigint: true }));
    } finally {
      await fh.close();
      this.fileSlots.release();
    }
  }

  private readSmall(rel: string, size: number, mtime?: number): Buffer {
    let fd: number;
    try {
      fd = openSync(this.abs(rel), C.O_RDONLY | (C.O_NOFOLLOW ?? 0));
    } catch (err) {
      throw ioError(err, `cannot open ${this.abs(rel)}`);
    }
    try {
      const before = fstatSync(fd, { bigint: true });
      checkVersion(rel, before, size, mtime);
      // One byte more than expected: a file that grew is caught without another call.
      const buf = Buffer.allocUnsafe(size + 1);
      let got = 0;
      for (;;) {
        const n = readSync(fd, buf, got, buf.length - got, got);
        if (n === 0) break;
        got += n;
        if (got === buf.length) break;
      }
      if (got !== size) throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} changed size while it was being read`);
      checkUnchanged(rel, before, fstatSync(fd, { bigint: true }));
      return buf.subarray(0, size);
    } catch (err) {
      throw err instanceof WsyncError ? err : ioError(err, `cannot read ${this.abs(rel)}`);
    } finally {
      closeSync(fd);
    }
  }

  async openReader(rel: string): Promise<FileReader> {
    const p = this.abs(rel);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(p, C.O_RDONLY | (C.O_NOFOLLOW ?? 0));
    } catch (err) {
      throw ioError(err, `cannot open ${p}`);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) throw new WsyncError('E_LOCAL_IO', `${p} is not a regular file`);
      return {
        size: Number(st.size),
        stamp: stampOf(st),
        read: async (pos, length) => {
          const buf = Buffer.allocUnsafe(length);
          for (let got = 0; got < length; ) {
            const { bytesRead } = await fh.read(buf, got, length - got, pos + got).catch((err) => {
              throw ioError(err, `cannot read ${p}`);
            });
            if (bytesRead === 0) throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} shrank while it was being read`);
            got += bytesRead;
          }
          return buf;
        },
        close: () => fh.close(),
      };
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  async stamp(rel: string): Promise<string | null> {
    try {
      const st = await fsp.lstat(this.abs(rel), { bigint: true });
      return st.isFile() ? stampOf(st) : null;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw ioError(err, `cannot stat ${this.abs(rel)}`);
    }
  }

  async ensureRoot(): Promise<void> {
    try {
      await fsp.mkdir(this.root, { recursive: true });
    } catch (err) {
      throw ioError(err, `cannot create ${this.root}`);
    }
  }

  /**
   * The directory holding `rel` (confined: see confine.ts) with `first` run in it. When `first` fails with ENOENT
   * because that directory was removed meanwhile (and perhaps made again, by someone else), it runs once more in a
   * fresh one. Resolves with the lease still held: the caller releases it.
   */
  private async inParent<T>(rel: string, create: Create, first: (d: DirLease, name: string) => Promise<T>): Promise<{ d: DirLease; v: T }> {
    const dir = parentOf(rel);
    const name = baseName(rel);
    for (let attempt = 0; ; attempt++) {
      const d = await this.confine.dir(dir, rel, create);
      try {
        return { d, v: await first(d, name) };
      } catch (err) {
        const again = attempt === 0 && errCode(err) === 'ENOENT' && (await this.confine.stale(d));
        d.release();
        if (!again) throw err;
      }
    }
  }

  /** Creates `name` in `d` with O_EXCL; undone when the directory turns out to have changed meanwhile ('recheck'). */
  private async createIn(d: DirLease, name: string, mode: number): Promise<fsp.FileHandle> {
    const fh = await fsp.open(d.at(name), C.O_WRONLY | C.O_CREAT | C.O_EXCL | NOFOLLOW, mode);
    try {
      d.verify();
    } catch (err) {
      await fh.close().catch(() => undefined);
      await fsp.unlink(d.at(name)).catch(() => undefined);
      throw err;
    }
    return fh;
  }

  mkdir(rel: string, mode: number): Promise<void> {
    return this.fileSlots.with(() => this.mkdirNow(rel, mode));
  }

  private async mkdirNow(rel: string, mode: number): Promise<void> {
    const p = this.abs(rel);
    const { d, v: created } = await this.inParent(rel, false, async (dl, name) => {
      try {
        await fsp.mkdir(dl.at(name), { mode: mode & 0o777 });
        return true;
      } catch (err) {
        if (errCode(err) === 'EEXIST' && (await fsp.lstat(dl.at(name))).isDirectory()) return false;
        throw err;
      }
    }).catch((err) => {
      throw err instanceof WsyncError ? err : ioError(err, `cannot create directory ${p}`);
    });
    try {
      // The mode (mkdir's is cut by the umask) set on the directory just made, which is kept open from now on.
      if (created) await this.confine.made(d, baseName(rel), rel, mode & 0o7777);
    } finally {
      d.release();
    }
  }

  async writeFile(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts: WriteOptions = {}): Promise<void> {
    // The first bytes are awaited before anything is opened: on a pull they come over the network, and a thousand
    // files waiting for them must not hold a thousand descriptors (a small file then needs no second wait at all).
    const it = data[Symbol.asyncIterator]();
    let first: IteratorResult<Buffer>;
    try {
      first = await it.next();
    } catch (err) {
      await it.return?.().catch(() => undefined);
      throw err;
    }
    const source = { ended: first.done === true };
    try {
      await this.fileSlots.with(async () => {
        const tmp = await this.writeTemp(rel, resumed(first, it, source), meta, opts);
        await this.commit(tmp, rel, opts);
      });
    } finally {
      // A write that stopped early (or never began) closes its source: a remote reader holds a handle and a slot.
      if (!source.ended) await it.return?.().catch(() => undefined);
    }
  }

  async stageSmall(rel: string, data: Buffer, opts: { mode?: number; mtime?: number; parents?: boolean | 'last'; tempName?: string; tempIn?: string } = {}): Promise<StagedFile> {
    const meta = { mode: opts.mode ?? 0o644, mtime: opts.mtime ?? Math.floor(Date.now() / 1000), size: data.length };
    return this.staged(await this.writeTemp(rel, (async function* () { yield data; })(), meta, opts), rel);
  }

  /** A finished temp file, renamed in or removed later. */
  private staged(tmp: Temp, rel: string): StagedFile {
    let done = false;
    return {
      commit: async (o = {}) => {
        done = true;
        try {
          await this.commit(tmp, rel, o);
          return true;
        } catch (err) {
          if (o.exclusive && err instanceof WsyncError && (err.cause as NodeJS.ErrnoException)?.code === 'EEXIST') return false;
          throw err;
        }
      },
      abort: async () => {
        if (done) return;
        done = true;
        await fsp.unlink(tmp.d.at(tmp.name)).catch(() => undefined);
        tmp.d.release();
      },
    };
  }

  /** Data, mode, mtime and fsync under a temp name in the target's directory, which stays held for the commit. */
  private async writeTemp(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts: WriteOptions): Promise<Temp> {
    const name = opts.tempName ?? baseName(tempNameFor(rel));
    const tmpAbs = this.abs(joinRel(parentOf(rel), name));
    const create: Create = opts.parents === 'last' ? 'last' : !!opts.parents;
    const { d, v: fh } = await this.inParent(rel, create, (dl) => this.createIn(dl, name, meta.mode & 0o777)).catch((err) => {
      throw err instanceof WsyncError ? err : ioError(err, `cannot create ${tmpAbs}`);
    });
    let ok = false;
    try {
      let pos = 0;
      for await (const chunk of data) {
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, off, chunk.length - off, pos);
          off += bytesWritten;
          pos += bytesWritten;
        }
      }
      if (pos !== meta.size) {
        throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel}: expected ${meta.size} bytes, got ${pos}`);
      }
      await fh.chmod(meta.mode & 0o7777);
      await fh.utimes(meta.mtime, meta.mtime);
      await fh.sync();
      ok = true;
    } finally {
      await fh.close().catch(() => undefined);
      if (!ok) {
        await fsp.unlink(d.at(name)).catch(() => undefined);
        d.release();
      }
    }
    return { d, name };
  }

  async writeFromRanges(rel: string, srcRel: string, ranges: ReadonlyArray<readonly [number, number]>, meta: WriteMeta): Promise<void> {
    const { d, v: src } = await this.inParent(srcRel, false, (dl, name) => fsp.open(dl.at(name), C.O_RDONLY | NOFOLLOW)).catch((err) => {
      throw err instanceof WsyncError ? err : ioError(err, `cannot open ${this.abs(srcRel)}`);
    });
    try {
      d.verify();
    } catch (err) {
      await src.close();
      throw err;
    } finally {
      d.release();
    }
    try {
      const parts = async function* () {
        for (const [off, len] of ranges) {
          const buf = Buffer.allocUnsafe(len);
          for (let got = 0; got < len; ) {
            const { bytesRead } = await src.read(buf, got, len - got, off + got);
            if (bytesRead === 0) throw new WsyncError('E_LOCAL_IO', `${srcRel} ends before ${off + len}`);
            got += bytesRead;
          }
          yield buf;
        }
      };
      await this.writeFile(rel, parts(), meta);
    } finally {
      await src.close();
    }
  }

  async rebuildFile(rel: string, old: OldVersion, ops: readonly RebuildOp[], literal: LiteralSource, meta: WriteMeta, opts: WriteOptions = {}): Promise<void> {
    await (await this.stageRebuild(rel, old, ops, literal, meta)).commit({ backupTo: opts.backupTo });
  }

  async stageRebuild(rel: string, old: OldVersion, ops: readonly RebuildOp[], literal: LiteralSource, meta: WriteMeta, opts: { gate?: Promise<unknown>; tempName?: string } = {}): Promise<StagedFile> {
    checkRebuildOps(ops, old.size, meta.size);
    // Before anything else, the temp file included: another run holding the lock could take it for a leftover, or
    // find it in a directory it removes.
    await opts.gate;
    const finalAbs = this.abs(rel);
    const { d, v: src } = await this.inParent(rel, false, (dl, name) => fsp.open(dl.at(name), C.O_RDONLY | NOFOLLOW)).catch((err) => {
      if (err instanceof WsyncError) throw err;
      const code = errCode(err);
      // ELOOP: O_NOFOLLOW met a symlink, which is not the file the manifest describes either.
      if (code === 'ENOENT' || code === 'ELOOP') throw outsideEdit(finalAbs, old, null);
      throw ioError(err, `cannot open ${finalAbs}`);
    });
    const checkOld = async () => {
      const st = await src.stat();
      const now = { size: st.size, mtime: Math.floor(st.mtimeMs / 1000) };
      if (!st.isFile() || now.size !== old.size || now.mtime !== old.mtime) throw outsideEdit(finalAbs, old, now);
    };
    const name = opts.tempName ?? baseName(tempNameFor(rel));
    const tmpAbs = this.abs(joinRel(parentOf(rel), name));
    let out: fsp.FileHandle | undefined;
    let ok = false;
    try {
      // The old file read must be one inside the root too.
      d.verify();
      await checkOld();
      out = await this.createIn(d, name, meta.mode & 0o777).catch((err) => {
        throw err instanceof WsyncError ? err : ioError(err, `cannot create ${tmpAbs}`);
      });
      const buf = Buffer.allocUnsafe(BLOCK);
      for (const op of ops) {
        for (let done = 0; done < op.length; ) {
          const n = Math.min(BLOCK, op.length - done);
          let piece: Buffer;
          if (op.kind === 'copy') {
            const { bytesRead } = await src.read(buf, 0, n, op.srcOffset + done);
            if (bytesRead === 0) throw outsideEdit(finalAbs, old, null);
            piece = buf.subarray(0, bytesRead);
          } else {
            piece = await literal(op.dstOffset + done, n);
            if (piece.length !== n) throw new WsyncError('E_INTERNAL', `literal source gave ${piece.length} bytes, ${n} asked`);
          }
          await writeAll(out, piece, op.dstOffset + done);
          done += piece.length;
        }
      }
      // A change while we copied would leave a mix of old and new bytes in the copied ranges.
      await checkOld();
      await out.chmod(meta.mode & 0o7777);
      await out.utimes(meta.mtime, meta.mtime);
      await out.sync();
      const st = await out.stat();
      if (st.size !== meta.size) throw new WsyncError('E_INTERNAL', `${rel}: rebuilt ${st.size} bytes, expected ${meta.size}`);
      ok = true;
    } catch (err) {
      throw err instanceof WsyncError ? err : ioError(err, `cannot rebuild ${finalAbs}`);
    } finally {
      await out?.close().catch(() => undefined);
      await src.close().catch(() => undefined);
      if (!ok) {
        if (out) await fsp.unlink(d.at(name)).catch(() => undefined);
        d.release();
      }
    }
    return this.staged({ d, name }, rel);
  }

  /** Renames a temp over `rel`, both in the directory the temp was made in; releases that directory. */
  private async commit(tmp: Temp, rel: string, opts: WriteOptions): Promise<void> {
    const { d } = tmp;
    const from = d.at(tmp.name);
    const to = d.at(baseName(rel));
    try {
      d.verify();
      if (opts.exclusive) {
        // link() fails on an existing name, which is what an exclusive create needs; rename would replace.
        await fsp.link(from, to);
        await fsp.unlink(from);
      } else if (opts.backupTo) {
        await this.moveAside(d, rel, opts.backupTo);
        await fsp.rename(from, to);
      } else if (opts.expect === null) {
        await this.createChecked(from, to, rel);
      } else if (opts.expect) {
        await this.replaceChecked(d, from, to, rel, opts.expect, opts.changedTo);
      } else {
        await fsp.rename(from, to);
      }
      d.verify();
    } catch (err) {
      await fsp.unlink(from).catch(() => undefined);
      throw err instanceof WsyncError ? err : ioError(err, `cannot move into place ${this.abs(rel)}`);
    } finally {
      d.release();
    }
  }

  /**
   * A new file where the plan saw nothing: link() refuses an existing name, so a file someone created meanwhile is
   * kept and this one dropped (E_CONFLICT). A filesystem without hard links (FAT, exFAT): checked, then renamed.
   */
  private async createChecked(from: string, to: string, rel: string): Promise<void> {
    try {
      await fsp.link(from, to);
    } catch (err) {
      const code = errCode(err);
      if (code === 'EEXIST') checkExpected(this.abs(rel), await lstatEntry(to), null);
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
      checkExpected(this.abs(rel), await lstatEntry(to), null);
      await fsp.rename(from, to);
      return;
    }
    await fsp.unlink(from);
  }

  /**
   * Replaces a file without losing an edit made after it was listed (the local twin of the SFTP transport's):
   * the current file is linked aside, the new one renamed in, and the old one looked at. Not what the listing
   * showed: kept as `name.sync-conflict-<time>-local.ext` beside the new one (E_CONFLICT), or at `changedTo`. Without
   * hard links the check is an lstat right before the rename.
   */
  private async replaceChecked(d: DirLease, from: string, to: string, rel: string, expect: NonNullable<WriteOptions['expect']>, changedTo?: string): Promise<void> {
    const asideRel = asideNameFor(rel);
    const aside = d.at(baseName(asideRel));
    let linked = true;
    try {
      await fsp.link(to, aside);
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT') linked = false;
      else if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
        const now = await lstatEntry(to);
        if (!asExpected(now, expect) && now) {
          if (changedTo === undefined) checkExpected(this.abs(rel), now, expect);
          else await this.moveAside(d, rel, changedTo);
        }
        await fsp.rename(from, to);
        return;
      } else throw err;
    }
    await fsp.rename(from, to);
    if (!linked) return;
    const was = await lstatEntry(aside);
    if (asExpected(was, expect)) {
      await fsp.unlink(aside).catch(() => undefined);
      return;
    }
    if (changedTo !== undefined) {
      const b = await this.confine.dir(parentOf(changedTo), changedTo, true);
      try {
        await fsp.rename(aside, b.at(baseName(changedTo)));
      } finally {
        b.release();
      }
      return;
    }
    // Beside the new file under its conflict name, never over an earlier one (link refuses an existing name).
    let keep = asideRel;
    const when = new Date();
    for (let n = 0; n < 5; n++) {
      const name = conflictName(rel, when, n === 0 ? 'local' : `local-${n}`);
      try {
        await fsp.link(aside, d.at(baseName(name)));
        await fsp.unlink(aside);
        keep = name;
        break;
      } catch {
        // Taken: the next name.
      }
    }
    throw new WsyncError('E_CONFLICT', `${this.abs(rel)} was changed while this run was writing it; the new version is in place, the changed one is kept as ${keep}`);
  }

  /** Moves what is at `rel` (in `d`) to `backupTo`, creating the directories on the way; a missing `rel` is fine. */
  private async moveAside(d: DirLease, rel: string, backupTo: string): Promise<void> {
    const b = await this.confine.dir(parentOf(backupTo), backupTo, true);
    try {
      await fsp.rename(d.at(baseName(rel)), b.at(baseName(backupTo)));
      d.verify();
      b.verify();
      // Should it have been a directory: what was cached under that name is in the trash now.
      this.confine.forget(rel);
    } catch (err) {
      if (errCode(err) !== 'ENOENT' || err instanceof WsyncError) throw err;
    } finally {
      b.release();
    }
  }

  async writeSmall(rel: string, data: Buffer, opts: { exclusive?: boolean; mode?: number; parents?: boolean | 'last' } = {}): Promise<boolean> {
    const mode = opts.mode ?? 0o644;
    try {
      await this.writeFile(rel, (async function* () { yield data; })(), { mode, mtime: Math.floor(Date.now() / 1000), size: data.length }, { exclusive: opts.exclusive, parents: opts.parents });
      return true;
    } catch (err) {
      if (opts.exclusive && err instanceof WsyncError && (err.cause as NodeJS.ErrnoException)?.code === 'EEXIST') return false;
      throw err;
    }
  }

  async createExclusive(rel: string, data: Buffer): Promise<boolean> {
    let fh: fsp.FileHandle;
    try {
      const { d, v } = await this.inParent(rel, false, (dl, name) => this.createIn(dl, name, 0o644));
      d.release();
      fh = v;
    } catch (err) {
      if (err instanceof WsyncError) throw err;
      if (errCode(err) === 'EEXIST') return false;
      throw ioError(err, `cannot create ${this.abs(rel)}`);
    }
    try {
      await fh.writeFile(data);
    } finally {
      await fh.close();
    }
    return true;
  }

  async appendFile(rel: string, data: Buffer): Promise<void> {
    const abs = this.abs(rel);
    const flags = C.O_WRONLY | C.O_CREAT | C.O_APPEND | NOFOLLOW;
    const { d, v: fh } = await this.inParent(rel, false, (dl, name) => fsp.open(dl.at(name), flags, 0o644)).catch((err) => {
      throw err instanceof WsyncError ? err : ioError(err, `cannot append to ${abs}`);
    });
    try {
      d.verify();
      await fh.appendFile(data);
    } catch (err) {
      throw err instanceof WsyncError ? err : ioError(err, `cannot append to ${abs}`);
    } finally {
      d.release();
      await fh.close().catch(() => undefined);
    }
  }

  async openExclusive(rel: string): Promise<ExclusiveFile | null> {
    const abs = this.abs(rel);
    let d: DirLease;
    let fh: fsp.FileHandle;
    try {
      ({ d, v: fh } = await this.inParent(rel, false, (dl, name) => this.createIn(dl, name, 0o644)));
    } catch (err) {
      if (err instanceof WsyncError) throw err;
      if (errCode(err) === 'EEXIST') return null;
      throw ioError(err, `cannot create ${abs}`);
    }
    // Its directory stays held until the commit or abort: the rename and the unlink find the file made here.
    const here = d.at(baseName(rel));
    let state: 'open' | 'closed' | 'done' = 'open';
    let written: Promise<void> | undefined;
    const write = (data: Buffer): Promise<void> => {
      if (state !== 'open') throw new WsyncError('E_INTERNAL', `${rel}: write after close`);
      state = 'closed';
      return (written = (async () => {
        try {
          await writeAll(fh, data, 0);
          await fh.sync();
        } catch (err) {
          throw ioError(err, `cannot write ${abs}`);
        } finally {
          await fh.close();
        }
      })());
    };
    return {
      write,
      commit: async (data, renameTo, after, behind) => {
        // Waited for only after the data is written: a failure meanwhile (a lost link) is not left unhandled.
        after?.catch(() => undefined);
        await dataWritten(rel, data, write, written);
        await after;
        if (renameTo !== undefined) {
          const t = await this.confine.dir(parentOf(renameTo), renameTo);
          try {
            d.verify();
            await fsp.rename(here, t.at(baseName(renameTo)));
            d.verify();
            t.verify();
          } catch (err) {
            throw err instanceof WsyncError ? err : ioError(err, `cannot move ${abs} into place`);
          } finally {
            t.release();
          }
        }
        // A local filesystem has no round trips to save: simply in order.
        await behind?.();
        state = 'done';
        d.release();
      },
      abort: async () => {
        if (state === 'done') return true;
        if (state === 'open') await fh.close().catch(() => undefined);
        state = 'done';
        await fsp.unlink(here).catch(() => undefined);
        d.release();
        return true;
      },
    };
  }

  symlink(rel: string, target: string, opts: WriteOptions = {}): Promise<void> {
    return this.fileSlots.with(() => this.symlinkNow(rel, target, opts));
  }

  private async symlinkNow(rel: string, target: string, opts: WriteOptions): Promise<void> {
    const name = baseName(tempNameFor(rel));
    const { d } = await this.inParent(rel, false, async (dl) => {
      await fsp.symlink(target, dl.at(name));
      try {
        dl.verify();
      } catch (err) {
        await fsp.unlink(dl.at(name)).catch(() => undefined);
        throw err;
      }
    }).catch((err) => {
      throw err instanceof WsyncError ? err : ioError(err, `cannot create symlink ${this.abs(rel)}`);
    });
    await this.commit({ d, name }, rel, opts);
  }

  /**
   * Mode and mtime of a file or directory. Never through a symlink: a symlink at `rel` gets only its own mtime
   * (its mode means nothing, and its target is not ours to change).
   */
  setMeta(rel: string, meta: { mode?: number; mtime?: number }): Promise<void> {
    return this.fileSlots.with(() => this.setMetaNow(rel, meta));
  }

  private async setMetaNow(rel: string, meta: { mode?: number; mtime?: number }): Promise<void> {
    const p = this.abs(rel);
    const fail = (err: unknown) => (err instanceof WsyncError ? err : ioError(err, `cannot set attributes of ${p}`));
    if (this.confinement === 'fd') {
      // O_PATH: no read permission needed, nothing opened for real (a fifo does not block); the entry itself, not
      // followed when it is a symlink, and changed through its fd even if its name leads elsewhere by now.
      const { d, v: fh } = await this.inParent(rel, false, (dl, name) => fsp.open(dl.at(name), O_PATH | NOFOLLOW)).catch((err) => {
        throw fail(err);
      });
      try {
        if ((await fh.stat()).isSymbolicLink()) {
          if (meta.mtime !== undefined) await fsp.lutimes(d.at(baseName(rel)), meta.mtime, meta.mtime);
          return;
        }
        const self = `/proc/self/fd/${fh.fd}`;
        if (meta.mode !== undefined) await fsp.chmod(self, meta.mode & 0o7777);
        if (meta.mtime !== undefined) await fsp.utimes(self, meta.mtime, meta.mtime);
      } catch (err) {
        throw fail(err);
      } finally {
        await fh.close().catch(() => undefined);
        d.release();
      }
      return;
    }
    const { d } = await this.inParent(rel, false, async (dl, name) => {
      const q = dl.at(name);
      const st = await fsp.lstat(q);
      if (meta.mode !== undefined && !st.isSymbolicLink()) {
        dl.verify();
        // lchmod (macOS) is not misled by a symlink put there meanwhile; elsewhere chmod is all there is.
        await (process.platform === 'darwin' ? fsp.lchmod(q, meta.mode & 0o7777) : fsp.chmod(q, meta.mode & 0o7777));
      }
      if (meta.mtime !== undefined) await fsp.lutimes(q, meta.mtime, meta.mtime);
      dl.verify();
    }).catch((err) => {
      throw fail(err);
    });
    d.release();
  }

  remove(rel: string, type: 'file' | 'dir'): Promise<void> {
    return this.fileSlots.with(() => this.removeNow(rel, type));
  }

  private async removeNow(rel: string, type: 'file' | 'dir'): Promise<void> {
    let d: DirLease;
    try {
      ({ d } = await this.inParent(rel, false, (dl, name) => (type === 'dir' ? fsp.rmdir(dl.at(name)) : fsp.unlink(dl.at(name)))));
    } catch (err) {
      if (err instanceof WsyncError) throw err;
      if (errCode(err) === 'ENOENT') return;
      throw ioError(err, `cannot remove ${this.abs(rel)}`);
    }
    try {
      d.verify();
    } finally {
      d.release();
      if (type === 'dir') this.confine.forget(rel);
    }
  }

  rename(from: string, to: string): Promise<void> {
    return this.fileSlots.with(() => this.renameNow(from, to));
  }

  private async renameNow(from: string, to: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let f: DirLease | undefined;
      let t: DirLease | undefined;
      try {
        f = await this.confine.dir(parentOf(from), from);
        t = await this.confine.dir(parentOf(to), to, true);
        await fsp.rename(f.at(baseName(from)), t.at(baseName(to)));
        f.verify();
        t.verify();
        return;
      } catch (err) {
        const again = attempt === 0 && errCode(err) === 'ENOENT' && f && t && ((await this.confine.stale(f)) || (await this.confine.stale(t)));
        if (!again) throw err instanceof WsyncError ? err : ioError(err, `cannot rename ${this.abs(from)}`);
      } finally {
        f?.release();
        t?.release();
        this.confine.forget(from);
        this.confine.forget(to);
      }
    }
  }

  async beginRun(): Promise<void> {
    // Cached directory fds: one may now be a directory renamed away (mv a b; mkdir a between two runs).
    await this.confine.close();
  }

  async close(): Promise<void> {
    await this.confine.close();
  }
}

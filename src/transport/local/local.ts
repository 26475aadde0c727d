import { promises as fsp, constants as C, readdirSync, lstatSync, readlinkSync, openSync, readSync, fstatSync, closeSync } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { Entry } from '../../types.js';
import type { Capabilities, ExclusiveFile, StagedFile, DirEntry, FileReader, LiteralSource, OldVersion, RebuildOp, Transport, WriteMeta, WriteOptions } from '../types.js';
import { WsyncError } from '../../errors.js';
import { ancestors, joinRel, localJoin, parentOf, tempNameFor } from '../../util/paths.js';
import { checkRebuildOps, dataWritten, outsideEdit } from '../rebuild.js';

const BLOCK = 1 << 20;
/**
 * Files up to this size are read with blocking calls: open, read, fstat and close of a cached small file take
 * ~10 µs in the kernel, while the same four as promises cost ~140 µs of main-thread time in thread-pool hops and
 * promise machinery; on a push of thousands of small files that was the largest CPU cost after compression.
 */
const SYNC_READ_MAX = 64 * 1024;

export function entryFromStats(st: Stats, target?: string): Entry | null {
  const mtime = Math.floor(st.mtimeMs / 1000);
  const mode = st.mode & 0o7777;
  if (st.isFile()) return { type: 'file', size: st.size, mtime, mode };
  if (st.isDirectory()) return { type: 'dir', size: 0, mtime, mode };
  if (st.isSymbolicLink()) return { type: 'symlink', size: 0, mtime, mode, target: target ?? '' };
  return null; // sockets, fifos, devices are not synced
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
  const e = err as NodeJS.ErrnoException;
  return new WsyncError('E_LOCAL_IO', `${what}: ${e.code ?? ''} ${e.message ?? String(err)}`.trim(), { cause: err });
}

/**
 * The local filesystem as a Transport. Used for the local side of every sync and, with a plain path as the
 * target, as the remote side too, so the whole engine runs without a server.
 */
export class LocalTransport implements Transport {
  readonly kind = 'local' as const;
  readonly caps: Capabilities = { copyData: true, fsync: true, maxRead: BLOCK, maxWrite: BLOCK };
  readonly root: string;
  /** Directories already proven to be real directories (not symlinks) under the root. */
  private verifiedDirs = new Set<string>(['']);
  private lastYield = Date.now();

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  describe(rel = ''): string {
    return localJoin(this.root, rel);
  }

  private abs(rel: string): string {
    return localJoin(this.root, rel);
  }

  /**
   * Refuses to write through a symlinked directory: a pulled tree must never reach outside the local root, even
   * when the local tree already holds a symlink where the remote has a directory.
   */
  private async assertRealParents(rel: string): Promise<void> {
    for (const dir of ancestors(rel)) {
      if (this.verifiedDirs.has(dir)) continue;
      let st: Stats;
      try {
        st = await fsp.lstat(this.abs(dir));
      } catch (err) {
        throw ioError(err, `cannot reach ${this.abs(dir)}`);
      }
      if (!st.isDirectory()) {
        throw new WsyncError('E_UNSAFE_PATH', `refusing to write ${rel}: ${dir} is not a real directory (a symlink or file)`);
      }
      this.verifiedDirs.add(dir);
    }
  }

  async readdir(rel: string): Promise<DirEntry[] | null> {
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
    const out: DirEntry[] = [];
    for (const name of names) {
      const p = path.join(dir, name);
      try {
        const st = lstatSync(p);
        const entry = entryFromStats(st, st.isSymbolicLink() ? readlinkSync(p) : undefined);
        if (entry) out.push({ name, entry });
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

  async *openRead(rel: string, size: number): AsyncIterable<Buffer> {
    if (size <= SYNC_READ_MAX) {
      yield this.readSmall(rel, size);
      return;
    }
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.abs(rel), C.O_RDONLY | (C.O_NOFOLLOW ?? 0));
    } catch (err) {
      throw ioError(err, `cannot open ${this.abs(rel)}`);
    }
    try {
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
      const st = await fh.stat();
      if (st.size !== size) throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} changed size while it was being read`);
    } finally {
      await fh.close();
    }
  }

  private readSmall(rel: string, size: number): Buffer {
    let fd: number;
    try {
      fd = openSync(this.abs(rel), C.O_RDONLY | (C.O_NOFOLLOW ?? 0));
    } catch (err) {
      throw ioError(err, `cannot open ${this.abs(rel)}`);
    }
    try {
      // One byte more than expected: a file that grew is caught without another call.
      const buf = Buffer.allocUnsafe(size + 1);
      let got = 0;
      for (;;) {
        const n = readSync(fd, buf, got, buf.length - got, got);
        if (n === 0) break;
        got += n;
        if (got === buf.length) break;
      }
      if (got !== size || fstatSync(fd).size !== size) {
        throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel} changed size while it was being read`);
      }
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

  async mkdir(rel: string, mode: number): Promise<void> {
    await this.assertRealParents(rel);
    const p = this.abs(rel);
    try {
      await fsp.mkdir(p, { mode: mode & 0o777 });
      await fsp.chmod(p, mode & 0o7777);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        const st = await fsp.lstat(p);
        if (st.isDirectory()) return;
      }
      throw ioError(err, `cannot create directory ${p}`);
    }
  }

  async writeFile(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts: WriteOptions = {}): Promise<void> {
    const tmp = await this.writeTemp(rel, data, meta, opts);
    await this.commit(tmp, rel, opts);
  }

  async stageSmall(rel: string, data: Buffer, opts: { mode?: number; mtime?: number; parents?: boolean | 'last'; tempName?: string } = {}): Promise<StagedFile> {
    const meta = { mode: opts.mode ?? 0o644, mtime: opts.mtime ?? Math.floor(Date.now() / 1000), size: data.length };
    return this.staged(await this.writeTemp(rel, (async function* () { yield data; })(), meta, opts), rel);
  }

  /** A finished temp file, renamed in or removed later. */
  private staged(tmp: string, rel: string): StagedFile {
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
        await fsp.unlink(tmp).catch(() => undefined);
      },
    };
  }

  /** Data, mode, mtime and fsync under a temp name in the target's directory; returns the temp's absolute path. */
  private async writeTemp(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts: WriteOptions): Promise<string> {
    if (opts.parents) {
      const dirs = ancestors(rel);
      for (const d of opts.parents === 'last' ? dirs.slice(-1) : dirs) {
        await fsp.mkdir(this.abs(d), 0o755).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw ioError(err, `cannot create ${this.abs(d)}`);
        });
      }
    }
    await this.assertRealParents(rel);
    const tmp = this.abs(opts.tempName ? joinRel(parentOf(rel), opts.tempName) : tempNameFor(rel));
    const fh = await fsp.open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL, meta.mode & 0o777).catch((err) => {
      throw ioError(err, `cannot create ${tmp}`);
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
      if (!ok) await fsp.unlink(tmp).catch(() => undefined);
    }
    return tmp;
  }

  async writeFromRanges(rel: string, srcRel: string, ranges: ReadonlyArray<readonly [number, number]>, meta: WriteMeta): Promise<void> {
    const src = await fsp.open(this.abs(srcRel), C.O_RDONLY).catch((err) => {
      throw ioError(err, `cannot open ${this.abs(srcRel)}`);
    });
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
    await this.assertRealParents(rel);
    const finalAbs = this.abs(rel);
    let src: fsp.FileHandle;
    try {
      src = await fsp.open(finalAbs, C.O_RDONLY | (C.O_NOFOLLOW ?? 0));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ELOOP: O_NOFOLLOW met a symlink, which is not the file the manifest describes either.
      if (code === 'ENOENT' || code === 'ELOOP') throw outsideEdit(finalAbs, old, null);
      throw ioError(err, `cannot open ${finalAbs}`);
    }
    const checkOld = async () => {
      const st = await src.stat();
      const now = { size: st.size, mtime: Math.floor(st.mtimeMs / 1000) };
      if (!st.isFile() || now.size !== old.size || now.mtime !== old.mtime) throw outsideEdit(finalAbs, old, now);
    };
    const tmp = this.abs(opts.tempName ? joinRel(parentOf(rel), opts.tempName) : tempNameFor(rel));
    let out: fsp.FileHandle | undefined;
    let ok = false;
    try {
      await checkOld();
      out = await fsp.open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL, meta.mode & 0o777).catch((err) => {
        throw ioError(err, `cannot create ${tmp}`);
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
      if (!ok && out) await fsp.unlink(tmp).catch(() => undefined);
    }
    return this.staged(tmp, rel);
  }

  private async commit(tmpAbs: string, rel: string, opts: WriteOptions): Promise<void> {
    const finalAbs = this.abs(rel);
    try {
      if (opts.exclusive) {
        // link() fails on an existing name, which is what an exclusive create needs; rename would replace.
        await fsp.link(tmpAbs, finalAbs);
        await fsp.unlink(tmpAbs);
        return;
      }
      if (opts.backupTo) await this.moveAside(rel, opts.backupTo);
      await fsp.rename(tmpAbs, finalAbs);
    } catch (err) {
      await fsp.unlink(tmpAbs).catch(() => undefined);
      throw ioError(err, `cannot move into place ${finalAbs}`);
    }
  }

  private async moveAside(rel: string, backupTo: string): Promise<void> {
    try {
      await fsp.mkdir(path.dirname(this.abs(backupTo)), { recursive: true });
      await fsp.rename(this.abs(rel), this.abs(backupTo));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
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
    await this.assertRealParents(rel);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.abs(rel), C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
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
    await this.assertRealParents(rel);
    try {
      await fsp.appendFile(this.abs(rel), data, { mode: 0o644, flag: C.O_WRONLY | C.O_CREAT | C.O_APPEND | (C.O_NOFOLLOW ?? 0) });
    } catch (err) {
      throw ioError(err, `cannot append to ${this.abs(rel)}`);
    }
  }

  async openExclusive(rel: string): Promise<ExclusiveFile | null> {
    await this.assertRealParents(rel);
    const abs = this.abs(rel);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
      throw ioError(err, `cannot create ${abs}`);
    }
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
        await dataWritten(rel, data, write, written);
        await after;
        if (renameTo !== undefined) {
          await fsp.rename(abs, this.abs(renameTo)).catch((err) => {
            throw ioError(err, `cannot move ${abs} into place`);
          });
        }
        // A local filesystem has no round trips to save: simply in order.
        await behind?.();
        state = 'done';
      },
      abort: async () => {
        if (state === 'done') return;
        if (state === 'open') await fh.close().catch(() => undefined);
        state = 'done';
        await fsp.unlink(abs).catch(() => undefined);
      },
    };
  }

  async symlink(rel: string, target: string, opts: WriteOptions = {}): Promise<void> {
    await this.assertRealParents(rel);
    const tmp = this.abs(tempNameFor(rel));
    try {
      await fsp.symlink(target, tmp);
    } catch (err) {
      throw ioError(err, `cannot create symlink ${this.abs(rel)}`);
    }
    await this.commit(tmp, rel, opts);
  }

  async setMeta(rel: string, meta: { mode?: number; mtime?: number }): Promise<void> {
    await this.assertRealParents(rel);
    const p = this.abs(rel);
    try {
      if (meta.mode !== undefined) await fsp.chmod(p, meta.mode & 0o7777);
      if (meta.mtime !== undefined) await fsp.utimes(p, meta.mtime, meta.mtime);
    } catch (err) {
      throw ioError(err, `cannot set attributes of ${p}`);
    }
  }

  async remove(rel: string, type: 'file' | 'dir'): Promise<void> {
    await this.assertRealParents(rel);
    const p = this.abs(rel);
    try {
      if (type === 'dir') {
        await fsp.rmdir(p);
        this.verifiedDirs = new Set(['']);
      } else await fsp.unlink(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw ioError(err, `cannot remove ${p}`);
    }
  }

  async rename(from: string, to: string): Promise<void> {
    await this.assertRealParents(from);
    try {
      await fsp.mkdir(path.dirname(this.abs(to)), { recursive: true });
      await fsp.rename(this.abs(from), this.abs(to));
      this.verifiedDirs = new Set(['']);
    } catch (err) {
      throw ioError(err, `cannot rename ${this.abs(from)}`);
    }
  }

  async close(): Promise<void> {}
}

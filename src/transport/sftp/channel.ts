import type { SFTPWrapper, Stats as SftpStats, FileEntry, InputAttributes } from 'ssh2';
import { WsyncError } from '../../errors.js';
import type { Entry } from '../../types.js';
import { hookCoalescing, limitsKnown, readiedEarly, serverSoftware, sftpExtensions, sftpLimits, type SftpLimits } from '../../ssh/ssh2-internals.js';
import type { LinkMeter } from '../../transfer/window.js';

/** SFTP status codes (draft-ietf-secsh-filexfer-02 §7). */
export const SFTP_STATUS = { OK: 0, EOF: 1, NO_SUCH_FILE: 2, PERMISSION_DENIED: 3, FAILURE: 4 } as const;

export function sftpCode(err: unknown): number | undefined {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'number' ? c : undefined;
}

export function isNoSuchFile(err: unknown): boolean {
  return sftpCode(err) === SFTP_STATUS.NO_SUCH_FILE;
}

/** The one place SFTP failures become wsync errors. */
export function mapSftpError(err: unknown, what: string): WsyncError {
  if (err instanceof WsyncError) return err;
  const code = sftpCode(err);
  const msg = (err as Error)?.message ?? String(err);
  if (code === SFTP_STATUS.PERMISSION_DENIED) {
    return new WsyncError('E_REMOTE_PERMISSION', `${what}: permission denied`, {
      cause: err,
      hint: 'check that the remote user may write there (owner and mode of the target directory)',
    });
  }
  if (/No response from server|Not connected|Channel not open|Connection lost|Invalid Zlib|write after end|This socket has been ended/i.test(msg)) {
    return new WsyncError('E_REMOTE_LOST', `${what}: connection to the server was lost`, { cause: err });
  }
  return new WsyncError('E_REMOTE_IO', `${what}: ${msg}`, { cause: err });
}

export function entryFromAttrs(attrs: SftpStats | FileEntry['attrs'], target?: string): Entry | null {
  const mode = attrs.mode ?? 0;
  const fmt = mode & 0o170000;
  const mtime = attrs.mtime ?? 0;
  const perm = mode & 0o7777;
  if (fmt === 0o100000) return { type: 'file', size: attrs.size ?? 0, mtime, mode: perm };
  if (fmt === 0o040000) return { type: 'dir', size: 0, mtime, mode: perm };
  if (fmt === 0o120000) return { type: 'symlink', size: 0, mtime, mode: perm, target: target ?? '' };
  return null;
}

/**
 * Promise face of one SFTP channel. Each call is sent at once (ssh2 does not wait for earlier replies), so
 * issuing several before awaiting them is what pipelines; the server handles one channel's requests in order.
 */
export class SftpChannel {
  readonly extensions: Record<string, string>;
  /** Resolves when the server's limits@openssh.com answer is in (see readyBeforeLimits), or at once without one. */
  readonly limits: Promise<void>;
  /** Files currently using this channel; the pool picks the least busy. */
  load = 0;
  private readonly s: SftpLimits;
  /** Whether ssh2 handed this channel out before the limits reply, and packs its requests (ssh2-internals.ts). */
  readonly readiedEarly: boolean;
  readonly coalescing: boolean;

  /** Set once the channel or its connection is gone: every request then fails at once with it. */
  private lostWith: WsyncError | undefined;
  /** Rejecters of the requests still waiting for an answer. */
  private readonly waiting = new Set<(err: Error) => void>();
  private readonly onLost: Array<(err: WsyncError) => void> = [];
  /** Where the latency of each answered request goes (the transport's, shared by its channels). */
  meter: LinkMeter | undefined;

  constructor(readonly sftp: SFTPWrapper) {
    this.s = sftpLimits(sftp);
    this.extensions = sftpExtensions(sftp);
    this.readiedEarly = readiedEarly(sftp);
    this.limits = this.has('limits@openssh.com') ? limitsKnown(sftp) : Promise.resolve();
    // ssh2 fails the requests it knows of when a channel ends, but one issued after that (a continuation of a
    // failed request, a coalesced batch) would wait forever, and an 'error' without a listener is uncaught.
    sftp.on('error', (err: Error) => this.lose(err));
    sftp.on('end', () => this.lose());
    sftp.on('close', () => this.lose());
    this.coalescing = hookCoalescing(sftp, () => this.lostWith !== undefined, (err) => this.lose(err));
  }

  /** The error the channel was lost with, or undefined while it works. */
  get lost(): WsyncError | undefined {
    return this.lostWith;
  }

  /** Called once when the channel is lost (at once if it already is). */
  whenLost(fn: (err: WsyncError) => void): void {
    if (this.lostWith) fn(this.lostWith);
    else this.onLost.push(fn);
  }

  /**
   * Marks the channel dead (its connection closed or failed, or the server ended it): the requests waiting fail
   * now, later ones at once. Idempotent.
   */
  lose(cause?: unknown): void {
    if (this.lostWith) return;
    const why = cause === undefined ? '' : `: ${(cause as Error)?.message ?? String(cause)}`;
    this.lostWith = new WsyncError('E_REMOTE_LOST', `connection to the server was lost${why}`, { cause });
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const rej of waiting) rej(this.lostWith);
    for (const fn of this.onLost.splice(0)) fn(this.lostWith);
  }

  /** One request: settles with the server's answer, or fails when the channel is lost first. */
  private req<T = void>(start: (res: (v: T) => void, rej: (err: unknown) => void) => void): Promise<T> {
    if (this.lostWith) return Promise.reject(this.lostWith);
    const meter = this.meter;
    const t0 = meter ? performance.now() : 0;
    return new Promise<T>((resolve, reject) => {
      const fail = (err: unknown) => {
        this.waiting.delete(fail);
        reject(err);
      };
      this.waiting.add(fail);
      try {
        start((v) => {
          this.waiting.delete(fail);
          meter?.sample(performance.now() - t0);
          resolve(v);
        }, fail);
      } catch (err) {
        // ssh2 throws synchronously when it cannot send (a protocol already torn down).
        this.lose(err);
        fail(this.lostWith ?? err);
      }
    });
  }

  // Read live: the limits may arrive after the channel is in use. ssh2's fallback is 32 KiB-ish for non-OpenSSH
  // servers and 254 KiB for OpenSSH. OpenSSH before 8.6 has no limits extension and answers reads with at most
  // 64 KiB, which readers would take for the end of the file: without the extension, reads ask for no more.
  get maxRead(): number {
    const n = this.s.maxRead ?? 32 * 1024;
    return this.has('limits@openssh.com') ? n : Math.min(n, 64 * 1024);
  }
  get maxWrite(): number {
    return this.s.maxWrite ?? 32 * 1024;
  }
  get maxOpenHandles(): number {
    const n = this.s.maxOpenHandles;
    return n && Number.isFinite(n) ? n : 1024;
  }

  has(ext: string, version = '1'): boolean {
    return this.extensions[ext] === version;
  }

  open(path: string, flags: import('ssh2').OpenMode, attrs?: InputAttributes): Promise<Buffer> {
    return this.req((res, rej) => this.sftp.open(path, flags, attrs ?? {}, (err, h) => (err ? rej(err) : res(h))));
  }
  close(h: Buffer): Promise<void> {
    return this.req((res, rej) => this.sftp.close(h, (err) => (err ? rej(err) : res())));
  }
  write(h: Buffer, buf: Buffer, pos: number): Promise<void> {
    return this.req((res, rej) => this.sftp.write(h, buf, 0, buf.length, pos, (err) => (err ? rej(err) : res())));
  }
  /** Resolves with the bytes read (fewer at EOF; 0 bytes = EOF). */
  read(h: Buffer, len: number, pos: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(len);
    return this.req((res, rej) =>
      this.sftp.read(h, buf, 0, len, pos, (err, n) => {
        if (err) return sftpCode(err) === SFTP_STATUS.EOF ? res(buf.subarray(0, 0)) : rej(err);
        // A short read keeps a right-sized copy: a view would pin the whole request-sized block in memory.
        res(n === len ? buf : n > len / 2 ? buf.subarray(0, n) : Buffer.from(buf.subarray(0, n)));
      }),
    );
  }
  fstat(h: Buffer): Promise<SftpStats> {
    return this.req((res, rej) => this.sftp.fstat(h, (err, st) => (err ? rej(err) : res(st))));
  }
  fsetstat(h: Buffer, attrs: InputAttributes): Promise<void> {
    return this.req((res, rej) => this.sftp.fsetstat(h, attrs, (err) => (err ? rej(err) : res())));
  }
  setstat(path: string, attrs: InputAttributes): Promise<void> {
    return this.req((res, rej) => this.sftp.setstat(path, attrs, (err) => (err ? rej(err) : res())));
  }
  fsync(h: Buffer): Promise<void> {
    return this.req((res, rej) => this.sftp.ext_openssh_fsync(h, (err) => (err ? rej(err) : res())));
  }
  lstat(path: string): Promise<SftpStats> {
    return this.req((res, rej) => this.sftp.lstat(path, (err, st) => (err ? rej(err) : res(st))));
  }
  stat(path: string): Promise<SftpStats> {
    return this.req((res, rej) => this.sftp.stat(path, (err, st) => (err ? rej(err) : res(st))));
  }
  readlink(path: string): Promise<string> {
    return this.req((res, rej) => this.sftp.readlink(path, (err, t) => (err ? rej(err) : res(t))));
  }
  /**
   * SSH_FXP_SYMLINK. ssh2 puts the two paths in OpenSSH's (swapped) order only for a server that names itself
   * OpenSSH or dropbear; others (ProFTPD) read that order too, so the transport probes once and says `swap`.
   */
  symlink(target: string, path: string, swap = false): Promise<void> {
    const [a, b] = swap ? [path, target] : [target, path];
    return this.req((res, rej) => this.sftp.symlink(a, b, (err) => (err ? rej(err) : res())));
  }
  /** The server's software (its identification string), where ssh2 tells it. */
  get serverSoftware(): string | undefined {
    return serverSoftware(this.sftp);
  }
  mkdir(path: string, mode: number): Promise<void> {
    return this.req((res, rej) => this.sftp.mkdir(path, { mode }, (err) => (err ? rej(err) : res())));
  }
  rmdir(path: string): Promise<void> {
    return this.req((res, rej) => this.sftp.rmdir(path, (err) => (err ? rej(err) : res())));
  }
  unlink(path: string): Promise<void> {
    return this.req((res, rej) => this.sftp.unlink(path, (err) => (err ? rej(err) : res())));
  }
  /** Atomic replace; plain SSH_FXP_RENAME refuses an existing target on OpenSSH. */
  posixRename(from: string, to: string): Promise<void> {
    if (!this.has('posix-rename@openssh.com')) {
      return this.req((res, rej) => this.sftp.rename(from, to, (err) => (err ? rej(err) : res())));
    }
    return this.req((res, rej) => this.sftp.ext_openssh_rename(from, to, (err) => (err ? rej(err) : res())));
  }
  /** Plain rename: fails when `to` exists, which is what an exclusive create needs. */
  renameNoReplace(from: string, to: string): Promise<void> {
    return this.req((res, rej) => this.sftp.rename(from, to, (err) => (err ? rej(err) : res())));
  }
  /** hardlink@openssh.com: a second name for the file at `from` (never follows a symlink there). */
  hardlink(from: string, to: string): Promise<void> {
    return this.req((res, rej) => this.sftp.ext_openssh_hardlink(from, to, (err) => (err ? rej(err) : res())));
  }
  copyData(src: Buffer, srcOff: number, len: number, dst: Buffer, dstOff: number): Promise<void> {
    return this.req((res, rej) => this.sftp.ext_copy_data(src, srcOff, len, dst, dstOff, (err) => (err ? rej(err) : res())));
  }
  realpath(path: string): Promise<string> {
    return this.req((res, rej) => this.sftp.realpath(path, (err, p) => (err ? rej(err) : res(p))));
  }
  opendir(path: string): Promise<Buffer> {
    return this.req((res, rej) => this.sftp.opendir(path, (err, h) => (err ? rej(err) : res(h))));
  }
  /** One READDIR: null at EOF. */
  readdirChunk(h: Buffer): Promise<FileEntry[] | null> {
    return this.req((res, rej) =>
      this.sftp.readdir(h, (err, list) => {
        if (err) return sftpCode(err) === SFTP_STATUS.EOF ? res(null) : rej(err);
        res(list as FileEntry[]);
      }),
    );
  }
  end(): void {
    this.sftp.end();
  }
  /**
   * statvfs@openssh.com on `path`: the filesystem's size and free space (blocks in units of frsize). Rejects at
   * once on a server without the extension (ssh2 would throw, which req takes for a lost channel).
   */
  statvfs(path: string): Promise<{ frsize: number; blocks: number; bavail: number; files: number; favail: number; namemax: number }> {
    if (!this.has('statvfs@openssh.com', '2')) return Promise.reject(new Error('the server does not offer statvfs@openssh.com'));
    return this.req((res, rej) =>
      this.sftp.ext_openssh_statvfs(path, (err, st) => {
        if (err) return rej(err);
        // uint64s: numbers, bigints or strings depending on ssh2's options; far below 2^53 in practice.
        const n = (v: unknown) => Number(v ?? 0);
        res({ frsize: n(st.f_frsize) || n(st.f_bsize), blocks: n(st.f_blocks), bavail: n(st.f_bavail), files: n(st.f_files), favail: n(st.f_favail), namemax: n(st.f_namemax) });
      }),
    );
  }
}

import path from 'node:path';
import type { Entry } from '../../types.js';
import type { Capabilities, ExclusiveFile, StagedFile, DirListing, FileReader, LiteralSource, OldVersion, RebuildOp, Transport, WriteMeta, WriteOptions } from '../types.js';
import { specialKindOf } from '../types.js';
import { asExpected, checkExpected, checkRebuildOps, conflictName, dataWritten, outsideEdit } from '../rebuild.js';
import { WsyncError } from '../../errors.js';
import { STATE_DIR } from '../../manifest/manifest.js';
import { Semaphore } from '../../util/limit.js';
import { LinkMeter } from '../../transfer/window.js';
import { NAME_MAX, ancestors, asideNameFor, baseName, joinRel, longestNameBytes, parentOf, remoteJoin, tempNameFor, tooLongText } from '../../util/paths.js';
import { SftpChannel, entryFromAttrs, isNoSuchFile, mapSftpError, sftpCode, SFTP_STATUS } from './channel.js';
import { probeServer, type ServerReport } from './quirks.js';

/** Queued write payload per channel: ssh2 would otherwise buffer a whole tree in memory. */
const BYTES_IN_FLIGHT_PER_CHANNEL = 8 * 1024 * 1024;
/** Files open at once per channel; OpenSSH allows far more handles, the link rarely needs more. */
const FILES_PER_CHANNEL = 128;
/** Reads kept in flight for one download. */
const READ_AHEAD = 16;
/** How long a free-space answer stands for its directory: a full disk fails every upload in flight at once. */
const SPACE_CHECK_TTL_MS = 5000;
/** Less room than this (or than the file being written) after a failed write: the disk is full. */
const NEARLY_FULL = 1024 * 1024;

interface ChannelSlot {
  ch: SftpChannel;
  files: Semaphore;
  bytes: Semaphore;
  /** Pinned views on this channel: a lock's, whose later requests should not queue behind a big copy. */
  pins: number;
}

/** OpenSSH's answer to ENAMETOOLONG and EINVAL (sftp-server.c errno_to_portable); not in SFTP_STATUS. */
const SSH_FX_BAD_MESSAGE = 5;
/** ProFTPD (and SFTP v5+ servers) answer a refused no-replace rename with this instead of FAILURE. */
const SSH_FX_FILE_ALREADY_EXISTS = 11;

/**
 * mapSftpError for a request that creates `rel` (or its temp): a name over NAME_MAX bytes is refused by the
 * server's filesystem with a bare "Bad message" or "Failure", which is said as what it is.
 */
function mapNameError(err: unknown, what: string, rel: string): WsyncError {
  const code = sftpCode(err);
  if (code === SSH_FX_BAD_MESSAGE || code === SFTP_STATUS.FAILURE || code === SFTP_STATUS.NO_SUCH_FILE) {
    if (longestNameBytes(rel) > NAME_MAX) return new WsyncError('E_REMOTE_IO', `${what}: ${tooLongText([rel], ' for the server')}`, { cause: err });
  }
  const e = mapSftpError(err, what);
  if (code !== SSH_FX_BAD_MESSAGE || e.hint) return e;
  return new WsyncError(e.code, e.message, { cause: err, hint: "the server's filesystem refused the name: it may be too long or not valid there" });
}

/**
 * A no-replace create or rename was refused and the name is taken: what an exclusive write reports as "not
 * written" (false). Servers say it differently (OpenSSH: FAILURE, ProFTPD: FILE_ALREADY_EXISTS, others may say
 * PERMISSION_DENIED), so a refusal is taken for this only once a look at the name finds something there.
 */
class NameTaken extends Error {}

/** After `err` refused creating `abs`: is the name taken? A lost channel or a failed look says no (err stands). */
async function nameTaken(ch: SftpChannel, abs: string, err: unknown): Promise<boolean> {
  if (ch.lost || (err instanceof WsyncError && err.code === 'E_REMOTE_LOST') || sftpCode(err) === undefined) return false;
  return ch.lstat(abs).then(() => true, () => false);
}

/**
 * How a server handles symlinks, found by a probe in the directory of the first link a run writes or reads:
 * - swap: SSH_FXP_SYMLINK's paths go in the order ssh2 does not use for this server. ProFTPD reads OpenSSH's
 *   (swapped) order but does not name itself OpenSSH, so ssh2 sends it the RFC's order and the link lands at the
 *   path named after its target (outside the target directory for `l -> ../x`).
 * - joins: READLINK answers a relative target joined onto the link's directory (ProFTPD: `t.txt` comes back as
 *   `/home/u/app/t.txt`). The target as written is then told only where wsync knows it (see recoverLinkTarget).
 */
export interface LinkQuirks {
  swap: boolean;
  joins: boolean;
}

type RawListing = Array<{ filename: string; attrs: import('ssh2').FileEntry['attrs'] }>;

/** After a failed copy into a temp: let the requests in flight finish, then close and remove the temp, close the source. */
async function discardTemp(ch: SftpChannel, inflight: Promise<unknown>[], hTmp: Buffer | undefined, tmp: string, hSrc: Buffer | undefined): Promise<void> {
  await Promise.allSettled(inflight);
  if (hTmp) {
    await ch.close(hTmp).catch(() => undefined);
    await ch.unlink(tmp).catch(() => undefined);
  }
  if (hSrc) await ch.close(hSrc).catch(() => undefined);
}

/**
 * An SFTP server as a Transport. Work is spread over several channels of one SSH connection (each channel is
 * its own sftp-server process with its own flow-control window), and every per-file sequence is sent without
 * waiting for replies wherever the protocol's in-order processing makes that safe.
 */
export class SftpTransport implements Transport {
  readonly kind = 'sftp' as const;
  readonly caps: Capabilities;
  /** Latency of every answered request, on all channels: what the engine sizes its window by. */
  readonly link = new LinkMeter();
  private slots: ChannelSlot[];
  private knownDirs = new Set<string>();
  /** The server's filesystem refused hard links: replaced files are checked by a probe before the rename. */
  private noHardlinks = false;
  private hardlinkFailures = 0;
  private readonly cleanups = new Set<Promise<unknown>>();
  /**
   * ProFTPD's mod_sftp (1.3.8) resolves a path that ends in a symlink whose target exists before it acts: LSTAT
   * answers the target's attributes, RENAME and posix-rename move the target (a file renamed over such a link
   * overwrites what it points to, wherever that is), hardlink links the target; REMOVE and READDIR see the link.
   * On any server that is not OpenSSH's sftp-server (OpenSSH, dropbear) wsync assumes this: it looks at a path
   * with READLINK beside LSTAT, never renames a link (links are made under their final name), and removes a link
   * before a file takes its place. What stays open there: a link made by someone else between that look and the
   * rename (one round trip) is followed.
   */
  private readonly followsLinks: boolean;
  /** What a reader assumes where the probe could not run (nothing may be written there). */
  private guessedLinks: LinkQuirks | undefined;
  /** Listings of a directory in flight (look): looks at many links in one directory share one. */
  private listings = new Map<string, Promise<RawListing>>();
  /** The last append queued per file (appendFile). */
  private readonly appends = new Map<string, Promise<void>>();
  /** The symlink probe's answer (see LinkQuirks); undefined until a link is first written or read. */
  private links: Promise<LinkQuirks> | undefined;
  /** statvfs answers per remote directory (see noSpace). */
  private spaceChecks = new Map<string, { at: number; p: Promise<Awaited<ReturnType<SftpChannel['statvfs']>> | null> }>();

  constructor(
    channels: SftpChannel[],
    readonly root: string,
    private readonly label: string,
    private readonly onClose: () => Promise<void>,
  ) {
    if (channels.length === 0) throw new Error('SftpTransport needs at least one channel');
    for (const ch of channels) ch.meter = this.link;
    const filesFor = (ch: SftpChannel) => Math.max(4, Math.min(FILES_PER_CHANNEL, Math.floor(ch.maxOpenHandles / 2)));
    this.slots = channels.map((ch) => ({
      ch,
      files: new Semaphore(filesFor(ch)),
      bytes: new Semaphore(BYTES_IN_FLIGHT_PER_CHANNEL),
      pins: 0,
    }));
    this.followsLinks = !channels.every((c) => /^(OpenSSH|dropbear)/i.test(c.serverSoftware ?? ''));
    // A server that allows few open handles says so in its limits, which may come after the first requests.
    for (const slot of this.slots) void slot.ch.limits.then(() => slot.files.setCapacity(filesFor(slot.ch)));
    this.caps = {
      copyData: channels.every((c) => c.has('copy-data')),
      fsync: channels.every((c) => c.has('fsync@openssh.com')),
      get maxRead() {
        return Math.min(...channels.map((c) => c.maxRead));
      },
      get maxWrite() {
        return Math.min(...channels.map((c) => c.maxWrite));
      },
      partialWrites: true,
    };
  }

  /** Resolves a user-typed remote path: relative and `~/` paths are relative to the login's home. */
  static async resolveRoot(ch: SftpChannel, p: string): Promise<string> {
    const absolute = p.startsWith('/') || /^[A-Za-z]:/.test(p);
    // realpath('.') rather than home-directory (buggy before OpenSSH 9.8) or expand-path (broken in ssh2 <=1.17);
    // and only when needed: an absolute path costs no round trip.
    const home = absolute
      ? ''
      : await ch.realpath('.').catch((err) => {
          throw mapSftpError(err, 'cannot resolve the remote home directory');
        });
    let rest = p;
    if (rest === '~' || rest === '') return home;
    if (rest.startsWith('~/')) rest = rest.slice(2);
    const abs = absolute ? rest : path.posix.join(home, rest);
    const norm = path.posix.normalize(abs);
    return norm.length > 1 && norm.endsWith('/') ? norm.slice(0, -1) : norm;
  }

  describe(rel = ''): string {
    return `${this.label}:${remoteJoin(this.root, rel)}`;
  }

  private abs(rel: string): string {
    return remoteJoin(this.root, rel);
  }

  private pick(): ChannelSlot {
    let best = this.slots[0];
    for (const s of this.slots) if (s.ch.load < best.ch.load || (s.ch.load === best.ch.load && s.pins < best.pins)) best = s;
    return best;
  }

  /** Runs a per-file job on the least busy channel, holding one of its file slots. */
  private async onChannel<T>(fn: (slot: ChannelSlot) => Promise<T>): Promise<T> {
    const slot = this.pick();
    slot.ch.load++;
    try {
      return await slot.files.with(() => fn(slot));
    } finally {
      slot.ch.load--;
    }
  }

  /** For a request that opens no handle: not held to the channel's open-file limit (it holds none). */
  private async onChannelNoHandle<T>(fn: (slot: ChannelSlot) => Promise<T>): Promise<T> {
    const slot = this.pick();
    slot.ch.load++;
    try {
      return await fn(slot);
    } finally {
      slot.ch.load--;
    }
  }

  /**
   * The server's symlink quirks, probed once per connection in `dir` (absolute, existing): a link between two temp
   * names there, both absolute, so that it lands in `dir` in either order; then a link with a relative target,
   * read back. All on one channel, in one round trip each. Where nothing may be written (a read-only pull), the
   * server's name decides: ProFTPD's mod_sftp joins.
   */
  private linkQuirks(ch: SftpChannel, dir: string, forWriting = false): Promise<LinkQuirks> {
    if (!forWriting && this.guessedLinks) return Promise.resolve(this.guessedLinks);
    const p = this.links ?? (this.links = this.probeLinks(ch, dir));
    return p.catch((err) => {
      // Probed again by the next writer. A link is never written in a guessed order; a reader that may not write
      // here goes by the server's name, for the rest of the connection.
      if (this.links === p) this.links = undefined;
      if (forWriting || ch.lost) throw err;
      return (this.guessedLinks ??= { swap: false, joins: /^mod_sftp/i.test(ch.serverSoftware ?? '') });
    });
  }

  private async probeLinks(ch: SftpChannel, dir: string): Promise<LinkQuirks> {
    {
      const [a, b, c] = ['a', 'b', 'c'].map((x) => remoteJoin(dir, tempNameFor(`wsync-link-probe-${x}`)));
      const isLink = (st: { mode?: number }) => ((st.mode ?? 0) & 0o170000) === 0o120000;
      const made = ch.symlink(b, a);
      const at = Promise.all([ch.lstat(a).then(isLink, () => false), ch.lstat(b).then(isLink, () => false)]);
      const gone = Promise.all([ch.unlink(a).catch(() => undefined), ch.unlink(b).catch(() => undefined)]);
      await made;
      const [atA, atB] = await at;
      await gone;
      if (atA === atB) throw new WsyncError('E_REMOTE_IO', `the server's answer to a symlink probe in ${this.label}:${dir} makes no sense`);
      const swap = atB;
      const relTarget = 'wsync-link-probe-target';
      const [madeC, read] = await Promise.allSettled([ch.symlink(relTarget, c, swap), ch.readlink(c), ch.unlink(c).catch(() => undefined)]);
      if (madeC.status === 'rejected') throw madeC.reason;
      if (read.status === 'rejected') throw read.reason;
      return { swap, joins: read.value !== relTarget };
    }
  }

  /** A link's target as the server answers it, marked where the server may have joined it (LinkQuirks.joins). */
  private async readLinkEntry(ch: SftpChannel, absDir: string, name: string, attrs: import('ssh2').Attributes): Promise<Entry | null> {
    const target = await ch.readlink(remoteJoin(absDir, name));
    const entry = entryFromAttrs(attrs, target);
    // A reader probes in the state directory, not among the files it reads (a dry run leaves their mtimes be).
    // OpenSSH's sftp-server answers what the link holds; another server is asked once (see LinkQuirks).
    if (entry?.type === 'symlink' && this.followsLinks && target.startsWith('/') && (await this.linkQuirks(ch, this.abs(STATE_DIR))).joins) entry.linkDir = absDir;
    return entry;
  }

  /** Every name of an open directory handle, which is then closed. */
  private async readAll(ch: SftpChannel, h: Buffer): Promise<RawListing> {
    const raw: RawListing = [];
    try {
      // OpenSSH returns at most 100 names per READDIR; asking twice at once usually ends small
      // directories in one round trip (the second answer is EOF).
      for (;;) {
        const [a, b] = await Promise.all([ch.readdirChunk(h), ch.readdirChunk(h)]);
        if (a) raw.push(...a);
        if (b) raw.push(...b);
        if (!a || !b) return raw;
      }
    } finally {
      ch.close(h).catch(() => undefined);
    }
  }

  /** A directory's names and attributes; a listing already in flight for it is shared, not repeated. */
  private listRaw(ch: SftpChannel, dirAbs: string): Promise<RawListing> {
    const inFlight = this.listings.get(dirAbs);
    if (inFlight) return inFlight;
    const p = ch.opendir(dirAbs).then((h) => this.readAll(ch, h));
    this.listings.set(dirAbs, p);
    const done = () => {
      if (this.listings.get(dirAbs) === p) this.listings.delete(dirAbs);
    };
    p.then(done, done);
    return p;
  }

  async readdir(rel: string): Promise<DirListing | null> {
    return this.onChannel(async ({ ch }) => {
      const dir = this.abs(rel);
      let h: Buffer;
      try {
        h = await ch.opendir(dir);
      } catch (err) {
        if (isNoSuchFile(err)) return null;
        // A non-directory answers FAILURE on OpenSSH: the caller learns the type from the parent's listing.
        throw mapSftpError(err, `cannot list ${this.describe(rel)}`);
      }
      let raw: RawListing;
      try {
        raw = await this.readAll(ch, h);
      } catch (err) {
        throw mapSftpError(err, `cannot list ${this.describe(rel)}`);
      }
      const out: DirListing = [];
      await Promise.all(
        raw.map(async ({ filename, attrs }) => {
          if (filename === '.' || filename === '..') return;
          let entry: Entry | null;
          if (((attrs.mode ?? 0) & 0o170000) === 0o120000) {
            const link = await this.readLinkEntry(ch, dir, filename, attrs).catch((err) => {
              // Gone since the listing; except where READLINK follows the link (ProFTPD): one whose target is
              // missing answers "no such file". Its target is then unknown (the walk takes what wsync wrote).
              if (isNoSuchFile(err)) return this.followsLinks ? { ...entryFromAttrs(attrs, '')!, linkDir: dir } : undefined;
              throw mapSftpError(err, `cannot read link ${this.describe(rel)}/${filename}`);
            });
            if (link === undefined) return;
            entry = link;
          } else entry = entryFromAttrs(attrs);
          if (entry) out.push({ name: filename, entry });
          else (out.skipped ??= []).push({ name: filename, kind: specialKindOf(attrs.mode ?? 0) });
        }),
      );
      return out;
    });
  }

  async lstat(rel: string): Promise<Entry | null> {
    return this.onChannel(async ({ ch }) => this.look(ch, this.abs(rel), rel));
  }

  /**
   * What is at `abs` itself, a symlink not followed (null when nothing). Where the server's LSTAT follows links
   * (followsLinks), a READLINK goes beside it (same round trip), and a path that reads as a link is looked up in
   * its directory's listing, which tells the link's own attributes.
   */
  private async look(ch: SftpChannel, abs: string, rel: string): Promise<Entry | null> {
    const dir = path.posix.dirname(abs);
    const name = path.posix.basename(abs);
    try {
      const stP = ch.lstat(abs);
      const linkP = this.followsLinks ? ch.readlink(abs).then((t) => t, () => undefined) : undefined;
      const st = await stP;
      if (((st.mode ?? 0) & 0o170000) === 0o120000) return await this.readLinkEntry(ch, dir, name, st);
      if ((await linkP) === undefined) return entryFromAttrs(st);
      const listed = (await this.listRaw(ch, dir)).find((e) => e.filename === name);
      if (!listed) return null;
      if (((listed.attrs.mode ?? 0) & 0o170000) !== 0o120000) return entryFromAttrs(listed.attrs);
      return await this.readLinkEntry(ch, dir, name, listed.attrs);
    } catch (err) {
      if (isNoSuchFile(err)) return null;
      throw mapSftpError(err, `cannot stat ${this.describe(rel)}`);
    }
  }

  async readFile(rel: string, opts: { small?: boolean } = {}): Promise<Buffer | null> {
    return this.onChannel(async ({ ch }) => {
      let h: Buffer;
      try {
        h = await ch.open(this.abs(rel), 'r');
      } catch (err) {
        if (isNoSuchFile(err)) return null;
        throw mapSftpError(err, `cannot open ${this.describe(rel)}`);
      }
      try {
        // Several reads at once: a manifest of a few hundred KB then arrives in one round trip, not one per block.
        const parts: Buffer[] = [];
        let pos = 0;
        for (let wave = opts.small ? 1 : 4; ; wave *= 2) {
          // Fixed per wave: the server's limits can arrive (and change maxRead) while it is out.
          const chunk = ch.maxRead;
          const reads = Array.from({ length: wave }, (_, i) => ch.read(h, chunk, pos + i * chunk));
          const got = await Promise.all(reads);
          let short = false;
          for (const b of got) {
            if (short) break;
            parts.push(b);
            pos += b.length;
            if (b.length < chunk) short = true;
          }
          if (short) break;
        }
        return Buffer.concat(parts);
      } catch (err) {
        throw mapSftpError(err, `cannot read ${this.describe(rel)}`);
      } finally {
        ch.close(h).catch(() => undefined);
      }
    });
  }

  openRead(rel: string, size: number, mtime?: number): AsyncIterable<Buffer> {
    const self = this;
    return {
      [Symbol.asyncIterator]: () => self.readGen(rel, size, mtime),
    };
  }

  private async *readGen(rel: string, size: number, mtime?: number): AsyncGenerator<Buffer> {
    const slot = this.pick();
    const { ch } = slot;
    slot.ch.load++;
    await slot.files.acquire();
    let h: Buffer | undefined;
    try {
      try {
        h = await ch.open(this.abs(rel), 'r');
      } catch (err) {
        throw mapSftpError(err, `cannot open ${this.describe(rel)}`);
      }
      const handle = h;
      const chunk = ch.maxRead;
      const pending: Array<{ pos: number; len: number; p: Promise<Buffer> }> = [];
      let nextPos = 0;
      let statP: Promise<import('ssh2').Stats> | undefined;
      const issue = () => {
        while (pending.length < READ_AHEAD && nextPos < size) {
          const len = Math.min(chunk, size - nextPos);
          const p = ch.read(handle, len, nextPos);
          p.catch(() => undefined); // observed when awaited below; avoids an unhandled rejection meanwhile
          pending.push({ pos: nextPos, len, p });
          nextPos += len;
        }
        // Right behind the last read (the server answers in order): a file rewritten while it was read has
        // another size or mtime by then, and it costs no extra round trip.
        if (!statP && nextPos >= size) {
          statP = ch.fstat(handle);
          statP.catch(() => undefined);
        }
      };
      issue();
      while (pending.length > 0) {
        const { pos, len, p } = pending.shift()!;
        let buf = await p.catch((err) => {
          throw mapSftpError(err, `cannot read ${this.describe(rel)}`);
        });
        // Servers may answer short (old OpenSSH caps a read at 64 KiB); fetch the rest before moving on.
        let got = buf.length;
        const extra: Buffer[] = [];
        while (got < len) {
          const more = await ch.read(handle, len - got, pos + got).catch((err) => {
            throw mapSftpError(err, `cannot read ${this.describe(rel)}`);
          });
          if (more.length === 0) throw new WsyncError('E_CHANGED_DURING_SYNC', `${this.describe(rel)} shrank while it was being read`);
          extra.push(more);
          got += more.length;
        }
        if (extra.length) buf = Buffer.concat([buf, ...extra]);
        issue();
        yield buf;
      }
      const st = await statP!.catch((err) => {
        throw mapSftpError(err, `cannot stat ${this.describe(rel)}`);
      });
      if ((st.size ?? size) !== size) {
        throw new WsyncError('E_CHANGED_DURING_SYNC', `${this.describe(rel)} changed size while it was being read`);
      }
      if (mtime !== undefined && st.mtime !== undefined && st.mtime !== mtime) {
        throw new WsyncError('E_CHANGED_DURING_SYNC', `${this.describe(rel)} was modified while it was being read`);
      }
    } finally {
      if (h) ch.close(h).catch(() => undefined);
      slot.files.release();
      slot.ch.load--;
    }
  }

  async openReader(rel: string): Promise<FileReader> {
    const slot = this.pick();
    const { ch } = slot;
    slot.ch.load++;
    await slot.files.acquire();
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      slot.files.release();
      slot.ch.load--;
    };
    let h: Buffer | undefined;
    try {
      h = await ch.open(this.abs(rel), 'r');
      const st = await ch.fstat(h);
      if (((st.mode ?? 0) & 0o170000) !== 0o100000) throw new WsyncError('E_REMOTE_IO', `${this.describe(rel)} is not a regular file`);
      const handle = h;
      return {
        size: st.size ?? 0,
        stamp: `${st.size ?? 0}:${st.mtime ?? 0}`,
        read: async (pos, length) => {
          const parts: Promise<Buffer>[] = [];
          const chunk = ch.maxRead;
          for (let off = 0; off < length; off += chunk) parts.push(ch.read(handle, Math.min(chunk, length - off), pos + off));
          for (const p of parts) p.catch(() => undefined);
          const out = Buffer.allocUnsafe(length);
          let off = 0;
          for (const p of parts) {
            const want = Math.min(chunk, length - off);
            let got = 0;
            let b = await p.catch((err) => {
              throw mapSftpError(err, `cannot read ${this.describe(rel)}`);
            });
            // Short answers (old servers cap reads at 64 KiB) are completed before moving on.
            for (;;) {
              b.copy(out, off + got);
              got += b.length;
              if (got >= want) break;
              if (b.length === 0) throw new WsyncError('E_CHANGED_DURING_SYNC', `${this.describe(rel)} shrank while it was being read`);
              b = await ch.read(handle, want - got, pos + off + got).catch((err) => {
                throw mapSftpError(err, `cannot read ${this.describe(rel)}`);
              });
            }
            off += want;
          }
          return out;
        },
        close: async () => {
          if (released) return;
          await ch.close(handle).catch(() => undefined);
          release();
        },
      };
    } catch (err) {
      if (h) ch.close(h).catch(() => undefined);
      release();
      throw mapSftpError(err, `cannot open ${this.describe(rel)}`);
    }
  }

  async stamp(rel: string): Promise<string | null> {
    return this.onChannel(async ({ ch }) => {
      try {
        const st = await ch.lstat(this.abs(rel));
        return ((st.mode ?? 0) & 0o170000) === 0o100000 ? `${st.size ?? 0}:${st.mtime ?? 0}` : null;
      } catch (err) {
        if (isNoSuchFile(err)) return null;
        throw mapSftpError(err, `cannot stat ${this.describe(rel)}`);
      }
    });
  }

  async ensureRoot(): Promise<void> {
    const ch = this.slots[0].ch;
    const isDir = (st: { mode?: number } | null) => st !== null && ((st.mode ?? 0) & 0o170000) === 0o040000;
    // mkdir -p from the bottom up: one round trip when the parent exists, which is the usual case.
    const make = async (abs: string): Promise<void> => {
      try {
        await ch.mkdir(abs, 0o755);
        return;
      } catch (err) {
        const st = await ch.stat(abs).catch(() => null);
        if (isDir(st)) return;
        if (st) throw new WsyncError('E_TARGET', `${this.label}:${abs} exists and is not a directory`);
        const parent = path.posix.dirname(abs);
        if (!isNoSuchFile(err) || parent === abs) throw mapSftpError(err, `cannot create ${this.label}:${abs}`);
        await make(parent);
        await ch.mkdir(abs, 0o755).catch(async (err2) => {
          if (!isDir(await ch.stat(abs).catch(() => null))) throw mapSftpError(err2, `cannot create ${this.label}:${abs}`);
        });
      }
    };
    await make(this.root);
  }

  async mkdir(rel: string, mode: number): Promise<void> {
    return this.onChannel(async ({ ch }) => {
      const p = this.abs(rel);
      const want = mode & 0o7777;
      // An lstat right behind mkdir (the same round trip) says whether the server's umask left the mode as asked;
      // only then is it set. Not a setstat sent blind: where mkdir fails because a link to a directory is there,
      // that would change the mode of what it points to.
      const made = ch.mkdir(p, mode & 0o777);
      const after = ch.lstat(p).catch(() => null);
      try {
        await made;
      } catch (err) {
        await after;
        const code = sftpCode(err);
        if ((code === SFTP_STATUS.FAILURE || code === SSH_FX_FILE_ALREADY_EXISTS) && (await this.isDirHere(ch, p, rel)) === true) {
          // A directory of its own already there takes the mode, as one made here would.
          await ch.setstat(p, { mode: want }).catch((err2) => {
            throw mapSftpError(err2, `cannot set mode of ${this.describe(rel)}`);
          });
          return;
        }
        throw mapNameError(err, `cannot create directory ${this.describe(rel)}`, rel);
      }
      const st = await after;
      if (!st || ((st.mode ?? 0) & 0o7777) !== want) {
        await ch.setstat(p, { mode: want }).catch((err) => {
          throw mapSftpError(err, `cannot set mode of ${this.describe(rel)}`);
        });
      }
      this.knownDirs.add(rel);
    });
  }

  async writeFile(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts: WriteOptions = {}): Promise<void> {
    return this.onChannel(async (slot) => {
      const seen: { stale?: boolean } = {};
      const tmp = await this.writeTemp(slot, rel, data, meta, opts, seen);
      // Found changed by the probe, with somewhere to keep it (--force): moved there, then replaced.
      await this.commit(slot.ch, tmp, rel, seen.stale ? { ...opts, expect: undefined, backupTo: opts.changedTo } : opts);
    });
  }

  async stageSmall(rel: string, data: Buffer, opts: { mode?: number; mtime?: number; parents?: boolean | 'last'; tempName?: string; tempIn?: string } = {}): Promise<StagedFile> {
    const meta = { mode: opts.mode ?? 0o644, mtime: opts.mtime ?? Math.floor(Date.now() / 1000), size: data.length };
    const { ch, tmp } = await this.onChannel(async (slot) => ({ ch: slot.ch, tmp: await this.writeTemp(slot, rel, (async function* () { yield data; })(), meta, opts) }));
    return this.staged(ch, tmp, rel);
  }

  /** A finished temp file, renamed in or removed on the channel that wrote it. */
  private staged(ch: SftpChannel, tmp: string, rel: string): StagedFile {
    let done = false;
    return {
      commit: async (o = {}) => {
        done = true;
        try {
          // Without hardlink@openssh.com the destination is checked just before the rename, as writeFile checks
          // it with the close (see there).
          if (o.expect && !this.canLinkAside(ch)) {
            const now = await this.probe(ch, rel).catch(async (err) => {
              await ch.unlink(tmp).catch(() => undefined);
              throw mapSftpError(err, `cannot check ${this.describe(rel)}`);
            });
            if (o.changedTo !== undefined && !asExpected(now, o.expect)) {
              if (now !== null) o = { ...o, expect: undefined, backupTo: o.changedTo };
            } else {
              try {
                checkExpected(this.describe(rel), now, o.expect);
              } catch (err) {
                await ch.unlink(tmp).catch(() => undefined);
                throw err;
              }
            }
          }
          await this.commit(ch, tmp, rel, o);
          return true;
        } catch (err) {
          if (o.exclusive && err instanceof NameTaken) return false;
          throw err;
        }
      },
      abort: async () => {
        if (done) return;
        done = true;
        await ch.unlink(tmp).catch(() => undefined);
      },
    };
  }

  /** Data, mode, mtime and fsync under a temp name in the target's directory; returns the temp's absolute path. */
  private async writeTemp(slot: ChannelSlot, rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts: WriteOptions, seen: { stale?: boolean } = {}): Promise<string> {
    const { ch } = slot;
    const partial = opts.partial;
    const tmp = this.abs(partial ? joinRel(parentOf(rel), partial.name) : opts.tempName ? joinRel(parentOf(rel), opts.tempName) : opts.tempIn !== undefined ? joinRel(opts.tempIn, baseName(tempNameFor(rel))) : tempNameFor(rel));
    if (opts.parents) this.sendMkdirs(ch, parentOf(rel), opts.parents === 'last');
    let h: Buffer;
    try {
      if (partial && partial.from > 0) {
        // Gone on with: opened without truncation. It was listed as a regular file of ours (the engine checked its
        // bytes); if it cannot be opened so now, it is removed and the file fails here (the next run starts over).
        h = await ch.open(tmp, 'r+').catch(async (err) => {
          await ch.unlink(tmp).catch(() => undefined);
          throw err;
        });
      } else {
        // A partial left over that was not trusted (or anything else by its name) is removed first: created
        // exclusively, never written through a link. Writable by us whatever the final mode (fsetstat sets it), so
        // that a later run can go on with it.
        if (partial) await ch.unlink(tmp).catch(() => undefined);
        h = await ch.open(tmp, 'wx', { mode: partial ? (meta.mode & 0o777) | 0o600 : meta.mode & 0o777 });
      }
    } catch (err) {
      const full = await this.noSpace(ch, rel, meta.size, err);
      if (full) throw new WsyncError('E_REMOTE_IO', `cannot create ${this.describe(rel)}: ${full}`, { cause: err });
      throw mapNameError(err, `cannot create ${this.describe(rel)}`, rel);
    }
    const inflight: Promise<void>[] = [];
    let failed: unknown;
    const track = (p: Promise<void>) => {
      p.catch((err) => (failed ??= err));
      inflight.push(p);
    };
    let pos = partial?.from ?? 0;
    try {
      for await (const chunk of data) {
        if (failed) break;
        // maxWrite is read per piece: the server's limits can arrive while a file is being sent.
        for (let off = 0; off < chunk.length; ) {
          const piece = chunk.subarray(off, Math.min(chunk.length, off + ch.maxWrite));
          await slot.bytes.acquire(piece.length);
          const w = ch.write(h, piece, pos);
          w.finally(() => slot.bytes.release(piece.length)).catch(() => undefined);
          track(w);
          pos += piece.length;
          off += piece.length;
        }
      }
      if (pos !== meta.size && !failed) {
        throw new WsyncError('E_CHANGED_DURING_SYNC', `${rel}: expected ${meta.size} bytes, read ${pos}`);
      }
      // Sent behind the writes without waiting: the server applies them in order, after the data.
      track(ch.fsetstat(h, { mode: meta.mode & 0o7777, atime: meta.mtime, mtime: meta.mtime }));
      if (ch.has('fsync@openssh.com')) track(ch.fsync(h));
      const closed = ch.close(h);
      track(closed);
      // Without hardlink@openssh.com a replaced destination is checked here, answered with the close: changed since
      // it was listed, it is not replaced (see commit for the check that leaves no window).
      const probe = opts.expect && !this.canLinkAside(ch) ? this.probe(ch, rel) : undefined;
      probe?.catch(() => undefined);
      await Promise.allSettled(inflight);
      if (failed) throw mapSftpError(failed, `cannot write ${this.describe(rel)}`);
      if (probe && opts.expect) {
        const now = await probe;
        if (opts.changedTo !== undefined && !asExpected(now, opts.expect)) seen.stale = now !== null;
        else checkExpected(this.describe(rel), now, opts.expect);
      }
    } catch (err) {
      // Asked before the temp goes (its blocks are part of what filled the disk); the server answers in order.
      const full = this.noSpace(ch, rel, meta.size, err);
      await Promise.allSettled(inflight);
      await ch.close(h).catch(() => undefined);
      // A partial is kept for the next run only when the link was lost: then every write the server acknowledged
      // came before the ones it never got (one channel, in order). After an error the server reported (a write it
      // refused while later ones landed would leave a hole), a changed source or a full disk, it goes.
      const keep = partial && (ch.lost !== undefined || (err instanceof WsyncError && err.code === 'E_REMOTE_LOST')) && !(await full);
      if (!keep) await ch.unlink(tmp).catch(() => undefined);
      const why = await full;
      if (why) throw new WsyncError('E_REMOTE_IO', `cannot write ${this.describe(rel)}: ${why}`, { cause: err instanceof WsyncError ? err.cause : err });
      throw err instanceof WsyncError ? err : mapSftpError(err, `cannot write ${this.describe(rel)}`);
    }
    return tmp;
  }

  async rebuildFile(rel: string, old: OldVersion, ops: readonly RebuildOp[], literal: LiteralSource, meta: WriteMeta, opts: WriteOptions = {}): Promise<void> {
    await (await this.stageRebuild(rel, old, ops, literal, meta)).commit({ backupTo: opts.backupTo });
  }

  /**
   * Everything on one channel: copy-data only works between handles of the same sftp-server process. Copies carry
   * no payload and are sent back to back; literal writes share the channel's bytes-in-flight budget with uploads.
   * Order on the wire is the order the server applies them in, so fsetstat, fsync and the final fstats follow the
   * data without waiting for it.
   */
  async stageRebuild(rel: string, old: OldVersion, ops: readonly RebuildOp[], literal: LiteralSource, meta: WriteMeta, opts: { gate?: Promise<unknown>; tempName?: string } = {}): Promise<StagedFile> {
    checkRebuildOps(ops, old.size, meta.size);
    // Before anything else, the temp file included (another run holding the lock could take it for a leftover, or
    // find it in a directory it removes), and before taking a file slot (the lock may need one).
    await opts.gate;
    if (!this.caps.copyData) throw new WsyncError('E_INTERNAL', `rebuildFile needs copy-data, which ${this.label} does not offer`);
    const { ch, tmp } = await this.onChannel(async (slot) => {
      const { ch } = slot;
      const abs = this.abs(rel);
      const tmp = this.abs(opts.tempName ? joinRel(parentOf(rel), opts.tempName) : tempNameFor(rel));
      const where = this.describe(rel);
      const sameAsOld = (st: import('ssh2').Stats) => {
        const now = { size: st.size ?? -1, mtime: st.mtime ?? -1 };
        if (((st.mode ?? 0) & 0o170000) !== 0o100000 || now.size !== old.size || now.mtime !== old.mtime) throw outsideEdit(where, old, now);
      };
      // Both opens in one round trip; everything after them goes out without waiting (see below).
      const openOld = ch.open(abs, 'r');
      const openTmp = ch.open(tmp, 'wx', { mode: meta.mode & 0o777 });
      const [o, t] = await Promise.allSettled([openOld, openTmp]);
      const hOld = o.status === 'fulfilled' ? o.value : undefined;
      const hTmp = t.status === 'fulfilled' ? t.value : undefined;
      const inflight: Promise<unknown>[] = [];
      let failed: unknown;
      const track = (p: Promise<unknown>) => {
        p.catch((err) => (failed ??= err));
        inflight.push(p);
      };
      try {
        if (o.status === 'rejected') throw isNoSuchFile(o.reason) ? outsideEdit(where, old, null) : mapSftpError(o.reason, `cannot open ${where}`);
        if (t.status === 'rejected') throw mapNameError(t.reason, `cannot create ${where}`, rel);
        // The old file's check is the first request behind the opens, and the copies follow without waiting for
        // its answer: the server runs them in order, and if the check fails the temp they filled is deleted
        // unseen. The same check after the last copy catches a change during the copies.
        track(ch.fstat(hOld!).then(sameAsOld));
        for (const op of ops) {
          if (failed) break;
          if (op.kind === 'copy') {
            track(ch.copyData(hOld!, op.srcOffset, op.length, hTmp!, op.dstOffset));
            continue;
          }
          for (let done = 0; done < op.length && !failed; ) {
            const n = Math.min(ch.maxWrite, op.length - done);
            const piece = await literal(op.dstOffset + done, n);
            if (piece.length !== n) throw new WsyncError('E_INTERNAL', `literal source gave ${piece.length} bytes, ${n} asked`);
            await slot.bytes.acquire(n);
            const w = ch.write(hTmp!, piece, op.dstOffset + done);
            w.finally(() => slot.bytes.release(n)).catch(() => undefined);
            track(w);
            done += n;
          }
        }
        // The old file again, after the last copy: a change during the copies would leave a mix in the temp.
        track(ch.fstat(hOld!).then(sameAsOld));
        track(ch.fsetstat(hTmp!, { mode: meta.mode & 0o7777, atime: meta.mtime, mtime: meta.mtime }));
        if (ch.has('fsync@openssh.com')) track(ch.fsync(hTmp!));
        track(
          ch.fstat(hTmp!).then((st) => {
            if (st.size !== meta.size) throw new WsyncError('E_REMOTE_IO', `${where}: rebuilt ${st.size} bytes, expected ${meta.size}`);
          }),
        );
        track(ch.close(hTmp!));
        track(ch.close(hOld!));
        await Promise.allSettled(inflight);
        if (failed) throw failed;
      } catch (err) {
        const full = this.noSpace(ch, rel, meta.size, err);
        await discardTemp(ch, inflight, hTmp, tmp, hOld);
        const why = await full;
        if (why) throw new WsyncError('E_REMOTE_IO', `cannot rebuild ${where}: ${why}`, { cause: err });
        throw mapSftpError(err, `cannot rebuild ${where}`);
      }
      return { ch, tmp };
    });
    return this.staged(ch, tmp, rel);
  }

  async writeFromRanges(rel: string, srcRel: string, ranges: ReadonlyArray<readonly [number, number]>, meta: WriteMeta): Promise<void> {
    if (!this.caps.copyData) throw new WsyncError('E_INTERNAL', `writeFromRanges needs copy-data, which ${this.label} does not offer`);
    return this.onChannel(async (slot) => {
      const { ch } = slot;
      const tmp = this.abs(tempNameFor(rel));
      const where = this.describe(rel);
      // Both opens in one round trip, then everything up to the close without waiting: the server applies a
      // channel's requests in order. Copy-data needs both handles in one sftp-server, hence one channel.
      const [s, d] = await Promise.allSettled([ch.open(this.abs(srcRel), 'r'), ch.open(tmp, 'wx', { mode: meta.mode & 0o777 })]);
      const hSrc = s.status === 'fulfilled' ? s.value : undefined;
      const hTmp = d.status === 'fulfilled' ? d.value : undefined;
      const ops: Promise<unknown>[] = [];
      try {
        if (s.status === 'rejected') throw mapSftpError(s.reason, `cannot open ${this.describe(srcRel)}`);
        if (d.status === 'rejected') throw mapNameError(d.reason, `cannot create ${where}`, rel);
        let pos = 0;
        for (const [off, len] of ranges) {
          ops.push(ch.copyData(hSrc!, off, len, hTmp!, pos));
          pos += len;
        }
        ops.push(ch.fsetstat(hTmp!, { mode: meta.mode & 0o7777, atime: meta.mtime, mtime: meta.mtime }));
        if (ch.has('fsync@openssh.com')) ops.push(ch.fsync(hTmp!));
        ops.push(
          ch.fstat(hTmp!).then((st) => {
            if (st.size !== meta.size) throw new WsyncError('E_REMOTE_IO', `${where}: copied ${st.size} bytes, expected ${meta.size}`);
          }),
        );
        ops.push(ch.close(hTmp!), ch.close(hSrc!));
        const failed = (await Promise.allSettled(ops)).find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
        if (failed) throw failed.reason;
      } catch (err) {
        const full = this.noSpace(ch, rel, meta.size, err);
        await discardTemp(ch, ops, hTmp, tmp, hSrc);
        const why = await full;
        if (why) throw new WsyncError('E_REMOTE_IO', `cannot write ${where}: ${why}`, { cause: err });
        throw mapSftpError(err, `cannot write ${where}`);
      }
      await this.commit(ch, tmp, rel, {});
    });
  }

  /**
   * Replaces the file at `rel` without losing an edit someone made there after it was listed. Three requests go
   * together on one channel, which the server runs in order: a hard link of the current file to a temp name, the
   * rename of the new file over it, an lstat of the linked old one. Whatever was at the path at the moment of the
   * rename is still reachable through the link (an in-place edit, or a file an editor renamed there), so the check
   * afterwards sees it: the same size and mtime as listed, the link is removed; anything else was someone's edit,
   * kept beside the new file as `name.sync-conflict-<time>-remote.ext` (E_CONFLICT). Only a replacement that lands
   * in the microseconds between the link and the rename on the server escapes it.
   */
  private async replaceChecked(ch: SftpChannel, tmpAbs: string, rel: string, expect: NonNullable<WriteOptions['expect']>, changedTo?: string): Promise<void> {
    const final = this.abs(rel);
    const asideRel = asideNameFor(rel);
    const aside = this.abs(asideRel);
    const linked = ch.hardlink(final, aside).then(
      () => true,
      (err) => {
        if (isNoSuchFile(err)) return false;
        // SFTP v3 says FAILURE for a filesystem without hard links and for one odd file alike: only repeated
        // failures switch the check to the probe for the rest of the run.
        if (++this.hardlinkFailures >= 3) this.noHardlinks = true;
        throw err;
      },
    );
    const renamed = ch.posixRename(tmpAbs, final);
    const old = this.probeAbs(ch, aside, rel);
    linked.catch(() => undefined);
    old.catch(() => undefined);
    await renamed;
    let had: boolean;
    try {
      had = await linked;
    } catch (err) {
      throw mapSftpError(err, `cannot check ${this.describe(rel)} before replacing it (it was replaced unchecked)`);
    }
    // Gone before the rename (deleted meanwhile): nothing of theirs to keep.
    if (!had) return;
    const was = await old.catch(() => null);
    if (asExpected(was, expect)) {
      // Not waited for here (a round trip per file); settle() waits for all of them before the final manifest, so
      // an aside a later run finds belongs to a replacement that did not finish (see resolveAsides).
      this.cleanup(ch.unlink(aside));
      return;
    }
    if (changedTo !== undefined) {
      // --force: theirs goes where the caller keeps replaced versions (the trash), and no conflict is reported.
      await this.mkdirs(ch, parentOf(changedTo));
      await ch.posixRename(aside, this.abs(changedTo)).catch((err) => {
        throw mapSftpError(err, `cannot keep the changed ${this.describe(rel)} (it is kept at ${this.describe(asideRel)})`);
      });
      return;
    }
    const keep = await this.keepBeside(ch, asideRel, rel);
    throw new WsyncError('E_CONFLICT', `${this.describe(rel)} was changed by someone else while this run was sending it; yours is in place, theirs is kept as ${keep}`);
  }

  /** A request whose answer nothing waits for until settle(). */
  private cleanup(p: Promise<unknown>): void {
    const q = p.catch(() => undefined);
    this.cleanups.add(q);
    void q.finally(() => this.cleanups.delete(q));
  }

  async settle(): Promise<void> {
    while (this.cleanups.size > 0) await Promise.all([...this.cleanups]);
  }

  /**
   * Gives a kept version its conflict name beside `rel` (a no-replace rename: an earlier copy of the same second
   * is never overwritten); returns the name it has now, the aside's own if no conflict name could be taken.
   */
  private async keepBeside(ch: SftpChannel, asideRel: string, rel: string): Promise<string> {
    const when = new Date();
    for (let n = 0; n < 5; n++) {
      const keep = conflictName(rel, when, n === 0 ? 'remote' : `remote-${n}`);
      try {
        await ch.renameNoReplace(this.abs(asideRel), this.abs(keep));
        return keep;
      } catch {
        // Taken (or refused): try the next name.
      }
    }
    return asideRel;
  }

  /** lstat of a destination path as a comparable entry; null when it is missing. */
  private probe(ch: SftpChannel, rel: string): Promise<Entry | null> {
    return this.probeAbs(ch, this.abs(rel), rel);
  }

  private async probeAbs(ch: SftpChannel, abs: string, rel: string): Promise<Entry | null> {
    if (this.followsLinks) return this.look(ch, abs, rel);
    try {
      return entryFromAttrs(await ch.lstat(abs));
    } catch (err) {
      if (isNoSuchFile(err)) return null;
      throw mapSftpError(err, `cannot stat ${this.describe(rel)}`);
    }
  }

  /**
   * After a bare FAILURE while writing `rel` (OpenSSH's answer to ENOSPC, among others): asks the server about the
   * filesystem of the target's directory and returns the words for a full disk, or undefined. One statvfs per
   * directory serves every failure there for a few seconds (a full disk fails all uploads in flight at once), and
   * it is sent at once, ahead of the temp's removal. Never rejects.
   */
  private noSpace(ch: SftpChannel, rel: string, size: number, err: unknown): Promise<string | undefined> {
    const raw = err instanceof WsyncError ? err.cause : err;
    if (sftpCode(raw) !== SFTP_STATUS.FAILURE || !ch.has('statvfs@openssh.com', '2')) return Promise.resolve(undefined);
    const dir = parentOf(rel);
    const now = Date.now();
    let check = this.spaceChecks.get(dir);
    if (!check || now - check.at > SPACE_CHECK_TTL_MS) {
      if (this.spaceChecks.size > 1000) this.spaceChecks.clear();
      check = { at: now, p: ch.statvfs(this.abs(dir)).catch(() => null) };
      this.spaceChecks.set(dir, check);
    }
    return check.p.then((st) => {
      if (!st) return undefined;
      // Some filesystems (btrfs) count no inodes at all: files = 0 there.
      if (st.files > 0 && st.favail === 0) return `no space left on the server (${this.describe(dir)}: no free inodes)`;
      const free = st.bavail * st.frsize;
      return free < Math.max(NEARLY_FULL, size) ? `no space left on the server (${this.describe(dir)}: ${free} bytes free)` : undefined;
    });
  }

  private canLinkAside(ch: SftpChannel): boolean {
    return !this.noHardlinks && ch.has('hardlink@openssh.com');
  }

  /**
   * Renames a finished temp into place, keeping to what the plan saw there (opts.expect):
   * - nothing (null): a rename that refuses to replace (SSH_FXP_RENAME; OpenSSH links, so it is atomic), so a file
   *   someone created meanwhile is kept and this one dropped (E_CONFLICT);
   * - a file: see replaceChecked; without hardlink@openssh.com, writeTemp's probe checked it one round trip before.
   */
  private async commit(ch: SftpChannel, tmpAbs: string, rel: string, opts: WriteOptions): Promise<void> {
    try {
      // A file expected there may have become a link since the listing: looked at too (one round trip per file).
      if (this.followsLinks && !opts.exclusive && opts.expect !== null) opts = await this.clearLink(ch, rel, opts);
      if (opts.exclusive) {
        const dst = this.abs(rel);
        await ch.renameNoReplace(tmpAbs, dst).catch(async (err) => {
          throw (await nameTaken(ch, dst, err)) ? new NameTaken(rel) : err;
        });
        return;
      }
      if (opts.backupTo) await this.moveAside(ch, rel, opts.backupTo);
      if (opts.expect === null) {
        await ch.renameNoReplace(tmpAbs, this.abs(rel)).catch(async (err) => {
          const code = sftpCode(err);
          if (code !== SFTP_STATUS.FAILURE && code !== SSH_FX_FILE_ALREADY_EXISTS) throw err;
          const there = await this.probe(ch, rel);
          if (there) checkExpected(this.describe(rel), there, null);
          // Not there after all (a server whose plain rename fails for another reason): the usual rename.
          await ch.posixRename(tmpAbs, this.abs(rel));
        });
        return;
      }
      if (opts.expect && this.canLinkAside(ch)) {
        await this.replaceChecked(ch, tmpAbs, rel, opts.expect, opts.changedTo);
        return;
      }
      await ch.posixRename(tmpAbs, this.abs(rel));
    } catch (err) {
      await ch.unlink(tmpAbs).catch(() => undefined);
      if (err instanceof NameTaken) throw err;
      throw mapNameError(err, `cannot move into place ${this.describe(rel)}`, rel);
    }
  }

  /** A directory itself at `abs` (not a link to one, which a following LSTAT would show as one); false on doubt. */
  private async isDirHere(ch: SftpChannel, abs: string, rel: string): Promise<boolean> {
    if (!this.followsLinks) return ch.lstat(abs).then((st) => ((st.mode ?? 0) & 0o170000) === 0o040000, () => false);
    return this.look(ch, abs, rel).then((e) => e?.type === 'dir', () => false);
  }

  /**
   * followsLinks: a symlink at `rel` is removed before something takes its place (a rename over it would act on
   * what it points to), once it is found to be what the caller expected there; what is there then is nothing.
   */
  private async clearLink(ch: SftpChannel, rel: string, opts: WriteOptions): Promise<WriteOptions> {
    const now = await this.look(ch, this.abs(rel), rel);
    if (now?.type !== 'symlink') return opts;
    if (opts.expect !== undefined && !asExpected(now, opts.expect ?? { type: 'symlink', mtime: -1, size: 0 })) {
      if (opts.changedTo === undefined) checkExpected(this.describe(rel), now, opts.expect);
      else opts = { ...opts, backupTo: opts.changedTo };
    }
    if (opts.backupTo !== undefined) {
      throw new WsyncError('E_REMOTE_IO', `cannot keep the symlink ${this.describe(rel)} aside on this server: renaming a link there moves the file it points to`, {
        hint: 'move or remove that link on the server yourself, then run again',
      });
    }
    await ch.unlink(this.abs(rel)).catch((err) => {
      if (!isNoSuchFile(err)) throw err;
    });
    return { ...opts, expect: null, changedTo: undefined };
  }

  private async mkdirs(ch: SftpChannel, relDir: string): Promise<void> {
    if (relDir === '' || this.knownDirs.has(relDir)) return;
    for (const d of [...ancestors(relDir), relDir]) {
      if (this.knownDirs.has(d)) continue;
      await ch.mkdir(this.abs(d), 0o755).catch(async (err) => {
        if ((await this.isDirHere(ch, this.abs(d), d)) !== true) throw err;
      });
      this.knownDirs.add(d);
    }
  }

  /**
   * Sends mkdir for each ancestor not known to exist, without waiting: the server handles a channel's requests in
   * order, so a request sent next on this channel finds them. Failures (mostly "exists") are left to that request.
   */
  private sendMkdirs(ch: SftpChannel, relDir: string, lastOnly = false): void {
    if (relDir === '' || this.knownDirs.has(relDir)) return;
    for (const d of lastOnly ? [relDir] : [...ancestors(relDir), relDir]) {
      if (this.knownDirs.has(d)) continue;
      ch.mkdir(this.abs(d), 0o755).catch(() => undefined);
    }
  }

  private async moveAside(ch: SftpChannel, rel: string, backupTo: string): Promise<void> {
    await this.mkdirs(ch, parentOf(backupTo));
    await ch.posixRename(this.abs(rel), this.abs(backupTo)).catch((err) => {
      if (!isNoSuchFile(err)) throw err;
    });
  }

  async writeSmall(rel: string, data: Buffer, opts: { exclusive?: boolean; mode?: number; parents?: boolean | 'last' } = {}): Promise<boolean> {
    try {
      await this.writeFile(rel, (async function* () { yield data; })(), {
        mode: opts.mode ?? 0o644,
        mtime: Math.floor(Date.now() / 1000),
        size: data.length,
      }, { exclusive: opts.exclusive, parents: opts.parents });
      return true;
    } catch (err) {
      if (opts.exclusive && err instanceof NameTaken) return false;
      throw err;
    }
  }

  async createExclusive(rel: string, data: Buffer): Promise<boolean> {
    return this.onChannel(async ({ ch }) => {
      let h: Buffer;
      try {
        h = await ch.open(this.abs(rel), 'wx', { mode: 0o644 });
      } catch (err) {
        // OpenSSH reports EEXIST as a bare FAILURE, ProFTPD as FAILURE or FILE_ALREADY_EXISTS; make sure that is
        // what it was. A file gone by the time it is looked at (a lock released in between) was there when the
        // create was refused: not created, and the caller tries again as after any refusal (a lock taken on a
        // later try reads the manifest anew, not the one read beside its first try, which may be older than the
        // holder's last write).
        const code = sftpCode(err);
        if (code === SFTP_STATUS.FAILURE || code === SSH_FX_FILE_ALREADY_EXISTS) {
          const st = await ch.lstat(this.abs(rel)).catch((e2) => (sftpCode(e2) === SFTP_STATUS.NO_SUCH_FILE ? null : undefined));
          if (st !== undefined) return false;
        }
        throw mapSftpError(err, `cannot create ${this.describe(rel)}`);
      }
      // Not awaited: nothing depends on the content arriving before the next request.
      ch.write(h, data, 0).catch(() => undefined);
      ch.close(h).catch(() => undefined);
      return true;
    });
  }

  async appendFile(rel: string, data: Buffer): Promise<void> {
    // One append at a time per file from this transport: on a server that only lets it write at the end it read
    // (below), two at once would overwrite each other.
    const before = this.appends.get(rel) ?? Promise.resolve();
    const mine = before.then(() => this.appendNow(rel, data));
    const tail = mine.catch(() => undefined);
    this.appends.set(rel, tail);
    void tail.then(() => {
      if (this.appends.get(rel) === tail) this.appends.delete(rel);
    });
    return mine;
  }

  private async appendNow(rel: string, data: Buffer): Promise<void> {
    return this.onChannel(async ({ ch }) => {
      let h: Buffer;
      let at = 0;
      try {
        h = await ch.open(this.abs(rel), 'a', { mode: 0o644 });
      } catch (err) {
        // ProFTPD refuses to append to an existing file unless configured to (AllowStoreRestart): written at its
        // end instead. The callers append under a lock of their own (git's reflogs under the ref's lock).
        if (sftpCode(err) !== SFTP_STATUS.PERMISSION_DENIED || !(await ch.lstat(this.abs(rel)).catch(() => null))) throw mapSftpError(err, `cannot open ${this.describe(rel)}`);
        try {
          h = await ch.open(this.abs(rel), 'r+');
          at = (await ch.fstat(h)).size ?? 0;
        } catch (err2) {
          throw mapSftpError(err2, `cannot open ${this.describe(rel)}`);
        }
      }
      // OpenSSH opens with O_APPEND, so the offsets are ignored and each write lands at the current end; the
      // close goes behind the writes without waiting for them.
      const ops: Promise<unknown>[] = [];
      for (let off = 0; off < data.length; off += ch.maxWrite) ops.push(ch.write(h, data.subarray(off, off + ch.maxWrite), at + off));
      ops.push(ch.close(h));
      const failed = (await Promise.allSettled(ops)).find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      if (failed) throw mapSftpError(failed.reason, `cannot append to ${this.describe(rel)}`);
    });
  }

  async openExclusive(rel: string): Promise<ExclusiveFile | null> {
    // Held for a while (a git lock file): it takes no file slot, and everything it does stays on this one channel,
    // where the server applies requests in order.
    const { ch } = this.pick();
    const abs = this.abs(rel);
    let h: Buffer;
    try {
      h = await ch.open(abs, 'wx', { mode: 0o644 });
    } catch (err) {
      if (await nameTaken(ch, abs, err)) return null;
      throw mapSftpError(err, `cannot create ${this.describe(rel)}`);
    }
    let state: 'open' | 'closed' | 'done' = 'open';
    let written: Promise<void> | undefined;
    const write = (data: Buffer): Promise<void> => {
      if (state !== 'open') throw new WsyncError('E_INTERNAL', `${rel}: write after close`);
      state = 'closed';
      const ops: Promise<unknown>[] = [];
      for (let off = 0; off < data.length; off += ch.maxWrite) ops.push(ch.write(h, data.subarray(off, off + ch.maxWrite), off));
      if (ch.has('fsync@openssh.com')) ops.push(ch.fsync(h));
      ops.push(ch.close(h));
      return (written = Promise.allSettled(ops).then((settled) => {
        const failed = settled.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
        if (failed) throw mapSftpError(failed.reason, `cannot write ${this.describe(rel)}`);
      }));
    };
    return {
      write,
      commit: async (data, renameTo, after, behind) => {
        // Waited for only after the data is written: a failure meanwhile (a lost link) is not left unhandled.
        after?.catch(() => undefined);
        await dataWritten(rel, data, write, written);
        await after;
        if (renameTo !== undefined) {
          const renamed = ch.posixRename(abs, this.abs(renameTo));
          const next = behind?.();
          next?.catch(() => undefined);
          await renamed.catch((err) => {
            throw mapSftpError(err, `cannot move ${this.describe(rel)} into place`);
          });
          await next;
        } else await behind?.();
        state = 'done';
      },
      abort: async () => {
        if (state === 'done') return true;
        const wasOpen = state === 'open';
        state = 'done';
        // Close and unlink back to back: the channel keeps their order, and the pair costs one round trip.
        const [, removed] = await Promise.all([
          wasOpen ? ch.close(h).catch(() => undefined) : undefined,
          ch.unlink(abs).then(
            () => true,
            // Gone already is removed; a lost link leaves it in doubt.
            (err) => !(err instanceof WsyncError && err.code === 'E_REMOTE_LOST') && ch.lost === undefined,
          ),
        ]);
        return removed;
      },
    };
  }

  async symlink(rel: string, target: string, opts: WriteOptions = {}): Promise<void> {
    return this.onChannel(async ({ ch }) => {
      if (this.followsLinks) return this.symlinkInPlace(ch, rel, target, opts);
      const tmp = this.abs(tempNameFor(rel));
      try {
        const { swap } = await this.linkQuirks(ch, path.posix.dirname(tmp), true);
        await ch.symlink(target, tmp, swap);
      } catch (err) {
        throw mapNameError(err, `cannot create symlink ${this.describe(rel)}`, rel);
      }
      await this.commit(ch, tmp, rel, opts);
    });
  }

  /**
   * followsLinks: a link is made under its final name (renaming it would move its target): what is there is
   * checked as the caller expects, moved aside (a file) or removed (a link), and the link made where it was.
   * Not atomic: for one round trip the name is missing.
   */
  private async symlinkInPlace(ch: SftpChannel, rel: string, target: string, opts: WriteOptions): Promise<void> {
    const final = this.abs(rel);
    try {
      const { swap } = await this.linkQuirks(ch, path.posix.dirname(final), true);
      if (!opts.exclusive) {
        const now = await this.look(ch, final, rel);
        if (opts.expect !== undefined && !(opts.expect === null ? now === null : asExpected(now, opts.expect))) {
          if (opts.changedTo === undefined || now === null) checkExpected(this.describe(rel), now, opts.expect);
          else opts = { ...opts, backupTo: opts.changedTo };
        }
        if (now?.type === 'symlink') opts = await this.clearLink(ch, rel, { ...opts, expect: undefined });
        else if (now && opts.backupTo !== undefined) await this.moveAside(ch, rel, opts.backupTo);
        else if (now?.type === 'file') await ch.unlink(final);
      }
      await ch.symlink(target, final, swap).catch(async (err) => {
        throw opts.exclusive && (await nameTaken(ch, final, err)) ? new NameTaken(rel) : err;
      });
    } catch (err) {
      if (err instanceof NameTaken) throw err;
      throw mapNameError(err, `cannot create symlink ${this.describe(rel)}`, rel);
    }
  }

  async setMeta(rel: string, meta: { mode?: number; mtime?: number }): Promise<void> {
    return this.onChannelNoHandle(async ({ ch }) => {
      const attrs: import('ssh2').InputAttributes = {};
      if (meta.mode !== undefined) attrs.mode = meta.mode & 0o7777;
      if (meta.mtime !== undefined) {
        attrs.atime = meta.mtime;
        attrs.mtime = meta.mtime;
      }
      await ch.setstat(this.abs(rel), attrs).catch((err) => {
        throw mapSftpError(err, `cannot set attributes of ${this.describe(rel)}`);
      });
    });
  }

  async remove(rel: string, type: 'file' | 'dir'): Promise<void> {
    return this.onChannel(async ({ ch }) => {
      try {
        if (type === 'dir') {
          await ch.rmdir(this.abs(rel));
          this.knownDirs.clear();
        } else await ch.unlink(this.abs(rel));
      } catch (err) {
        if (isNoSuchFile(err)) return;
        throw mapSftpError(err, `cannot remove ${this.describe(rel)}`);
      }
    });
  }

  async rename(from: string, to: string): Promise<void> {
    return this.onChannel(async ({ ch }) => {
      try {
        if (this.followsLinks) {
          const [a, b] = await Promise.all([this.look(ch, this.abs(from), from), this.look(ch, this.abs(to), to)]);
          const link = a?.type === 'symlink' ? from : b?.type === 'symlink' ? to : undefined;
          if (link !== undefined) {
            throw new WsyncError('E_REMOTE_IO', `cannot rename ${this.describe(from)} on this server: ${this.describe(link)} is a symlink, and a rename there acts on the file it points to`, {
              hint: 'move or remove that link on the server yourself, then run again',
            });
          }
        }
        await this.mkdirs(ch, parentOf(to));
        await ch.posixRename(this.abs(from), this.abs(to));
        this.knownDirs.clear();
      } catch (err) {
        throw mapNameError(err, `cannot rename ${this.describe(from)}`, to);
      }
    });
  }

  pinned(): Transport {
    const slot = this.pick();
    slot.pins++;
    const view = Object.create(this) as SftpTransport;
    // Every request of the view goes to this one channel; requests are sent as they are issued.
    (view as unknown as { pick: () => ChannelSlot }).pick = () => slot;
    return view;
  }

  /** Set by openTarget: the SSH connections the channels are spread over. */
  connections = 1;

  /**
   * The quirk table (`wsync doctor`): every question of quirks.ts asked in a scratch directory under `.wsync/`
   * (made and removed again; `.wsync/` too when it was not there).
   */
  async serverReport(): Promise<ServerReport> {
    const { ch } = this.pick();
    const state = this.abs(STATE_DIR);
    const hadState = await this.isDirHere(ch, state, STATE_DIR);
    const scratch = `${state}/${baseName(tempNameFor('doctor'))}`;
    try {
      if (!hadState) await ch.mkdir(state, 0o755);
      await ch.mkdir(scratch, 0o700);
    } catch (err) {
      if (!hadState) await ch.rmdir(state).catch(() => undefined);
      throw mapSftpError(err, `cannot make a scratch directory in ${this.describe(STATE_DIR)} to try the server out`);
    }
    try {
      return { ...(await probeServer(ch, scratch)), connections: this.connections, channels: this.slots.length };
    } finally {
      await ch.rmdir(scratch).catch(() => undefined);
      if (!hadState) await ch.rmdir(state).catch(() => undefined);
    }
  }

  /** Set by openTarget: the ssh2 hooks that applied on this connection. */
  hooks?: Record<string, boolean>;

  async beginRun(): Promise<void> {
    this.knownDirs.clear();
    this.spaceChecks.clear();
  }

  /** The connection is one for all channels: lost when any of them is. */
  get lost(): WsyncError | undefined {
    for (const s of this.slots) if (s.ch.lost) return s.ch.lost;
    return undefined;
  }

  async close(): Promise<void> {
    await this.onClose();
  }
}

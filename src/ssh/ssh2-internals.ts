import type { Client, SFTPWrapper } from 'ssh2';
import { WsyncError } from '../errors.js';

/**
 * Every private member of ssh2 (and of the zlib stream it builds on) that wsync touches, and nowhere else: the one
 * place to check when ssh2 changes. Each hook checks the shape it expects and reports whether it applied; where it
 * did not, ssh2's own behaviour stays, except where that would silently weaken a guarantee (the SFTP extension
 * list: without it fsync and posix-rename would quietly be off), which fails loudly instead.
 *
 * Checked against ssh2 SSH2_CHECKED, the exact version package.json pins; ssh2-internals.test.ts asserts that every
 * hook applies on it against a real sshd. What upstream could offer instead (public extensions and limits, a
 * ready-before-limits option, signing without the PK_OK query, a compression level, coalescing within a tick) is
 * listed in ../shared/reference/code-review-2026-12.md §3.
 */
export const SSH2_CHECKED = '1.17.0';

/** Which hooks applied on one connection (and its channels): SshSession.hooks (asserted by ssh2-internals.test.ts). */
export type HookReport = Record<string, boolean>;

// ---------------------------------------------------------------------------------------------------------------
// SFTP: extensions and limits

interface SftpPrivate {
  _extensions?: Record<string, string>;
  _maxReadLen?: number;
  _maxWriteLen?: number;
  maxOpenHandles?: number;
}

/** The extensions the server named in its VERSION reply. Missing (another ssh2): an error, never "none". */
export function sftpExtensions(sftp: SFTPWrapper): Record<string, string> {
  const ext = (sftp as unknown as SftpPrivate)._extensions;
  if (!ext || typeof ext !== 'object') {
    throw new WsyncError('E_INTERNAL', `this ssh2 does not expose the SFTP extension list wsync relies on (checked against ssh2 ${SSH2_CHECKED})`, {
      hint: `install wsync's dependencies as its lockfile pins them (ssh2 ${SSH2_CHECKED})`,
    });
  }
  return ext;
}

/**
 * The software part of the server's identification string (`OpenSSH_9.2p1 Debian-2+deb12u3`, `mod_sftp`,
 * `dropbear_2022.83`), from the connection the channel belongs to; undefined where this ssh2 keeps it elsewhere.
 * Server quirks are found by probing where that is possible; this is the fallback where it is not.
 */
export function serverSoftware(sftp: SFTPWrapper): string | undefined {
  const v = (sftp as unknown as { _client?: { _remoteVer?: unknown } })._client?._remoteVer;
  return typeof v === 'string' ? v : undefined;
}

/** Live view of the request sizes ssh2 allows on a channel (they change when the limits reply arrives). */
export interface SftpLimits {
  readonly maxRead: number | undefined;
  readonly maxWrite: number | undefined;
  readonly maxOpenHandles: number | undefined;
}

export function sftpLimits(sftp: SFTPWrapper): SftpLimits {
  const s = sftp as unknown as SftpPrivate;
  return {
    get maxRead() {
      return s._maxReadLen;
    },
    get maxWrite() {
      return s._maxWriteLen;
    },
    get maxOpenHandles() {
      return s.maxOpenHandles;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// SFTP: channels ready before the limits reply

type RequestTable = Record<string, { extended?: string; cb?: (...args: unknown[]) => void }>;
interface SftpEarly {
  _init?: unknown;
  _requests?: RequestTable;
  emit?: (ev: string) => boolean;
  wsyncLimits?: Promise<void>;
}

/**
 * ssh2 hands out an SFTP channel only after the server has answered `limits@openssh.com`, one round trip after
 * the VERSION reply that already names the extensions. Nothing a run sends first needs the limits: ssh2's
 * defaults for an OpenSSH server (254 KiB reads and writes) are within what it allows, and a non-OpenSSH server
 * gets 32 KiB until its answer arrives. So each channel is declared ready as soon as the limits request goes out,
 * and the answer updates ssh2's values when it comes (`limitsKnown` resolves then; SftpChannel reads them live).
 *
 * Relies on Client._chanMgr.update(id, channel) registering each new channel before its subsystem starts,
 * SFTP._requests[reqid] = { extended, cb } being how the limits request is recorded, and client.sftp() removing its
 * 'ready' listener after the first emit (so the second, ssh2's own, reaches no one). Any other shape leaves ssh2's
 * behaviour as it is.
 */
export function hookEarlyReady(client: Client): boolean {
  const mgr = (client as unknown as { _chanMgr?: { update?: (id: number, val: unknown) => unknown; wsyncHooked?: boolean } })._chanMgr;
  if (!mgr || typeof mgr.update !== 'function') return false;
  if (mgr.wsyncHooked) return true;
  const update = mgr.update.bind(mgr);
  mgr.wsyncHooked = true;
  mgr.update = (id: number, val: unknown) => {
    hookChannelReady(val);
    return update(id, val);
  };
  return true;
}

function hookChannelReady(val: unknown): void {
  const s = val as SftpEarly;
  if (!s || typeof s._init !== 'function' || typeof s.emit !== 'function' || typeof s._requests !== 'object' || s._requests === null) return;
  const table = s._requests;
  let settle!: () => void;
  s.wsyncLimits = new Promise<void>((r) => (settle = r));
  s._requests = new Proxy(table, {
    set(t, key, req) {
      t[key as string] = req;
      if (req && typeof req === 'object' && req.extended === 'limits@openssh.com' && typeof req.cb === 'function') {
        const cb = req.cb;
        req.cb = (...args: unknown[]) => {
          // ssh2 stores the limits, then emits 'ready' a second time, which no one listens to any more.
          cb(...args);
          settle();
        };
        // Only this one request needed watching.
        s._requests = t;
        queueMicrotask(() => s.emit!('ready'));
      }
      return true;
    },
  });
}

/** True when hookEarlyReady handed this channel out before its limits reply. */
export function readiedEarly(sftp: SFTPWrapper): boolean {
  return (sftp as unknown as SftpEarly).wsyncLimits !== undefined;
}

/** Resolves once the channel's limits are in (at once for a channel that was never hooked or has none). */
export function limitsKnown(sftp: SFTPWrapper): Promise<void> {
  return (sftp as unknown as SftpEarly).wsyncLimits ?? Promise.resolve();
}

// ---------------------------------------------------------------------------------------------------------------
// SFTP: requests packed into few SSH packets

interface ProtocolLike {
  channelData(chan: number, data: Buffer): void;
  channelClose(chan: number): void;
}

interface SftpPackets {
  _protocol?: ProtocolLike;
  outgoing?: { id: number; state: string; packetSize: number };
}

/**
 * Packs the SFTP requests issued together on a channel into as few SSH packets as the channel's
 * packet size allows. ssh2 sends every request as its own CHANNEL_DATA packet; a small file's open, write,
 * fsetstat, fsync, close and rename were six packets, each with ~40 bytes of SSH framing, its own random padding,
 * encryption call, compression flush and socket write. Those per-packet costs, not the bytes, were what kept a
 * many-small-files push CPU-bound. SFTP is a byte stream inside the channel, so where one request ends and the
 * next begins does not need to line up with packets.
 *
 * ssh2 has already charged each request to the channel's window when it hands it over, so holding it for a
 * microtask changes when bytes leave, not how many. Anything else ssh2 asks of the protocol for this channel
 * (close) first sends what is held, so nothing overtakes a request. Returns false (and changes nothing) when
 * ssh2's internals are not the expected shape.
 */
export function hookCoalescing(sftp: SFTPWrapper, isLost: () => boolean = () => false, onBroken: (err: unknown) => void = () => undefined): boolean {
  const s = sftp as unknown as SftpPackets;
  const proto = s._protocol;
  const out = s.outgoing;
  if (!proto || !out || typeof proto.channelData !== 'function' || typeof proto.channelClose !== 'function') return false;
  if (!(out.packetSize > 0)) return false;

  let held: Buffer[] = [];
  let heldBytes = 0;
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (held.length === 0) return;
    const data = held.length === 1 ? held[0] : Buffer.concat(held, heldBytes);
    held = [];
    heldBytes = 0;
    // A channel the server closed, or whose connection is gone, fails its pending requests (ssh2 and SftpChannel
    // do); sending into it would throw from this microtask, where nothing could catch it (ssh2's zlib stream is
    // destroyed with the socket: "Invalid Zlib instance").
    if (out.state !== 'open' || isLost()) return;
    try {
      proto.channelData(out.id, data);
    } catch (err) {
      onBroken(err);
    }
  };

  s._protocol = new Proxy(proto, {
    get(target, prop) {
      if (prop === 'channelData') {
        return (chan: number, data: Buffer): void => {
          if (chan !== out.id) {
            flush();
            target.channelData(chan, data);
            return;
          }
          if (heldBytes + data.length > out.packetSize) flush();
          if (data.length >= out.packetSize) {
            target.channelData(chan, data);
            return;
          }
          held.push(data);
          heldBytes += data.length;
          if (!scheduled) {
            scheduled = true;
            // As a microtask: behind the continuations already queued (answers that arrived together wake their
            // files together, and their next requests share packets), but before any synchronous work that follows
            // this turn, such as the local scan, could hold a request back.
            queueMicrotask(flush);
          }
        };
      }
      const v = Reflect.get(target, prop) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        flush();
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as ProtocolLike;
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Key exchange: the compression offer, timed by the server's greeting

interface KexList {
  array: string[];
}
interface Offer {
  constructor: new (o: object) => Offer;
  lists: { kex: KexList; serverHostKey: KexList; cs: Record<'cipher' | 'mac' | 'compress' | 'lang', KexList>; sc: Record<'cipher' | 'mac' | 'compress' | 'lang', KexList> };
}
interface Deflater {
  _handle?: { params(level: number, strategy: number): void };
  writeSync?: (chunk: Buffer, retChunks: boolean) => Buffer & { totalLen?: number };
}
interface ProtocolPrivate {
  _offer?: Offer;
  _onHeader?: (header: unknown) => void;
  _packetRW?: { write?: { _zlib?: Deflater } };
  authPK?: AuthPK;
}

const protocolOf = (client: Client): ProtocolPrivate | undefined => (client as unknown as { _protocol?: ProtocolPrivate })._protocol;

/**
 * Calls `onGreeting` when the server's version line arrives, before ssh2 answers it with our key-exchange offer
 * (which `onGreeting` may still change with narrowCompressionOffer). Call right after client.connect().
 */
export function hookGreeting(client: Client, onGreeting: () => void): boolean {
  const proto = protocolOf(client);
  const onHeader = proto?._onHeader;
  if (!proto || typeof onHeader !== 'function') return false;
  proto._onHeader = (header: unknown) => {
    try {
      onGreeting();
    } finally {
      onHeader.call(proto, header);
    }
  };
  return true;
}

/** Replaces the compression lists of the offer not yet sent (cs: what we send, sc: what the server sends). */
export function narrowCompressionOffer(client: Client, cs: string[], sc: string[]): boolean {
  const proto = protocolOf(client);
  const offer = proto?._offer;
  if (!proto || !offer?.lists?.sc?.compress || !offer.lists.cs?.compress || typeof offer.constructor !== 'function') return false;
  const L = offer.lists;
  const arr = (l: KexList) => l.array;
  proto._offer = new offer.constructor({
    kex: arr(L.kex),
    serverHostKey: arr(L.serverHostKey),
    cs: { cipher: arr(L.cs.cipher), mac: arr(L.cs.mac), compress: cs, lang: arr(L.cs.lang) },
    sc: { cipher: arr(L.sc.cipher), mac: arr(L.sc.mac), compress: sc, lang: arr(L.sc.lang) },
  });
  return true;
}

/** The zlib stream that compresses what we send: set its level, and see what goes in and comes out. */
export interface OutgoingDeflater {
  /** zlib params(level, default strategy); only between packets, where ssh2 has flushed the stream. */
  setLevel(level: number): void;
  /** Calls `onWrite` after each packet is compressed, with its size before and after. False: cannot watch. */
  watch(onWrite: (bytesIn: number, bytesOut: number) => void): boolean;
}

/** After authentication (when ssh2 creates it): the deflater of what we send, or undefined without compression. */
export function outgoingDeflater(client: Client): OutgoingDeflater | undefined {
  const z = protocolOf(client)?._packetRW?.write?._zlib;
  const handle = z?._handle;
  if (!z || !handle || typeof handle.params !== 'function') return undefined;
  return {
    setLevel: (level) => handle.params(level, 0),
    watch: (onWrite) => {
      const write = z.writeSync;
      if (typeof write !== 'function') return false;
      z.writeSync = (chunk, retChunks) => {
        const out = write.call(z, chunk, retChunks);
        onWrite(chunk.length, out.totalLen ?? out.length);
        return out;
      };
      return true;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Authentication: sign at once with a loaded key

interface SigningKey {
  isPrivateKey?: () => boolean;
  sign?: (data: Buffer, hash?: string) => Buffer | Error;
}
type AuthPK = (this: unknown, username: unknown, key: SigningKey, keyAlgo?: unknown, cbSign?: unknown) => unknown;

const HASH_OF_ALGO: Record<string, string> = { 'rsa-sha2-512': 'sha512', 'rsa-sha2-256': 'sha256', 'ssh-rsa': 'sha1' };

/**
 * ssh2 first asks the server whether it would take a key (USERAUTH_REQUEST without a signature, answered by PK_OK)
 * and signs only then: one round trip per key. For a key file the private key is already loaded, and OpenSSH's
 * client signs at once in that case (sshconnect2.c: sign_and_send_pubkey for a loaded private key), so we do too:
 * a refused key costs the same one request either way. Agent keys keep ssh2's query. Wraps Protocol.authPK.
 */
export function hookSignWithoutQuery(client: Client): boolean {
  const proto = protocolOf(client);
  const authPK = proto?.authPK;
  if (!proto || typeof authPK !== 'function') return false;
  proto.authPK = function (this: unknown, username: unknown, key: SigningKey, keyAlgo?: unknown, cbSign?: unknown) {
    if (cbSign === undefined && typeof keyAlgo !== 'function' && key?.isPrivateKey?.() && typeof key.sign === 'function') {
      const hash = typeof keyAlgo === 'string' ? HASH_OF_ALGO[keyAlgo] : undefined;
      return authPK.call(this, username, key, keyAlgo, (buf: Buffer, cb: (sig: Buffer) => void) => {
        const sig = key.sign!(buf, hash);
        // A key that cannot sign fails on the server like a refused one, and ssh2 moves on to the next key.
        cb(sig instanceof Error ? Buffer.alloc(0) : sig);
      });
    }
    return authPK.call(this, username, key, keyAlgo, cbSign);
  };
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// The handshake timer, stopped while a person answers a question

/**
 * ssh2's handshake timer (readyTimeout) keeps running while the host verifier waits, and would end the connection
 * while a person is still comparing fingerprints. Stops it; the function returned starts it afresh (ssh2 clears the
 * same timer when authentication succeeds), with ssh2's timeout error. Undefined: the timer was not found.
 */
export function pauseHandshakeTimer(client: Client, timeoutMs: number): (() => void) | undefined {
  const c = client as unknown as { _readyTimeout?: NodeJS.Timeout };
  if (!('_readyTimeout' in c)) return undefined;
  clearTimeout(c._readyTimeout);
  return () => {
    c._readyTimeout = setTimeout(() => {
      client.emit('error', Object.assign(new Error('Timed out while waiting for handshake'), { level: 'client-timeout' }));
      client.end();
    }, timeoutMs);
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Ending a lost connection

/**
 * Ends a connection that was lost at once, its TCP socket reset: what was still queued in it (writes, a rename,
 * the unlink of a lock) must not reach the server later, once a new connection holds the lock. ssh2's destroy()
 * closes the socket gracefully, which still delivers the queue if the link comes back. False when the socket is
 * not a TCP socket (ProxyCommand, ProxyJump): destroyed the documented way.
 */
export function resetConnection(client: Client): boolean {
  const sock = (client as unknown as { _sock?: { resetAndDestroy?: () => void } })._sock;
  if (sock && typeof sock.resetAndDestroy === 'function') {
    try {
      sock.resetAndDestroy();
      return true;
    } catch {
      // Not connected any more: nothing to reset.
    }
  }
  client.destroy();
  return false;
}

// ---------------------------------------------------------------------------------------------------------------
// Liveness: the connection's own stream

/** What the liveness check reads of the stream a connection runs over (public stream API from here on). */
export interface ConnectionStream {
  on(ev: 'data', fn: () => void): unknown;
  removeListener(ev: 'data', fn: () => void): unknown;
  /** Bytes written and not yet taken by the transport below (the kernel, a pipe). */
  readonly writableLength?: number;
  /** net.Socket: every byte written so far, those still queued included. */
  readonly bytesWritten?: number;
}

/**
 * The stream ssh2 runs the connection over: the TCP socket it dialled, or the ProxyCommand stream or forwarded
 * channel given to it. What tells a slow link from a dead one is read from it (connect.ts startLiveness): ssh2
 * resets its keepalive count only when a keepalive is answered, and on a busy slow link the answer queues behind
 * everything sent before it. Undefined when it is not where it was checked.
 */
export function connectionStream(client: Client): ConnectionStream | undefined {
  const sock = (client as unknown as { _sock?: Partial<ConnectionStream> })._sock;
  if (!sock || typeof sock.on !== 'function' || typeof sock.removeListener !== 'function') return undefined;
  return sock as ConnectionStream;
}

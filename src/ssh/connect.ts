import { Client, type ConnectConfig } from 'ssh2';
import { spawn } from 'node:child_process';
import { Duplex } from 'node:stream';
import { WsyncError, errorMessage } from '../errors.js';
import { resolveHost, type ResolvedHost } from './config.js';
import {
  appendKnownHost,
  checkHostKey,
  fingerprintOf,
  keyTypeOf,
  knownKeyTypes,
  serverHostKeyAlgorithmsFor,
} from './knownHosts.js';
import { prepareAuth, type AuthPrompt } from './auth.js';
import { SftpChannel } from '../transport/sftp/channel.js';
import { SSH2_CHECKED, connectionStream, hookEarlyReady, hookSignWithoutQuery, pauseHandshakeTimer, resetConnection, type ConnectionStream, type HookReport } from './ssh2-internals.js';
import { compressionOffer, probeCompression, type CompressMode, type CompressionDecision, type CompressionProbe } from './compression.js';

export interface HostKeyPrompt {
  /** Asked for an unknown host key on a TTY; true = trust and record it. */
  confirmUnknown(host: string, keyType: string, fingerprint: string): Promise<boolean>;
}

export interface ConnectOptions {
  configFile?: string;
  user?: string;
  port?: number;
  /** -i: tried before the configured identities. */
  identity?: string;
  /** --accept-new: record an unknown host key instead of refusing it. A changed key is refused regardless. */
  acceptNew?: boolean;
  /** A person can answer prompts (host key, passphrase). */
  interactive: boolean;
  hostKeyPrompt?: HostKeyPrompt;
  authPrompt?: AuthPrompt;
  /** SFTP channels to open on the connection. */
  channels?: number;
  /** -z = on, --no-compress = off; `Compression yes` in ssh_config turns auto into on. Default auto. */
  compress?: CompressMode;
  /** Auto mode on a WAN link: the server compresses what it sends too (see ProbeOptions.replies). */
  compressReplies?: boolean;
  /** zlib level for what we send when compressing (ProbeOptions.level). */
  compressLevel?: number;
  /** Test hook / advanced: bypass `ssh -G`. */
  useSshBinary?: boolean;
  /** Called once the connection is being dialled: CPU work a caller does from then on overlaps the handshake. */
  onDialing?: () => void;
  /**
   * When ssh_config sets no ServerAliveInterval: a keepalive goes out this often (default 2 s). With
   * ServerAliveInterval set, ssh's own rule applies instead: dead after ServerAliveCountMax unanswered keepalives.
   */
  keepaliveMs?: number;
  /**
   * When ssh_config sets no ServerAliveInterval: the link counts as dead once it has shown no sign of life for this
   * long (default 10 s, at least three keepalive intervals; see startLiveness).
   */
  deadAfterMs?: number;
}

export interface SshSession {
  host: ResolvedHost;
  /** How what we send is compressed, and the link measurement auto mode went by. */
  compression: CompressionDecision;
  client: Client;
  channels: SftpChannel[];
  /** Which of ssh2's internals wsync could hook on this connection (ssh2-internals.ts), by hook; all true on the pinned ssh2. */
  hooks: HookReport;
  close(): Promise<void>;
}

const DEFAULT_KEEPALIVE_MS = 2000;
const DEFAULT_DEAD_AFTER_MS = 10_000;
const positive = (n: number | undefined) => (n !== undefined && Number.isFinite(n) && n > 0 ? n : undefined);

const decisions = new WeakMap<Client, CompressionDecision>();
/** Which ssh2 hooks applied while each client connected (see ssh2-internals.ts). */
const hookReports = new WeakMap<Client, HookReport>();

function knownHostsTarget(h: ResolvedHost): { name: string; port: number } {
  // OpenSSH files a host under HostKeyAlias when one is set, without the port.
  return h.hostKeyAlias ? { name: h.hostKeyAlias, port: 22 } : { name: h.hostname, port: h.port };
}

function connectError(h: ResolvedHost, err: unknown): WsyncError {
  if (err instanceof WsyncError) return err;
  const msg = errorMessage(err);
  const code = (err as NodeJS.ErrnoException)?.code;
  const where = `${h.hostname}:${h.port}`;
  if (/authentication methods failed/i.test(msg)) {
    return new WsyncError('E_AUTH', `authentication to ${h.user}@${where} failed`, {
      cause: err,
      hint: 'check the key (-i FILE or IdentityFile in ~/.ssh/config), that ssh-agent holds it, and the server\'s authorized_keys',
    });
  }
  if (code === 'ECONNREFUSED') return new WsyncError('E_CONNECT', `cannot connect to ${where}: connection refused`, { cause: err, hint: 'is sshd running and is the port right?' });
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new WsyncError('E_CONNECT', `cannot resolve host ${h.hostname}`, { cause: err, hint: 'check the host name or the ~/.ssh/config alias' });
  if (code === 'ETIMEDOUT' || /timed out/i.test(msg)) return new WsyncError('E_CONNECT', `cannot connect to ${where}: timed out`, { cause: err });
  return new WsyncError('E_CONNECT', `cannot connect to ${where}: ${msg}`, { cause: err });
}

function proxyCommandSock(cmd: string, h: ResolvedHost): Duplex {
  const expanded = cmd.replace(/%(.)/g, (_m, t: string) => (t === 'h' ? h.hostname : t === 'p' ? String(h.port) : t === 'r' ? h.user : t === 'n' ? h.alias : t === '%' ? '%' : `%${t}`));
  const child = spawn(process.platform === 'win32' ? expanded : `exec ${expanded}`, { shell: true, stdio: ['pipe', 'pipe', 'inherit'] });
  const sock = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
  sock.on('close', () => child.kill());
  return sock;
}

async function openClient(h: ResolvedHost, opts: ConnectOptions): Promise<{ client: Client; chain: Client[] }> {
  if (h.proxyJump) return openViaJumps(h, opts, h.proxyJump.split(',').map((s) => s.trim()).filter(Boolean));
  const sock = h.proxyCommand ? proxyCommandSock(h.proxyCommand, h) : undefined;
  return { client: await handshake(h, opts, sock), chain: [] };
}

/**
 * ProxyJump: each hop is connected with its own config and its own host key check; the next hop rides on a
 * channel forwarded by the previous one, and the final host's key is checked against its own HostName.
 */
async function openViaJumps(h: ResolvedHost, opts: ConnectOptions, hops: string[]): Promise<{ client: Client; chain: Client[] }> {
  const chain: Client[] = [];
  let sock: Duplex | undefined;
  const targets: ResolvedHost[] = [];
  for (const hop of hops) {
    const m = /^(?:([^@]+)@)?(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(hop.replace(/^ssh:\/\//, ''));
    if (!m) throw new WsyncError('E_SSH_CONFIG', `cannot parse ProxyJump hop '${hop}'`);
    const hopHost = await resolveHost(m[2].replace(/^\[|\]$/g, ''), {
      configFile: opts.configFile,
      user: m[1],
      port: m[3] ? Number(m[3]) : undefined,
      useSshBinary: opts.useSshBinary,
    });
    hopHost.proxyJump = undefined;
    targets.push(hopHost);
  }
  targets.push(h);
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    // Hops carry the target's already encrypted (and maybe compressed) stream: compressing it again only costs CPU.
    const client = await handshake(t, i === targets.length - 1 ? opts : { ...opts, identity: undefined, compress: 'off' }, sock);
    if (i === targets.length - 1) return { client, chain };
    chain.push(client);
    const next = targets[i + 1];
    sock = await new Promise<Duplex>((resolve, reject) =>
      client.forwardOut('127.0.0.1', 0, next.hostname, next.port, (err, stream) => (err ? reject(connectError(next, err)) : resolve(stream))),
    );
  }
  throw new Error('unreachable');
}

async function handshake(h: ResolvedHost, opts: ConnectOptions, sock?: NodeJS.ReadableStream & NodeJS.WritableStream): Promise<Client> {
  const kh = knownHostsTarget(h);
  const files = [...h.userKnownHostsFiles, ...h.globalKnownHostsFiles];
  const known = await knownKeyTypes(files, kh.name, kh.port);
  // Prompts for passphrases happen here, before the socket opens, so ssh2's readyTimeout never runs during them.
  const auth = await prepareAuth(h, { identity: opts.identity, prompt: opts.authPrompt, interactive: opts.interactive });
  let hostKeyError: WsyncError | undefined;
  let probe: CompressionProbe | undefined;
  const hooks: HookReport = {};
  const strict = opts.acceptNew ? 'accept-new' : h.strictHostKeyChecking;

  const verify = async (key: Buffer): Promise<boolean> => {
    const verdict = await checkHostKey(files, kh.name, kh.port, key);
    const fp = fingerprintOf(key);
    const type = keyTypeOf(key);
    const shown = kh.port === 22 ? kh.name : `[${kh.name}]:${kh.port}`;
    if (verdict.status === 'ok') return true;
    if (verdict.status === 'revoked') {
      hostKeyError = new WsyncError('E_HOSTKEY_REVOKED', `the host key of ${shown} (${type} ${fp}) is marked @revoked in ${verdict.file}:${verdict.line}`);
      return false;
    }
    if (verdict.status === 'changed') {
      hostKeyError = new WsyncError('E_HOSTKEY_CHANGED', `HOST KEY CHANGED for ${shown}: the server offered ${type} ${fp}, ${verdict.file}:${verdict.line} has ${verdict.knownFingerprint}`, {
        // -f: the file that holds the key, which need not be ~/.ssh/known_hosts (UserKnownHostsFile, -F configs).
        hint: `this may be an attack. If the server was really re-installed, remove the old key with: ssh-keygen -f '${verdict.file.replace(/'/g, `'\\''`)}' -R '${shown}'`,
      });
      return false;
    }
    let trust = false;
    if (strict === 'accept-new' || strict === 'no') trust = true;
    else if (strict === 'ask' && opts.interactive && opts.hostKeyPrompt) {
      // ssh2's handshake timer keeps running during the question and would end the connection while a person is
      // still comparing fingerprints: stopped for the question, started afresh after the answer. (ssh2 clears this
      // same timer when authentication succeeds.)
      const resume = pauseHandshakeTimer(client, readyTimeoutMs);
      hooks.handshakeTimer = resume !== undefined;
      try {
        trust = await opts.hostKeyPrompt.confirmUnknown(shown, type, fp);
      } finally {
        resume?.();
      }
    }
    if (!trust) {
      hostKeyError = new WsyncError('E_HOSTKEY_UNKNOWN', `unknown host key for ${shown}: ${type} ${fp}`, {
        hint: `verify the fingerprint with the server's owner, then run again with --accept-new to record it (or add it to ${h.userKnownHostsFiles[0] ?? '~/.ssh/known_hosts'})`,
      });
      return false;
    }
    const file = h.userKnownHostsFiles[0];
    if (file) {
      try {
        await appendKnownHost(file, kh.name, kh.port, key, { hash: h.hashKnownHosts });
      } catch (err) {
        hostKeyError = new WsyncError('E_KNOWN_HOSTS', `cannot record the host key in ${file}: ${errorMessage(err)}`);
        return false;
      }
    }
    return true;
  };

  const client = new Client();
  hookReports.set(client, hooks);
  const readyTimeoutMs = (h.connectTimeout ?? 20) * 1000;
  const cfg: ConnectConfig = {
    host: h.hostname,
    port: h.port,
    username: auth.username,
    authHandler: auth.handler as ConnectConfig['authHandler'],
    readyTimeout: readyTimeoutMs,
    keepaliveInterval: h.serverAliveInterval !== undefined ? h.serverAliveInterval * 1000 : positive(opts.keepaliveMs) ?? DEFAULT_KEEPALIVE_MS,
    // Without ServerAliveInterval, liveness is judged by signs of life (startLiveness), never by ssh2's count.
    keepaliveCountMax: h.serverAliveInterval !== undefined ? h.serverAliveCountMax ?? 3 : Number.MAX_SAFE_INTEGER,
    hostVerifier: ((key: Buffer, cb: (ok: boolean) => void) => {
      verify(key).then(cb, (err) => {
        hostKeyError = err instanceof WsyncError ? err : new WsyncError('E_KNOWN_HOSTS', errorMessage(err));
        cb(false);
      });
    }) as unknown as ConnectConfig['hostVerifier'],
  };
  const algos = serverHostKeyAlgorithmsFor(known);
  if (algos) cfg.algorithms = { serverHostKey: algos as never };
  const compress: CompressMode = opts.compress === 'off' ? 'off' : opts.compress === 'on' || h.compression ? 'on' : 'auto';
  const compressAlgos = compressionOffer(compress);
  if (compressAlgos) cfg.algorithms = { ...(cfg.algorithms ?? {}), ...compressAlgos };
  if (sock) cfg.sock = sock as never;

  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(hostKeyError ?? auth.failure?.(err) ?? connectError(h, err));
    };
    client.once('ready', () => {
      settled = true;
      decisions.set(client, probe?.settle() ?? {});
      resolve();
    });
    client.on('error', fail);
    client.once('close', () => fail(new Error('connection closed during handshake')));
    const dialStart = performance.now();
    client.connect(cfg);
    probe = probeCompression(client, compress, dialStart, { replies: opts.compressReplies ?? false, level: opts.compressLevel }, hooks);
    hooks.signWithoutQuery = hookSignWithoutQuery(client);
    // The socket is dialling now (known_hosts and keys were read before it).
    opts.onDialing?.();
  });
  // ssh2 never sets TCP_NODELAY; without it every small request waits out Nagle + delayed ACK (~40 ms).
  client.setNoDelay(true);
  return client;
}

export async function connect(alias: string, opts: ConnectOptions): Promise<SshSession> {
  const host = await resolveHost(alias, { configFile: opts.configFile, user: opts.user, port: opts.port, useSshBinary: opts.useSshBinary });
  const { client, chain } = await openClient(host, opts);
  // From here on the connection can fail at any moment: every error is caught (an 'error' event without a listener
  // would end the process with a stack trace), and a closed connection fails every request still waiting.
  let gone: unknown;
  const channelsSoFar: SftpChannel[] = [];
  const lost = (err?: unknown) => {
    gone ??= err ?? new Error('connection closed');
    for (const ch of channelsSoFar) ch.lose(gone);
  };
  client.on('error', lost);
  client.on('end', () => lost());
  client.on('close', () => lost());
  for (const c of chain) {
    c.on('error', lost);
    c.on('close', () => lost());
  }
  // Watched on the outermost connection (the first hop's socket): every hop's bytes and keepalives go through it.
  let liveness: { stop(): void } | undefined;
  if (host.serverAliveInterval === undefined) {
    const sock = connectionStream(chain[0] ?? client);
    if (!sock) {
      endQuietly(client, chain);
      throw new WsyncError('E_INTERNAL', `ssh2 ${SSH2_CHECKED} internals not found: the connection's stream (a lost link would go unnoticed)`, { hint: 'reinstall wsync (its ssh2 version is pinned)' });
    }
    const interval = positive(opts.keepaliveMs) ?? DEFAULT_KEEPALIVE_MS;
    // At least three keepalives' time: an idle link is judged on answers it had the chance to give.
    const deadAfter = Math.max(positive(opts.deadAfterMs) ?? DEFAULT_DEAD_AFTER_MS, 3 * interval);
    liveness = startLiveness(sock, deadAfter, (err) => {
      lost(err);
      for (const c of [client, ...chain]) resetConnection(c);
    });
  }
  client.on('close', () => liveness?.stop());
  const want = Math.max(1, opts.channels ?? 8);
  const hooks: HookReport = { ...hookReports.get(client), earlyReady: hookEarlyReady(client) };
  const opened = await Promise.allSettled(
    Array.from(
      { length: want },
      () =>
        new Promise<SftpChannel>((resolve, reject) =>
          client.sftp((err, sftp) => {
            if (err) return reject(err);
            let ch: SftpChannel;
            try {
              ch = new SftpChannel(sftp);
            } catch (e) {
              // An ssh2 whose internals are not the ones checked (ssh2-internals.ts): said as it is.
              sftp.end();
              return reject(e);
            }
            channelsSoFar.push(ch);
            if (gone) ch.lose(gone);
            resolve(ch);
          }),
        ),
    ),
  );
  const channels = opened.filter((r): r is PromiseFulfilledResult<SftpChannel> => r.status === 'fulfilled').map((r) => r.value);
  if (channels.length === 0 || gone) {
    endQuietly(client, chain);
    if (gone) throw new WsyncError('E_REMOTE_LOST', `connection to ${host.hostname}:${host.port} was lost while opening SFTP: ${errorMessage(gone)}`, { cause: gone });
    const internal = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected' && r.reason instanceof WsyncError);
    if (internal) throw internal.reason;
    const reason = opened[0].status === 'rejected' ? errorMessage(opened[0].reason) : 'unknown';
    throw new WsyncError('E_CONNECT', `the server refused the SFTP subsystem: ${reason}`, { hint: 'sshd needs a "Subsystem sftp" line' });
  }
  // Some servers allow fewer sessions (MaxSessions): work with the channels that opened.
  let closed = false;
  return {
    host,
    compression: decisions.get(client) ?? {},
    client,
    channels,
    hooks: { ...hooks, readiedEarly: channels.every((c) => c.readiedEarly), coalescing: channels.every((c) => c.coalescing) },
    close: async () => {
      if (closed) return;
      closed = true;
      liveness?.stop();
      for (const ch of channels) {
        try {
          ch.end();
        } catch {
          // Already gone with its connection.
        }
      }
      // Not waiting for the server to close its end: every request that mattered has been answered by now, and
      // the wait is a round trip at the end of every run. A lost connection is reset instead: nothing still queued
      // in it may arrive after a new connection took over.
      if (gone || channels.some((c) => c.lost)) {
        for (const c of [client, ...chain]) resetConnection(c);
      } else endQuietly(client, chain);
    },
  };
}

/**
 * A dead link noticed within seconds, a slow one never taken for dead: keepalives go out every couple of seconds
 * (ssh2's), and the connection is ended once it has shown no sign of life for `deadAfterMs`. Signs of life: any byte
 * from the server (a keepalive's answer, a reply, data), or bytes it takes from a queue of ours that had to wait (a
 * dead link drains nothing once the kernel's buffer is full; a keepalive that merely fits into an empty buffer says
 * nothing). A slow uplink can hide both: the upload sits in buffers further along (a router, a proxy), and the
 * server's answers queue behind it (at 64 kbit/s, a reply every ~30 s). So after sending much, silence is allowed
 * for as long as what went out in the last minute takes at SLOW_UPLINK_BYTES_PER_S, up to SLOW_LINK_MAX_SILENCE_MS:
 * a dead link is noticed within `deadAfterMs` when idle or lightly used, within a minute in the middle of a big upload.
 * The check skips a beat the process did not get (a laptop that slept, a long synchronous step): the link is then
 * given a fresh allowance rather than judged on time it could not have used.
 */
function startLiveness(sock: ConnectionStream, deadAfterMs: number, onDead: (err: Error) => void): { stop(): void } {
  const now = () => performance.now();
  let lastSign = now();
  let lastTick = now();
  const onData = () => (lastSign = now());
  sock.on('data', onData);
  const counted = typeof sock.bytesWritten === 'number';
  // net.Socket: bytes the kernel has taken (writes completed); other streams: what is still queued.
  const taken = () => (counted ? sock.bytesWritten! - (sock.writableLength ?? 0) : undefined);
  let prevTaken = taken();
  let prevQueued = sock.writableLength ?? 0;
  /** Bytes written so far, one sample per tick over the last minute (what a slow uplink may still be carrying). */
  const sent: Array<{ at: number; bytes: number }> = [];
  const tickMs = Math.max(100, Math.min(1000, deadAfterMs / 4));
  const stop = () => {
    clearInterval(timer);
    sock.removeListener('data', onData);
  };
  const timer = setInterval(() => {
    const t = now();
    if (t - lastTick > 2 * tickMs) lastSign = t;
    lastTick = t;
    const tk = taken();
    const queued = sock.writableLength ?? 0;
    if (prevQueued > 0 && (tk !== undefined && prevTaken !== undefined ? tk > prevTaken : queued < prevQueued)) lastSign = t;
    prevTaken = tk;
    prevQueued = queued;
    sent.push({ at: t, bytes: counted ? sock.bytesWritten! : 0 });
    while (sent.length > 1 && t - sent[0].at > SLOW_LINK_WINDOW_MS) sent.shift();
    // Without a byte count (a ProxyCommand's pipe), the longest allowance whenever anything is queued.
    const recent = counted ? sent[sent.length - 1].bytes - sent[0].bytes : queued > 0 ? Infinity : 0;
    const allowed = Math.max(deadAfterMs, Math.min(SLOW_LINK_MAX_SILENCE_MS, (recent / SLOW_UPLINK_BYTES_PER_S) * 1000));
    if (t - lastSign > allowed) {
      stop();
      onDead(new Error(`nothing came from the server for ${Math.round(allowed / 1000)} s (keepalives unanswered)`));
    }
  }, tickMs);
  timer.unref();
  return { stop };
}

/** The slowest uplink assumed still alive (32 kbit/s), over what was sent in the last minute. */
const SLOW_UPLINK_BYTES_PER_S = 4000;
const SLOW_LINK_WINDOW_MS = 60_000;
const SLOW_LINK_MAX_SILENCE_MS = 60_000;

function endQuietly(client: Client, chain: Client[]): void {
  for (const c of [client, ...chain]) {
    try {
      c.end();
    } catch {
      // A connection that already failed has nothing to end.
    }
  }
}

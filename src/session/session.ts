import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { WsyncError, abortedError, errorMessage } from '../errors.js';
import { formatTarget, parseTarget, type Target } from '../target.js';
import { ChunkCache, cacheFileFor, pairFileFor, usableCacheDir } from '../transfer/chunkcache.js';
import { prewarmChunks } from '../transfer/prewarm.js';
import { LocalTransport } from '../transport/local/local.js';
import { openTarget } from '../transport/open.js';
import type { Transport } from '../transport/types.js';
import type { ConnectOptions } from '../ssh/connect.js';
import { Hold, type HoldOptions } from './hold.js';

/** What a session says about its connection (the library's onEvent; the CLI prints them). */
export interface ConnectionEvent {
  type: 'connection';
  state: 'lost' | 'reconnecting' | 'restored';
  message: string;
  /** reconnecting: the attempt about to be made (1-based) and the wait before it. */
  attempt?: number;
  delayMs?: number;
}

export interface ReconnectPolicy {
  /** Attempts after a lost connection before giving up (default 6). The first connection is never retried. */
  attempts?: number;
  /** Wait before the first attempt (default 500 ms); doubled each time, capped by maxDelayMs (default 15 s), with jitter. */
  firstDelayMs?: number;
  maxDelayMs?: number;
}

export interface SessionOptions
  extends Pick<ConnectOptions, 'identity' | 'acceptNew' | 'hostKeyPrompt' | 'authPrompt' | 'channels' | 'useSshBinary' | 'keepaliveMs' | 'deadAfterMs'> {
  /** ssh_config file (-F). */
  sshConfig?: string;
  interactive?: boolean;
  /** true / false / unset = auto (see SyncOptions.compress). */
  compress?: boolean;
  /** What the server sends is mostly metadata (pushes): worth compressing on a WAN link. */
  compressReplies?: boolean;
  /** Cut changed big files into chunks while connecting (a push is about to run). */
  prewarm?: boolean;
  reconnect?: ReconnectPolicy;
  /**
   * Stops the session when aborted: the run in progress starts nothing more, finishes what is in flight, records it
   * in the manifest, removes its lock and rejects with E_ABORTED (given ABORT_GRACE_MS; then it is cut as on a lost
   * link); then the session closes.
   */
  signal?: AbortSignal;
  onEvent?: (ev: ConnectionEvent) => void;
  /** Called once dialling has begun (CPU work from then on overlaps the handshake). */
  onDialing?: () => void;
}

/** Errors of the link itself, worth another connection; anything else (auth, host key, config) is not. */
export function isLinkError(err: unknown): boolean {
  return err instanceof WsyncError && (err.code === 'E_REMOTE_LOST' || err.code === 'E_CONNECT');
}

/** The wait before reconnect attempt `n` (0-based): exponential, capped, with ±50 % jitter so that many clients spread out. */
export function backoffMs(n: number, policy: ReconnectPolicy = {}, random: () => number = Math.random): number {
  const first = policy.firstDelayMs ?? 500;
  const max = policy.maxDelayMs ?? 15_000;
  const base = Math.min(max, first * 2 ** Math.min(n, 30));
  return Math.round(base * (0.5 + random()));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * One local directory and one target, for as long as the caller wants: the connection (reconnected after it is
 * lost), the local chunk cache, and an id that lets its own runs tell their locks from other runs'. push, pull and
 * the coming watch and sync run on it one at a time (runOnce); the one-shot API opens one per call.
 */
export class Session {
  readonly local: LocalTransport;
  readonly target: Target;
  /** The target as typed, normalized: what the chunk cache and pair state are keyed by. */
  readonly targetLabel: string;
  /** Names this session in the locks its runs take (LockOptions.session). */
  readonly id = randomBytes(8).toString('hex');
  /** Settles when the session is closed (close(), or its signal aborted). */
  readonly closed: Promise<void>;
  private markClosed!: () => void;
  private isClosed = false;
  private current: Transport | undefined;
  private connecting: Promise<Transport> | undefined;
  /** Wakes a backoff wait when the session is closed. */
  private readonly stopping = new AbortController();
  /** Aborted with the session's signal: what its runs stop on (runOnce). */
  private readonly stopRuns = new AbortController();
  private readonly onAbort = () => void this.stop();
  private cacheP: Promise<ChunkCache> | undefined;
  /** Runs in progress (one at a time: see runOnce). */
  busy: Promise<unknown> = Promise.resolve();
  /** The target's lock and ancestor while the session holds them (hold()). */
  held: Hold | undefined;

  private constructor(
    localDir: string,
    target: Target,
    private readonly o: SessionOptions,
  ) {
    this.local = new LocalTransport(path.resolve(localDir));
    this.target = target;
    this.targetLabel = formatTarget(target);
    this.closed = new Promise((r) => (this.markClosed = r));
    if (o.signal?.aborted) {
      this.stopRuns.abort();
      void this.close();
    } else o.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /**
   * Connects (the first connection is not retried: a wrong host, key or password should be said at once), loading
   * and prewarming the chunk cache meanwhile when asked to.
   */
  static async open(localDir: string, target: Target | string, o: SessionOptions = {}): Promise<Session> {
    if (!localDir) throw new WsyncError('E_USAGE', 'missing local directory');
    const s = new Session(localDir, typeof target === 'string' ? parseTarget(target) : target, o);
    if (o.prewarm) s.cacheP = s.loadCache(true);
    try {
      const t = await s.dial(o.onDialing);
      if (s.isClosed) {
        await t.close().catch(() => undefined);
        throw s.stopRuns.signal.aborted ? abortedError() : new WsyncError('E_USAGE', 'the session was closed while it connected');
      }
      s.current = t;
    } catch (err) {
      await s.close();
      throw s.stopRuns.signal.aborted ? abortedError() : err;
    }
    return s;
  }

  /** The cache, when it was loaded and prewarmed at open (opened with `prewarm`): what a push's early rebuilds start from. */
  prewarmed(): Promise<ChunkCache> | undefined {
    return this.o.prewarm ? this.cacheP : undefined;
  }

  /** The chunk cache of this (local directory, target) pair, loaded once; undefined without a cache directory. */
  cache(): Promise<ChunkCache> | undefined {
    return (this.cacheP ??= this.loadCache(false));
  }

  private loadCache(prewarm: boolean): Promise<ChunkCache> | undefined {
    const dir = usableCacheDir();
    if (!dir) return undefined;
    const p = ChunkCache.load(cacheFileFor(dir, this.local.root, this.targetLabel), { local: this.local.root, target: this.targetLabel }).then(async (c) => {
      if (prewarm) await prewarmChunks(this.local, c);
      return c;
    });
    p.catch(() => undefined);
    return p;
  }

  /** The signal the session's runs stop on (its own signal, aborted). @internal */
  get runSignal(): AbortSignal {
    return this.stopRuns.signal;
  }

  /** The signal's abort: the run in progress winds down (its files in flight done and recorded, its lock removed), then the session closes. */
  private async stop(): Promise<void> {
    this.stopRuns.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.busy.catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, ABORT_GRACE_MS)))]);
    clearTimeout(timer);
    await this.close();
  }

  /** True once close() was called (or the signal aborted). */
  get ended(): boolean {
    return this.isClosed;
  }

  /** True while the current connection works. */
  get connected(): boolean {
    return !!this.current && !this.current.lost;
  }

  /**
   * The remote transport, connected: after a lost link, a new connection (with backoff and jitter, up to
   * reconnect.attempts; only link errors are retried). Fails once the session is closed.
   */
  async remote(): Promise<Transport> {
    if (this.isClosed) throw new WsyncError('E_USAGE', 'the session is closed');
    const t = this.current;
    if (t && !t.lost) return t;
    const old = t ?? this.dropped;
    this.dropped = undefined;
    return (this.connecting ??= this.reconnect(old).finally(() => (this.connecting = undefined)));
  }

  private async reconnect(old: Transport | undefined): Promise<Transport> {
    const emit = this.o.onEvent ?? (() => undefined);
    if (old) {
      this.current = undefined;
      await old.close().catch(() => undefined); // once only: a dropped one is closed already
      emit({ type: 'connection', state: 'lost', message: `connection to ${this.targetLabel} lost: ${errorMessage(old.lost)}` });
    }
    const attempts = this.o.reconnect?.attempts ?? 6;
    for (let n = 0; ; n++) {
      const delayMs = backoffMs(n, this.o.reconnect);
      emit({ type: 'connection', state: 'reconnecting', message: `reconnecting to ${this.targetLabel} in ${(delayMs / 1000).toFixed(1)} s (attempt ${n + 1} of ${attempts})`, attempt: n + 1, delayMs });
      await sleep(delayMs, this.stopping.signal);
      if (this.isClosed) throw new WsyncError('E_REMOTE_LOST', `connection to ${this.targetLabel} lost, and the session was closed`);
      try {
        const t = await this.dial();
        if (this.isClosed) {
          await t.close().catch(() => undefined);
          throw new WsyncError('E_REMOTE_LOST', 'the session was closed');
        }
        this.current = t;
        emit({ type: 'connection', state: 'restored', message: `reconnected to ${this.targetLabel}` });
        return t;
      } catch (err) {
        if (!isLinkError(err) || n + 1 >= attempts) throw err;
      }
    }
  }

  private dial(onDialing?: () => void): Promise<Transport> {
    return openTarget(this.target, { ...this.o, onDialing });
  }

  /**
   * Drops a connection a run found lost, at once (the next remote() call makes a new one): requests its other
   * channels still carry must not go on, and nothing queued in it may reach the server later.
   */
  async drop(t: Transport): Promise<void> {
    if (this.current !== t || !t.lost) return;
    this.current = undefined;
    this.dropped = t;
    await t.close().catch(() => undefined);
  }
  private dropped: Transport | undefined;
  private closing = false;

  /**
   * Takes the target's lock and reads its manifest once, and keeps both until release() or close(): the batches
   * of given paths (runOnce with `paths`) that follow pay neither, and their changes reach the manifest behind
   * them, several in one write (see Hold). A full run on a held session lets go for its own lock and takes the
   * hold again after it. Waits for a run in progress.
   */
  async hold(o: HoldOptions = {}): Promise<void> {
    await this.serialized(() => this.takeHold(o));
  }

  /** Writes what the hold has not written to the manifest yet and removes the lock (after a run in progress). */
  async release(): Promise<void> {
    await this.serialized(() => this.letGo());
  }

  /** hold() within a run (not serialized). @internal */
  async takeHold(o: HoldOptions): Promise<void> {
    if (this.held && !this.held.done) return;
    this.held = await Hold.take(await this.remote(), { ...o, session: this.id, journalFile: this.journalFile() });
  }

  /**
   * release() within a run (not serialized). @internal After a lost link the hold is checked on a new connection
   * first (Hold.on), so that its manifest is written and its lock removed there.
   */
  async letGo(): Promise<void> {
    const h = this.held;
    if (!h) return;
    try {
      if (!h.done) await h.on(await this.remote());
    } finally {
      this.held = undefined;
      await h.release();
    }
  }

  /** The pair's journal of finished files (beside its chunk cache), null without a cache directory. @internal */
  journalFile(): string | null {
    const dir = usableCacheDir();
    return dir ? pairFileFor(cacheFileFor(dir, this.local.root, this.targetLabel), '.journal') : null;
  }

  /** Runs `fn` when the runs before it are over; the next ones wait for it (see runOnce). */
  async serialized<T>(fn: () => Promise<T>): Promise<T> {
    const before = this.busy;
    let done!: () => void;
    this.busy = new Promise<void>((r) => (done = r));
    await before.catch(() => undefined);
    try {
      return await fn();
    } finally {
      done();
    }
  }

  /**
   * Ends the connection (a run in progress then fails as on a lost link) and waits for that run to end and for
   * the cache load (a prewarm still cutting files), so that nothing runs after it. A hold is let go of first,
   * after the run in progress (its manifest written, its lock removed; over a new connection if the link was
   * lost), for at most CLOSE_RELEASE_MS (OFFLINE_RELEASE_MS when the link is down): then the run is cut as it would
   * be without a hold.
   */
  async close(): Promise<void> {
    if (this.isClosed) return;
    if (this.held && !this.closing) {
      this.closing = true;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.serialized(() => this.letGo()).catch(() => undefined),
        new Promise<void>((r) => (timer = setTimeout(r, this.connected ? CLOSE_RELEASE_MS : OFFLINE_RELEASE_MS))),
      ]);
      clearTimeout(timer);
    }
    if (this.isClosed) return;
    this.isClosed = true;
    this.stopping.abort();
    this.o.signal?.removeEventListener('abort', this.onAbort);
    const t = this.current;
    this.current = undefined;
    await Promise.all([t?.close().catch(() => undefined), this.cacheP?.catch(() => undefined)]);
    await this.busy.catch(() => undefined);
    await this.local.close().catch(() => undefined);
    this.markClosed();
  }
}

/**
 * How long close() gives a held session to write its manifest and remove its lock; less when the link is down
 * already (a reconnect or two; then the lock stays, and the journal says what was finished).
 */
const CLOSE_RELEASE_MS = 15_000;
/** How long an aborted session's run has to finish what is in flight before the session is closed under it. */
const ABORT_GRACE_MS = 5_000;
const OFFLINE_RELEASE_MS = 5_000;

/** Opens a Session (see Session.open). */
export function openSession(localDir: string, target: Target | string, o: SessionOptions = {}): Promise<Session> {
  return Session.open(localDir, target, o);
}

import { WsyncError } from './errors.js';
import type { Target } from './target.js';
import { openTarget } from './transport/open.js';
import { Session, openSession } from './session/session.js';
import { runOnce, syncOnce, type RunOptions } from './session/run.js';
import type { HostKeyPrompt } from './ssh/connect.js';
import type { AuthPrompt } from './ssh/auth.js';
import type { Direction, ItemEvent, SyncEvent, SyncResult } from './transfer/engine.js';
import type { TwoWayResult } from './transfer/twoway.js';

export interface SyncOptions {
  /** Remove destination paths the source no longer has (never excluded ones, never after an error). */
  delete?: boolean;
  /** Replace or delete destination paths changed outside wsync (old copies go to .wsync/trash/), and lift the delete limit. */
  force?: boolean;
  dryRun?: boolean;
  /** Compare files of equal size and mtime by content on both sides (reads them all; see EngineOptions.checksum). */
  checksum?: boolean;
  exclude?: string[];
  include?: string[];
  /** --include/--exclude in the order given, first match wins (rsync's model); when set, `exclude`/`include` are unused. */
  rules?: Array<{ include: boolean; glob: string }>;
  /** Honour .gitignore files (default true). */
  gitignore?: boolean;
  /** ssh_config file (-F). */
  sshConfig?: string;
  /** Private key tried first (-i). */
  identity?: string;
  /** Record an unknown host key instead of refusing. */
  acceptNew?: boolean;
  /** Files in flight at once (default 1024). */
  concurrency?: number;
  /**
   * SSH compression. true: both directions (what we send at zlib level 1). false: none. Unset (auto): on a WAN link
   * (the server's greeting takes 20 ms or more) what we send is compressed at level 1, stored while the data does
   * not compress, and on a push the server's replies too; on a LAN nothing is.
   */
  compress?: boolean;
  /** SFTP channels per connection (default 8; sshd allows 10 sessions by default). */
  channels?: number;
  /** Seconds to wait for another run's lock (default 0). */
  wait?: number;
  breakLock?: boolean;
  /** A person can answer prompts (host keys, passphrases). Default false for the library. */
  interactive?: boolean;
  hostKeyPrompt?: HostKeyPrompt;
  authPrompt?: AuthPrompt;
  onEvent?: (ev: SyncEvent) => void;
  /** Resolve hosts without the `ssh` binary (uses the ssh-config package). */
  useSshBinary?: boolean;
  /**
   * Times a run whose link was lost goes on over a new connection (default 0: the loss is the error, exit 2 in the
   * CLI). See RunOptions.resume.
   */
  resume?: number;
  /**
   * With a Session, a push or pull of only these paths (relative to both roots): what a watcher reports as
   * changed, or what a caller knows changed on the target. No walk of either tree, no remote listing (see
   * pushPaths, pullPaths).
   */
  paths?: string[];
  /**
   * Stops the run: nothing more starts, what is in flight finishes and is recorded in the manifest, the lock is
   * removed, and the call rejects with E_ABORTED (a one-shot call then closes its connection; see
   * SessionOptions.signal for a session's).
   */
  signal?: AbortSignal;
  /** Test hook. */
  afterTransfer?: (path: string) => void;
  /** Diagnostics: which shortcuts a run took (see EngineOptions.onTrace). */
  onTrace?: (what: string, path?: string) => void;
}

export type { SyncResult, SyncEvent };
export { openTarget };

function runOptions(mode: Direction, o: SyncOptions): RunOptions {
  return {
    mode,
    delete: o.delete,
    force: o.force,
    dryRun: o.dryRun,
    checksum: o.checksum,
    filter: { gitignore: o.gitignore ?? true, excludes: o.exclude ?? [], includes: o.include ?? [], rules: o.rules },
    concurrency: o.concurrency,
    wait: o.wait,
    breakLock: o.breakLock,
    resume: o.resume,
    paths: o.paths,
    signal: o.signal,
    onEvent: o.onEvent,
    afterTransfer: o.afterTransfer,
    onTrace: o.onTrace,
  };
}

async function run(mode: Direction, a: string | Session, b: Target | string | SyncOptions | undefined, c: SyncOptions | undefined): Promise<SyncResult> {
  if (a instanceof Session) return runOnce(a, runOptions(mode, (b as SyncOptions | undefined) ?? {}));
  const o = c ?? {};
  const target = b as Target | string;
  if (!a) throw new WsyncError('E_USAGE', 'missing local directory');
  const t0 = Date.now();
  let dialing!: () => void;
  const dialed = new Promise<void>((resolve) => (dialing = resolve));
  // Changed big files are cut while connecting; the run picks up the same cache object.
  // A session for this one call (SyncOptions carries the connection's options too).
  const sessionP = openSession(a, target, { ...o, compressReplies: mode === 'push', prewarm: mode === 'push' && !o.dryRun, onDialing: dialing });
  sessionP.catch(() => undefined).finally(dialing);
  // The engine's modules load while the SSH handshake waits on the network (~50 ms of a run's start).
  await dialed;
  await import('./transfer/engine.js');
  const session = await sessionP;
  const connectMs = Date.now() - t0;
  try {
    const result = await runOnce(session, runOptions(mode, o));
    result.timings.connect = connectMs;
    return result;
  } finally {
    await session.close();
  }
}

/**
 * Makes `target` match `localDir` (or, given a Session, the session's target match its directory). Throws
 * WsyncError for fatal problems; per-path problems are in the result.
 */
export function push(localDir: string, target: Target | string, options?: SyncOptions): Promise<SyncResult>;
export function push(session: Session, options?: SyncOptions): Promise<SyncResult>;
export function push(a: string | Session, b?: Target | string | SyncOptions, c?: SyncOptions): Promise<SyncResult> {
  return run('push', a, b, c);
}

/** Makes `localDir` match `target` (or a Session's directory match its target). */
export function pull(localDir: string, target: Target | string, options?: SyncOptions): Promise<SyncResult>;
export function pull(session: Session, options?: SyncOptions): Promise<SyncResult>;
export function pull(a: string | Session, b?: Target | string | SyncOptions, c?: SyncOptions): Promise<SyncResult> {
  return run('pull', a, b, c);
}

export type { TwoWayResult } from './transfer/twoway.js';

/**
 * Two-way: brings changes from each side to the other, against what this directory and this target last agreed on
 * (kept on this machine). A file changed on both sides keeps both versions (the remote's as a sync-conflict copy on
 * both sides); an edit beats a delete. Options as for push/pull; `delete` is implied (deletions on one side
 * propagate, never on a first contact), `force` lifts the empty-side refusal and the delete limit.
 */
export function sync(localDir: string, target: Target | string, options?: SyncOptions): Promise<TwoWayResult>;
export function sync(session: Session, options?: SyncOptions): Promise<TwoWayResult>;
export async function sync(a: string | Session, b?: Target | string | SyncOptions, c?: SyncOptions): Promise<TwoWayResult> {
  const o = (a instanceof Session ? (b as SyncOptions | undefined) : c) ?? {};
  const once = (session: Session) =>
    syncOnce(session, {
      force: o.force,
      dryRun: o.dryRun,
      filter: { gitignore: o.gitignore ?? true, excludes: o.exclude ?? [], includes: o.include ?? [], rules: o.rules },
      concurrency: o.concurrency,
      wait: o.wait,
      breakLock: o.breakLock,
      onEvent: o.onEvent,
      onTrace: o.onTrace,
      signal: o.signal,
    });
  if (a instanceof Session) return once(a);
  if (!a) throw new WsyncError('E_USAGE', 'missing local directory');
  const session = await openSession(a, b as Target | string, { ...o, compressReplies: false });
  try {
    return await once(session);
  } finally {
    await session.close();
  }
}

/** What `wsync status` reports: each command's dry run, with the changes it would make, or why it would refuse. */
export interface StatusReport {
  push: StatusSection<SyncResult>;
  pull: StatusSection<SyncResult>;
  sync: StatusSection<TwoWayResult>;
}

export interface StatusSection<R> {
  result?: R;
  items: ItemEvent[];
  /** The command would refuse to run (a delete limit, an empty side): its error, as data. */
  refused?: { code: string; message: string; hint?: string };
}

/**
 * What push, pull and sync would each do now: their dry runs over one connection, taking no lock and changing
 * nothing on either side (push and pull as with `delete`, so that what they would remove shows). A command that
 * would refuse says why in its section; a failure to reach the target throws.
 */
export async function status(localDir: string, target: Target | string, options: SyncOptions = {}): Promise<StatusReport> {
  if (!localDir) throw new WsyncError('E_USAGE', 'missing local directory');
  const session = await openSession(localDir, target, { ...options, compressReplies: false });
  const section = async <R>(run: (onEvent: (ev: SyncEvent) => void) => Promise<R>): Promise<StatusSection<R>> => {
    const items: ItemEvent[] = [];
    try {
      const result = await run((ev) => (ev.type === 'item' ? items.push(ev) : options.onEvent?.(ev)));
      return { result, items };
    } catch (err) {
      if (!(err instanceof WsyncError) || !['E_DELETE_LIMIT', 'E_EMPTY_ROOT', 'E_TARGET', 'E_LOCAL_MISSING'].includes(err.code)) throw err;
      return { items: [], refused: { code: err.code, message: err.message, hint: err.hint } };
    }
  };
  try {
    const push = await section((onEvent) => runOnce(session, runOptions('push', { ...options, delete: options.delete ?? true, dryRun: true, onEvent })));
    const pull = await section((onEvent) => runOnce(session, runOptions('pull', { ...options, delete: options.delete ?? true, dryRun: true, onEvent })));
    const two = await section((onEvent) => sync(session, { ...options, dryRun: true, onEvent }));
    return { push, pull, sync: two };
  } finally {
    await session.close();
  }
}

import path from 'node:path';
import { WsyncError } from './errors.js';
import { formatTarget, parseTarget, type Target } from './target.js';
import { ChunkCache, cacheFileFor, defaultCacheDir } from './transfer/chunkcache.js';
import { prewarmChunks } from './transfer/prewarm.js';
import { LocalTransport } from './transport/local/local.js';
import { openTarget } from './transport/open.js';
import type { HostKeyPrompt } from './ssh/connect.js';
import type { AuthPrompt } from './ssh/auth.js';
import type { Direction, SyncEvent, SyncResult } from './transfer/engine.js';

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
  /** Test hook. */
  afterTransfer?: (path: string) => void;
  /** Diagnostics: which shortcuts a run took (see EngineOptions.onTrace). */
  onTrace?: (what: string, path?: string) => void;
}

export type { SyncResult, SyncEvent };
export { openTarget };

async function run(direction: Direction, localDir: string, target: Target | string, o: SyncOptions): Promise<SyncResult> {
  if (!localDir) throw new WsyncError('E_USAGE', 'missing local directory');
  const local = new LocalTransport(path.resolve(localDir));
  const spec = typeof target === 'string' ? parseTarget(target) : target;
  const cacheTarget = formatTarget(spec);
  const dir = defaultCacheDir();
  // Cut changed big files while connecting; the engine picks up the same cache object.
  const cache =
    dir && direction === 'push' && !o.dryRun
      ? ChunkCache.load(cacheFileFor(dir, local.root, cacheTarget), { local: local.root, target: cacheTarget }).then(async (c) => {
          await prewarmChunks(local, c);
          return c;
        })
      : undefined;
  const t0 = Date.now();
  let dialing!: () => void;
  const dialed = new Promise<void>((resolve) => (dialing = resolve));
  const remoteP = openTarget(spec, { ...o, compressReplies: direction === 'push', onDialing: dialing });
  remoteP.catch(() => undefined).finally(dialing);
  // The engine's modules load while the SSH handshake waits on the network (~50 ms of a run's start).
  await dialed;
  const { runSync } = await import('./transfer/engine.js');
  const remote = await remoteP.catch(async (err) => {
    await cache?.catch(() => undefined);
    throw err;
  });
  const connectMs = Date.now() - t0;
  try {
    const result = await runSync({
      direction,
      local,
      remote,
      delete: o.delete ?? false,
      force: o.force ?? false,
      dryRun: o.dryRun ?? false,
      filter: { gitignore: o.gitignore ?? true, excludes: o.exclude ?? [], includes: o.include ?? [], rules: o.rules },
      concurrency: o.concurrency ?? 1024,
      lockWaitSeconds: o.wait ?? 0,
      breakLock: o.breakLock ?? false,
      checksum: o.checksum ?? false,
      onEvent: o.onEvent,
      afterTransfer: o.afterTransfer,
      onTrace: o.onTrace,
      cacheTarget,
      cache,
    });
    result.timings.connect = connectMs;
    return result;
  } finally {
    await Promise.all([remote.close(), local.close()]);
  }
}

/** Makes `target` match `localDir`. Throws WsyncError for fatal problems; per-path problems are in the result. */
export function push(localDir: string, target: Target | string, options: SyncOptions = {}): Promise<SyncResult> {
  return run('push', localDir, target, options);
}

/** Makes `localDir` match `target`. */
export function pull(localDir: string, target: Target | string, options: SyncOptions = {}): Promise<SyncResult> {
  return run('pull', localDir, target, options);
}

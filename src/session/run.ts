import type { FilterOptions } from '../scan/ignore.js';
import type { Direction, SyncEvent, SyncResult } from '../transfer/engine.js';
import type { TwoWayResult } from '../transfer/twoway.js';
import type { Transport } from '../transport/types.js';
import { isLinkError, type Session } from './session.js';
import { pullPaths, pushPaths } from './batch.js';
import { WsyncError, abortedError, errorMessage } from '../errors.js';

export interface RunOptions {
  mode: Direction;
  delete?: boolean;
  force?: boolean;
  dryRun?: boolean;
  checksum?: boolean;
  filter?: FilterOptions;
  /** Files in flight at once (default 1024). */
  concurrency?: number;
  /** Seconds to wait for another run's lock (default 0). */
  wait?: number;
  breakLock?: boolean;
  /**
   * Times a run whose link was lost is started again on a new connection (default 0: the loss is the run's error).
   * Each new run goes on from what the lost one completed (the journal, partial uploads), and its lock is known as
   * the session's own.
   */
  resume?: number;
  /**
   * Only these paths (relative to both roots) may have changed: a push or pull of just them, with no walk of
   * either tree (see pushPaths, pullPaths).
   */
  paths?: Iterable<string>;
  onEvent?: (ev: SyncEvent) => void;
  afterTransfer?: (path: string) => void;
  onTrace?: (what: string, path?: string) => void;
  /**
   * Stops this run (as the session's signal stops every run): nothing more starts, what is in flight finishes and
   * is recorded, the lock is removed, and the run rejects with E_ABORTED.
   */
  signal?: AbortSignal;
}

/**
 * One push or pull on a session: the runs of a session go one at a time (a second call waits for the first),
 * each on the session's connection, reconnecting first when it was lost.
 */
export function runOnce(session: Session, o: RunOptions): Promise<SyncResult> {
  return session.serialized(async () => {
    // A full run takes the lock itself: a hold (see Session.hold) is let go of for it and taken again after it.
    const rehold = !o.paths && !o.dryRun ? session.held?.options : undefined;
    // Not let go of (the link is lost for good): the run's own lock takes the old one over, as it names this session.
    if (rehold) await session.letGo().catch(() => undefined);
    // A dry run reads the manifest: what the hold has not written yet must be in it.
    if (o.dryRun && !o.paths) await session.held?.flush().catch(() => undefined);
    try {
      return await attempts(session, o);
    } finally {
      // Not taken again (another run took the lock meanwhile, the link is gone): the run's outcome stands, and the
      // batches after it take the lock each (session.held says which).
      if (rehold) await session.takeHold(rehold).catch((err) => o.onEvent?.({ type: 'notice', message: `the lock on the target is no longer held: ${errorMessage(err)}` }));
    }
  });
}

async function attempts(session: Session, o: RunOptions): Promise<SyncResult> {
  const { runSync } = await import('../transfer/engine.js');
  let traced: Transport | undefined;
  const paths = o.paths ? [...o.paths] : undefined;
  const signal = o.signal ? AbortSignal.any([session.runSignal, o.signal]) : session.runSignal;
  for (let attempt = 0; ; attempt++) {
    // (A closed session says so: its remote() below.)
    if (signal.aborted && !session.ended) throw abortedError();
    const t0 = Date.now();
    const remote = await session.remote();
    const connectMs = Date.now() - t0;
    if (remote.hooks && remote !== traced) {
      traced = remote;
      o.onTrace?.(`ssh2 hooks ${Object.entries(remote.hooks).map(([k, v]) => `${k}=${v ? 'applied' : 'MISSING'}`).join(' ')}`);
    }
    try {
      if (paths) {
        if (o.dryRun) throw new WsyncError('E_USAGE', 'a run of given paths has no dry run yet: run a full one with --dry-run');
        return await (o.mode === 'push' ? pushPaths : pullPaths)(session, { paths, delete: o.delete, force: o.force, filter: o.filter, concurrency: o.concurrency, wait: o.wait, breakLock: o.breakLock, onEvent: o.onEvent, signal });
      }
      const result = await runSync({
        ...engineOptions(session, remote, o),
        direction: o.mode,
        delete: o.delete ?? false,
        checksum: o.checksum ?? false,
        afterTransfer: o.afterTransfer,
        cache: session.prewarmed(),
        loadCache: () => session.cache(),
        signal,
      });
      if (connectMs > 0) result.timings.connect = connectMs;
      return result;
    } catch (err) {
      if (isLinkError(err)) await session.drop(remote);
      if (!isLinkError(err) || attempt >= (o.resume ?? 0) || signal.aborted) throw err;
      o.onEvent?.({ type: 'notice', message: `the link was lost during the ${o.mode}; going on over a new connection (${attempt + 1} of ${o.resume})` });
    }
  }
}

/** A two-way sync on a session: what `sync(session)` runs, and each batch of `watch --two-way`. */
export type SyncOnceOptions = Pick<RunOptions, 'force' | 'dryRun' | 'filter' | 'concurrency' | 'wait' | 'breakLock' | 'onEvent' | 'onTrace' | 'signal'>;

export function syncOnce(session: Session, o: SyncOnceOptions): Promise<TwoWayResult> {
  return session.serialized(async () => {
    const { runTwoWay } = await import('../transfer/twoway.js');
    // As for a full push or pull: a hold (watch batches) is let go of for the sync's own lock, and taken again.
    const rehold = !o.dryRun ? session.held?.options : undefined;
    if (rehold) await session.letGo().catch(() => undefined);
    const remote = await session.remote();
    try {
      return await runTwoWay({ ...engineOptions(session, remote, o), signal: o.signal ? AbortSignal.any([session.runSignal, o.signal]) : session.runSignal });
    } catch (err) {
      if (isLinkError(err)) await session.drop(remote);
      throw err;
    } finally {
      if (rehold) await session.takeHold(rehold).catch((err) => o.onEvent?.({ type: 'notice', message: `the lock on the target is no longer held: ${errorMessage(err)}` }));
    }
  });
}

/** What a full run and a sync on a session take alike. */
function engineOptions(session: Session, remote: Transport, o: SyncOnceOptions) {
  return {
    local: session.local,
    remote,
    force: o.force ?? false,
    dryRun: o.dryRun ?? false,
    filter: o.filter ?? { gitignore: true, excludes: [], includes: [] },
    concurrency: o.concurrency ?? 1024,
    lockWaitSeconds: o.wait ?? 0,
    breakLock: o.breakLock ?? false,
    session: session.id,
    cacheTarget: session.targetLabel,
    onEvent: o.onEvent,
    onTrace: o.onTrace,
  };
}

/**
 * `wsync watch`: an initial push, then the paths local file events name, pushed in small batches over the
 * session's one connection with its lock and ancestor held (Session.hold): no walk, no remote listing per batch.
 * Events are hints (watcher.ts): a batch looks at its paths itself. When the link drops, edits go on being
 * collected, the session reconnects with backoff for as long as it takes, and a full push catches up (never a
 * replay of the events) before batches resume. `--two-way` (WatchOptions.twoWay): every batch is a two-way sync
 * instead, after local events and on a poll for the remote's changes.
 */
import { WsyncError, errorMessage } from '../errors.js';
import { IGNORE_FILES, IgnoreRules, type FilterOptions } from '../scan/ignore.js';
import { baseName } from '../util/paths.js';
import { forgetBatchRules } from './batch.js';
import { watchTree, type ChangeWatcher } from '../watch/watcher.js';
import type { SyncEvent, SyncResult } from '../transfer/engine.js';
import type { TwoWayResult } from '../transfer/twoway.js';
import { isLinkError, backoffMs, type Session } from './session.js';
import { runOnce, syncOnce } from './run.js';

/** Errors that end a watch: another try would meet them again. */
const FATAL = new Set<string>(['E_SSH_CONFIG', 'E_AUTH', 'E_PASSPHRASE', 'E_HOSTKEY_UNKNOWN', 'E_HOSTKEY_CHANGED', 'E_HOSTKEY_REVOKED', 'E_KNOWN_HOSTS', 'E_LOCAL_MISSING', 'E_MANIFEST', 'E_DELETE_LIMIT', 'E_EMPTY_ROOT', 'E_REMOTE_PERMISSION', 'E_TARGET']);

/** A full compare at least this often, and this often while a directory could not be watched. */
export const FULL_EVERY_MS = 10 * 60_000;
export const DEGRADED_FULL_MS = 60_000;

/** --two-way: how often the remote is looked at for changes (a full sync), at least. */
export const POLL_MS = 2000;

/** Quiet time after the last event before a batch goes (chokidar-style editors' events come within ~50 ms). */
export const QUIET_MS = 60;
/** A path that keeps changing goes no later than this after its first event. */
export const MAX_DELAY_MS = 500;

export type WatchEvent =
  | { type: 'state'; state: 'syncing' | 'watching' | 'offline'; message: string }
  /** A batch done: its result, the paths it was given, and the time from its oldest event to its end. */
  | { type: 'batch'; full: boolean; paths: number; result: SyncResult; latencyMs: number }
  /** --two-way: a sync done (after local events, or the remote's poll), and the time from its oldest event. */
  | { type: 'sync'; paths: number; polled: boolean; result: TwoWayResult; latencyMs: number }
  | { type: 'error'; error: WsyncError };

export interface WatchOptions {
  delete?: boolean;
  force?: boolean;
  filter?: FilterOptions;
  /** Seconds to wait for another run's lock at the start. */
  wait?: number;
  breakLock?: boolean;
  quietMs?: number;
  maxDelayMs?: number;
  /** Ends the watch (the batch in flight is finished, the manifest written and the lock released). */
  signal?: AbortSignal;
  /**
   * Two-way: every batch is a sync (`wsync sync`), after local events (the same quiet timer) and at least every
   * `pollMs` for the remote's changes (default POLL_MS, stretched to 4 syncs' time on a tree whose sync takes
   * longer). `delete` is implied, as in sync. (A push of just the saved paths was tried and taken out: it judges the
   * remote by its manifest, not by this pair's ancestor, so it overwrote another client's work, undid an agent's
   * delete of a file it had just pushed, and made a conflict of an agent's edit of it.)
   */
  twoWay?: boolean;
  pollMs?: number;
  onWatch?: (ev: WatchEvent) => void;
  /** The runs' own events (items, notices). */
  onEvent?: (ev: SyncEvent) => void;
}

/** Watches until the signal aborts or the session closes; rejects only on what no retry can mend (usage, auth, lock). */
export async function watchPush(session: Session, o: WatchOptions = {}): Promise<void> {
  const emit = o.onWatch ?? (() => undefined);
  const filter = o.filter ?? { gitignore: true, excludes: [], includes: [] };
  const quietMs = Math.max(QUIET_MS, o.quietMs ?? QUIET_MS);
  const maxDelayMs = Math.max(quietMs, o.maxDelayMs ?? MAX_DELAY_MS);
  const dirty = new Set<string>();
  let firstEventAt = 0;
  let lastEventAt = 0;
  let needFull = true;
  /** A directory could not be watched: full compares every DEGRADED_FULL_MS until the end. */
  let degraded = false;
  /** One more full compare after the next (an ignore file changed). */
  let anotherFull = false;
  let lastFull = 0;
  let wake: (() => void) | undefined;
  const poke = () => {
    wake?.();
    wake = undefined;
  };
  const stopped = () => o.signal?.aborted === true || session.ended;
  o.signal?.addEventListener('abort', poke, { once: true });
  void session.closed.then(poke);

  // Started before the initial push: what changes while it runs is in the first batch.
  const watcher: ChangeWatcher = await watchTree(session.local.root, new IgnoreRules(filter), {
    changed: (paths) => {
      // The whole tree (an OS that could not say what), or an ignore file: what is sent, or no longer, may have
      // changed anywhere.
      if (paths.includes('')) needFull = true;
      // An ignore file takes two: the remote's copy of it applies too, and is the new one only after the first.
      if (paths.some((p) => IGNORE_FILES.includes(baseName(p) as (typeof IGNORE_FILES)[number]))) {
        needFull = true;
        anotherFull = true;
      }
      const now = Date.now();
      if (dirty.size === 0) firstEventAt = now;
      lastEventAt = now;
      for (const p of paths) dirty.add(p);
      poke();
    },
    failed: (err, dir) => {
      degraded = true;
      emit({ type: 'error', error: new WsyncError('E_LOCAL_IO', `cannot watch ${dir || 'the local directory'}: ${errorMessage(err)}`, { hint: 'on Linux, raise fs.inotify.max_user_watches (sysctl); until then a full compare runs every minute' }) });
      needFull = true;
      poke();
    },
  });
  const sleep = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });

  let failures = 0;
  let started = false;
  /**
   * After a failed batch: what no retry mends ends the watch (another run's lock only at the start: later it is
   * waited out); the rest is reported, and a full compare follows after a pause; a lost link waits with backoff.
   */
  const pauseAfter = async (err: unknown): Promise<void> => {
    if (!isLinkError(err)) {
      const e = err instanceof WsyncError ? err : new WsyncError('E_INTERNAL', errorMessage(err), { cause: err });
      if (FATAL.has(e.code) || e.exitClass === 'usage' || (e.code === 'E_LOCKED' && !started)) throw e;
      emit({ type: 'error', error: e });
      await sleep(backoffMs(failures++, { firstDelayMs: 1000, maxDelayMs: 30_000 }));
    } else {
      const delayMs = backoffMs(failures++, { firstDelayMs: 500, maxDelayMs: 30_000 });
      emit({ type: 'state', state: 'offline', message: `${errorMessage(err)}; retrying in ${(delayMs / 1000).toFixed(1)} s` });
      await sleep(delayMs);
    }
  };
  // Two-way: the remote is polled by a sync at least this often (a slow tree's sync sets it longer).
  let pollMs = Math.max(500, o.pollMs ?? POLL_MS);
  // A conflict left alone is said once, not at every poll.
  let saidBefore = new Set<string>();
  try {
    while (!stopped()) {
      if (o.twoWay) {
        const pollDue = lastFull + pollMs;
        const eventDue = dirty.size > 0 ? Math.min(lastEventAt + quietMs, firstEventAt + maxDelayMs) : Infinity;
        const due = Math.min(pollDue, eventDue) - Date.now();
        if (!needFull && due > 0) {
          if (dirty.size === 0) emit({ type: 'state', state: 'watching', message: `watching ${watcher.watches} directories and the remote (every ${(pollMs / 1000).toFixed(1)} s)` });
          await sleep(due);
          continue;
        }
        const polled = dirty.size === 0 && !needFull;
        const paths = dirty.size;
        const since = firstEventAt || Date.now();
        dirty.clear();
        firstEventAt = 0;
        if (!polled) emit({ type: 'state', state: 'syncing', message: `syncing (${paths} local change(s))` });
        const said = new Set<string>();
        try {
          const t0 = Date.now();
          const result = await syncOnce(session, {
            force: o.force,
            filter,
            wait: o.wait,
            breakLock: o.breakLock && !started,
            onEvent: (ev) => {
              if (ev.type === 'notice' && ev.message.startsWith('conflict:')) {
                said.add(ev.message);
                if (saidBefore.has(ev.message)) return;
              }
              o.onEvent?.(ev);
            },
          });
          saidBefore = said;
          pollMs = Math.max(Math.max(500, o.pollMs ?? POLL_MS), 4 * (Date.now() - t0));
          needFull = false;
          lastFull = Date.now();
          failures = 0;
          started = true;
          emit({ type: 'sync', paths, polled, result, latencyMs: Date.now() - since });
        } catch (err) {
          if (stopped()) break;
          if (firstEventAt === 0 && paths > 0) firstEventAt = since;
          needFull = true;
          await pauseAfter(err);
        }
        continue;
      }
      // Events can be lost without a word (an inotify queue that overflowed, a watch that failed): a full compare
      // now and then is the net under them.
      const fullDue = lastFull + (degraded ? DEGRADED_FULL_MS : FULL_EVERY_MS);
      if (Date.now() >= fullDue) needFull = true;
      if (!needFull) {
        if (dirty.size === 0) {
          emit({ type: 'state', state: 'watching', message: `watching ${watcher.watches} directories` });
          await sleep(Math.max(0, fullDue - Date.now()));
          continue;
        }
        // Quiet for quietMs, or the oldest event maxDelayMs old.
        const due = Math.min(lastEventAt + quietMs, firstEventAt + maxDelayMs) - Date.now();
        if (due > 0) {
          await sleep(due);
          continue;
        }
      }
      const full = needFull;
      const paths = [...dirty];
      const since = firstEventAt || Date.now();
      dirty.clear();
      firstEventAt = 0;
      emit({ type: 'state', state: 'syncing', message: full ? 'comparing the whole tree' : `syncing ${paths.length} path(s)` });
      try {
        const result = await runOnce(session, { mode: 'push', delete: o.delete, force: o.force, filter, wait: o.wait, breakLock: o.breakLock && full, paths: full ? undefined : paths, onEvent: o.onEvent });
        if (full) {
          needFull = anotherFull;
          anotherFull = false;
          lastFull = Date.now();
          forgetBatchRules(session);
          await session.hold({ wait: o.wait, op: 'watch' });
        }
        failures = 0;
        started = true;
        emit({ type: 'batch', full, paths: paths.length, result, latencyMs: Date.now() - since });
      } catch (err) {
        // The paths go again with the next batch (or the full compare covers them).
        for (const p of paths) dirty.add(p);
        if (firstEventAt === 0) firstEventAt = since;
        if (stopped()) break;
        needFull = true;
        await pauseAfter(err);
      }
    }
  } finally {
    watcher.close();
    o.signal?.removeEventListener('abort', poke);
  }
}

import os from 'node:os';
import type { Transport } from '../transport/types.js';
import { WsyncError } from '../errors.js';
import { onInterrupt } from '../util/interrupt.js';
import { STATE_DIR } from './manifest.js';

export const LOCK_PATH = `${STATE_DIR}/lock`;

/** A lock still empty after this long was left by a run killed right after creating it. */
export const EMPTY_LOCK_DEAD_MS = 4000;

export interface LockInfo {
  host: string;
  pid: number;
  time: string;
  op: string;
  user?: string;
  /** The Session whose run took it (see LockOptions.session). */
  session?: string;
}

/** True while a process with this pid exists on this machine (EPERM: it exists, under another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface LockOptions {
  op: string;
  /** Seconds to keep retrying while another run holds the lock. */
  waitSeconds: number;
  /** Remove a lock that another host holds (the user says it is stale). */
  breakLock: boolean;
  /**
   * The id of the Session taking it. A Session runs one run at a time, so a lock naming it was left by one of its
   * earlier runs whose link was lost (the process is alive, so the pid check cannot tell): removed.
   */
  session?: string;
}

/**
 * One run per target at a time. The lock is created with O_EXCL, so two runs can never both believe they hold it; it names host, pid and time so that a person can judge a stale one. A lock left by a dead process
 * on this same host is provably stale and is cleared without asking.
 */
export interface Lock {
  release(): Promise<void>;
  /** Forgets the Ctrl-C step that removes it (its holder takes care of that, with what must come first). */
  detach?(): void;
  /** Taken by the first create, with nothing waited for or removed first. */
  firstTry: boolean;
}

export async function acquireLock(t: Transport, opts: LockOptions): Promise<Lock> {
  const me: LockInfo = { host: os.hostname(), pid: process.pid, time: new Date().toISOString(), op: opts.op, user: os.userInfo().username, session: opts.session };
  const deadline = Date.now() + opts.waitSeconds * 1000;
  let madeDir = false;
  let empty: { mtime: number; since: number } | undefined;
  for (let attempt = 0; ; attempt++) {
    let took: boolean;
    try {
      took = await t.createExclusive(LOCK_PATH, Buffer.from(JSON.stringify(me) + '\n'));
    } catch (err) {
      // First run at this target: the root or .wsync/ does not exist yet (made only now, to save round trips on
      // every later run).
      if (madeDir) throw err;
      await t.ensureRoot();
      await t.mkdir(STATE_DIR, 0o755);
      madeDir = true;
      continue;
    }
    if (took) {
      const release = async () => {
        forget();
        await t.remove(LOCK_PATH, 'file');
      };
      const forget = onInterrupt(release);
      return { release, firstTry: attempt === 0, detach: forget };
    }
    const raw = await t.readFile(LOCK_PATH);
    if (raw === null) {
      // Released between our attempt and this read: try again. A refusal that keeps coming with no lock there is
      // the server's own failure (no space, a file system that refuses), not a lock.
      if (attempt < 20) continue;
      throw new WsyncError('E_REMOTE_IO', `cannot create ${t.describe(LOCK_PATH)}: the server refuses it, and no other run's lock is there`, { hint: 'check free space and permissions on the server' });
    }
    if (raw?.length === 0) {
      // Just created: its content follows the create without being awaited (see createExclusive), one round trip
      // behind it. One that stays empty for EMPTY_LOCK_DEAD_MS was left by a run killed between the two (SIGKILL,
      // power loss): nothing says who holds it, and no live run leaves it so.
      // Known by its mtime: a lock that another waiter removed and re-created meanwhile is a different one (at
      // least EMPTY_LOCK_DEAD_MS younger), and is never removed here.
      const st = await t.lstat(LOCK_PATH);
      if (!st) continue;
      if (!empty || empty.mtime !== st.mtime || st.size !== 0) empty = { mtime: st.mtime, since: Date.now() };
      if (Date.now() - empty.since < EMPTY_LOCK_DEAD_MS) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      await t.remove(LOCK_PATH, 'file');
      empty = undefined;
      continue;
    }
    empty = undefined;
    let other: Partial<LockInfo> = {};
    try {
      other = JSON.parse(raw?.toString('utf8') ?? '{}');
    } catch {
      // An unreadable lock is still a lock.
    }
    const sameHostDead = other.host === me.host && typeof other.pid === 'number' && !pidAlive(other.pid);
    const ownLost = opts.session !== undefined && other.session === opts.session && other.host === me.host && other.pid === me.pid;
    if (sameHostDead || ownLost || opts.breakLock) {
      await t.remove(LOCK_PATH, 'file');
      continue;
    }
    if (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    const who = `${other.op ?? 'a wsync run'} by ${other.user ? other.user + '@' : ''}${other.host ?? 'unknown host'} (pid ${other.pid ?? '?'}) since ${other.time ?? 'unknown time'}`;
    throw new WsyncError('E_LOCKED', `${t.describe()} is locked: ${who}`, {
      hint: `wait for that run to finish (--wait SECONDS), or if it is gone, run again with --break-lock (the lock is ${t.describe(LOCK_PATH)})`,
    });
  }
}

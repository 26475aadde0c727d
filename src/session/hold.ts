import os from 'node:os';
import type { Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';
import { LOCK_PATH, type Lock, type LockInfo } from '../manifest/lock.js';
import { writeManifest } from '../manifest/manifest.js';
import { onInterrupt } from '../util/interrupt.js';
import { startLocked } from '../transfer/overlaps.js';
import { Journal } from '../transfer/journal.js';
import { WSYNC_VERSION } from '../version.js';

/** A held target's manifest is written this long after the last batch that changed it (batches in between join it). */
export const FLUSH_DELAY_MS = 1000;
/** ... and never later than this after the first change it has not written. */
export const FLUSH_MAX_DELAY_MS = 5000;

export interface HoldOptions {
  /** Seconds to wait for another run's lock (default 0). */
  wait?: number;
  breakLock?: boolean;
  /** What the lock says is going on (default 'push'). */
  op?: string;
}

interface HoldSetup extends HoldOptions {
  session: string;
  /** The pair's journal file (beside the chunk cache; null: none). */
  journalFile: string | null;
}

/**
 * The target's lock and what its manifest says, taken once and kept in memory across the batches of a session (a
 * watch): a batch then pays neither the lock's round trips nor a manifest read, and its changes reach the manifest
 * behind it, several batches in one write (FLUSH_DELAY_MS, at most FLUSH_MAX_DELAY_MS late). Until then the
 * manifest on the server still has the versions before them: every file a batch finishes also goes into the
 * pair's local journal (journal.ts) at once, from which the next run of this machine takes it as synced, as it does
 * for a full run that was cut before its manifest (without the journal it would take wsync's own write for someone
 * else's edit). A Ctrl-C writes the manifest before the lock goes.
 *
 * A lost link leaves the lock file on the server, naming this session. On the new connection (`on`) the lock is
 * read: still this session's, nothing else ran meanwhile and the ancestor in memory stands; gone or someone
 * else's (broken with --break-lock), it is taken again and the manifest read again (what was not written yet is
 * dropped from memory; the journal still has it). No manifest is written until that check is done.
 */
export class Hold {
  private dirty = false;
  /** Bumped by every change: a write that began before one does not make the hold clean. */
  private generation = 0;
  private firstDirtyAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private released = false;
  /** Set while `on` checks the lock on a new connection: nothing is written meanwhile. */
  private checking: Promise<void> | undefined;
  private forgetInterrupt: () => void = () => undefined;
  /**
   * Files the batches finished, for the next run should the manifest not record them yet. Never cleared here: it
   * may hold what a full run that was cut finished, which a batch's manifest does not record; the next full run,
   * which reads it, starts it over.
   */
  readonly journal: Journal;

  private constructor(
    private remote: Transport,
    private lock: Lock,
    /** What the target holds, as far as wsync knows: the manifest at the take, with every batch's changes since. */
    public base: Tree,
    private readonly o: HoldSetup,
  ) {
    this.journal = new Journal(o.journalFile);
    this.guard();
  }

  /** Takes the lock, with the manifest read right behind it. */
  static async take(remote: Transport, o: HoldSetup): Promise<Hold> {
    const { lock, base } = await Hold.lockAndRead(remote, o);
    return new Hold(remote, lock, base, o);
  }

  private static async lockAndRead(remote: Transport, o: HoldSetup): Promise<{ lock: Lock; base: Tree }> {
    const locked = startLocked(remote, { op: o.op ?? 'push', waitSeconds: o.wait ?? 0, breakLock: o.breakLock ?? false, session: o.session, dryRun: false, noTemp: true });
    const lock = (await locked.lock)!;
    try {
      const manifest = await locked.manifest(lock);
      return { lock, base: manifest?.entries ?? new Map() };
    } catch (err) {
      await lock.release().catch(() => undefined);
      throw err;
    }
  }

  /** Ctrl-C: the manifest first, then the lock (the lock's own step would remove it at once, beside the write). */
  private guard(): void {
    this.lock.detach?.();
    this.forgetInterrupt();
    this.forgetInterrupt = onInterrupt(async () => {
      await this.flush().catch(() => undefined);
      if (!this.remote.lost) await this.lock.release().catch(() => undefined);
    });
  }

  /** What it was taken with, to take it again (never breaking a lock: one found then is another run's). */
  get options(): HoldOptions {
    return { wait: this.o.wait, op: this.o.op };
  }

  /** True once released (or found lost for good). */
  get done(): boolean {
    return this.released;
  }

  /**
   * Makes the hold valid on `remote` (the session's connection now): nothing to do on the one it was taken on;
   * on a new one, see the class comment.
   */
  async on(remote: Transport): Promise<void> {
    if (this.released) throw new WsyncError('E_USAGE', 'the hold on the target was released');
    while (this.checking) await this.checking.catch(() => undefined);
    if (remote === this.remote) return;
    this.clearTimer();
    let done!: () => void;
    this.checking = new Promise<void>((r) => (done = r));
    try {
      await this.writing?.catch(() => undefined);
      const raw = await remote.readFile(LOCK_PATH);
      let info: Partial<LockInfo> = {};
      try {
        info = JSON.parse(raw?.toString('utf8') ?? '{}');
      } catch {
        // Not ours, whatever it is.
      }
      if (info.session === this.o.session && info.host === os.hostname() && info.pid === process.pid) {
        // Still ours: removed through the new connection from now on.
        this.lock = { release: () => remote.remove(LOCK_PATH, 'file'), firstTry: false };
        this.remote = remote;
      } else {
        try {
          const again = await Hold.lockAndRead(remote, { ...this.o, ...this.options });
          this.lock = again.lock;
          this.base = again.base;
          this.dirty = false;
          this.remote = remote;
        } catch (err) {
          if (!(err instanceof WsyncError && (err.code === 'E_REMOTE_LOST' || err.code === 'E_CONNECT'))) this.abandon();
          throw err;
        }
      }
      this.guard();
    } finally {
      this.checking = undefined;
      done();
    }
    if (this.dirty) this.schedule();
  }

  /** A batch's outcome: `next` is what the target now holds; written to the manifest soon (see the class comment). */
  record(next: Tree): void {
    if (this.released) return;
    this.base = next;
    this.generation++;
    if (!this.dirty) this.firstDirtyAt = Date.now();
    this.dirty = true;
    this.schedule();
  }

  private schedule(): void {
    this.clearTimer();
    const wait = Math.max(0, Math.min(FLUSH_DELAY_MS, this.firstDirtyAt + FLUSH_MAX_DELAY_MS - Date.now()));
    this.timer = setTimeout(() => void this.flush().catch(() => undefined), wait);
    this.timer.unref();
  }

  /** Writes the manifest now if a change is not in it yet. Fails as the write does (the change stays unwritten). */
  async flush(): Promise<void> {
    this.clearTimer();
    while (this.writing) await this.writing.catch(() => undefined);
    // Not on a connection whose lock is not checked yet: another run may have broken it meanwhile.
    if (!this.dirty || this.checking) return;
    if (this.remote.lost) throw new WsyncError('E_REMOTE_LOST', `the manifest at ${this.remote.describe()} could not be written: the connection was lost`);
    const gen = this.generation;
    const entries = this.base;
    this.writing = (async () => {
      // Links of replaced files still being removed are done with before the manifest says what is there.
      await this.remote.settle?.().catch(() => undefined);
      await writeManifest(this.remote, { entries }, { host: os.hostname(), wsync: WSYNC_VERSION, op: this.o.op ?? 'push' });
      if (this.generation === gen) this.dirty = false;
    })();
    try {
      await this.writing;
    } finally {
      this.writing = undefined;
    }
  }

  /** Writes what is not written yet and removes the lock (the lock even when the write fails; then its error). */
  async release(): Promise<void> {
    if (this.released) return;
    let failed: { err: unknown } | undefined;
    try {
      await this.flush();
    } catch (err) {
      failed = { err };
    }
    this.abandon();
    if (!this.remote.lost) await this.lock.release().catch((err) => (failed ??= { err }));
    if (failed) throw failed.err instanceof WsyncError ? failed.err : new WsyncError('E_REMOTE_IO', `cannot finish with ${this.remote.describe()}: ${errorMessage(failed.err)}`, { cause: failed.err });
  }

  /** Done with: no more writes, the journal closed, no Ctrl-C step. */
  private abandon(): void {
    this.released = true;
    this.clearTimer();
    this.journal.close();
    this.forgetInterrupt();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

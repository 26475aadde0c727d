import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { pidAlive } from '../manifest/lock.js';

interface Held {
  /** The lock file, relative to the target's root. */
  lock: string;
  pid: number;
  host: string;
  /** When it was taken, or its content last written (seconds, this machine's clock). */
  at: number;
}

/**
 * How much later than written down a lock file's mtime (the server's clock) may be and still be the one that was
 * written down: the clocks' difference, and the moment between writing down and the server's create.
 */
const SLACK_SECONDS = 120;

/**
 * The git lock files this machine's pushes take on one target, written down (in the local repository's git dir)
 * before each is created and crossed out once it is released or committed. A push whose link was cut leaves its
 * locks on the server, where git would refuse every later command; the next push from here finds them in this
 * ledger under a process that is gone, and removes them instead of failing. A lock held by anyone else (a git
 * process on the server, a push from another machine, a run here that is still alive) is not taken for one: the
 * process must be gone, and the lock file no younger than its last write here (someone who removed the stale lock
 * and took it anew made a younger one). The ledger is not locked: two pushes from one repository at once can lose
 * an entry (then --break-lock after a minute, as before).
 */
export class LockLedger {
  private readonly host = hostname();

  constructor(private readonly file: string) {}

  /** `<gitdir>/wsync/locks-<target key>.json`. */
  static for(gitdir: string, targetKey: string): LockLedger {
    return new LockLedger(path.join(gitdir, 'wsync', `locks-${targetKey}.json`));
  }

  private read(): Held[] {
    try {
      const doc = JSON.parse(readFileSync(this.file, 'utf8')) as unknown;
      return Array.isArray(doc) ? doc.filter((h): h is Held => typeof h?.lock === 'string' && typeof h?.pid === 'number' && typeof h?.host === 'string' && typeof h?.at === 'number') : [];
    } catch {
      return [];
    }
  }

  private write(held: Held[]): void {
    try {
      mkdirSync(path.dirname(this.file), { recursive: true });
      const tmp = `${this.file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(held));
      renameSync(tmp, this.file);
    } catch {
      // Unwritable: a lock left by a cut then needs --break-lock after a minute, as before.
    }
  }

  /** Written down before the lock's create request goes out (it may exist on the server before we hear back). */
  taking(lock: string): void {
    const at = Math.floor(Date.now() / 1000);
    this.write([...this.read().filter((h) => !(h.lock === lock && h.pid === process.pid && h.host === this.host)), { lock, pid: process.pid, host: this.host, at }]);
  }

  /** Released, committed, or never taken: crossed out. */
  done(lock: string): void {
    const held = this.read();
    const left = held.filter((h) => !(h.lock === lock && h.pid === process.pid && h.host === this.host));
    if (left.length !== held.length) this.write(left);
  }

  /**
   * True when a push from this machine that is no longer running took `lock` and never released it, and the lock
   * file there (`mtime`, server clock, seconds) is no younger than that push's last write to it.
   */
  leftByDeadRun(lock: string, mtime: number): boolean {
    return this.read().some((h) => h.lock === lock && h.host === this.host && h.pid !== process.pid && !pidAlive(h.pid) && mtime <= h.at + SLACK_SECONDS);
  }

  /** The dead run's entry, once its lock is removed. */
  forgetDead(lock: string): void {
    this.write(this.read().filter((h) => !(h.lock === lock && h.host === this.host && h.pid !== process.pid && !pidAlive(h.pid))));
  }
}

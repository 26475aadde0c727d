/**
 * A Session (issue 12): one connection for many runs, reconnected after the link is lost, with the lock a lost run
 * left known as its own; closed by close() or an AbortSignal. Against the real sshd, through the cutting proxy.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync, utimesSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { startCutProxy, type CutProxy } from '../support/cutproxy.js';
import { xorshiftBytes } from '../support/xorshift.js';
import { finalFiles, tempFiles } from '../support/cutcheck.js';
import { makeTree, type Spec } from '../support/trees.js';
import { push, pull, type SyncEvent } from '../../src/api.js';
import { openSession, backoffMs, type Session } from '../../src/session/session.js';
import { LOCK_PATH } from '../../src/manifest/lock.js';
import { decodeManifest, MANIFEST_PATH } from '../../src/manifest/manifest.js';

const MB = 1_000_000;

/** 40 incompressible files of 200 kB: 8 MB, more than one cut lets through. */
function bulkSpec(seed: number): Spec {
  const spec: Spec = {};
  for (let i = 0; i < 40; i++) spec[`d${i % 4}/f${i}.bin`] = xorshiftBytes(seed * 1000 + i, 200_000);
  spec['README.md'] = '# a tree\n';
  return spec;
}

describe('a long-lived session', () => {
  const server = useServer('wsync-session-');
  let proxy: CutProxy;
  beforeAll(async () => {
    proxy = await startCutProxy(server.srv, server.work);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const target = (name: string) => `${server.srv.alias}:${join(server.srv.remoteRoot, name)}`;
  const source = (name: string, spec: Spec) => {
    const dir = join(server.work, name);
    makeTree(dir, spec);
    return dir;
  };
  /** Opens a session whose first connection is cut after `cutAfter` bytes (later ones are not). */
  const openCut = async (src: string, name: string, cutAfter: number | undefined, events: SyncEvent[] = []): Promise<Session> => {
    proxy.cutAfter = cutAfter;
    proxy.mode = 'reset';
    try {
      return await openSession(src, target(name), { sshConfig: proxy.sshConfig, compress: false, reconnect: { firstDelayMs: 20, maxDelayMs: 200 }, onEvent: (e) => events.push(e) });
    } finally {
      proxy.cutAfter = undefined;
    }
  };

  it('runs push after push, and a pull, over one connection', async () => {
    const src = source('one-conn', { 'a.txt': 'one\n', 'sub/b.txt': 'two\n' });
    const remote = join(server.srv.remoteRoot, 'one-conn');
    const s = await openCut(src, 'one-conn', undefined);
    try {
      const t = await s.remote();
      const traces: string[] = [];
      const r1 = await push(s, { onTrace: (what) => traces.push(what) });
      // WSYNC_DEBUG prints these: every ssh2 hook applied on the pinned ssh2, said once per connection.
      expect(traces.filter((x) => x.startsWith('ssh2 hooks'))).toHaveLength(1);
      expect(traces.find((x) => x.startsWith('ssh2 hooks'))).toMatch(/^ssh2 hooks( \w+=applied)+$/);
      expect(r1.ok).toBe(true);
      expect(r1.stats.filesSent).toBe(2);
      writeFileSync(join(src, 'a.txt'), 'one, edited\n');
      utimesSync(join(src, 'a.txt'), 1_700_000_100, 1_700_000_100);
      const r2 = await push(s);
      expect(r2.stats.filesSent).toBe(1);
      expect(await s.remote()).toBe(t);
      expect(s.connected).toBe(true);
      // Made on the remote as an agent would; the session's pull brings it back.
      writeFileSync(join(remote, 'sub/c.txt'), 'from the agent\n');
      const r3 = await pull(s);
      expect(r3.ok).toBe(true);
      expect(r3.stats.filesSent).toBe(1);
      expect(await s.remote()).toBe(t);
      expect(finalFiles(src)).toEqual(finalFiles(remote));
      // Two calls at once run one after the other (a run holds the target's lock; the second would find it taken).
      const [x, y] = await Promise.all([push(s), push(s)]);
      expect(x.ok && y.ok).toBe(true);
    } finally {
      await s.close();
    }
    await expect(s.remote()).rejects.toThrow(/closed/);
    await s.closed;
  });

  it('after a lost link the next run reconnects and completes; the lock the lost run left is its own', async () => {
    const src = source('reconnect', bulkSpec(1));
    const remote = join(server.srv.remoteRoot, 'reconnect');
    const events: SyncEvent[] = [];
    const s = await openCut(src, 'reconnect', 2 * MB, events);
    try {
      await expect(push(s)).rejects.toMatchObject({ code: 'E_REMOTE_LOST' });
      expect(s.connected).toBe(false);
      // The lost run could not remove its lock: another session (here: another process's run) must respect it...
      expect(existsSync(join(remote, LOCK_PATH))).toBe(true);
      const r = await push(s);
      expect(r.ok, JSON.stringify(r.problems)).toBe(true);
      expect(finalFiles(remote)).toEqual(finalFiles(src));
      expect(tempFiles(remote)).toEqual([]);
      expect(existsSync(join(remote, LOCK_PATH))).toBe(false);
      const states = events.filter((e) => e.type === 'connection').map((e) => (e as { state: string }).state);
      expect(states).toEqual(['lost', 'reconnecting', 'restored']);
    } finally {
      await s.close();
    }
  });

  it("another session does not take a lost run's lock for its own", async () => {
    const src = source('foreign-lock', bulkSpec(2));
    const s = await openCut(src, 'foreign-lock', 2 * MB);
    await expect(push(s)).rejects.toMatchObject({ code: 'E_REMOTE_LOST' });
    await s.close();
    // Same process, same host: only the session id tells the lock is not this one's.
    const other = await openCut(src, 'foreign-lock', undefined);
    try {
      await expect(push(other)).rejects.toMatchObject({ code: 'E_LOCKED' });
      const r = await push(other, { breakLock: true });
      expect(r.ok).toBe(true);
    } finally {
      await other.close();
    }
  });

  it('with resume, one call goes on through a lost link and finishes', async () => {
    const src = source('resume', bulkSpec(3));
    const remote = join(server.srv.remoteRoot, 'resume');
    const events: SyncEvent[] = [];
    const s = await openCut(src, 'resume', 3 * MB, events);
    try {
      const r = await push(s, { resume: 2, onEvent: (e) => events.push(e) });
      expect(r.ok).toBe(true);
      expect(finalFiles(remote)).toEqual(finalFiles(src));
      expect(tempFiles(remote)).toEqual([]);
      expect(events.some((e) => e.type === 'notice' && /going on over a new connection/.test(e.message))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('a first connection that fails is not retried; an aborted signal closes the session', async () => {
    const src = source('abort', { 'x.txt': 'x\n' });
    const t0 = Date.now();
    await expect(openSession(src, `nosuchhost.invalid:/x`, { sshConfig: proxy.sshConfig, reconnect: { firstDelayMs: 5000 } })).rejects.toThrow();
    expect(Date.now() - t0).toBeLessThan(5000);
    const ac = new AbortController();
    const s = await openSession(src, target('abort'), { sshConfig: proxy.sshConfig, signal: ac.signal });
    expect(s.connected).toBe(true);
    ac.abort();
    await s.closed;
    expect(s.connected).toBe(false);
    await expect(push(s)).rejects.toThrow(/closed/);
  });

  it('an aborted run finishes what is in flight, records it and removes its lock; the next run sends only the rest', async () => {
    const src = source('abort-run', bulkSpec(5));
    const remote = join(server.srv.remoteRoot, 'abort-run');
    const s = await openCut(src, 'abort-run', undefined);
    try {
      const ac = new AbortController();
      let n = 0;
      const r = push(s, { concurrency: 4, signal: ac.signal, afterTransfer: () => void (++n === 5 && ac.abort()) });
      await expect(r).rejects.toMatchObject({ code: 'E_ABORTED' });
      expect(existsSync(join(remote, LOCK_PATH))).toBe(false);
      expect(tempFiles(remote)).toEqual([]);
      const landed = finalFiles(remote);
      const want = finalFiles(src);
      for (const [p, h] of landed) expect(h, p).toBe(want.get(p));
      expect(landed.size).toBeGreaterThanOrEqual(5);
      expect(landed.size).toBeLessThan(want.size);
      // Recorded in the manifest (not only in the journal): another client's view of the target agrees.
      const recorded = decodeManifest(readFileSync(join(remote, MANIFEST_PATH)), remote).entries;
      for (const p of landed.keys()) expect(recorded.has(p), p).toBe(true);
      // The session is still usable: the next run sends only what was not there.
      const next = await push(s);
      expect(next.ok).toBe(true);
      expect(next.stats.filesSent).toBe(want.size - landed.size);
      expect(finalFiles(remote)).toEqual(want);
    } finally {
      await s.close();
    }
  });

  it("the session's signal stops its run the same way, then closes the session", async () => {
    const src = source('abort-session', bulkSpec(6));
    const remote = join(server.srv.remoteRoot, 'abort-session');
    const ac = new AbortController();
    const s = await openSession(src, target('abort-session'), { sshConfig: proxy.sshConfig, compress: false, signal: ac.signal });
    let n = 0;
    const r = push(s, { concurrency: 4, afterTransfer: () => void (++n === 3 && ac.abort()) });
    await expect(r).rejects.toMatchObject({ code: 'E_ABORTED' });
    await s.closed;
    expect(existsSync(join(remote, LOCK_PATH))).toBe(false);
    expect(tempFiles(remote)).toEqual([]);
    const want = finalFiles(src);
    for (const [p, h] of finalFiles(remote)) expect(h, p).toBe(want.get(p));
  });

  it('closing a session during a run ends the run promptly, and closed waits for it', async () => {
    const src = source('close-mid-run', bulkSpec(4));
    const s = await openCut(src, 'close-mid-run', undefined);
    let n = 0;
    const running = push(s, { afterTransfer: () => void (++n === 3 && s.close()) });
    const t0 = Date.now();
    await expect(running).rejects.toBeDefined();
    await s.closed;
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(s.connected).toBe(false);
  });

  it('backs off exponentially, capped, with jitter', () => {
    for (let n = 0; n < 12; n++) {
      const base = Math.min(15_000, 500 * 2 ** n);
      expect(backoffMs(n, {}, () => 0)).toBe(Math.round(base * 0.5));
      expect(backoffMs(n, {}, () => 0.999999)).toBeLessThanOrEqual(Math.round(base * 1.5));
    }
    expect(backoffMs(3, { firstDelayMs: 10, maxDelayMs: 50 }, () => 0.5)).toBe(50);
  });
});

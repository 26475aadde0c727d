/**
 * A session that holds the target (issue 12: what a watch runs on): the lock taken once and the manifest kept in
 * memory across batches of given paths, written behind them; full runs let go and take it again; a dropped link
 * keeps the hold when nothing else ran, and re-reads the manifest when another run broke the lock. Against the
 * real sshd, through the cutting proxy for the dropped link.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { makeTree, snapshot } from '../support/trees.js';
import { runCli } from '../support/cli.js';
import { startCutProxy, type CutProxy } from '../support/cutproxy.js';
import { push } from '../../src/api.js';
import { tempFiles } from '../support/cutcheck.js';
import { until } from '../support/until.js';
import { createHash } from 'node:crypto';
import { openSession, type Session } from '../../src/session/session.js';
import { decodeManifest, MANIFEST_PATH } from '../../src/manifest/manifest.js';
import { LOCK_PATH } from '../../src/manifest/lock.js';
import { FLUSH_MAX_DELAY_MS } from '../../src/session/hold.js';
import type { Transport } from '../../src/transport/types.js';

const skipState = (rel: string) => rel === '.wsync' || rel.startsWith('.wsync/');

function manifestOf(remote: string): Map<string, { sha256?: string }> {
  return decodeManifest(readFileSync(join(remote, MANIFEST_PATH)), remote).entries;
}

function lockOf(remote: string): { session?: string } | null {
  const p = join(remote, LOCK_PATH);
  return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : null;
}

/** Counts the lock creations and manifest reads a session's requests make from now on. */
async function countRequests(s: Session): Promise<{ locks: number; manifestReads: number }> {
  const t = (await s.remote()) as Transport;
  const seen = { locks: 0, manifestReads: 0 };
  const create = t.createExclusive.bind(t);
  const read = t.readFile.bind(t);
  t.createExclusive = (rel, data) => {
    if (rel === LOCK_PATH) seen.locks++;
    return create(rel, data);
  };
  t.readFile = (rel) => {
    if (rel === MANIFEST_PATH) seen.manifestReads++;
    return read(rel);
  };
  return seen;
}

describe('a session holding the target', () => {
  const server = useServer('wsync-hold-');
  let proxy: CutProxy;
  let n = 0;
  beforeAll(async () => {
    proxy = await startCutProxy(server.srv, server.work);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const setup = async (viaProxy = false) => {
    const name = `hold-${++n}`;
    const src = join(server.work, name);
    makeTree(src, { 'a.txt': 'a\n', 'b.txt': 'b\n', 'sub/c.txt': 'c\n' });
    const remote = join(server.srv.remoteRoot, name);
    const s = await openSession(src, `${server.srv.alias}:${remote}`, { sshConfig: viaProxy ? proxy.sshConfig : server.srv.sshConfig, reconnect: { firstDelayMs: 50 } });
    expect((await push(s)).ok).toBe(true);
    return { src, remote, s, target: `${server.srv.alias}:${remote}` };
  };

  it('takes the lock once: batches neither lock nor read the manifest, which follows them within seconds; release leaves it exact', async () => {
    const { src, remote, s, target } = await setup();
    try {
      await s.hold();
      expect(lockOf(remote)?.session).toBe(s.id);
      const seen = await countRequests(s);
      for (let i = 0; i < 3; i++) {
        writeFileSync(join(src, 'a.txt'), `a, edit ${i}\n`);
        writeFileSync(join(src, `new${i}.txt`), `new ${i}\n`);
        const r = await push(s, { paths: ['a.txt', `new${i}.txt`] });
        expect(r.ok, JSON.stringify(r.problems)).toBe(true);
        expect(r.stats.filesSent).toBe(2);
        expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe(`a, edit ${i}\n`);
      }
      expect(seen).toEqual({ locks: 0, manifestReads: 0 });
      // Another run meanwhile is refused: the hold is a lock.
      const other = await runCli(['push', src, target, '-F', server.srv.sshConfig]);
      expect(other.code, other.stderr).not.toBe(0);
      expect(other.stderr).toMatch(/locked/);
      // The manifest catches up without a release, several batches in one write.
      await until('the manifest records the batches', () => manifestOf(remote).has('new2.txt'), FLUSH_MAX_DELAY_MS + 3000);
      writeFileSync(join(src, 'b.txt'), 'b, edited\n');
      expect((await push(s, { paths: ['b.txt'] })).ok).toBe(true);
      await s.release();
      expect(lockOf(remote)).toBeNull();
      expect(s.held).toBeUndefined();
      // Released: the manifest holds every batch, and a full push has nothing to do.
      const full = await push(s);
      expect(full.ok).toBe(true);
      expect(full.stats.filesSent + full.stats.attributesUpdated + full.stats.conflicts).toBe(0);
      expect(snapshot(remote, { skip: skipState })).toEqual(snapshot(src));
    } finally {
      await s.close();
    }
  });

  it('a held batch stages small edits before it plans: taken when the plan sends them, removed unseen when it does not', async () => {
    const { src, remote, s } = await setup();
    try {
      await s.hold();
      // Sent: the staged copy is renamed in (same size and second as the manifest's version, too), not written again.
      const t = (await s.remote()) as Transport;
      const writes: string[] = [];
      const writeFile = t.writeFile.bind(t);
      t.writeFile = (rel, ...rest) => {
        writes.push(rel);
        return writeFile(rel, ...rest);
      };
      writeFileSync(join(src, 'a.txt'), 'A\n');
      const r = await push(s, { paths: ['a.txt'] });
      expect(writes).toEqual([]);
      expect(r.ok, JSON.stringify(r.problems)).toBe(true);
      expect(r.stats.filesSent).toBe(1);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('A\n');
      // Edited on the remote too: a conflict; the staged copy goes, and the remote's edit stays.
      writeFileSync(join(remote, 'b.txt'), 'b, edited on the remote\n');
      writeFileSync(join(src, 'b.txt'), 'b, edited here\n');
      // The other file of the batch goes in as usual.
      writeFileSync(join(src, 'sub/c.txt'), 'c, edited here\n');
      const r2 = await push(s, { paths: ['b.txt', 'sub/c.txt'] });
      expect(r2.stats.conflicts).toBe(1);
      expect(r2.stats.filesSent).toBe(1);
      expect(readFileSync(join(remote, 'b.txt'), 'utf8')).toBe('b, edited on the remote\n');
      expect(readFileSync(join(remote, 'sub/c.txt'), 'utf8')).toBe('c, edited here\n');
      expect(tempFiles(remote)).toEqual([]);
      await s.release();
      expect(manifestOf(remote).get('a.txt')?.sha256).toBe(createHash('sha256').update('A\n').digest('hex'));
    } finally {
      await s.close();
    }
  });

  it('killed before its manifest caught up: the journal says what the batches finished, so the next run takes them as synced', async () => {
    const { src, remote, s, target } = await setup(true);
    try {
      await s.hold();
      writeFileSync(join(src, 'a.txt'), 'a, a second version\n');
      expect((await push(s, { paths: ['a.txt'] })).ok).toBe(true);
      // As if killed: the link goes at once, no manifest written, the lock left behind.
      proxy.cutNow();
      await until('the session notices the cut', () => !s.connected, 5000);
      expect(manifestOf(remote).get('a.txt')?.sha256).toBe(createHash('sha256').update('a\n').digest('hex'));
      // Put back here: the remote's version is wsync's own write, not someone's edit.
      writeFileSync(join(src, 'a.txt'), 'a\n');
      const next = await runCli(['push', src, target, '--break-lock', '-F', server.srv.sshConfig]);
      expect(next.code, next.stderr).toBe(0);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('a\n');
    } finally {
      await s.close();
    }
  });

  it('closed after the link dropped: reconnects to write the manifest and remove the lock', async () => {
    const { src, remote, s } = await setup(true);
    await s.hold();
    writeFileSync(join(src, 'a.txt'), 'a, before the cut\n');
    expect((await push(s, { paths: ['a.txt'] })).ok).toBe(true);
    proxy.cutNow();
    await until('the session notices the cut', () => !s.connected, 5000);
    await s.close();
    expect(lockOf(remote)).toBeNull();
    expect(manifestOf(remote).get('a.txt')?.sha256).toBe(createHash('sha256').update('a, before the cut\n').digest('hex'));
  });

  it('never stages through a remote directory swapped for a symlink', async () => {
    const { src, remote, s } = await setup();
    const outside = join(server.work, `outside-${n}`);
    try {
      await s.hold();
      mkdirSync(outside);
      rmSync(join(remote, 'sub'), { recursive: true });
      symlinkSync(outside, join(remote, 'sub'));
      // Anything created there, even for a moment, is seen.
      const seen: string[] = [];
      const w = watch(outside, (_t, name) => seen.push(String(name)));
      writeFileSync(join(src, 'sub/c.txt'), 'c, edited here\n');
      const r = await push(s, { paths: ['sub/c.txt'] });
      await new Promise((res) => setTimeout(res, 200));
      w.close();
      expect(r.ok).toBe(false);
      expect(seen).toEqual([]);
      expect(readdirSync(outside)).toEqual([]);
      expect(tempFiles(remote)).toEqual([]);
    } finally {
      await s.close();
    }
  });

  it('a full run lets go of the hold and takes it again; close() writes the manifest and removes the lock', async () => {
    const { src, remote, s } = await setup();
    try {
      await s.hold();
      writeFileSync(join(src, 'sub/c.txt'), 'c, edited\n');
      const full = await push(s);
      expect(full.ok).toBe(true);
      expect(full.stats.filesSent).toBe(1);
      expect(s.held?.done).toBe(false);
      expect(lockOf(remote)?.session).toBe(s.id);
      writeFileSync(join(src, 'late.txt'), 'late\n');
      expect((await push(s, { paths: ['late.txt'] })).ok).toBe(true);
    } finally {
      await s.close();
    }
    expect(lockOf(remote)).toBeNull();
    expect(manifestOf(remote).has('late.txt')).toBe(true);
  });

  it('a dropped link: the next batch keeps the hold over a new connection, or takes it again and re-reads the manifest when another run broke the lock', async () => {
    const { src, remote, s, target } = await setup(true);
    try {
      await s.hold();
      writeFileSync(join(src, 'a.txt'), 'a, before the cut\n');
      expect((await push(s, { paths: ['a.txt'] })).ok).toBe(true);
      proxy.cutNow();
      await until('the session notices the cut', () => !s.connected, 5000);
      writeFileSync(join(src, 'b.txt'), 'b, after the cut\n');
      const r = await push(s, { paths: ['b.txt'] });
      expect(r.ok, JSON.stringify(r.problems)).toBe(true);
      expect(readFileSync(join(remote, 'b.txt'), 'utf8')).toBe('b, after the cut\n');
      // Nothing else ran: still this session's lock, and what it had not written yet is written after all.
      expect(lockOf(remote)?.session).toBe(s.id);
      await until('the manifest records both batches', () => manifestOf(remote).has('a.txt') && manifestOf(remote).get('b.txt')?.sha256 !== undefined && readFileSync(join(remote, 'b.txt'), 'utf8') === 'b, after the cut\n', FLUSH_MAX_DELAY_MS + 3000);

      // The link drops again, and another run breaks the lock and pushes a file this session never saw.
      proxy.cutNow();
      await until('the session notices the cut', () => !s.connected, 5000);
      const other = join(server.work, `${remote.split('/').pop()}-other`);
      cpSync(src, other, { recursive: true });
      writeFileSync(join(other, 'theirs.txt'), 'theirs\n');
      const broke = await runCli(['push', other, target, '--break-lock', '-F', server.srv.sshConfig]);
      expect(broke.code, broke.stderr).toBe(0);
      expect(lockOf(remote)).toBeNull();
      writeFileSync(join(src, 'a.txt'), 'a, after the break\n');
      const r2 = await push(s, { paths: ['a.txt'] });
      expect(r2.ok, JSON.stringify(r2.problems)).toBe(true);
      expect(lockOf(remote)?.session).toBe(s.id);
      await s.release();
      // Taken again with the manifest re-read: the other run's file is still recorded (a stale ancestor written
      // back would have dropped it).
      const m = manifestOf(remote);
      expect(m.has('theirs.txt')).toBe(true);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('a, after the break\n');
    } finally {
      await s.close();
    }
  });
});

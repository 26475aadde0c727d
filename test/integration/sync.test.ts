/**
 * `wsync sync` (issue 13): two-way, one shot, against the real sshd. One-sided changes go across both ways; a file
 * changed on both sides keeps both versions; an edit beats a delete; a side found empty is refused; two clients of
 * one target each sync against their own ancestor (a stale client never overwrites the other's work).
 */
import { describe, it, expect } from 'vitest';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { runCli, type CliResult } from '../support/cli.js';
import { makeTree, snapshot } from '../support/trees.js';
import { rng, tempFiles } from '../support/cutcheck.js';
import { startCutProxy } from '../support/cutproxy.js';

describe('wsync sync', () => {
  const server = useServer('wsync-sync-');
  let n = 0;
  /** A local and a remote directory of their own, and a client (its own cache: its own ancestors). */
  const setup = (localSpec: Parameters<typeof makeTree>[1], remoteSpec: Parameters<typeof makeTree>[1]) => {
    const name = `s${++n}`;
    const local = join(server.work, name, 'local');
    const remote = join(server.srv.remoteRoot, name);
    makeTree(local, localSpec);
    makeTree(remote, remoteSpec);
    const client = (dir: string, cache: string) => (...args: string[]): Promise<CliResult> =>
      runCli(['sync', ...args, dir, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig], { env: { XDG_CACHE_HOME: cache } });
    return { local, remote, sync: client(local, join(server.work, name, 'cache')), client };
  };
  const same = (a: string, b: string) => expect(snapshot(a)).toEqual(snapshot(b));
  const text = (p: string) => readFileSync(p, 'utf8');
  const touch = (p: string, body: string, t: number) => {
    writeFileSync(p, body);
    utimesSync(p, t, t);
  };

  it('first contact: each side gets what only the other has, equal files are agreed on by content, different ones keep both', async () => {
    const { local, remote, sync } = setup(
      { 'only-here.txt': 'local\n', 'same.txt': 'same bytes\n', 'both.txt': 'local version\n', 'sub/deep.txt': 'deep\n' },
      { 'only-there.txt': 'remote\n', 'same.txt': 'same bytes\n', 'both.txt': 'remote version\n' },
    );
    // Same bytes, another mtime (a checkout on each side): agreed, not a conflict.
    utimesSync(join(remote, 'same.txt'), 1_700_000_500, 1_700_000_500);
    // What a killed run left on either side is cleared, not synced.
    writeFileSync(join(remote, '.only-there.txt.wsync-0123abcd.tmp'), 'half');
    writeFileSync(join(local, 'sub/.deep.txt.wsync-89abcdef.tmp'), 'half');
    const r = await sync('--json');
    expect(r.code, r.stderr).toBe(3);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { conflicts: Array<{ path: string; kind: string; copy: string }>; firstContact: boolean };
    expect(summary.firstContact).toBe(true);
    expect(summary.conflicts.map((c) => [c.path, c.kind])).toEqual([['both.txt', 'both-edited']]);
    const copy = summary.conflicts[0].copy;
    expect(copy).toMatch(/^both\.sync-conflict-\d{8}-\d{6}-.+\.txt$/);
    same(local, remote);
    expect([...tempFiles(local), ...tempFiles(remote)]).toEqual([]);
    expect(text(join(local, 'both.txt'))).toBe('local version\n');
    expect(text(join(local, copy))).toBe('remote version\n');
    expect(text(join(remote, copy))).toBe('remote version\n');
    expect(text(join(local, 'only-there.txt'))).toBe('remote\n');
    expect(text(join(remote, 'sub/deep.txt'))).toBe('deep\n');
    // Agreed now: the next sync has nothing to do.
    const again = await sync('--json');
    expect(again.code, again.stderr).toBe(0);
    const s2 = JSON.parse(again.stdout.trim().split('\n').pop()!) as { toRemote: Record<string, number>; toLocal: Record<string, number> };
    expect(s2.toRemote.filesSent + s2.toLocal.filesSent + s2.toRemote.deleted + s2.toLocal.deleted).toBe(0);
  }, 60_000);

  it('carries one-sided edits, additions and deletions both ways; an edit beats a delete; a directory deleted on one side keeps what the other added', async () => {
    // (Five more files: the delete limit refuses a sync that would remove more than half of a side's files.)
    const more = Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`more/m${i}.txt`, `${i}\n`]));
    const { local, remote, sync } = setup({ 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n', 'gone/x.txt': 'x\n', 'kept/old.txt': 'old\n', 'edit-vs-delete.txt': 'v1\n', ...more }, {});
    expect((await sync()).code).toBe(0);
    same(local, remote);
    touch(join(local, 'a.txt'), 'a, edited here\n', 1_700_001_000);
    rmSync(join(remote, 'b.txt'));
    writeFileSync(join(remote, 'new-there.txt'), 'made by the agent\n');
    rmSync(join(local, 'c.txt'));
    rmSync(join(remote, 'gone'), { recursive: true });
    // The local side deletes kept/ while the remote adds a file in it.
    rmSync(join(local, 'kept'), { recursive: true });
    writeFileSync(join(remote, 'kept/new.txt'), 'new in kept\n');
    // Deleted here, edited there: the edit wins.
    rmSync(join(local, 'edit-vs-delete.txt'));
    touch(join(remote, 'edit-vs-delete.txt'), 'v2 there\n', 1_700_002_000);
    const r = await sync('-v');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^> \* a\.txt$/m);
    expect(r.stdout).toMatch(/^< \+ new-there\.txt$/m);
    expect(r.stdout).toMatch(/^> - c\.txt$/m);
    same(local, remote);
    expect(existsSync(join(local, 'b.txt'))).toBe(false);
    expect(existsSync(join(local, 'gone'))).toBe(false);
    expect(readdirSync(join(local, 'kept'))).toEqual(['new.txt']);
    expect(text(join(local, 'edit-vs-delete.txt'))).toBe('v2 there\n');
    expect(text(join(remote, 'a.txt'))).toBe('a, edited here\n');
  }, 60_000);

  it('a dry run lists both directions and changes nothing', async () => {
    const { local, remote, sync } = setup({ 'a.txt': 'a\n' }, { 'b.txt': 'b\n' });
    const before = [snapshot(local), snapshot(remote)];
    const r = await sync('--dry-run');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^> \+ a\.txt$/m);
    expect(r.stdout).toMatch(/^< \+ b\.txt$/m);
    expect([snapshot(local), snapshot(remote)]).toEqual(before);
  }, 60_000);

  it('refuses when one side is suddenly empty (an unmounted disk), and deletes nothing', async () => {
    const { local, remote, sync } = setup({ 'a.txt': 'a\n', 'd/b.txt': 'b\n' }, {});
    expect((await sync()).code).toBe(0);
    rmSync(local, { recursive: true });
    mkdirSync(local);
    const r = await sync();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/local directory .* is empty, but the last sync left 2 files there/);
    expect(text(join(remote, 'd/b.txt'))).toBe('b\n');
    expect((await sync('--force')).code).toBe(0);
    expect(existsSync(join(remote, 'a.txt'))).toBe(false);
  }, 60_000);

  it('two clients of one target: each syncs against its own ancestor, and a stale client never overwrites the other', async () => {
    const { local: a, remote, client } = setup({ 'x.txt': 'v1\n', 'y.txt': 'y1\n' }, {});
    const b = join(server.work, `s${n}`, 'b');
    mkdirSync(b, { recursive: true });
    const syncA = client(a, join(server.work, `s${n}`, 'cache-a'));
    const syncB = client(b, join(server.work, `s${n}`, 'cache-b'));
    expect((await syncA()).code).toBe(0);
    expect((await syncB()).code).toBe(0);
    same(a, b);
    // B edits x; A, which has not touched x since it last synced, simply gets the edit.
    touch(join(b, 'x.txt'), 'v2 from b\n', 1_700_003_000);
    expect((await syncB()).code).toBe(0);
    const ra = await syncA();
    expect(ra.code, ra.stderr).toBe(0);
    expect(text(join(a, 'x.txt'))).toBe('v2 from b\n');
    // A edits y; B, stale, also edited y since it last synced: B's sync keeps both, A's work is not overwritten.
    touch(join(a, 'y.txt'), 'y2 from a\n', 1_700_004_000);
    expect((await syncA()).code).toBe(0);
    touch(join(b, 'y.txt'), 'y2 from b\n', 1_700_004_500);
    const rb = await syncB();
    expect(rb.code).toBe(3);
    expect(rb.stderr).toMatch(/conflict: y\.txt: changed on both sides/);
    expect(text(join(remote, 'y.txt'))).toBe('y2 from b\n');
    const copies = readdirSync(remote).filter((f) => f.startsWith('y.sync-conflict-'));
    expect(copies).toHaveLength(1);
    expect(text(join(remote, copies[0]))).toBe('y2 from a\n');
    // A then gets both, and nothing is lost anywhere.
    expect((await syncA()).code).toBe(0);
    same(a, remote);
    same(b, remote);
  }, 60_000);

  it('a remote recreated under the same path is not taken for the one last synced with: nothing deleted', async () => {
    const { local, remote, sync } = setup({ 'a.txt': 'a\n', 'b.txt': 'b\n' }, {});
    expect((await sync()).code).toBe(0);
    rmSync(remote, { recursive: true });
    makeTree(remote, { 'c.txt': 'c\n' });
    const r = await sync();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/not the one this directory last synced with/);
    expect(readdirSync(local).sort()).toEqual(['a.txt', 'b.txt', 'c.txt']);
    same(local, remote);
  }, 60_000);

  it('status says what push, pull and sync would each do, and changes nothing (no lock, no id made)', async () => {
    const { local, remote } = setup({ 'a.txt': 'a\n', 'both.txt': 'here\n' }, { 'b.txt': 'b\n', 'both.txt': 'there\n' });
    const before = [snapshot(local), snapshot(remote)];
    const r = await runCli(['status', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig], { env: { XDG_CACHE_HOME: join(server.work, `s${n}`, 'cache') } });
    expect(r.code, r.stderr).toBe(0);
    const section = (name: string) => r.stdout.split(/^(?=\S)/m).find((x) => x.startsWith(name)) ?? '';
    expect(section('push')).toMatch(/^  \+ a\.txt$/m);
    // b.txt was never written by wsync: a push with --delete would leave it (and both.txt) alone.
    expect(section('push')).toMatch(/^  ! b\.txt: /m);
    expect(section('push')).toMatch(/^  ! both\.txt: /m);
    expect(section('pull')).toMatch(/^  \+ b\.txt$/m);
    expect(section('pull')).toMatch(/^  ! a\.txt: /m);
    expect(section('sync')).toMatch(/^  > \+ a\.txt$/m);
    expect(section('sync')).toMatch(/^  < \+ b\.txt$/m);
    expect(section('sync')).toMatch(/^  ! both\.txt: changed on both sides/m);
    expect([snapshot(local), snapshot(remote)]).toEqual(before);
    expect(existsSync(join(remote, '.wsync'))).toBe(false);
    const json = await runCli(['status', '--json', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    const doc = JSON.parse(json.stdout) as { type: string; sync: { result: { conflicts: unknown[] } } };
    expect(doc.type).toBe('status');
    expect(doc.sync.result.conflicts).toHaveLength(1);
  }, 60_000);

  it('through a link cut at random points: each run exits 2 (or 0), none loses a byte, an uncut run ends equal', async () => {
    const localSpec = Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`here/d${i % 7}/f${i}.txt`, `local ${i} ${'x'.repeat(i * 97)}\n`]));
    const remoteSpec = Object.fromEntries(Array.from({ length: 150 }, (_, i) => [`there/d${i % 5}/g${i}.txt`, `remote ${i} ${'y'.repeat(i * 89)}\n`]));
    const { local, remote } = setup(localSpec, remoteSpec);
    const proxy = await startCutProxy(server.srv, join(server.work, `s${n}`));
    const cache = join(server.work, `s${n}`, 'cache');
    const run = () => runCli(['sync', '--no-compress', local, `${server.srv.alias}:${remote}`, '-F', proxy.sshConfig], { env: { XDG_CACHE_HOME: cache } });
    try {
      const rand = rng(3);
      const codes: Array<number | null> = [];
      for (let i = 0; i < 6; i++) {
        proxy.cutAfter = Math.floor(30_000 + rand() * 900_000);
        const r = await run();
        codes.push(r.code);
        expect([0, 2], r.stderr).toContain(r.code);
        if (r.code === 2) expect(r.stderr).toMatch(/^wsync: .*(lost|closed)/m);
        // Whatever it got to, nothing of either side's is gone from its own side.
        for (const [rel, body] of Object.entries(localSpec)) expect(text(join(local, rel))).toBe(body);
        for (const [rel, body] of Object.entries(remoteSpec)) expect(text(join(remote, rel))).toBe(body);
      }
      expect(codes).toContain(2);
      proxy.cutAfter = undefined;
      const last = await run();
      expect(last.code, last.stderr).toBe(0);
      same(local, remote);
      expect([...tempFiles(local), ...tempFiles(remote)]).toEqual([]);
      for (const [rel, body] of Object.entries({ ...localSpec, ...remoteSpec })) {
        expect(text(join(local, rel))).toBe(body);
        expect(text(join(remote, rel))).toBe(body);
      }
    } finally {
      await proxy.close();
    }
  }, 120_000);

  it('an edit the quick check cannot see (same size, same mtime second) is still sent; different bytes under one mtime are not taken for the same', async () => {
    const { local, remote, sync } = setup({ 'f.txt': 'v1\n', 'g.txt': 'g\n' }, {});
    expect((await sync()).code).toBe(0);
    const { mtime } = statSync(join(local, 'f.txt'));
    writeFileSync(join(local, 'f.txt'), 'v2\n');
    utimesSync(join(local, 'f.txt'), mtime, mtime);
    const r = await sync('-v');
    expect(r.code, r.stderr).toBe(0);
    expect(text(join(remote, 'f.txt'))).toBe('v2\n');
    // First contact, one size and one mtime on both sides, other bytes (a tarball's fixed dates): both kept.
    const other = setup({ 'pkg.json': 'local ver\n' }, { 'pkg.json': 'REMOTEver\n' });
    for (const side of [other.local, other.remote]) utimesSync(join(side, 'pkg.json'), 499_162_500, 499_162_500);
    const r2 = await other.sync();
    expect(r2.code).toBe(3);
    expect(text(join(other.remote, 'pkg.json'))).toBe('local ver\n');
    expect(readdirSync(other.remote).filter((f) => f.startsWith('pkg.sync-conflict-'))).toHaveLength(1);
    same(other.local, other.remote);
  }, 60_000);

  it('a touch or a chmod on one side does not turn an edit on the other into a conflict', async () => {
    const { local, remote, sync } = setup({ 'f.txt': 'v1\n', 'run.sh': 'echo 1\n' }, {});
    expect((await sync()).code).toBe(0);
    utimesSync(join(local, 'f.txt'), 1_700_009_000, 1_700_009_000);
    touch(join(remote, 'f.txt'), 'v2, longer\n', 1_700_009_500);
    chmodSync(join(local, 'run.sh'), 0o755);
    touch(join(remote, 'run.sh'), 'echo 2\n', 1_700_009_600);
    const r = await sync();
    expect(r.code, r.stderr).toBe(0);
    same(local, remote);
    expect(text(join(local, 'f.txt'))).toBe('v2, longer\n');
    expect(text(join(local, 'run.sh'))).toBe('echo 2\n');
    expect(statSync(join(remote, 'run.sh')).mode & 0o777).toBe(0o755);
  }, 60_000);

  it('a conflict copy of a long name fits in 255 bytes; an empty .wsync/id is made anew; a remote root that is a link is refused', async () => {
    const long = `${'n'.repeat(240)}.txt`;
    const { local, remote, sync } = setup({ [long]: 'base\n', 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' }, {});
    expect((await sync()).code).toBe(0);
    touch(join(local, long), 'local edit\n', 1_700_010_000);
    touch(join(remote, long), 'remote edit\n', 1_700_010_500);
    const r = await sync();
    expect(r.code).toBe(3);
    const copy = readdirSync(remote).find((f) => f.includes('.sync-conflict-'))!;
    expect(Buffer.byteLength(copy)).toBeLessThanOrEqual(255);
    expect(text(join(local, copy))).toBe('remote edit\n');
    // An id whose write never landed: a new one is written, and deletions go on being synced after that.
    writeFileSync(join(remote, '.wsync/id'), '');
    expect((await sync()).code).toBe(0);
    expect(text(join(remote, '.wsync/id'))).toMatch(/^[0-9a-f]{32}\n$/);
    rmSync(join(local, 'a.txt'));
    expect((await sync()).code).toBe(0);
    expect(existsSync(join(remote, 'a.txt'))).toBe(false);
    const link = `${remote}-link`;
    symlinkSync(remote, link);
    const viaLink = await runCli(['sync', local, `${server.srv.alias}:${link}`, '-F', server.srv.sshConfig], { env: { XDG_CACHE_HOME: join(server.work, `s${n}`, 'cache') } });
    expect(viaLink.code).toBe(1);
    expect(viaLink.stderr).toMatch(/is not a directory \(a symlink/);
  }, 60_000);

  it('status reports a command that would refuse, in its section, and exits 0', async () => {
    const { local, remote, sync } = setup({ 'a.txt': 'a\n', 'b.txt': 'b\n', 'c.txt': 'c\n' }, {});
    expect((await sync()).code).toBe(0);
    rmSync(join(local, 'a.txt'));
    rmSync(join(local, 'b.txt'));
    const r = await runCli(['status', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig], { env: { XDG_CACHE_HOME: join(server.work, `s${n}`, 'cache') } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^push \(with --delete\): would refuse: --delete would remove 2 of the 3 files/m);
    expect(r.stdout).toMatch(/^sync: would refuse: the sync would remove 2 of the 3 files on the remote side/m);
  }, 60_000);

  it('a same-second local edit on a path left alone stays noticed on later syncs (never lost to the other side)', async () => {
    const { local, remote, sync } = setup({ 'f.txt': 'v1\n', 'k1.txt': 'k\n', 'k2.txt': 'k\n' }, {});
    expect((await sync()).code).toBe(0);
    const { mtime } = statSync(join(local, 'f.txt'));
    writeFileSync(join(local, 'f.txt'), 'v2\n');
    utimesSync(join(local, 'f.txt'), mtime, mtime);
    rmSync(join(remote, 'f.txt'));
    symlinkSync('elsewhere', join(remote, 'f.txt'));
    expect((await sync()).code).toBe(3); // a file here, a link there: left alone
    const again = await sync();
    expect(again.code).toBe(3);
    expect(text(join(local, 'f.txt'))).toBe('v2\n');
    // The link goes: the edit beats the delete, even though its size and mtime are the old ones.
    rmSync(join(remote, 'f.txt'));
    expect((await sync()).code).toBe(0);
    expect(text(join(remote, 'f.txt'))).toBe('v2\n');
    // A remote root that is a file is refused as such, before any lock is taken there.
    writeFileSync(`${remote}-file`, 'x');
    const r = await runCli(['sync', local, `${server.srv.alias}:${remote}-file`, '-F', server.srv.sshConfig], { env: { XDG_CACHE_HOME: join(server.work, `s${n}`, 'cache') } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is not a directory/);
  }, 60_000);
});

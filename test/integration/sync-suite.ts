/**
 * One behavioural suite for push/pull, run against every target kind (a local directory, a real sshd).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, writeFileSync, utimesSync, chmodSync, rmSync, existsSync, readFileSync, unlinkSync, renameSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { push, pull, type SyncOptions } from '../../src/api.js';
import { makeTree, snapshot, tempDir } from '../support/trees.js';

export interface SuiteTarget {
  /** Target spec for a remote directory that is, on this machine, at `local(dir)`. */
  spec(dir: string): string;
  options: SyncOptions;
  stop(): Promise<void>;
}

const richTree = {
  'README.md': '# hello\n',
  'src/main.ts': 'export const x = 1;\n',
  'src/deep/er/file.txt': 'deep\n',
  'bin/run.sh': { content: '#!/bin/sh\necho hi\n', mode: 0o755 },
  'empty.txt': '',
  'empty-dir/': { dir: true as const },
  'nested/empty/dir/': { dir: true as const },
  'with space/file name.txt': 'spaces\n',
  'ünïcødé/日本語.txt': 'unicode\n',
  'link-to-readme': { link: 'README.md' },
  'dangling-link': { link: 'does/not/exist' },
  'abs-link': { link: '/etc/hostname' },
};

export function defineSyncSuite(name: string, setup: () => Promise<SuiteTarget>): void {
  describe(`push/pull over ${name}`, () => {
    let t: SuiteTarget;
    let work: string;
    beforeAll(async () => {
      t = await setup();
      work = tempDir('wsync-suite-');
    });
    afterAll(async () => {
      await t?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });
    const dirs = (label: string) => {
      const local = join(work, `${label}-local`);
      const remote = join(work, `${label}-remote`);
      return { local, remote };
    };

    it('push of a new tree makes the remote identical; a no-op push moves no data', async () => {
      const { local, remote } = dirs('new');
      makeTree(local, richTree);
      const r1 = await push(local, t.spec(remote), t.options);
      expect(r1.ok).toBe(true);
      expect(snapshot(remote)).toEqual(snapshot(local));
      expect(existsSync(join(remote, '.wsync/manifest.json.gz'))).toBe(true);
      expect(existsSync(join(remote, '.wsync/lock'))).toBe(false);
      const r2 = await push(local, t.spec(remote), t.options);
      expect(r2.ok).toBe(true);
      // Only the manifest (and the .gitignore that hides .wsync/ from git) is left in .wsync/: no lock, and no temp from either run (written or unused).
      expect(readdirSync(join(remote, '.wsync'))).toEqual(['.gitignore', 'manifest.json.gz']);
      expect(r2.stats.filesSent).toBe(0);
      expect(r2.stats.bytesSent).toBe(0);
      expect(r2.stats.symlinksSent + r2.stats.dirsCreated + r2.stats.deleted + r2.stats.attributesUpdated).toBe(0);
    });

    it('edits, additions, mode changes and deletions with --delete converge; without --delete nothing is removed', async () => {
      const { local, remote } = dirs('edit');
      makeTree(local, richTree);
      await push(local, t.spec(remote), t.options);
      writeFileSync(join(local, 'src/main.ts'), 'export const x = 2; // longer now\n');
      utimesSync(join(local, 'src/main.ts'), 1_700_000_100, 1_700_000_100);
      writeFileSync(join(local, 'src/new.ts'), 'new\n');
      chmodSync(join(local, 'README.md'), 0o755);
      rmSync(join(local, 'src/deep'), { recursive: true });
      unlinkSync(join(local, 'link-to-readme'));
      const r1 = await push(local, t.spec(remote), t.options);
      expect(r1.ok).toBe(true);
      expect(existsSync(join(remote, 'src/deep/er/file.txt'))).toBe(true);
      expect(r1.stats.deleted).toBe(0);
      const r2 = await push(local, t.spec(remote), { ...t.options, delete: true });
      expect(r2.ok).toBe(true);
      expect(r2.stats.deleted).toBe(4); // file, two dirs, symlink
      expect(snapshot(remote)).toEqual(snapshot(local));
    });

    it('--delete refuses to remove more than half of the destination files unless --force', async () => {
      const { local, remote } = dirs('dellimit');
      makeTree(local, { 'a.txt': 'a', 'b.txt': 'b', 'c.txt': 'c', 'd.txt': 'd' });
      await push(local, t.spec(remote), t.options);
      for (const f of ['a.txt', 'b.txt', 'c.txt']) rmSync(join(local, f));
      await expect(push(local, t.spec(remote), { ...t.options, delete: true })).rejects.toMatchObject({ code: 'E_DELETE_LIMIT' });
      expect(Object.keys(snapshot(remote)).sort()).toEqual(['a.txt', 'b.txt', 'c.txt', 'd.txt']);
      const forced = await push(local, t.spec(remote), { ...t.options, delete: true, force: true });
      expect(forced.stats.deleted).toBe(3);
      expect(Object.keys(snapshot(remote))).toEqual(['d.txt']);
    });

    it('a touched file costs an attribute update, not a transfer', async () => {
      const { local, remote } = dirs('touch');
      makeTree(local, { 'a.txt': 'same content\n', 'b.txt': 'other\n' });
      await push(local, t.spec(remote), t.options);
      utimesSync(join(local, 'a.txt'), 1_700_000_500, 1_700_000_500);
      const r = await push(local, t.spec(remote), t.options);
      expect(r.stats.filesSent).toBe(0);
      expect(r.stats.attributesUpdated).toBe(1);
      expect(snapshot(remote)).toEqual(snapshot(local));
    });

    it('excluded, gitignored and .git paths are never sent and never deleted', async () => {
      const { local, remote } = dirs('ignore');
      makeTree(local, {
        '.gitignore': 'build/\n*.log\n!keep.log\n',
        'build/out.bin': 'x',
        'app.log': 'log',
        'keep.log': 'keep',
        'sub/.gitignore': 'secret.txt\n',
        'sub/secret.txt': 'nope',
        'sub/ok.txt': 'ok',
        '.wsyncignore': 'tmp/\n',
        'tmp/scratch': 's',
        'node_modules/pkg/index.js': 'm',
        'cache.dat': 'c',
        '.git/HEAD': 'ref: refs/heads/main\n',
        'vendor/.git': 'gitdir: ../.git/modules/vendor\n',
        'vendor/lib.c': 'int x;\n',
      });
      const opts = { ...t.options, exclude: ['node_modules/', 'cache.*'] };
      const r = await push(local, t.spec(remote), opts);
      expect(r.ok).toBe(true);
      const sent = Object.keys(snapshot(remote)).sort();
      expect(sent).toEqual(['.gitignore', '.wsyncignore', 'keep.log', 'sub', 'sub/.gitignore', 'sub/ok.txt', 'vendor', 'vendor/lib.c']);
      // Things the remote has under excluded names survive --delete.
      makeTree(remote, { 'build/remote-only.o': 'o', 'app.log': 'remote log', 'node_modules/x.js': 'x', '.git/config': '[core]\n' });
      const r2 = await push(local, t.spec(remote), { ...opts, delete: true });
      expect(r2.ok).toBe(true);
      for (const f of ['build/remote-only.o', 'app.log', 'node_modules/x.js', '.git/config']) expect(existsSync(join(remote, f)), f).toBe(true);
      // --include brings back a gitignored file; --no-gitignore sends everything but .git and --exclude.
      const r3 = await push(local, t.spec(remote), { ...opts, include: ['app.log'], force: true });
      expect(r3.ok).toBe(true);
      expect(readFileSync(join(remote, 'app.log'), 'utf8')).toBe('log');
    });

    it('a remote edit is a conflict: left alone, reported; --force replaces it and keeps the old copy in the trash', async () => {
      const { local, remote } = dirs('conflict');
      makeTree(local, { 'a.txt': 'v1\n', 'b.txt': 'b\n', 'c.txt': 'c\n' });
      await push(local, t.spec(remote), t.options);
      writeFileSync(join(remote, 'a.txt'), 'edited on the remote\n');
      writeFileSync(join(local, 'a.txt'), 'v2 local\n');
      utimesSync(join(local, 'a.txt'), 1_700_000_200, 1_700_000_200);
      writeFileSync(join(remote, 'c.txt'), 'remote edit of a file deleted locally\n');
      rmSync(join(local, 'c.txt'));
      const r = await push(local, t.spec(remote), { ...t.options, delete: true });
      expect(r.ok).toBe(false);
      expect(r.conflicts.map((c) => c.path).sort()).toEqual(['a.txt', 'c.txt']);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('edited on the remote\n');
      expect(readFileSync(join(remote, 'c.txt'), 'utf8')).toContain('remote edit');
      // Still a conflict next time: the manifest keeps the old entry.
      const again = await push(local, t.spec(remote), t.options);
      expect(again.conflicts.map((c) => c.path)).toEqual(['a.txt']);
      const forced = await push(local, t.spec(remote), { ...t.options, delete: true, force: true });
      expect(forced.ok).toBe(true);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('v2 local\n');
      expect(existsSync(join(remote, 'c.txt'))).toBe(false);
      const trashSnap = snapshot(join(remote, '.wsync'));
      const trashed = Object.keys(trashSnap).filter((k) => k.startsWith('trash/') && trashSnap[k].type === 'file');
      expect(trashed.map((k) => k.split('/').slice(2).join('/')).sort()).toEqual(['a.txt', 'c.txt']);
    });

    it('pull into an empty directory, then into one with local changes', async () => {
      const { local, remote } = dirs('pull');
      makeTree(remote, richTree);
      const r1 = await pull(local, t.spec(remote), t.options);
      expect(r1.ok).toBe(true);
      expect(snapshot(local)).toEqual(snapshot(remote));
      // The agent works on the remote; meanwhile the user edits another file locally.
      writeFileSync(join(remote, 'src/main.ts'), 'agent edit\n');
      utimesSync(join(remote, 'src/main.ts'), 1_700_000_300, 1_700_000_300);
      writeFileSync(join(remote, 'src/added.ts'), 'agent added\n');
      rmSync(join(remote, 'empty.txt'));
      writeFileSync(join(local, 'README.md'), 'local edit\n');
      writeFileSync(join(local, 'local-only.txt'), 'mine\n');
      const r2 = await pull(local, t.spec(remote), { ...t.options, delete: true });
      expect(readFileSync(join(local, 'src/main.ts'), 'utf8')).toBe('agent edit\n');
      expect(readFileSync(join(local, 'src/added.ts'), 'utf8')).toBe('agent added\n');
      expect(existsSync(join(local, 'empty.txt'))).toBe(false);
      // Local work is never lost: the edited README is a conflict, the local-only file is not deleted.
      expect(readFileSync(join(local, 'README.md'), 'utf8')).toBe('local edit\n');
      expect(readFileSync(join(local, 'local-only.txt'), 'utf8')).toBe('mine\n');
      expect(r2.conflicts.map((c) => c.path).sort()).toEqual(['README.md', 'local-only.txt']);
      expect(r2.ok).toBe(false);
    });

    it('a dry run lists changes and writes nothing', async () => {
      const { local, remote } = dirs('dry');
      makeTree(local, { 'a.txt': 'a', 'd/b.txt': 'b' });
      const events: string[] = [];
      const r = await push(local, t.spec(remote), { ...t.options, dryRun: true, onEvent: (e) => e.type === 'item' && events.push(`${e.action} ${e.path}`) });
      expect(r.dryRun).toBe(true);
      expect(events.sort()).toEqual(['+ a.txt', '+ d', '+ d/b.txt']);
      expect(existsSync(remote)).toBe(false);
    });

    it('replaces a file by a directory and a directory by a file', async () => {
      const { local, remote } = dirs('types');
      makeTree(local, { 'x': 'file', 'y/inner.txt': 'inner', 'z': { link: 'x' } });
      await push(local, t.spec(remote), t.options);
      rmSync(join(local, 'x'));
      makeTree(local, { 'x/now-a-dir.txt': 'd' });
      rmSync(join(local, 'y'), { recursive: true });
      writeFileSync(join(local, 'y'), 'now a file');
      rmSync(join(local, 'z'));
      writeFileSync(join(local, 'z'), 'link became a file');
      const r = await push(local, t.spec(remote), t.options);
      expect(r.ok).toBe(true);
      expect(snapshot(remote)).toEqual(snapshot(local));
    });

    it('two pushes to one target at once: one runs, the other fails naming the lock holder', async () => {
      const { local, remote } = dirs('race');
      makeTree(local, Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}.txt`, `content ${i}\n`])));
      const results = await Promise.allSettled([push(local, t.spec(remote), t.options), push(local, t.spec(remote), t.options)]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      // Either the second found the lock taken, or it ran after the first had finished: never both at once.
      expect(ok.length).toBeGreaterThanOrEqual(1);
      for (const f of failed) {
        expect(f.reason.code, String(f.reason.message)).toBe('E_LOCKED');
        expect(f.reason.message).toMatch(/locked: push by .*\(pid \d+\) since/);
      }
      if (failed.length === 0) {
        const sent = ok.map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof push>>>).value.stats.filesSent).sort();
        expect(sent).toEqual([0, 50]);
      }
      expect(snapshot(remote)).toEqual(snapshot(local));
    });

    it('pull never writes through a local symlink that stands where the remote has a directory', async () => {
      const { local, remote } = dirs('escape');
      const outside = join(work, 'outside');
      mkdirSync(outside, { recursive: true });
      makeTree(remote, { 'a/x.txt': 'would escape', 'b.txt': 'fine' });
      makeTree(local, { 'a': { link: outside } });
      const r = await pull(local, t.spec(remote), t.options);
      expect(r.ok).toBe(false);
      expect(r.conflicts.map((c) => c.path)).toEqual(['a']);
      expect(existsSync(join(outside, 'x.txt'))).toBe(false);
      expect(readFileSync(join(local, 'b.txt'), 'utf8')).toBe('fine');
      const forced = await pull(local, t.spec(remote), { ...t.options, force: true });
      expect(forced.ok).toBe(true);
      expect(existsSync(join(outside, 'x.txt'))).toBe(false);
      expect(readFileSync(join(local, 'a/x.txt'), 'utf8')).toBe('would escape');
    });

    it('moves a file over 64 MiB intact', async () => {
      const { local, remote } = dirs('big');
      mkdirSync(local, { recursive: true });
      const block = randomBytes(1 << 20);
      const big = Buffer.concat(Array.from({ length: 65 }, (_, i) => (i % 7 === 3 ? randomBytes(1 << 20) : block)));
      writeFileSync(join(local, 'big.bin'), Buffer.concat([big, Buffer.from('tail')]));
      const r = await push(local, t.spec(remote), t.options);
      expect(r.ok).toBe(true);
      expect(r.stats.bytesSent).toBe(65 * (1 << 20) + 4);
      expect(snapshot(remote)).toEqual(snapshot(local));
      // And back.
      const back = join(work, 'big-back');
      const r2 = await pull(back, t.spec(remote), t.options);
      expect(r2.ok).toBe(true);
      expect(snapshot(back)).toEqual(snapshot(local));
      renameSync(back, back + '-done');
    });
  });
}

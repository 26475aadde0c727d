/**
 * git push / fetch against every target kind, with the real git CLI judging the result on both sides.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, lstatSync, readFileSync, readlinkSync, rmSync, writeFileSync, mkdirSync, chmodSync, readdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gitPush, type GitPushOptions } from '../../src/git/push.js';
import { gitFetch } from '../../src/git/fetch.js';
import { WsyncError } from '../../src/errors.js';
import { tempDir } from '../support/trees.js';
import { commit, expectHealthy, git, gitTry, initRepo, snapshotTree } from '../support/git.js';

export interface GitSuiteTarget {
  spec(dir: string): string;
  options: GitPushOptions;
  /** The target can copy within itself (SFTP copy-data, or a local directory): a new work tree is built from the pack. */
  copyData: boolean;
  stop(): Promise<void>;
}

/** Nothing is skipped: a refused push withdraws the objects it staged, as git's quarantine does. */
const notObjects = () => false;

export function defineGitSuite(name: string, setup: () => Promise<GitSuiteTarget>): void {
  describe(`git push/fetch over ${name}`, () => {
    let t: GitSuiteTarget;
    let work: string;
    let n = 0;
    beforeAll(async () => {
      t = await setup();
      work = tempDir('wsync-git-');
    });
    afterAll(async () => {
      await t?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });
    const pair = (label: string) => {
      const id = `${label}-${n++}`;
      const local = initRepo(join(work, `${id}-local`));
      const remote = join(work, `${id}-remote`);
      return { local, remote, spec: t.spec(remote) };
    };
    const push = (local: string, spec: string, extra: GitPushOptions = {}) => gitPush(spec, { ...t.options, repo: local, ...extra });
    const expectMirrors = (local: string, remote: string) => {
      const { status } = expectHealthy(remote);
      expect(status).toBe('');
      expect(git(remote, 'rev-parse', 'HEAD')).toBe(git(local, 'rev-parse', 'HEAD'));
      expect(git(remote, 'log', '--format=%H %P %s')).toBe(git(local, 'log', '--format=%H %P %s'));
      // The index is exactly the commit's tree, and git accepts our stat data without re-hashing.
      expect(git(remote, 'ls-files', '-s')).toBe(git(local, 'ls-files', '-s'));
      expect(gitTry(remote, 'diff-index', '--quiet', 'HEAD', '--').code).toBe(0);
      expect(gitTry(remote, 'diff-files', '--quiet').code).toBe(0);
      const skipGit = (r: string) => r === '.git' || r.startsWith('.git/');
      const strip = (m: Map<string, string>) => new Map([...m].map(([k, v]) => [k, v.startsWith('file') ? v.replace(/^(file \d+) [\d.]+ /, '$1 ') : v]));
      expect(strip(snapshotTree(remote, skipGit))).toEqual(strip(snapshotTree(local, skipGit)));
    };

    it('creates the repository on the first push: fsck clean, status clean, log, exec bits and symlinks as local', async () => {
      const { local, remote, spec } = pair('init');
      commit(local, { 'README.md': '# hi\n' }, 'first');
      commit(
        local,
        {
          'bin/run.sh': { content: '#!/bin/sh\necho hi\n', mode: 0o755 },
          'src/deep/er/x.ts': 'export {};\n',
          'link-to-readme': { link: 'README.md' },
          'with space/ünï.txt': 'unicode\n',
          'crlf.txt': 'a\r\nb\r\n',
          'bin.dat': randomBytes(3000),
          'empty.txt': '',
        },
        'second',
      );
      const r = await push(local, spec);
      expect(r).toMatchObject({ status: 'created', initialized: true, commits: 2, packed: false, oldOid: null });
      expectMirrors(local, remote);
      expect(lstatSync(join(remote, 'bin/run.sh')).mode & 0o777).toBe(0o755);
      expect(lstatSync(join(remote, 'README.md')).mode & 0o777).toBe(0o644);
      expect(readlinkSync(join(remote, 'link-to-readme'))).toBe('README.md');
      expect(readFileSync(join(remote, 'crlf.txt'), 'utf8')).toBe('a\r\nb\r\n');
      const cfg = (k: string) => git(remote, 'config', '--get', k).trim();
      expect([cfg('core.filemode'), cfg('receive.denyCurrentBranch'), cfg('core.checkStat'), cfg('core.trustctime')]).toEqual(['true', 'updateInstead', 'minimal', 'false']);
      expect(git(remote, 'reflog', '--format=%gs')).toBe('push\n');
      // The local side records where the remote now is, as git push does.
      expect(git(local, 'rev-parse', 'refs/remotes/local/main').trim()).toBe(r.newOid);
      // A second push has nothing to do.
      expect((await push(local, spec)).status).toBe('up-to-date');
    });

    it('incremental pushes carry every kind of path change into the checked-out work tree', async () => {
      const { local, remote, spec } = pair('incr');
      commit(local, { 'a.txt': 'a\n', 'dir/b.txt': 'b\n', 'tool': { content: 'x', mode: 0o755 }, 'plain': 'p', 'l': { link: 'a.txt' }, 'todir': 'file now\n', 'fromdir/x': '1', 'fromdir/y/z': '2', 'gone.txt': 'bye' }, 'base');
      await push(local, spec);
      const steps: Array<Record<string, Parameters<typeof commit>[1][string]>> = [
        { 'a.txt': 'a changed\n' }, // modify
        { 'gone.txt': null }, // delete
        { 'new/deep/dir/file.txt': 'new\n' }, // add in new dirs
        { tool: { content: 'x', mode: 0o644 }, plain: { content: 'p', mode: 0o755 } }, // exec bit off and on
        { l: { link: 'dir/b.txt' } }, // symlink retarget
        { todir: null, 'todir/inside.txt': 'dir now\n' }, // file -> dir
        { fromdir: 'file now\n' }, // dir -> file (commit() removes what was there)
        { 'dir/b.txt': null, 'dir2/b.txt': 'b\n' }, // rename (and the old dir disappears)
        { 'a.txt': { link: 'plain' } }, // file -> symlink
        { 'a.txt': 'file again\n', 'bin.dat': randomBytes(5000) }, // symlink -> file, binary
      ];
      for (const s of steps) {
        commit(local, s, JSON.stringify(Object.keys(s)));
        const r = await push(local, spec);
        expect(r.status).toBe('fast-forward');
        expect(r.worktree).not.toBeNull();
        expectMirrors(local, remote);
      }
      expect(existsSync(join(remote, 'dir'))).toBe(false);
      expect(existsSync(join(remote, 'gone.txt'))).toBe(false);
      expect(git(remote, 'reflog', '--format=%gs').trim().split('\n').length).toBe(steps.length + 1);
      // Temp files a killed or cut run left in the work tree are cleared by the next push (it holds git's locks, so
      // no other push can still use them); while a directory sync holds its lock there, only old ones.
      const old = join(remote, 'new/.file.txt.wsync-0123abcd.tmp');
      const fresh = join(remote, '.a.txt.wsync-89abcdef.tmp');
      writeFileSync(old, 'left by a crash');
      writeFileSync(fresh, 'in progress');
      utimesSync(old, new Date(Date.now() - 7200_000), new Date(Date.now() - 7200_000));
      mkdirSync(join(remote, '.wsync'), { recursive: true });
      writeFileSync(join(remote, '.wsync/lock'), 'a directory sync at work');
      commit(local, { 'a.txt': 'after the crash\n' }, 'sweep');
      await push(local, spec);
      expect(existsSync(old)).toBe(false);
      expect(existsSync(fresh)).toBe(true);
      rmSync(join(remote, '.wsync'), { recursive: true });
      commit(local, { 'a.txt': 'after the sync\n' }, 'sweep again');
      await push(local, spec);
      expect(existsSync(fresh)).toBe(false);
      expectMirrors(local, remote);
    });

    it('sends one pack with deltas for many objects; git verifies it', async () => {
      const { local, remote, spec } = pair('pack');
      const files: Record<string, string> = {};
      for (let i = 0; i < 120; i++) files[`f/${i}.txt`] = `${'line\n'.repeat(200)}${i}\n`;
      commit(local, files, 'many');
      for (let c = 0; c < 5; c++) commit(local, { 'f/1.txt': `${'line\n'.repeat(200)}${c} edit\n`, [`g/${c}.txt`]: `${c}` }, `edit ${c}`);
      const r = await push(local, spec);
      expect(r.packed).toBe(true);
      expect(r.objects).toBeGreaterThanOrEqual(100);
      // A new repository: the tip's 125 files went into the pack whole and were copied out of it on the server.
      expect(r.worktree).toMatchObject({ written: 125, copied: t.copyData ? 125 : 0 });
      const packs = git(remote, 'count-objects', '-v');
      expect(packs).toMatch(/packs: 1/);
      for (const idx of git(remote, 'rev-parse', '--git-path', 'objects/pack').trim().split('\n')) {
        const list = readdirIdx(join(remote, idx));
        expect(list.length).toBe(1);
        git(remote, 'verify-pack', join(remote, idx, list[0]));
        // git's order: the newest version of f/1.txt whole, the older ones deltas against it.
        const depth = new Map(
          git(remote, 'verify-pack', '-v', join(remote, idx, list[0]))
            .split('\n')
            .map((l) => l.trim().split(/\s+/))
            .filter((f) => f.length >= 5 && /^[0-9a-f]{40}$/.test(f[0]))
            .map((f) => [f[0], f.length >= 7 ? Number(f[5]) : 0]),
        );
        const versions = git(remote, 'log', '--format=%H', '--', 'f/1.txt').trim().split('\n').map((c) => git(remote, 'rev-parse', `${c}:f/1.txt`).trim());
        expect(depth.get(versions[0])).toBe(0);
        for (const v of versions.slice(1)) expect(depth.get(v)).toBeGreaterThan(0);
      }
      expectMirrors(local, remote);
    });

    describe('refusals leave the remote as it was', () => {
      const refusal = async (label: string, prepare: (remote: string, local: string) => void, expectMsg: RegExp, extra: GitPushOptions = {}) => {
        const { local, remote, spec } = pair(label);
        commit(local, { 'a.txt': 'a\n', 'b.txt': 'b\n' }, 'base');
        await push(local, spec);
        commit(local, { 'a.txt': 'a2\n', 'c.txt': 'c\n' }, 'next');
        prepare(remote, local);
        const before = snapshotTree(remote, notObjects);
        const err = await push(local, spec, extra).then(
          () => null,
          (e) => e,
        );
        expect(err).toBeInstanceOf(WsyncError);
        expect(err.message).toMatch(expectMsg);
        expect(snapshotTree(remote, notObjects)).toEqual(before);
        git(remote, 'fsck', '--full', '--strict', '--no-progress');
        return err as WsyncError;
      };
      it('an unstaged edit', async () => {
        const e = await refusal('dirty', (r) => writeFileSync(join(r, 'b.txt'), 'edited on the VM\n'), /unstaged changes:\s+modified: b.txt/);
        expect(e.code).toBe('E_GIT_REJECTED');
      });
      it('an edit in the same second as the index write is found (racily clean entries are hashed)', async () => {
        await refusal(
          'racy',
          (r) => {
            const { mtime } = lstatSync(join(r, 'b.txt'));
            writeFileSync(join(r, 'b.txt'), 'B\n');
            // Same size and the mtime the index recorded; the index itself written in that second.
            utimesSync(join(r, 'b.txt'), mtime, mtime);
            utimesSync(join(r, '.git/index'), mtime, mtime);
          },
          /unstaged changes/,
        );
      });
      it('a staged change', async () => {
        await refusal(
          'staged',
          (r) => {
            writeFileSync(join(r, 'staged.txt'), 's\n');
            git(r, 'add', 'staged.txt');
          },
          /staged changes:\s+new file: staged.txt/,
        );
      });
      it('an untracked file in the way', async () => {
        await refusal('untracked', (r) => writeFileSync(join(r, 'c.txt'), 'mine\n'), /untracked working tree files would be overwritten[\s\S]*c.txt/);
      });
      it('a missing tracked file and an exec-bit flip', async () => {
        await refusal('missing', (r) => rmSync(join(r, 'b.txt')), /unstaged changes:\s+deleted: b.txt/);
        await refusal('chmod', (r) => chmodSync(join(r, 'b.txt'), 0o755), /mode changed: b.txt/);
      });
      it('index.lock present', async () => {
        const e = await refusal('idxlock', (r) => writeFileSync(join(r, '.git/index.lock'), ''), /index.lock exists/);
        expect(e.code).toBe('E_LOCKED');
      });
      it('the branch lock present', async () => {
        await refusal('reflock', (r) => writeFileSync(join(r, '.git/refs/heads/main.lock'), ''), /main.lock exists/);
      });
      it('a non-fast-forward without --force; with --force it goes through', async () => {
        const { local, remote, spec } = pair('nonff');
        commit(local, { 'a.txt': '1' }, 'one');
        commit(local, { 'a.txt': '2' }, 'two');
        await push(local, spec);
        git(local, 'reset', '-q', '--hard', 'HEAD~1');
        commit(local, { 'a.txt': '3' }, 'three');
        const before = snapshotTree(remote, notObjects);
        await expect(push(local, spec)).rejects.toThrow(/non-fast-forward/);
        expect(snapshotTree(remote, notObjects)).toEqual(before);
        const r = await push(local, spec, { force: true });
        expect(r.status).toBe('forced');
        expectMirrors(local, remote);
      });
      it('commits only the remote has (fetch first), even forced over them the work tree check still works', async () => {
        const { local, remote, spec } = pair('fetchfirst');
        commit(local, { 'a.txt': '1' }, 'one');
        await push(local, spec);
        commit(remote, { 'vm.txt': 'agent work\n' }, 'agent');
        commit(local, { 'a.txt': '2' }, 'two');
        const before = snapshotTree(remote, notObjects);
        await expect(push(local, spec)).rejects.toThrow(/fetch first/);
        expect(snapshotTree(remote, notObjects)).toEqual(before);
        const r = await push(local, spec, { force: true });
        expect(r.status).toBe('forced');
        expectMirrors(local, remote);
      });
    });

    it('--break-lock removes a git lock left by a crash (over a minute old), never a fresh one', async () => {
      const { local, remote, spec } = pair('breaklock');
      commit(local, { 'a.txt': '1' }, 'one');
      await push(local, spec);
      commit(local, { 'a.txt': '2' }, 'two');
      const lock = join(remote, '.git/index.lock');
      writeFileSync(lock, '');
      const fresh = await push(local, spec, { breakLock: true }).then(() => null, (e: WsyncError) => e);
      expect(fresh?.code).toBe('E_LOCKED');
      expect(fresh?.message).toMatch(/older than 60 s/);
      expect(existsSync(lock)).toBe(true);
      const old = new Date(Date.now() - 120_000);
      utimesSync(lock, old, old);
      await expect(push(local, spec)).rejects.toThrow(/index.lock exists \(\d+ min old\)/);
      const r = await push(local, spec, { breakLock: true });
      expect(r.status).toBe('fast-forward');
      expect(existsSync(lock)).toBe(false);
      expectMirrors(local, remote);
    });

    it('only moves the ref when another branch is checked out, or the remote is bare', async () => {
      const { local, remote, spec } = pair('other');
      commit(local, { 'a.txt': '1' }, 'one');
      await push(local, spec);
      git(local, 'checkout', '-q', '-b', 'feature');
      commit(local, { 'f.txt': 'feature\n' }, 'feat');
      const before = snapshotTree(remote, notObjects);
      const r = await push(local, spec);
      expect(r.worktree).toBeNull();
      expect(git(remote, 'rev-parse', 'refs/heads/feature').trim()).toBe(r.newOid);
      const after = snapshotTree(remote, notObjects);
      for (const [k, v] of before) if (!k.startsWith('.git/')) expect(after.get(k)).toBe(v);
      expect(expectHealthy(remote).status).toBe('');

      const bare = join(work, `bare-${n++}.git`);
      git(work, 'init', '-q', '--bare', bare);
      const rb = await push(local, t.spec(bare), { branch: 'feature' });
      expect(rb.worktree).toBeNull();
      expect(git(bare, 'rev-parse', 'refs/heads/feature').trim()).toBe(rb.newOid);
      git(bare, 'fsck', '--full', '--strict', '--no-progress');
      // Work guessed ahead for a work tree (staged files, a .git/) must leave no trace in a bare repository.
      expect(readdirSync(bare).sort()).toEqual(['HEAD', 'branches', 'config', 'description', 'hooks', 'info', 'objects', 'refs']);
      expect(readdirSync(join(bare, 'objects')).filter((n) => n.startsWith('.'))).toEqual([]);
    });

    it('follows receive.denyCurrentBranch of an existing repository (git init on the remote)', async () => {
      const { local, remote, spec } = pair('deny');
      commit(local, { 'a.txt': '1' }, 'one');
      mkdirSync(remote, { recursive: true });
      git(remote, 'init', '-q');
      git(remote, 'commit', '-q', '--allow-empty', '-m', 'remote root');
      // Unset: updateInstead, as in repositories wsync creates (the remote's own commit must be fetched first).
      await expect(push(local, spec)).rejects.toThrow(/fetch first/);
      await gitFetch(spec, { ...t.options, repo: local });
      git(local, 'merge', '-q', '--allow-unrelated-histories', '-m', 'join', 'refs/remotes/local/main');
      const r = await push(local, spec);
      expect(r.worktree).not.toBeNull();
      expect(expectHealthy(remote).status).toBe('');
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('1');
      // refuse: refused, remote untouched.
      git(remote, 'config', 'receive.denyCurrentBranch', 'refuse');
      commit(local, { 'a.txt': '2' }, 'two');
      const before = snapshotTree(remote);
      await expect(push(local, spec)).rejects.toThrow(/refusing to update the checked-out branch/);
      expect(snapshotTree(remote)).toEqual(before);
      // ignore: the ref moves, the work tree stays (git's behaviour, and its status then shows the difference).
      git(remote, 'config', 'receive.denyCurrentBranch', 'ignore');
      const r2 = await push(local, spec);
      expect(r2.worktree).toBeNull();
      expect(git(remote, 'rev-parse', 'HEAD').trim()).toBe(r2.newOid);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('1');
    });

    it('refuses a sha256 repository without writing to it', async () => {
      const { local, remote, spec } = pair('sha256');
      commit(local, { 'a.txt': '1' }, 'one');
      mkdirSync(remote, { recursive: true });
      git(remote, 'init', '-q', '--object-format=sha256');
      const before = snapshotTree(remote);
      await expect(push(local, spec)).rejects.toMatchObject({ code: 'E_GIT_UNSUPPORTED' });
      expect(snapshotTree(remote)).toEqual(before);
      // A local sha256 repository is refused too, as a local problem.
      const mine = join(work, `sha256-local-${n++}`);
      mkdirSync(mine, { recursive: true });
      git(mine, 'init', '-q', '--object-format=sha256');
      await expect(push(mine, t.spec(join(work, `sha256-target-${n++}`)))).rejects.toMatchObject({ code: 'E_GIT_REPO', message: /sha256/ });
    });

    it('refuses an index it cannot rewrite safely (v4) without touching the remote', async () => {
      const { local, remote, spec } = pair('indexv4');
      commit(local, { 'a.txt': '1' }, 'one');
      await push(local, spec);
      git(remote, 'update-index', '--index-version', '4');
      commit(local, { 'a.txt': '2' }, 'two');
      const before = snapshotTree(remote);
      const err = await push(local, spec).then(() => null, (e: WsyncError) => e);
      expect(err?.code).toBe('E_GIT_UNSUPPORTED');
      expect(err?.hint).toMatch(/--index-version 2/);
      expect(snapshotTree(remote)).toEqual(before);
    });

    describe('races with git on the remote', () => {
      it('a remote commit while wsync holds the locks fails; the push wins', async () => {
        const { local, remote, spec } = pair('race1');
        commit(local, { 'a.txt': '1' }, 'one');
        await push(local, spec);
        commit(local, { 'a.txt': '2' }, 'two');
        let remoteCommit = { code: -1, out: '' };
        const r = await push(local, spec, { hooks: { locked: () => void (remoteCommit = gitTry(remote, 'commit', '--allow-empty', '-m', 'agent')) } });
        expect(remoteCommit.code).not.toBe(0);
        expect(remoteCommit.out).toMatch(/index.lock/);
        expect(git(remote, 'rev-parse', 'HEAD').trim()).toBe(r.newOid);
        expectMirrors(local, remote);
      });
      it('a remote commit just before the push takes its locks makes it fail (stale info, or fetch first where locks and reads share a round trip); the commit wins', async () => {
        const { local, remote, spec } = pair('race2');
        commit(local, { 'a.txt': '1' }, 'one');
        await push(local, spec);
        commit(local, { 'a.txt': '2' }, 'two');
        let agent = '';
        await expect(
          push(local, spec, {
            hooks: {
              beforeLock: () => {
                git(remote, 'commit', '-q', '--allow-empty', '-m', 'agent');
                agent = git(remote, 'rev-parse', 'HEAD').trim();
              },
            },
          }),
        ).rejects.toThrow(/stale info|fetch first/);
        expect(git(remote, 'rev-parse', 'HEAD').trim()).toBe(agent);
        expect(expectHealthy(remote).status).toBe('');
      });
      it('free-running: pushes and remote commits interleave without corrupting anything', async () => {
        const { local, remote, spec } = pair('race3');
        commit(local, { 'a.txt': '0' }, 'zero');
        await push(local, spec);
        let pushed = 0;
        let committed = 0;
        for (let i = 1; i <= 4; i++) {
          commit(local, { 'a.txt': String(i) }, `local ${i}`);
          const agentRun = new Promise<void>((resolve) => {
            setTimeout(() => {
              if (gitTry(remote, 'commit', '--allow-empty', '-q', '-m', `agent ${i}`).code === 0) committed++;
              resolve();
            }, 5 * i);
          });
          const p = push(local, spec).then(
            () => void pushed++,
            (e: WsyncError) => expect(['E_GIT_REJECTED', 'E_LOCKED']).toContain(e.code),
          );
          await Promise.all([agentRun, p]);
          git(remote, 'fsck', '--full', '--strict', '--no-progress');
          expect(expectHealthy(remote).status).toBe('');
          // Bring local up to date with whatever won, so the next round starts from the same history.
          await gitFetch(spec, { ...t.options, repo: local, ff: false });
          git(local, 'reset', '-q', '--hard', 'refs/remotes/local/main');
        }
        expect(pushed + committed).toBeGreaterThanOrEqual(4);
      });
    });

    describe('fetch', () => {
      it('brings commits made by git on the remote, before and after git gc; local fsck clean; --ff updates the work tree', async () => {
        const { local, remote, spec } = pair('fetch');
        commit(local, { 'a.txt': 'a\n', 'keep.txt': 'k\n' }, 'base');
        await push(local, spec);
        commit(remote, { 'a.txt': 'agent 1\n', 'new/file.txt': 'n\n' }, 'agent one');
        commit(remote, { 'keep.txt': null, 'x.sh': { content: '#!/bin/sh\n', mode: 0o755 } }, 'agent two');
        const r1 = await gitFetch(spec, { ...t.options, repo: local });
        expect(r1.commits.map((c) => c.subject)).toEqual(['agent two', 'agent one']);
        expect(git(local, 'rev-list', 'refs/remotes/local/main')).toBe(git(remote, 'rev-list', 'main'));
        git(local, 'fsck', '--strict', '--no-progress');
        expect(git(local, 'rev-parse', 'main').trim()).not.toBe(r1.newOid); // no --ff: branch unmoved

        // After gc: packed refs and deltified, packed objects read by ranges.
        for (let i = 0; i < 3; i++) commit(remote, { 'a.txt': `agent ${i} ${'x'.repeat(2000)}\n` }, `agent gc ${i}`);
        git(remote, 'gc', '-q', '--aggressive', '--prune=now');
        expect(existsSync(join(remote, '.git/refs/heads/main'))).toBe(false);
        const rgc = await gitFetch(spec, { ...t.options, repo: local });
        expect(rgc.commits.map((c) => c.subject)).toEqual(['agent gc 2', 'agent gc 1', 'agent gc 0']);
        git(local, 'fsck', '--strict', '--no-progress');
        commit(remote, { 'after-gc.txt': 'loose again\n' }, 'after gc');
        const r2 = await gitFetch(spec, { ...t.options, repo: local, ff: true });
        expect(r2.commits.map((c) => c.subject)).toEqual(['after gc']);
        // repack -a -d (no prune of refs): one pack holding everything, with deltas against objects of older commits.
        commit(remote, { 'a.txt': `repacked ${'y'.repeat(2000)}\n` }, 'before repack');
        git(remote, 'repack', '-q', '-a', '-d', '-f', '--depth=20');
        commit(remote, { 'b.txt': 'loose after repack\n' }, 'after repack');
        const r3 = await gitFetch(spec, { ...t.options, repo: local, ff: true });
        expect(r3.commits.map((c) => c.subject)).toEqual(['after repack', 'before repack']);
        git(local, 'fsck', '--strict', '--no-progress');
        expect(git(local, 'status', '--porcelain')).toBe('');
        expect(r2.ff).toBe('fast-forward');
        git(local, 'fsck', '--strict', '--no-progress');
        expect(git(local, 'rev-parse', 'main')).toBe(git(remote, 'rev-parse', 'main'));
        expect(git(local, 'status', '--porcelain', '--untracked-files=all')).toBe('');
        expect(lstatSync(join(local, 'x.sh')).mode & 0o777).toBe(0o755);
        expect(existsSync(join(local, 'keep.txt'))).toBe(false);
        // Every fetched object is the remote's object.
        for (const oid of git(remote, 'rev-list', '--objects', 'main').trim().split('\n').map((l) => l.split(' ')[0])) {
          expect(git(local, 'cat-file', '-p', oid)).toBe(git(remote, 'cat-file', '-p', oid));
        }
        // And the remote accepts the next push on top.
        commit(local, { 'back.txt': 'from local\n' }, 'local again');
        await push(local, spec);
        expectMirrors(local, remote);
      });

      it('a new branch cut from known history lists only the commits made on top of it', async () => {
        const { local, remote, spec } = pair('newbranch');
        for (let i = 0; i < 5; i++) commit(local, { 'a.txt': `v${i}\n` }, `known ${i}`);
        await push(local, spec);
        git(remote, 'checkout', '-q', '-b', 'agent-work');
        commit(remote, { 'b.txt': 'b\n' }, 'agent 1');
        commit(remote, { 'c.txt': 'c\n' }, 'agent 2');
        const r = await gitFetch(spec, { ...t.options, repo: local, branch: 'agent-work' });
        expect(r.oldOid).toBeNull();
        expect(r.commits.map((c) => c.subject)).toEqual(['agent 2', 'agent 1']);
        expect(git(local, 'rev-parse', 'refs/remotes/local/agent-work')).toBe(git(remote, 'rev-parse', 'agent-work'));
      });

      it('--ff refuses when a local edit would be lost, leaving the branch where it was; diverged is reported', async () => {
        const { local, remote, spec } = pair('ffconflict');
        commit(local, { 'a.txt': 'a\n' }, 'base');
        await push(local, spec);
        commit(remote, { 'a.txt': 'agent\n' }, 'agent');
        writeFileSync(join(local, 'a.txt'), 'local edit\n');
        const before = git(local, 'rev-parse', 'main');
        await expect(gitFetch(spec, { ...t.options, repo: local, ff: true })).rejects.toThrow(/unstaged changes/);
        expect(git(local, 'rev-parse', 'main')).toBe(before);
        expect(readFileSync(join(local, 'a.txt'), 'utf8')).toBe('local edit\n');
        // The tracking ref moved anyway: the objects are here to merge by hand.
        expect(git(local, 'rev-parse', 'refs/remotes/local/main')).toBe(git(remote, 'rev-parse', 'main'));
        git(local, 'checkout', '-q', '--', 'a.txt');
        commit(local, { 'l.txt': 'local commit\n' }, 'local');
        const r = await gitFetch(spec, { ...t.options, repo: local, ff: true });
        expect(r.ff).toBe('diverged');
        expect(git(local, 'log', '-1', '--format=%s').trim()).toBe('local');
      });
    });
  });
}

function readdirIdx(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.idx'));
}

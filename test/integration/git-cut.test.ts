/**
 * `wsync git push` through a link cut at random bytes (issue 12): every run exits 0, or 2 with one line saying the
 * link was lost; the remote repository stays one git accepts (fsck, the branch at the old or the new commit, the
 * work tree matching it); and a later push through a whole link succeeds.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { useServer } from '../support/server.js';
import { runCli } from '../support/cli.js';
import { startCutProxy, type CutProxy } from '../support/cutproxy.js';
import { commit, git, gitTry, initRepo } from '../support/git.js';
import { rng } from '../support/cutcheck.js';

describe('git push through a link cut at random bytes', () => {
  const server = useServer('wsync-gitcut-');
  let proxy: CutProxy;
  beforeAll(async () => {
    proxy = await startCutProxy(server.srv, server.work);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it('each cut run exits 2 with one line, the remote stays consistent, and the next push goes through', async () => {
    const local = initRepo(join(server.work, 'repo'));
    const remote = join(server.srv.remoteRoot, 'gitcut');
    const target = `${server.srv.alias}:${remote}`;
    const push = () => runCli(['git', 'push', target, '--no-compress', '-F', proxy.sshConfig, '--repo', local], { timeoutMs: 60_000 });
    commit(local, { 'README.md': 'start\n' }, 'start');
    expect((await push()).code).toBe(0);
    const rand = rng(5);
    const log: string[] = [];
    let cut = 0;
    for (let round = 0; round < 10; round++) {
      // A few commits with some bulk each round, so that cuts land in the objects, the locks and the work tree.
      const files: Record<string, string> = {};
      for (let i = 0; i < 30; i++) files[`src/r${round}/f${i}.txt`] = `${round} ${i} `.repeat(200 + Math.floor(rand() * 2000));
      const tip = commit(local, files, `round ${round}`);
      const before = gitTry(remote, 'rev-parse', 'main').out.trim();
      proxy.mode = round % 2 ? 'end' : 'reset';
      const cutAt = Math.floor(2_000 + rand() * 150_000);
      proxy.cutAfter = cutAt;
      const r = await push();
      proxy.cutAfter = undefined;
      const what = `round ${round}, cut at ${cutAt}: exit ${r.code}\n${r.stdout}\n${r.stderr}\n${log.join('\n')}`;
      log.push(`round ${round}: exit ${r.code} ${r.stderr.trim()}`);
      expect(r.stderr, what).not.toMatch(/^\s+at /m);
      if (r.code !== 0) {
        cut++;
        expect(r.code, what).toBe(2);
        expect(r.stderr.trim().split('\n'), what).toHaveLength(1);
        expect(r.stderr, what).toMatch(/^wsync: .*(lost|closed|timed out)/);
      }
      // Whatever happened, git finds a sound repository with the branch at one of the two commits.
      expect(gitTry(remote, 'fsck', '--no-progress').code, what).toBe(0);
      const now = git(remote, 'rev-parse', 'main').trim();
      expect([before, tip], what).toContain(now);
      if (now === tip) expect(git(remote, 'status', '--porcelain'), what).toBe('');
      // The next push through a whole link finishes the job (no lock left by the cut run in its way).
      const again = await push();
      expect(again.code, `${what}\nthen: ${again.stderr}`).toBe(0);
      expect(git(remote, 'rev-parse', 'main').trim()).toBe(tip);
      expect(git(remote, 'status', '--porcelain')).toBe('');
    }
    // The cuts fell inside the pushes (handshake, locks, objects, work tree), not after them.
    expect(cut, log.join('\n')).toBeGreaterThanOrEqual(6);
  }, 300_000);

  it('a lock written down by a dead push but taken anew since (younger than the entry) is left alone', async () => {
    const local = initRepo(join(server.work, 'repo-b'));
    const remote = join(server.srv.remoteRoot, 'gitcut-b');
    const target = `${server.srv.alias}:${remote}`;
    const push = () => runCli(['git', 'push', target, '-F', server.srv.sshConfig, '--repo', local], { timeoutMs: 60_000 });
    commit(local, { 'a.txt': 'a\n' }, 'first');
    expect((await push()).code).toBe(0);
    // What a push from here that was cut ten minutes ago wrote down (its pid is gone).
    const ledgerDir = join(local, '.git/wsync');
    const [ledger] = readdirSync(ledgerDir).filter((n) => n.startsWith('locks-'));
    expect(ledger).toBeDefined();
    const at = Math.floor(Date.now() / 1000) - 600;
    writeFileSync(join(ledgerDir, ledger), JSON.stringify([{ lock: '.git/index.lock', pid: 2 ** 22 + 12345, host: (await import('node:os')).hostname(), at }]));
    // Someone removed that stale lock, and a git process there holds a fresh one now.
    mkdirSync(join(remote, '.git'), { recursive: true });
    writeFileSync(join(remote, '.git/index.lock'), 'git at work');
    commit(local, { 'a.txt': 'b\n' }, 'second');
    const r = await push();
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/index\.lock exists/);
    expect(existsSync(join(remote, '.git/index.lock'))).toBe(true);
  }, 60_000);
});

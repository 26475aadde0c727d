import { describe, it, expect } from 'vitest';
import { writeFileSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { startProxy } from '../../bench/proxy.js';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { runCli, runCliOnTty, WSYNC_BIN } from '../support/cli.js';
import { commit, git, initRepo } from '../support/git.js';

describe('wsync git CLI against a real sshd', () => {
  const server = useServer('wsync-gitcli-');

  it('prints help for git and its commands', async () => {
    const top = await runCli(['git', '--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/push <remote> \[branch\]/);
    expect(top.stdout).toMatch(/fetch <remote> \[branch\]/);
    expect((await runCli(['git', 'push', '--help'])).stdout).toMatch(/--force/);
    expect((await runCli(['git', 'fetch', '--help'])).stdout).toMatch(/--ff/);
  });

  it('push, a refused push (exit 3), fetch listing new commits, --json, --ff', async () => {
    const local = initRepo(join(server.work, 'repo'));
    const remote = join(server.work, 'vm/app');
    const target = `${server.srv.alias}:${remote}`;
    commit(local, { 'a.txt': 'a\n' }, 'first');
    const p1 = await runCli(['git', 'push', target, '-F', server.srv.sshConfig], { cwd: local });
    expect(p1.stderr).toBe('');
    expect(p1.code).toBe(0);
    expect(p1.stdout).toMatch(/\* \[new branch\]\s+main -> main/);
    expect(git(remote, 'status', '--porcelain')).toBe('');
    // The tracking ref is named after the host alias.
    expect(git(local, 'rev-parse', `refs/remotes/${server.srv.alias}/main`)).toBe(git(local, 'rev-parse', 'main'));

    commit(local, { 'a.txt': 'a2\n' }, 'second');
    writeFileSync(join(remote, 'a.txt'), 'the agent edited this\n');
    const refused = await runCli(['git', 'push', target, '-F', server.srv.sshConfig], { cwd: local });
    expect(refused.code).toBe(3);
    expect(refused.stderr).toMatch(/unstaged changes:\s+modified: a.txt/);
    expect(refused.stderr).toMatch(/^hint: /m);
    git(remote, 'checkout', '--', 'a.txt');
    const p2 = await runCli(['git', 'push', target, '-F', server.srv.sshConfig, '--json'], { cwd: local });
    expect(p2.code).toBe(0);
    const summary = JSON.parse(p2.stdout.trim().split('\n').pop()!);
    expect(summary).toMatchObject({ type: 'summary', status: 'fast-forward', branch: 'main', commits: 1 });

    commit(remote, { 'agent.txt': 'made on the VM\n' }, 'agent: add a file');
    commit(remote, { 'agent.txt': 'changed on the VM\n' }, 'agent: change it');
    const f = await runCli(['git', 'fetch', target, '-F', server.srv.sshConfig, '--remote-name', 'vm'], { cwd: local });
    expect(f.code).toBe(0);
    const agentLog = git(remote, 'log', '--format=%h %s', '-2').trim();
    expect(f.stdout).toContain(agentLog.split('\n').map((l) => `${l.slice(0, 7)}${l.slice(l.indexOf(' '))}`).join('\n'));
    expect(f.stdout).toMatch(/main -> vm\/main/);
    expect(git(local, 'rev-parse', 'refs/remotes/vm/main')).toBe(git(remote, 'rev-parse', 'main'));

    const ff = await runCli(['git', 'fetch', target, 'main', '-F', server.srv.sshConfig, '--remote-name', 'vm', '--ff', '--json'], { cwd: local });
    expect(ff.code).toBe(0);
    expect(JSON.parse(ff.stdout)).toMatchObject({ ff: 'fast-forward', commits: [] });
    expect(git(local, 'rev-parse', 'main')).toBe(git(remote, 'rev-parse', 'main'));
    expect(git(local, 'status', '--porcelain')).toBe('');

    commit(local, { 'l.txt': 'l' }, 'local');
    commit(remote, { 'r.txt': 'r' }, 'remote');
    const div = await runCli(['git', 'fetch', target, '-F', server.srv.sshConfig, '--remote-name', 'vm', '--ff'], { cwd: local });
    expect(div.code).toBe(3);
    expect(div.stderr).toMatch(/diverged/);
  });

  it('on a terminal, push and fetch say what they are doing, and erase it before the result', async () => {
    const local = initRepo(join(server.work, 'tty-repo'));
    const remote = join(server.work, 'vm/tty');
    const target = `${server.srv.alias}:${remote}`;
    for (let i = 0; i < 3; i++) commit(local, { [`f${i}.txt`]: `${i}\n` }, `c${i}`);
    const p = await runCliOnTty(['git', 'push', target, '-F', server.srv.sshConfig, '--repo', local], []);
    expect(p.code, p.output).toBe(0);
    expect(p.output).toMatch(/wsync: reading the remote repository… 0s/);
    expect(p.output).toMatch(/wsync: counting objects…/);
    expect(p.output).toMatch(/wsync: sending objects/);
    // The line is erased before the result, which starts a clean line.
    expect(p.output).toMatch(/\r\x1b\[KTo /);
    commit(remote, { 'agent.txt': 'a\n' }, 'agent');
    const f = await runCliOnTty(['git', 'fetch', target, '-F', server.srv.sshConfig, '--repo', local], []);
    expect(f.code, f.output).toBe(0);
    expect(f.output).toMatch(/wsync: reading new objects…/);
    expect(f.output).toMatch(/\r\x1b\[KFrom /);
    // Off a terminal (and with -q or --json) nothing of it.
    commit(local, { 'more.txt': 'm\n' }, 'more');
    git(local, 'merge', '-q', '--no-edit', `refs/remotes/${server.srv.alias}/main`);
    const piped = await runCli(['git', 'push', target, '-F', server.srv.sshConfig, '--repo', local]);
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stderr).toBe('');
    const quiet = await runCliOnTty(['git', 'fetch', target, '-q', '-F', server.srv.sshConfig, '--repo', local], []);
    expect(quiet.code).toBe(0);
    expect(quiet.output).not.toMatch(/wsync:/);
  });

  it('mistakes on the command line go to yargs: exit 1 with what was wrong, for git and for push/pull', async () => {
    for (const args of [
      ['git', 'push', 'host:x', '--bogus'],
      ['git', 'fetch', 'host:x', '--force'],
      ['git', 'push'],
      ['push', 'a', 'b', '--bogus'],
      ['pull', 'only-one'],
    ]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/Unknown argument|Not enough non-option arguments|Unknown arguments|unknown option --bogus/);
    }
    // The negated option the fast parser handles itself still works.
    const r = await runCli(['push', '-n', '--no-gitignore', join(server.work, 'nope'), join(server.work, 'nope2')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/nope/);
  });

  it('Ctrl-C during a push removes its locks on the remote and exits 130', async () => {
    const local = initRepo(join(server.work, 'sigint'));
    const remote = join(server.work, 'vm/sigint');
    const files: Record<string, string> = {};
    for (let i = 0; i < 300; i++) files[`d${i % 30}/f${i}.txt`] = `file ${i}\n`;
    commit(local, files, 'first');
    // A slow link keeps the push inside its locks long enough to interrupt it there.
    const proxy = await startProxy({ targetPort: server.srv.port, delayMs: 150, rateBitsPerSec: 0 });
    try {
      const cfg = join(server.work, 'slow_config');
      const hostKey = readFileSync(server.srv.knownHosts, 'utf8').trim().split(/\s+/).slice(1).join(' ');
      writeFileSync(join(server.work, 'slow_known'), `[127.0.0.1]:${proxy.port} ${hostKey}\n`);
      const viaProxy = readFileSync(server.srv.sshConfig, 'utf8')
        .replace(/^(\s*Port)\s+\d+\s*$/m, `$1 ${proxy.port}`)
        .replace(/^(\s*UserKnownHostsFile)\s+.*$/m, `$1 ${join(server.work, 'slow_known')}`);
      writeFileSync(cfg, viaProxy);
      const child = spawn(process.execPath, [WSYNC_BIN, 'git', 'push', `${server.srv.alias}:${remote}`, '-F', cfg], { cwd: local, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const until = Date.now() + 20_000;
      while (!existsSync(join(remote, '.git/index.lock')) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
      expect(existsSync(join(remote, '.git/index.lock'))).toBe(true);
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      expect(stderr).toMatch(/interrupted/);
      expect(existsSync(join(remote, '.git/index.lock'))).toBe(false);
      expect(existsSync(join(remote, '.git/refs/heads/main.lock'))).toBe(false);
      // Nothing the interrupted push staged is visible to git, and the next push goes through.
      git(remote, 'fsck', '--full', '--strict', '--no-progress');
    } finally {
      await proxy.close();
    }
    const again = await runCli(['git', 'push', `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig], { cwd: local });
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(git(remote, 'status', '--porcelain')).toBe('');
  });

  it('outside a repository, or with a bad branch name: exit 1 and one clear line', async () => {
    const plain = join(server.work, 'not-a-repo');
    mkdirSync(plain, { recursive: true });
    const r = await runCli(['git', 'push', `${server.srv.alias}:${join(server.work, 'x')}`, '-F', server.srv.sshConfig, '--repo', plain]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not inside a git repository/);
    const local = initRepo(join(server.work, 'repo2'));
    commit(local, { a: 'a' }, 'a');
    const bad = await runCli(['git', 'push', `${server.srv.alias}:${join(server.work, 'x')}`, 'bad..name', '-F', server.srv.sshConfig], { cwd: local });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/not a valid branch name/);
  });
});

/**
 * What an rsync or git user meets first (issue 11): output through a slow pipe arrives whole, trees that already
 * hold the same bytes are adopted rather than called conflicts, and wsync's state stays out of git's view.
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { cpSync, lstatSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { runCli, WSYNC_BIN } from '../support/cli.js';
import { makeTree, snapshot, type Spec } from '../support/trees.js';
import { git, initRepo } from '../support/git.js';

describe('first contact', () => {
  const server = useServer('wsync-first-');
  const target = (dir: string) => `${server.srv.alias}:${dir}`;
  const cli = (args: string[]) => runCli([...args, '-F', server.srv.sshConfig], { timeoutMs: 60_000 });

  it('output through a slow reader on a pipe arrives whole, the --json summary included', async () => {
    const local = join(server.work, 'pipe-local');
    const spec: Spec = {};
    for (let i = 0; i < 3000; i++) spec[`dir${i % 30}/a-rather-long-file-name-to-fill-the-pipe-${i}.txt`] = `${i}\n`;
    makeTree(local, spec);
    const remote = join(server.srv.remoteRoot, 'pipe-remote');
    const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const cmd = `${quote(process.execPath)} ${quote(WSYNC_BIN)} push --json -n ${quote(local)} ${quote(target(remote))} -F ${quote(server.srv.sshConfig)} | (sleep 1; cat)`;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, SSH_AUTH_SOCK: '' } });
      let text = '';
      child.stdout.on('data', (d) => (text += d));
      child.on('error', reject);
      child.on('close', () => resolve(text));
    });
    const lines = out.trim().split('\n');
    // 3000 files + 30 directories, then the summary.
    expect(lines.length).toBe(3031);
    expect(JSON.parse(lines.at(-1)!).type).toBe('summary');
  });

  it('a tree that already holds the same bytes under other mtimes is adopted both ways: times fixed, nothing sent', async () => {
    const local = join(server.work, 'adopt-local');
    const spec: Spec = { 'same.txt': 'same\n', 'd/also.txt': 'also\n', 'empty.txt': '', 'x.sh': { content: '#!/bin/sh\n', mode: 0o755 } };
    makeTree(local, spec);
    // A copy without times (cp without -p, git clone, rsync without -t).
    const remote = join(server.srv.remoteRoot, 'adopt-remote');
    cpSync(local, remote, { recursive: true, preserveTimestamps: false });
    for (const f of ['same.txt', 'd/also.txt', 'empty.txt', 'x.sh']) utimesSync(join(remote, f), 1_700_100_000, 1_700_100_000);
    writeFileSync(join(remote, 'differs.txt'), 'remote\n');
    writeFileSync(join(local, 'differs.txt'), 'local!\n');
    const r = await cli(['push', '--json', local, target(remote)]);
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(r.code).toBe(3);
    expect(summary.conflicts.map((c: { path: string }) => c.path)).toEqual(['differs.txt']);
    expect(summary.stats.filesSent).toBe(0);
    expect(summary.stats.bytesSent).toBe(0);
    expect(summary.stats.attributesUpdated).toBe(4);
    for (const f of ['same.txt', 'd/also.txt', 'empty.txt', 'x.sh']) expect(lstatSync(join(remote, f)).mtimeMs).toBe(lstatSync(join(local, f)).mtimeMs);
    expect(readFileSync(join(remote, 'differs.txt'), 'utf8')).toBe('remote\n');
    // The next run: only the real conflict is left.
    const again = await cli(['push', '--json', local, target(remote)]);
    expect(JSON.parse(again.stdout.trim().split('\n').at(-1)!).stats.attributesUpdated).toBe(0);

    // Pull into a local copy made without times: adopted the same way.
    const back = join(server.work, 'adopt-back');
    cpSync(remote, back, { recursive: true, preserveTimestamps: false, filter: (src) => !src.includes('/.wsync') });
    for (const f of ['same.txt', 'd/also.txt']) utimesSync(join(back, f), 1_700_200_000, 1_700_200_000);
    const p = await cli(['pull', '--json', back, target(remote)]);
    const ps = JSON.parse(p.stdout.trim().split('\n').at(-1)!);
    expect(p.code, p.stderr).toBe(0);
    expect(ps.stats.filesSent).toBe(0);
    expect(lstatSync(join(back, 'same.txt')).mtimeMs).toBe(lstatSync(join(remote, 'same.txt')).mtimeMs);
  });

  it('says how many paths the ignore files left out, and whose, and how to send them', async () => {
    const local = join(server.work, 'ign-local');
    makeTree(local, { '.gitignore': 'dist/\n*.log\n', 'src/a.ts': 'a\n', 'dist/a.js': 'a\n', 'dist/b.js': 'b\n', 'x.log': 'x\n' });
    const remote = join(server.srv.remoteRoot, 'ign-remote');
    const r = await cli(['push', local, target(remote)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^wsync: 2 path\(s\) left out by \.gitignore\/\.wsyncignore files \(--no-gitignore sends/m);
    // On the remote an agent builds into dist/: a pull says those were left out, by the remote's ignore files.
    makeTree(remote, { 'dist/c.js': 'c\n' });
    const back = join(server.work, 'ign-back');
    const p = await cli(['pull', back, target(remote)]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stderr).toMatch(/^wsync: 1 path\(s\) left out by the remote's \.gitignore/m);
    const all = await cli(['pull', '--no-gitignore', back, target(remote)]);
    expect(all.code, all.stderr).toBe(0);
    expect(readFileSync(join(back, 'dist/c.js'), 'utf8')).toBe('c\n');
  });

  it('.wsync/ never shows in git status of a work tree, on the remote or on the local side', async () => {
    const local = join(server.work, 'git-local');
    makeTree(local, { 'a.txt': 'a\n' });
    const remote = initRepo(join(server.srv.remoteRoot, 'git-remote'));
    const r = await cli(['push', local, target(remote)]);
    expect(r.code, r.stderr).toBe(0);
    expect(git(remote, 'status', '--porcelain', '--untracked-files=all')).toBe('?? a.txt\n');
    git(remote, 'add', '-A');
    expect(git(remote, 'diff', '--cached', '--name-only')).toBe('a.txt\n');
    // A pull with --force that keeps a replaced local file in .wsync/trash/ there.
    const back = initRepo(join(server.work, 'git-back'));
    mkdirSync(back, { recursive: true });
    writeFileSync(join(back, 'a.txt'), 'local edit\n');
    const p = await cli(['pull', '--force', back, target(remote)]);
    expect(p.code, p.stderr).toBe(0);
    expect(readFileSync(join(back, 'a.txt'), 'utf8')).toBe('a\n');
    expect(git(back, 'status', '--porcelain', '--untracked-files=all')).toBe('?? a.txt\n');
    expect(snapshot(back, { skip: (rel) => rel === '.git' })).toEqual(snapshot(local));
  });
});

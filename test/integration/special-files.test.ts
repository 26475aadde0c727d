import { describe, it, expect, afterAll } from 'vitest';
import { join } from 'node:path';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { useServer } from '../support/server.js';
import { runCli } from '../support/cli.js';
import { makeTree, snapshot } from '../support/trees.js';

/** FIFOs, sockets and devices are not synced; every run says which it left out. */
describe('special files (FIFO, socket) are reported, not silently dropped', () => {
  const server = useServer('wsync-special-');
  const listeners: net.Server[] = [];
  afterAll(async () => {
    await Promise.all(listeners.map((s) => new Promise((r) => s.close(r))));
  });

  const socketAt = (path: string) =>
    new Promise<void>((resolve, reject) => {
      const s = net.createServer();
      listeners.push(s);
      s.once('error', reject);
      s.listen(path, () => resolve());
    });

  const specials = ['pipe', 'd/sock', 'd/e/pipe2'];
  const skippedLine = (p: string, kind: string) => `skipped: ${p}: not a regular file, directory or symlink (${kind}`;

  it('push: --json has a notice for each, -v a line for each, the default one count line; the rest syncs', async () => {
    const local = join(server.work, 'local');
    const remote = join(server.work, 'remote');
    makeTree(local, { 'a.txt': 'a', 'd/b.txt': 'b', 'd/e/c.txt': 'c' });
    execFileSync('mkfifo', [join(local, 'pipe'), join(local, 'd/e/pipe2')]);
    await socketAt(join(local, 'd/sock'));
    const target = `${server.srv.alias}:${remote}`;

    const json = await runCli(['push', '--json', '-n', local, target, '-F', server.srv.sshConfig]);
    expect(json.code, json.stderr).toBe(0);
    const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const notices = lines.filter((l) => l.type === 'notice');
    expect(notices.map((n) => n.skipped).sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: 'd/e/pipe2', kind: 'fifo', side: 'local' },
      { path: 'd/sock', kind: 'socket', side: 'local' },
      { path: 'pipe', kind: 'fifo', side: 'local' },
    ]);
    for (const n of notices) expect(n.message).toBe(skippedLine(n.skipped.path, n.skipped.kind) + ')');

    const verbose = await runCli(['push', '-v', local, target, '-F', server.srv.sshConfig]);
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(verbose.stderr).toContain(skippedLine('pipe', 'fifo') + ')\n');
    expect(verbose.stderr).toContain(skippedLine('d/sock', 'socket') + ')\n');
    expect(verbose.stderr).toContain(skippedLine('d/e/pipe2', 'fifo') + ')\n');
    expect(verbose.stderr).not.toMatch(/special file\(s\) skipped/);
    expect(snapshot(remote)).toEqual(snapshot(local, { skip: (r) => specials.includes(r) }));
    expect(existsSync(join(remote, 'pipe'))).toBe(false);

    const plain = await runCli(['push', local, target, '-F', server.srv.sshConfig]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toBe('wsync: 3 special file(s) skipped (fifo, socket); -v lists them\n');

    const quiet = await runCli(['push', '-q', local, target, '-F', server.srv.sshConfig]);
    expect(quiet.code).toBe(0);
    expect(quiet.stdout + quiet.stderr).toBe('');
  });

  it('pull: FIFOs and sockets on the server are reported too', async () => {
    const remote = join(server.work, 'r-remote');
    const local = join(server.work, 'r-local');
    makeTree(remote, { 'a.txt': 'a', 'x/y.txt': 'y' });
    execFileSync('mkfifo', [join(remote, 'x/fifo')]);
    await socketAt(join(remote, 'sock'));
    const target = `${server.srv.alias}:${remote}`;
    const json = await runCli(['pull', '--json', local, target, '-F', server.srv.sshConfig]);
    expect(json.code, json.stderr).toBe(0);
    const notices = json.stdout.trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'notice');
    expect(notices.map((n) => n.skipped).sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: 'sock', kind: 'socket', side: 'remote' },
      { path: 'x/fifo', kind: 'fifo', side: 'remote' },
    ]);
    expect(snapshot(local)).toEqual(snapshot(remote, { skip: (r) => r === 'sock' || r === 'x/fifo' }));
    const verbose = await runCli(['pull', '-v', local, target, '-F', server.srv.sshConfig]);
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(verbose.stderr).toContain(skippedLine('x/fifo', 'fifo') + ')\n');
    expect(verbose.stderr).toContain(skippedLine('sock', 'socket') + ')\n');
    // Seen from a push, they are on the other side: said so.
    const push = await runCli(['push', '-v', local, target, '-F', server.srv.sshConfig]);
    expect(push.code, push.stderr).toBe(0);
    expect(push.stderr).toContain(skippedLine('x/fifo', 'fifo') + ', on the remote side)\n');
  });
});

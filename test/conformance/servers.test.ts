/**
 * One suite of what users run (push, pull, --delete, a killed push run again, symlinks both ways, the exec bit,
 * a big file's delta, git push and fetch) against every SFTP server wsync meets: OpenSSH, dropbear (with
 * OpenSSH's sftp-server) and ProFTPD mod_sftp, each started by the suite on a random port. After every test,
 * nothing outside the target directories changed: the server's login directory and the scratch directory beside
 * the targets hold what they held before.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync, openSync, writeSync, closeSync, mkdirSync, symlinkSync, readlinkSync, lstatSync, utimesSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { SERVER_KINDS, startServer, type ServerKind, type TestServer } from '../support/sshd.js';
import { runCli, WSYNC_BIN } from '../support/cli.js';
import { makeTree, snapshot, tempDir } from '../support/trees.js';
import { commit, expectHealthy, git, initRepo } from '../support/git.js';

/** Top-level names (and link targets) of a directory: what a stray write outside a target would change. */
function names(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((n) => {
    const p = join(dir, n);
    return lstatSync(p).isSymbolicLink() ? `${n} -> ${readlinkSync(p)}` : n;
  }).sort();
}

const cacheEnv = (work: string) => ({ XDG_CACHE_HOME: join(work, 'cache') });

for (const kind of SERVER_KINDS) {
  describe(`wsync against ${kind}`, () => {
    let srv: TestServer;
    let work: string;
    let scratch: string;
    /** The server's login directory: ProFTPD's is the suite's own (DefaultChdir), the others' the user's home. */
    let loginDir: string;
    let before: { login: string[]; scratch: string[] };
    const target = (dir: string) => `${srv.alias}:${dir}`;
    const cli = (args: string[], opts: { cwd?: string; timeoutMs?: number } = {}) =>
      runCli([...args, '-F', srv.sshConfig], { ...opts, env: cacheEnv(work), timeoutMs: opts.timeoutMs ?? 90_000 });

    beforeAll(async () => {
      srv = await startServer(kind as ServerKind);
      work = tempDir(`wsync-${kind}-`);
      scratch = join(srv.remoteRoot, 'outside');
      loginDir = kind === 'proftpd' ? join(srv.dir, 'home') : homedir();
      mkdirSync(scratch);
      writeFileSync(join(scratch, 't.txt'), 'outside\n');
    });
    afterAll(async () => {
      await srv?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });
    const remember = () => (before = { login: names(loginDir), scratch: names(scratch) });
    afterEach(() => {
      expect({ login: names(loginDir), scratch: names(scratch) }).toEqual(before);
      expect(readFileSync(join(scratch, 't.txt'), 'utf8')).toBe('outside\n');
    });

    it('wsync doctor tells the server apart by trying it, and leaves nothing behind', async () => {
      remember();
      const remote = join(srv.remoteRoot, 'doc');
      mkdirSync(remote);
      const r = await cli(['doctor', target(remote), '--json']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const d = JSON.parse(r.stdout);
      const proftpd = kind === 'proftpd';
      expect(d).toMatchObject({
        type: 'doctor',
        software: proftpd ? 'mod_sftp' : expect.stringMatching(kind === 'openssh' ? /^OpenSSH_/ : /^dropbear_/),
        symlinkOrder: 'openssh (target first)',
        readlink: proftpd ? 'joined onto the link directory' : 'verbatim',
        followsLinks: proftpd,
        renameExistsStatus: proftpd ? 11 : 4,
        appendExisting: proftpd ? 'refused' : 'allowed',
      });
      expect(d.connections).toBe(proftpd ? 4 : 1);
      expect(d.missing.map((m: { extension: string }) => m.extension)).toEqual(proftpd ? ['copy-data', 'limits@openssh.com'] : []);
      expect(readdirSync(remote)).toEqual([]);
      const text = await cli(['doctor', target(remote)]);
      expect(text.code).toBe(0);
      expect(text.stdout).toMatch(/^symlink order +openssh \(target first\)$/m);
    });

    it('push, no-op, edits with --delete, and a pull back: exact, with symlinks both ways and the exec bit', async () => {
      remember();
      const local = join(work, 'p1');
      const remote = join(srv.remoteRoot, 'p1');
      makeTree(local, {
        'README.md': '# hello\n',
        'bin/run.sh': { content: '#!/bin/sh\necho hi\n', mode: 0o755 },
        'src/a.ts': 'export const a = 1;\n',
        'src/deep/b.ts': 'export const b = 2;\n',
        't.txt': 'the target\n',
        'l-rel': { link: 't.txt' },
        'src/l-up': { link: '../t.txt' },
        'l-out': { link: '../outside/t.txt' },
        'l-abs': { link: '/etc/hostname' },
        'l-dangling': { link: 'nowhere' },
        'l-dir': { link: 'src' },
        // Read back normalised by ProFTPD (`/…/src`): recovered from what wsync wrote.
        'l-slash': { link: 'src/' },
        'l-dot': { link: './t.txt' },
      });
      const logins = () => (srv.log().match(kind === 'proftpd' ? /Session key exchange/g : /./g) ?? []).length;
      const loginsBefore = logins();
      const p = await cli(['push', local, target(remote)]);
      expect(p.stderr).toBe('');
      expect(p.code).toBe(0);
      // ProFTPD serves a connection's channels from one process: wsync spreads them over several connections.
      if (kind === 'proftpd') expect(logins() - loginsBefore).toBeGreaterThanOrEqual(2);
      const skip = (rel: string) => rel === '.wsync' || rel.startsWith('.wsync/');
      expect(snapshot(remote, { skip })).toEqual(snapshot(local));
      expect(lstatSync(join(remote, 'bin/run.sh')).mode & 0o777).toBe(0o755);

      const again = await cli(['push', local, target(remote), '--json']);
      expect(again.code).toBe(0);
      expect(JSON.parse(again.stdout.trim().split('\n').pop()!).stats).toMatchObject({ filesSent: 0, bytesSent: 0 });

      // A file over a link, a link over a file, a link re-pointed, a deletion: the links' targets stay as they are.
      rmSync(join(local, 'l-rel'));
      writeFileSync(join(local, 'l-rel'), 'now a file\n');
      rmSync(join(local, 'src/a.ts'));
      symlinkSync('deep/b.ts', join(local, 'src/a.ts'));
      rmSync(join(local, 'l-out'));
      symlinkSync('t.txt', join(local, 'l-out'));
      rmSync(join(local, 'src/deep/b.ts'));
      mkdirSync(join(local, 'src/deep'), { recursive: true });
      writeFileSync(join(local, 'src/deep/c.ts'), 'export const c = 3;\n');
      const e = await cli(['push', '--delete', local, target(remote)]);
      expect(e.stderr).toBe('');
      expect(e.code).toBe(0);
      expect(snapshot(remote, { skip })).toEqual(snapshot(local));
      expect(readFileSync(join(remote, 't.txt'), 'utf8')).toBe('the target\n');

      const back = join(work, 'p1-back');
      const pl = await cli(['pull', back, target(remote)]);
      expect(pl.stderr).toBe('');
      expect(pl.code).toBe(0);
      expect(snapshot(back, { skip })).toEqual(snapshot(local));
    });

    it('a link wsync did not write is pulled as it is, or reported and left alone where the server rewrites targets', async () => {
      remember();
      const remote = join(srv.remoteRoot, 'p2');
      makeTree(remote, { 'f.txt': 'f\n', 'mine': { link: 'f.txt' }, 'sub/up': { link: '../f.txt' } });
      const local = join(work, 'p2');
      const r = await cli(['pull', local, target(remote)]);
      if (kind === 'proftpd') {
        // ProFTPD reads back `/…/p2/f.txt` for `f.txt`: which one it was cannot be told without wsync's manifest.
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(/p2\/mine: this server rewrites symlink targets/);
        expect(r.stderr).toMatch(/p2\/sub\/up: this server rewrites symlink targets/);
        expect(existsSync(join(local, 'mine'))).toBe(false);
        expect(readFileSync(join(local, 'f.txt'), 'utf8')).toBe('f\n');
      } else {
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(readlinkSync(join(local, 'mine'))).toBe('f.txt');
        expect(readlinkSync(join(local, 'sub/up'))).toBe('../f.txt');
      }
    });

    it('a push killed part-way and run again ends exact; a big file edited in the middle is rebuilt right', async () => {
      remember();
      const local = join(work, 'p3');
      const remote = join(srv.remoteRoot, 'p3');
      const spec: Record<string, string> = {};
      for (let i = 0; i < 1500; i++) spec[`d${i % 30}/f${i}.txt`] = `file ${i} `.repeat(1 + (i % 50)) + '\n';
      makeTree(local, spec);
      writeFileSync(join(local, 'big.bin'), randomBytes(8 * 1024 * 1024));
      const child = spawn(process.execPath, [WSYNC_BIN, 'push', local, target(remote), '-F', srv.sshConfig], { stdio: 'ignore', env: { ...process.env, SSH_AUTH_SOCK: '', ...cacheEnv(work) } });
      await new Promise((r) => setTimeout(r, 700));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('close', r));
      const rerun = await cli(['push', local, target(remote)]);
      expect(rerun.stderr).toBe('');
      expect(rerun.code).toBe(0);
      const skip = (rel: string) => rel === '.wsync' || rel.startsWith('.wsync/');
      expect(snapshot(remote, { skip })).toEqual(snapshot(local));

      // 64 KiB overwritten in the middle of 8 MiB: with copy-data only about that much goes up. (A fresh file:
      // one whose upload the kill cut and the rerun resumed may have no chunk list to build on.)
      rmSync(join(local, 'big.bin'));
      writeFileSync(join(local, 'big.bin'), randomBytes(8 * 1024 * 1024));
      expect((await cli(['push', local, target(remote)])).code).toBe(0);
      const fd = openSync(join(local, 'big.bin'), 'r+');
      writeSync(fd, randomBytes(64 * 1024), 0, 64 * 1024, 4 * 1024 * 1024);
      closeSync(fd);
      // A later mtime: an edit in the same second as the last push, keeping the size, is not seen (as for rsync).
      utimesSync(join(local, 'big.bin'), 1_800_000_000, 1_800_000_000);
      const d = await cli(['push', local, target(remote), '--json']);
      expect(d.code).toBe(0);
      expect(readFileSync(join(remote, 'big.bin')).equals(readFileSync(join(local, 'big.bin')))).toBe(true);
      const sent = JSON.parse(d.stdout.trim().split('\n').pop()!).stats.bytesSent as number;
      if (kind === 'proftpd') expect(sent).toBeLessThanOrEqual(8 * 1024 * 1024 + 4096); // no copy-data there: the whole file (issue 20)
      else expect(sent).toBeLessThan(1024 * 1024);
    });

    it('git push of new work, a revert (its blob already there), an object already loose on the remote, a symlink; fetch back', async () => {
      remember();
      const repo = initRepo(join(work, 'repo'));
      const remote = join(srv.remoteRoot, 'repo');
      commit(repo, { 'x.txt': 'one\n', 'l': { link: 'x.txt' }, 'ls': { link: 'sub/' }, 'sub/y': 'y\n', 'run.sh': { content: '#!/bin/sh\n', mode: 0o755 } }, 'first');
      const push = () => cli(['git', 'push', target(remote)], { cwd: repo });
      const check = () => {
        expect(git(remote, 'rev-parse', 'HEAD')).toBe(git(repo, 'rev-parse', 'HEAD'));
        expect(expectHealthy(remote).status).toBe('');
        expect(readlinkSync(join(remote, 'l'))).toBe('x.txt');
      };
      let r = await push();
      expect(r.stderr, r.stdout).toBe('');
      expect(r.code).toBe(0);
      check();
      commit(repo, { 'x.txt': 'two\n' }, 'second');
      r = await push();
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      check();
      git(repo, 'revert', '--no-edit', 'HEAD');
      r = await push();
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      check();
      // The next commit's blob is already a loose object there (left by a killed push, say).
      writeFileSync(join(remote, 'pre.txt'), 'already there\n');
      git(remote, 'hash-object', '-w', 'pre.txt');
      rmSync(join(remote, 'pre.txt'));
      commit(repo, { 'pre.txt': 'already there\n' }, 'third');
      r = await push();
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      check();
      // An update that wrote the work tree and failed before its index and ref (objects refused, link cut): the
      // next push finishes it instead of refusing "unstaged changes"; one that got as far as the index, too.
      commit(repo, { 'x.txt': 'four\n', 'new.txt': 'new\n', 'run.sh': null }, 'fourth');
      writeFileSync(join(remote, 'x.txt'), 'four\n');
      writeFileSync(join(remote, 'new.txt'), 'new\n');
      rmSync(join(remote, 'run.sh'));
      r = await push();
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      check();
      commit(repo, { 'x.txt': 'five\n' }, 'fifth');
      writeFileSync(join(remote, 'x.txt'), 'five\n');
      git(remote, 'add', 'x.txt');
      r = await push();
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      check();
      // Work of someone else's is still refused.
      commit(repo, { 'x.txt': 'six\n' }, 'sixth');
      writeFileSync(join(remote, 'x.txt'), 'theirs\n');
      r = await push();
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/unstaged changes:\s+modified: x.txt/);
      git(remote, 'checkout', '--', 'x.txt');
      r = await push();
      expect(r.code).toBe(0);
      check();
      // The index already the new tree, but a file the new tree deletes is there with someone's edit: refused.
      commit(repo, { 'new.txt': null }, 'seventh');
      git(remote, 'rm', '-q', '--cached', 'new.txt');
      writeFileSync(join(remote, 'new.txt'), 'edited on the VM\n');
      r = await push();
      expect(r.code).toBe(3);
      expect(readFileSync(join(remote, 'new.txt'), 'utf8')).toBe('edited on the VM\n');
      rmSync(join(remote, 'new.txt'));
      r = await push();
      expect(r.code).toBe(0);
      check();
      commit(remote, { 'agent.txt': 'from the VM\n' }, 'agent');
      const f = await cli(['git', 'fetch', target(remote), '--remote-name', 'vm'], { cwd: repo });
      expect(f.code).toBe(0);
      expect(git(repo, 'rev-parse', 'refs/remotes/vm/main')).toBe(git(remote, 'rev-parse', 'HEAD'));
      expect(git(repo, 'show', 'refs/remotes/vm/main:agent.txt')).toBe('from the VM\n');
    });
  });
}

import { describe, it, expect } from 'vitest';
import { writeFileSync, readFileSync, existsSync, readdirSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { keygen } from '../support/sshd.js';
import { useServer } from '../support/server.js';
import { runCli, runCliOnTty, WSYNC_BIN } from '../support/cli.js';
import { makeTree, snapshot } from '../support/trees.js';
import { startProxy } from '../../bench/proxy.js';
import { decodeManifest, MANIFEST_PATH } from '../../src/manifest/manifest.js';

describe('wsync CLI against a real sshd', () => {
  const server = useServer('wsync-cli-');

  /** A copy of the test ssh_config with other settings for the same server. */
  const configWith = (name: string, lines: string[]): string => {
    const p = join(server.work, name);
    writeFileSync(p, [`Host ${server.srv.alias}`, '  HostName 127.0.0.1', `  Port ${server.srv.port}`, `  User ${server.srv.user}`, '  IdentitiesOnly yes', ...lines.map((l) => '  ' + l), ''].join('\n'));
    return p;
  };

  /** ssh_config with a Host `slow` that goes through a proxy on `port` to the test server. */
  const slowConfig = (name: string, port: number): string => {
    const kh = join(server.work, `${name}_known_hosts`);
    writeFileSync(kh, readFileSync(server.srv.knownHosts, 'utf8').replace(`:${server.srv.port} `, `:${port} `));
    const cfg = join(server.work, `${name}_config`);
    writeFileSync(cfg, [`Host slow`, '  HostName 127.0.0.1', `  Port ${port}`, `  User ${server.srv.user}`, `  IdentityFile ${server.srv.userKey}`, '  IdentitiesOnly yes', `  UserKnownHostsFile ${kh}`, ''].join('\n'));
    return cfg;
  };

  it('prints help for the program and each command', async () => {
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/push <local> <remote>/);
    expect(top.stdout).toMatch(/Exit codes/);
    const sub = await runCli(['push', '--help']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toMatch(/--delete/);
    expect(sub.stdout).toMatch(/--dry-run/);
    const comp = await runCli(['completion']);
    expect(comp.code).toBe(0);
    expect(comp.stdout).toMatch(/complete/);
  });

  it('pushes and pulls with itemized dry run and JSON output', async () => {
    const local = join(server.work, 'json-local');
    const remote = join(server.work, 'json-remote');
    makeTree(local, { 'a.txt': 'hello', 'd/b.txt': 'world', 'x.sh': { content: '#!/bin/sh\n', mode: 0o755 } });
    const dry = await runCli(['push', '-n', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(dry.code).toBe(0);
    expect(dry.stdout.split('\n').filter((l) => /^[+*-] /.test(l)).sort()).toEqual(['+ a.txt', '+ d/', '+ d/b.txt', '+ x.sh']);
    expect(dry.stdout).toMatch(/would send 3 file\(s\), 20 B/);
    expect(existsSync(remote)).toBe(false);
    const r = await runCli(['push', '--json', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const summary = lines.at(-1);
    expect(summary.type).toBe('summary');
    expect(summary.stats.filesSent).toBe(3);
    expect(summary.stats.bytesSent).toBe(20);
    expect(lines.filter((l) => l.type === 'item').length).toBe(4);
    expect(snapshot(remote)).toEqual(snapshot(local));
    const back = join(server.work, 'json-back');
    const p = await runCli(['pull', '-q', back, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(p.code).toBe(0);
    expect(p.stdout + p.stderr).toBe('');
    expect(snapshot(back)).toEqual(snapshot(local));
  });

  it('exit 3 with each conflict listed when the remote was edited', async () => {
    const local = join(server.work, 'c-local');
    const remote = join(server.work, 'c-remote');
    makeTree(local, { 'a.txt': 'one', 'b.txt': 'two' });
    expect((await runCli(['push', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig])).code).toBe(0);
    writeFileSync(join(remote, 'a.txt'), 'remote edit');
    writeFileSync(join(local, 'a.txt'), 'local edit!');
    const r = await runCli(['push', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/conflict: a\.txt: changed on the remote side/);
    expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('remote edit');
  });

  it('one clear line and the documented exit code for each failure', async () => {
    const local = join(server.work, 'err-local');
    makeTree(local, { 'a.txt': 'a' });
    const missing = await runCli(['push', join(server.work, 'nope'), `${server.srv.alias}:/tmp/x`, '-F', server.srv.sshConfig]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.split('\n')[0]).toMatch(/^wsync: local directory .*nope does not exist$/);

    for (const bad of [':path', 'user@:path']) {
      const r = await runCli(['push', local, bad]);
      expect(r.code, bad).toBe(1);
      expect(r.stderr.split('\n')[0], bad).toMatch(/^wsync: malformed target/);
    }
    const usage = await runCli(['push', local]);
    expect(usage.code).toBe(1);

    // A port nobody listens on.
    const net = await import('node:net');
    const port = await new Promise<number>((res) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const a = s.address() as { port: number };
        s.close(() => res(a.port));
      });
    });
    const unreachable = await runCli(['push', local, `ssh://127.0.0.1:${port}/tmp/x`, '-F', server.srv.sshConfig]);
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr.split('\n')[0]).toMatch(/^wsync: cannot connect to 127\.0\.0\.1:\d+: connection refused$/);

    const otherKey = join(server.work, 'other_key');
    keygen(otherKey);
    const authCfg = configWith('auth_config', [`IdentityFile ${otherKey}`, `UserKnownHostsFile ${server.srv.knownHosts}`]);
    const auth = await runCli(['push', local, `${server.srv.alias}:${join(server.work, 'auth-remote')}`, '-F', authCfg]);
    expect(auth.code).toBe(2);
    expect(auth.stderr.split('\n')[0]).toMatch(/^wsync: authentication to .* failed/);

    // /sys refuses new entries even to root.
    const denied = await runCli(['push', local, `${server.srv.alias}:/sys/wsync-denied/x`, '-F', server.srv.sshConfig]);
    expect(denied.code).toBe(2);
    expect(denied.stderr.split('\n')[0]).toMatch(/^wsync: cannot create .*\/sys\/wsync-denied: permission denied$/);
  });

  it('reaches the host through ProxyJump and through ProxyCommand', async () => {
    const local = join(server.work, 'jump-local');
    makeTree(local, { 'a.txt': 'through a jump host' });
    const cfg = join(server.work, 'jump_config');
    const common = [`  User ${server.srv.user}`, `  IdentityFile ${server.srv.userKey}`, '  IdentitiesOnly yes', `  UserKnownHostsFile ${server.srv.knownHosts}`];
    writeFileSync(
      cfg,
      [
        'Host jumpbox', '  HostName 127.0.0.1', `  Port ${server.srv.port}`, ...common,
        'Host behind-jump', '  HostName 127.0.0.1', `  Port ${server.srv.port}`, '  ProxyJump jumpbox', ...common,
        'Host behind-command', '  HostName 127.0.0.1', `  Port ${server.srv.port}`, `  ProxyCommand ssh -F ${cfg} -W %h:%p jumpbox`, ...common,
        '',
      ].join('\n'),
    );
    const logins = () => (server.srv.log().match(/Accepted publickey/g) ?? []).length;
    for (const host of ['behind-jump', 'behind-command']) {
      const remote = join(server.work, `${host}-remote`);
      const before = logins();
      const r = await runCli(['push', local, `${host}:${remote}`, '-F', cfg]);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('through a jump host');
      // Two logins per run: one to the jump host, one to the target through it.
      expect(logins() - before, host).toBe(2);
    }
  });

  it('authenticates with ssh-agent; an encrypted key without a TTY fails clearly', async () => {
    const local = join(server.work, 'agent-local');
    makeTree(local, { 'a.txt': 'agent' });
    const sock = join(server.work, 'agent.sock');
    const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 50 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      execFileSync('ssh-add', [server.srv.userKey], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
      // Only the public half is configured: the private key lives in the agent alone.
      const pubOnly = join(server.work, 'agent_id');
      writeFileSync(pubOnly + '.pub', readFileSync(server.srv.userKey + '.pub'));
      const cfg = configWith('agent_config', [`IdentityFile ${pubOnly}`, `UserKnownHostsFile ${server.srv.knownHosts}`]);
      const r = await runCli(['push', local, `${server.srv.alias}:${join(server.work, 'agent-remote')}`, '-F', cfg], { env: { SSH_AUTH_SOCK: sock } });
      expect(r.code, r.stderr).toBe(0);
    } finally {
      agent.kill();
    }
    const enc = join(server.work, 'encrypted_key');
    keygen(enc, { passphrase: 'correct horse' });
    const authKeys = readFileSync(join(server.srv.dir, 'authorized_keys'), 'utf8');
    writeFileSync(join(server.srv.dir, 'authorized_keys'), authKeys + readFileSync(enc + '.pub', 'utf8'));
    const cfg = configWith('enc_config', [`IdentityFile ${enc}`, `UserKnownHostsFile ${server.srv.knownHosts}`]);
    const r = await runCli(['push', local, `${server.srv.alias}:${join(server.work, 'enc-remote')}`, '-F', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toMatch(/^wsync: authentication to .* failed: the key .*encrypted_key is encrypted and there is no terminal/);
    expect(r.stderr).toMatch(/ssh-add/);
  });

  it('refuses an unknown host key without a TTY, records it with --accept-new, refuses a changed key', async () => {
    const local = join(server.work, 'hk-local');
    makeTree(local, { 'a.txt': 'a' });
    const kh = join(server.work, 'hk_known_hosts');
    const cfg = configWith('hk_config', [`IdentityFile ${server.srv.userKey}`, `UserKnownHostsFile ${kh}`]);
    const target = `${server.srv.alias}:${join(server.work, 'hk-remote')}`;
    const refused = await runCli(['push', local, target, '-F', cfg]);
    expect(refused.code).toBe(2);
    const fp = execFileSync('ssh-keygen', ['-lf', server.srv.hostKeyPub], { encoding: 'utf8' }).split(' ')[1];
    expect(refused.stderr).toContain(fp);
    expect(refused.stderr).toContain('--accept-new');
    expect(existsSync(join(server.work, 'hk-remote'))).toBe(false);

    const accepted = await runCli(['push', '--accept-new', local, target, '-F', cfg]);
    expect(accepted.code, accepted.stderr).toBe(0);
    expect(execFileSync('ssh-keygen', ['-F', `[127.0.0.1]:${server.srv.port}`, '-f', kh], { encoding: 'utf8' })).toMatch(/ssh-ed25519/);
    expect((await runCli(['push', local, target, '-F', cfg])).code).toBe(0);

    // Same host, another ed25519 key on file: an attacker or a reinstall. Refused even with --accept-new.
    const fake = join(server.work, 'fake_host');
    keygen(fake);
    writeFileSync(kh, `[127.0.0.1]:${server.srv.port} ${readFileSync(fake + '.pub', 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const changed = await runCli(['push', '--accept-new', local, target, '-F', cfg]);
    expect(changed.code).toBe(2);
    expect(changed.stderr).toMatch(/HOST KEY CHANGED/);
    // The hint names the known_hosts file in use: plain `ssh-keygen -R` would edit ~/.ssh/known_hosts instead.
    expect(changed.stderr).toContain(`hint: this may be an attack. If the server was really re-installed, remove the old key with: ssh-keygen -f '${kh}' -R '[127.0.0.1]:${server.srv.port}'`);
    // Doing what it says (run through a shell, as pasted) clears the way for --accept-new.
    const advice = changed.stderr.match(/remove the old key with: (ssh-keygen .*)$/m)![1];
    execFileSync('sh', ['-c', advice], { stdio: 'ignore' });
    const after = await runCli(['push', '--accept-new', local, target, '-F', cfg]);
    expect(after.code, after.stderr).toBe(0);
  });

  it('on a terminal: asks about an unknown host key (no: refused and nothing recorded; yes: recorded) and for a key passphrase', async () => {
    const local = join(server.work, 'tty-local');
    makeTree(local, { 'a.txt': 'typed' });
    const kh = join(server.work, 'tty_known_hosts');
    const enc = join(server.work, 'tty_encrypted_key');
    keygen(enc, { passphrase: 'correct horse' });
    const authKeys = readFileSync(join(server.srv.dir, 'authorized_keys'), 'utf8');
    writeFileSync(join(server.srv.dir, 'authorized_keys'), authKeys + readFileSync(enc + '.pub', 'utf8'));
    const cfg = configWith('tty_config', [`IdentityFile ${enc}`, `UserKnownHostsFile ${kh}`]);
    const remote = join(server.work, 'tty-remote');
    const target = `${server.srv.alias}:${remote}`;
    const passphrase = { prompt: /Enter passphrase for key '.*tty_encrypted_key': /, answer: 'correct horse' };
    const hostKey = /Are you sure you want to continue connecting \(yes\/no\)\? /;
    const fp = execFileSync('ssh-keygen', ['-lf', server.srv.hostKeyPub], { encoding: 'utf8' }).split(' ')[1];

    const no = await runCliOnTty(['push', local, target, '-F', cfg], [passphrase, { prompt: hostKey, answer: 'no' }]);
    expect(no.code, no.output).toBe(2);
    expect(no.output).toContain(fp);
    expect(no.output).toMatch(/wsync: unknown host key/);
    expect(existsSync(kh) ? readFileSync(kh, 'utf8') : '').toBe('');
    expect(existsSync(remote)).toBe(false);

    const yes = await runCliOnTty(['push', local, target, '-F', cfg], [passphrase, { prompt: hostKey, answer: 'yes' }]);
    expect(yes.code, yes.output).toBe(0);
    expect(execFileSync('ssh-keygen', ['-F', `[127.0.0.1]:${server.srv.port}`, '-f', kh], { encoding: 'utf8' })).toMatch(/ssh-ed25519/);
    expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('typed');

    // Known now: only the passphrase is asked; a wrong one is asked again.
    const again = await runCliOnTty(['push', local, target, '-F', cfg], [
      { prompt: passphrase.prompt, answer: 'wrong' },
      { prompt: /Bad passphrase, try again for .*tty_encrypted_key: /, answer: 'correct horse' },
    ]);
    expect(again.code, again.output).toBe(0);
    expect(again.output).not.toMatch(/Are you sure/);

    // A person may take longer over the fingerprint than the connect timeout (here 2 s): the question pauses it.
    const slowCfg = configWith('tty_slow_config', [`IdentityFile ${enc}`, `UserKnownHostsFile ${join(server.work, 'tty_slow_known_hosts')}`, 'ConnectTimeout 2']);
    const slow = await runCliOnTty(['push', local, target, '-F', slowCfg], [passphrase, { prompt: hostKey, answer: 'yes', afterMs: 3000 }]);
    expect(slow.code, slow.output).toBe(0);
    for (const r of [no, yes, again, slow]) expect(r.output).not.toContain('correct horse');
  });

  it('on a terminal a progress line shows files, bytes, rate and ETA; with --json only JSON lines', async () => {
    const local = join(server.work, 'progress-local');
    makeTree(local, Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}.txt`, `file ${i}\n`.repeat(100)])));
    const shown = await runCliOnTty(['push', local, join(server.work, 'progress-remote')], []);
    expect(shown.code, shown.output).toBe(0);
    expect(shown.output).toMatch(/\r\x1b\[K50\/50 files {2}\S+ \S+\/\S+ \S+ {2}\S+ \S+\/s {2}ETA /);
    const json = await runCliOnTty(['push', '--json', local, join(server.work, 'progress-json')], []);
    expect(json.code, json.output).toBe(0);
    const lines = json.output.split(/\r?\n/).filter(Boolean);
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
  });

  it('a push killed mid-way leaves no partial file at a final path, and the rerun resumes and converges', async () => {
    const local = join(server.work, 'kill-local');
    const remote = join(server.work, 'kill-remote');
    mkdirSync(local, { recursive: true });
    for (let i = 0; i < 40; i++) writeFileSync(join(local, `f${String(i).padStart(2, '0')}.bin`), randomBytes(512 * 1024));
    writeFileSync(join(local, 'big.bin'), randomBytes(8 << 20));
    // A slow link so that the kill lands mid-transfer.
    const proxy = await startProxy({ targetPort: server.srv.port, delayMs: 5, rateBitsPerSec: 40e6 });
    try {
      const cfg = slowConfig('kill', proxy.port);
      const child = spawn(process.execPath, [WSYNC_BIN, 'push', '--json', '--concurrency', '4', local, `slow:${remote}`, '-F', cfg], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SSH_AUTH_SOCK: '' } });
      let done = 0;
      await new Promise<void>((resolve) => {
        child.stdout.on('data', (d: Buffer) => {
          done += d.toString().split('\n').filter((l) => l.includes('"action":"+"') && l.includes('"kind":"file"')).length;
          if (done >= 6) {
            child.kill('SIGKILL');
          }
        });
        child.on('close', () => resolve());
      });
      expect(done).toBeGreaterThanOrEqual(6);
      const finals = readdirSync(remote).filter((n) => n.endsWith('.bin'));
      expect(finals.length).toBeLessThan(41);
      for (const n of finals) expect(readFileSync(join(remote, n)).equals(readFileSync(join(local, n))), n).toBe(true);

      const rerun = await runCli(['push', '--json', local, `slow:${remote}`, '-F', cfg]);
      expect(rerun.code, rerun.stderr).toBe(0);
      const summary = JSON.parse(rerun.stdout.trim().split('\n').at(-1)!);
      expect(summary.stats.filesSent).toBe(41 - finals.length);
      expect(snapshot(remote)).toEqual(snapshot(local));
      expect(readdirSync(remote).filter((n) => n.includes('.wsync-'))).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('Ctrl-C during a push: the files in flight finish, the manifest records them, the lock goes, exit 130', async () => {
    const local = join(server.work, 'int-local');
    const remote = join(server.work, 'int-remote');
    mkdirSync(local, { recursive: true });
    for (let i = 0; i < 60; i++) writeFileSync(join(local, `f${String(i).padStart(2, '0')}.bin`), randomBytes(256 * 1024));
    const proxy = await startProxy({ targetPort: server.srv.port, delayMs: 5, rateBitsPerSec: 40e6 });
    try {
      const cfg = slowConfig('int', proxy.port);
      const child = spawn(process.execPath, [WSYNC_BIN, 'push', '--json', '--concurrency', '4', local, `slow:${remote}`, '-F', cfg], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SSH_AUTH_SOCK: '' } });
      let done = 0;
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const t0 = { at: 0 };
      const code = await new Promise<number | null>((resolve) => {
        child.stdout.on('data', (d: Buffer) => {
          done += d.toString().split('\n').filter((l) => l.includes('"action":"+"') && l.includes('"kind":"file"')).length;
          if (done >= 5 && !t0.at) {
            t0.at = Date.now();
            child.kill('SIGINT');
          }
        });
        child.on('exit', (c) => resolve(c));
      });
      expect(code, stderr).toBe(130);
      expect(Date.now() - t0.at).toBeLessThan(4000);
      expect(stderr).toMatch(/interrupted; finishing the files in flight/);
      expect(stderr).toMatch(/stopped before it was done/);
      expect(existsSync(join(remote, '.wsync/lock'))).toBe(false);
      const finals = readdirSync(remote).filter((n) => n.endsWith('.bin'));
      expect(finals.length).toBeGreaterThanOrEqual(5);
      expect(finals.length).toBeLessThan(60);
      for (const n of finals) expect(readFileSync(join(remote, n)).equals(readFileSync(join(local, n))), n).toBe(true);
      expect(readdirSync(remote).filter((n) => n.includes('.wsync-'))).toEqual([]);
      // Recorded on the target itself (not only in this machine's journal).
      const recorded = decodeManifest(readFileSync(join(remote, MANIFEST_PATH)), remote).entries;
      for (const n of finals) expect(recorded.has(n), n).toBe(true);
      const rerun = await runCli(['push', '--json', local, `slow:${remote}`, '-F', cfg]);
      expect(rerun.code, rerun.stderr).toBe(0);
      const summary = JSON.parse(rerun.stdout.trim().split('\n').at(-1)!);
      expect(summary.stats.filesSent).toBe(60 - finals.length);
      expect(snapshot(remote)).toEqual(snapshot(local));
    } finally {
      await proxy.close();
    }
  });

  it('two pushes at once: one runs, the other fails clearly naming the lock holder', async () => {
    const local = join(server.work, 'lock-local');
    const remote = join(server.work, 'lock-remote');
    makeTree(local, { 'a.txt': 'a' });
    mkdirSync(join(remote, '.wsync'), { recursive: true });
    writeFileSync(join(remote, '.wsync/lock'), JSON.stringify({ host: 'other-host', pid: 4242, time: '2026-01-01T00:00:00Z', op: 'push', user: 'me' }));
    const r = await runCli(['push', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toMatch(/is locked: push by me@other-host \(pid 4242\) since 2026-01-01T00:00:00Z/);
    expect(r.stderr).toMatch(/--break-lock/);
    expect(existsSync(join(remote, 'a.txt'))).toBe(false);
    const broken = await runCli(['push', '--break-lock', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(broken.code).toBe(0);
    expect(existsSync(join(remote, '.wsync/lock'))).toBe(false);
  });
});

/**
 * Starts a real OpenSSH sshd on 127.0.0.1 for the test suite and the benchmark: random port, temp host key,
 * temp authorized_keys, internal-sftp, running as the current user. Nothing here mocks SFTP.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';

export interface TestServer {
  host: string;
  port: number;
  user: string;
  /** Temp directory holding keys, configs and logs; removed by stop(). */
  dir: string;
  /** The ssh_config alias that reaches this server with the test key and a pre-filled known_hosts. */
  alias: string;
  sshConfig: string;
  knownHosts: string;
  userKey: string;
  hostKeyPub: string;
  /** A scratch directory for remote trees (absolute). */
  remoteRoot: string;
  log(): string;
  stop(): Promise<void>;
}

export interface SshdOptions {
  /** Extra flags for internal-sftp, e.g. '-P copy-data' to hide that extension. */
  sftpFlags?: string;
  extraConfig?: string;
  alias?: string;
}

const SSHD_CANDIDATES = ['/usr/sbin/sshd', '/usr/local/sbin/sshd', '/usr/bin/sshd'];

export function findSshd(): string {
  for (const p of SSHD_CANDIDATES) if (existsSync(p)) return p;
  throw new Error('sshd not found: install openssh-server (Debian: apt-get install openssh-server)');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function waitForBanner(port: number, deadlineMs: number): Promise<boolean> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      const done = (v: boolean) => {
        sock.destroy();
        resolve(v);
      };
      sock.once('data', (d) => done(d.toString().startsWith('SSH-')));
      sock.once('error', () => done(false));
      sock.setTimeout(1000, () => done(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

export function keygen(path: string, opts: { type?: string; passphrase?: string; comment?: string } = {}): void {
  execFileSync('ssh-keygen', [
    '-q', '-t', opts.type ?? 'ed25519', '-N', opts.passphrase ?? '', '-C', opts.comment ?? 'wsync-test', '-f', path,
  ]);
}

/** known_hosts and ssh_config for a test server: the alias and the bare address reach it with the test key. */
function writeClientConfig(dir: string, alias: string, port: number, user: string, hostKeyPub: string, userKey: string) {
  const hostPub = readFileSync(hostKeyPub, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPub}\n`);
  const sshConfig = join(dir, 'ssh_config');
  writeFileSync(
    sshConfig,
    [
      // The alias, and the bare address for ssh://user@127.0.0.1:port targets.
      `Host ${alias} 127.0.0.1`,
      '  HostName 127.0.0.1',
      `  Port ${port}`,
      `  User ${user}`,
      `  IdentityFile ${userKey}`,
      '  IdentitiesOnly yes',
      `  UserKnownHostsFile ${knownHosts}`,
      '  StrictHostKeyChecking yes',
      '',
    ].join('\n'),
  );
  return { knownHosts, sshConfig };
}

export async function startSshd(opts: SshdOptions = {}): Promise<TestServer> {
  const sshd = findSshd();
  const dir = mkdtempSync(join(tmpdir(), 'wsync-sshd-'));
  const user = userInfo().username;
  const hostKey = join(dir, 'host_ed25519');
  const userKey = join(dir, 'id_ed25519');
  keygen(hostKey, { comment: 'wsync-test-host' });
  keygen(userKey);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(userKey + '.pub'), { mode: 0o600 });
  const remoteRoot = join(dir, 'remote');
  mkdirSync(remoteRoot);
  // sshd running as root insists on its privilege-separation directory.
  if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const alias = opts.alias ?? 'wsync-test';
  const logFile = join(dir, 'sshd.log');

  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const cfg = join(dir, 'sshd_config');
    writeFileSync(
      cfg,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${authorized}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        'UsePAM no',
        'StrictModes no',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        'MaxSessions 32',
        'MaxStartups 64',
        'LogLevel VERBOSE',
        `Subsystem sftp internal-sftp${opts.sftpFlags ? ' ' + opts.sftpFlags : ''}`,
        opts.extraConfig ?? '',
      ].join('\n') + '\n',
    );
    const child: ChildProcess = spawn(sshd, ['-D', '-e', '-f', cfg, '-E', logFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (d) => (stderr += d.toString()));
    const up = await waitForBanner(port, 10_000);
    if (!up) {
      child.kill('SIGKILL');
      if (attempt === 4) throw new Error(`sshd did not start: ${stderr}\n${existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''}`);
      continue;
    }
    const { knownHosts, sshConfig } = writeClientConfig(dir, alias, port, user, hostKey + '.pub', userKey);
    return {
      host: '127.0.0.1',
      port,
      user,
      dir,
      alias,
      sshConfig,
      knownHosts,
      userKey,
      hostKeyPub: hostKey + '.pub',
      remoteRoot,
      log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
      stop: async () => {
        if (child.exitCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  throw new Error('unreachable');
}

/** The SFTP servers the conformance suite runs against: OpenSSH, dropbear (with OpenSSH's sftp-server), ProFTPD. */
export type ServerKind = 'openssh' | 'dropbear' | 'proftpd';
export const SERVER_KINDS: readonly ServerKind[] = ['openssh', 'dropbear', 'proftpd'];

export function startServer(kind: ServerKind, alias?: string): Promise<TestServer> {
  if (kind === 'dropbear') return startDropbear(alias);
  if (kind === 'proftpd') return startProftpd(alias);
  return startSshd({ alias });
}

function need(path: string, pkg: string): string {
  if (!existsSync(path)) throw new Error(`${path} not found: install ${pkg} (Debian: apt-get install ${pkg})`);
  return path;
}

/** Starts `start(port)` on free ports until one serves an SSH banner; returns the port and the process. */
async function launch(
  what: string,
  logText: () => string,
  start: (port: number) => ChildProcess,
): Promise<{ port: number; child: ChildProcess }> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = start(port);
    let stderr = '';
    child.stderr?.on('data', (d) => (stderr += d.toString()));
    if (await waitForBanner(port, 10_000)) return { port, child };
    child.kill('SIGKILL');
    if (attempt === 4) throw new Error(`${what} did not start: ${stderr}\n${logText()}`);
  }
}

function stopper(child: ChildProcess, dir: string, after?: () => void): () => Promise<void> {
  return async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    }
    after?.();
    rmSync(dir, { recursive: true, force: true });
  };
}

/** A container without CAP_SYS_ADMIN refuses mount namespaces even to root. */
function canUnshareMounts(): boolean {
  try {
    execFileSync('unshare', ['-m', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * dropbear 2022.83 as Debian packages it (dropbear-bin), serving SFTP through OpenSSH's sftp-server at
 * /usr/lib/sftp-server (openssh-sftp-server). dropbear reads only ~/.ssh/authorized_keys of the user logging in:
 * as root it runs in its own mount namespace with a temp ~/.ssh bound over the real one (nothing of the real one is
 * touched); elsewhere the test key is appended to ~/.ssh/authorized_keys and removed again by stop().
 */
export async function startDropbear(alias = 'wsync-test'): Promise<TestServer> {
  const dropbear = need('/usr/sbin/dropbear', 'dropbear-bin');
  need('/usr/lib/sftp-server', 'openssh-sftp-server');
  const dir = mkdtempSync(join(tmpdir(), 'wsync-dropbear-'));
  const user = userInfo().username;
  const home = userInfo().homedir;
  const userKey = join(dir, 'id_ed25519');
  keygen(userKey);
  const hostKey = join(dir, 'host_ed25519');
  execFileSync('dropbearkey', ['-t', 'ed25519', '-f', hostKey], { stdio: 'ignore' });
  writeFileSync(hostKey + '.pub', execFileSync('dropbearkey', ['-y', '-f', hostKey], { encoding: 'utf8' }).split('\n').find((l) => l.startsWith('ssh-'))!);
  const remoteRoot = join(dir, 'remote');
  mkdirSync(remoteRoot);
  const pub = readFileSync(userKey + '.pub', 'utf8').trim();
  const logFile = join(dir, 'dropbear.log');
  let cleanup: (() => void) | undefined;
  let wrap: (args: string[]) => [string, string[]];
  if (process.getuid?.() === 0 && canUnshareMounts()) {
    const ssh = join(dir, 'dot-ssh');
    mkdirSync(ssh, { mode: 0o700 });
    writeFileSync(join(ssh, 'authorized_keys'), pub + '\n', { mode: 0o600 });
    mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 });
    wrap = (args) => ['unshare', ['-m', 'sh', '-c', `mount --bind "$0" "$1/.ssh" && shift && exec "$@"`, ssh, home, ...args]];
  } else {
    const ak = join(home, '.ssh', 'authorized_keys');
    mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 });
    const line = `${pub} wsync-test-${process.pid}-${Date.now()}`;
    const had = existsSync(ak);
    writeFileSync(ak, (had ? readFileSync(ak, 'utf8').replace(/\n?$/, '\n') : '') + line + '\n', { mode: 0o600 });
    cleanup = () => {
      const rest = readFileSync(ak, 'utf8').split('\n').filter((l) => l !== line).join('\n');
      if (!had && rest.trim() === '') rmSync(ak, { force: true });
      else writeFileSync(ak, rest);
    };
    wrap = (args) => [args[0], args.slice(1)];
  }
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const { port, child } = await launch('dropbear', readLog, (p) => {
    const [cmd, args] = wrap([dropbear, '-F', '-E', '-s', '-p', `127.0.0.1:${p}`, '-r', hostKey, '-P', join(dir, 'pid')]);
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    // dropbear logs to stderr (-E): keep it for log() as well as for a failed start.
    c.stderr?.on('data', (d) => writeFileSync(logFile, d, { flag: 'a' }));
    return c;
  });
  const { knownHosts, sshConfig } = writeClientConfig(dir, alias, port, user, hostKey + '.pub', userKey);
  return {
    host: '127.0.0.1', port, user, dir, alias, sshConfig, knownHosts, userKey, hostKeyPub: hostKey + '.pub', remoteRoot,
    log: readLog,
    stop: stopper(child, dir, cleanup),
  };
}

/**
 * ProFTPD 1.3.8 mod_sftp (proftpd-core, proftpd-mod-crypto): its own SFTP implementation, one process per
 * connection. Keys in RFC 4716 form (`ssh-keygen -e`); the session starts in `home/` of the temp directory, so a
 * relative path the server resolves lands there, where a test can see it.
 */
export async function startProftpd(alias = 'wsync-test'): Promise<TestServer> {
  const proftpd = need('/usr/sbin/proftpd', 'proftpd-core');
  need('/usr/lib/proftpd/mod_sftp.so', 'proftpd-mod-crypto');
  const dir = mkdtempSync(join(tmpdir(), 'wsync-proftpd-'));
  const user = userInfo().username;
  const group = execFileSync('id', ['-gn'], { encoding: 'utf8' }).trim();
  const userKey = join(dir, 'id_ed25519');
  keygen(userKey);
  const hostKey = join(dir, 'host_rsa');
  execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-m', 'PEM', '-N', '', '-C', 'wsync-test-host', '-f', hostKey]);
  writeFileSync(join(dir, 'authorized_keys.rfc4716'), execFileSync('ssh-keygen', ['-e', '-f', userKey + '.pub']));
  const remoteRoot = join(dir, 'remote');
  mkdirSync(remoteRoot);
  mkdirSync(join(dir, 'home'));
  const logFile = join(dir, 'sftp.log');
  const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  const { port, child } = await launch('proftpd', readLog, (p) => {
    const cfg = join(dir, 'proftpd.conf');
    writeFileSync(
      cfg,
      [
        'ServerName "wsync-test"',
        'ServerType standalone',
        `Port ${p}`,
        'DefaultAddress 127.0.0.1',
        'SocketBindTight on',
        'UseIPv6 off',
        `User ${user}`,
        `Group ${group}`,
        `PidFile ${join(dir, 'proftpd.pid')}`,
        `ScoreboardFile ${join(dir, 'scoreboard')}`,
        'WtmpLog off',
        'RootLogin on',
        'UseFtpUsers off',
        'RequireValidShell off',
        'UseReverseDNS off',
        `SystemLog ${join(dir, 'system.log')}`,
        'TransferLog none',
        `DefaultChdir ${join(dir, 'home')}`,
        'ModulePath /usr/lib/proftpd',
        'LoadModule mod_sftp.c',
        'AllowOverwrite on',
        'MaxInstances 64',
        '<IfModule mod_delay.c>',
        '  DelayEngine off',
        '</IfModule>',
        'SFTPEngine on',
        `SFTPLog ${logFile}`,
        `SFTPHostKey ${hostKey}`,
        'SFTPAuthMethods publickey',
        `SFTPAuthorizedUserKeys file:${join(dir, 'authorized_keys.rfc4716')}`,
        'SFTPCompression delayed',
        '',
      ].join('\n'),
    );
    return spawn(proftpd, ['-n', '-q', '-c', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  });
  const { knownHosts, sshConfig } = writeClientConfig(dir, alias, port, user, hostKey + '.pub', userKey);
  return {
    host: '127.0.0.1', port, user, dir, alias, sshConfig, knownHosts, userKey, hostKeyPub: hostKey + '.pub', remoteRoot,
    log: readLog,
    stop: stopper(child, dir),
  };
}

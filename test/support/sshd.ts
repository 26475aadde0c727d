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
    const hostPub = readFileSync(hostKey + '.pub', 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
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

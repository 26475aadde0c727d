/**
 * Every hook into ssh2's internals (src/ssh/ssh2-internals.ts) applies on the ssh2 version package.json pins,
 * against a real sshd; no other source file touches a private member; a missing extension list fails loudly.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import ssh2 from 'ssh2';
import type { SFTPWrapper } from 'ssh2';
import { connect, type SshSession } from '../../src/ssh/connect.js';
import { SSH2_CHECKED, connectionStream, pauseHandshakeTimer, sftpExtensions } from '../../src/ssh/ssh2-internals.js';
import { startProxy } from '../../bench/proxy.js';
import { writeProxyConfig } from '../../bench/harness.js';
import { useServer } from '../support/server.js';
import { WsyncError } from '../../src/errors.js';

const env = useServer('wsync-hooks-');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});
const ROOT = join(fileURLToPath(import.meta.url), '../../..');

async function open(configFile: string, compress: 'auto' | 'on' | 'off'): Promise<SshSession> {
  const s = await connect(env.srv.alias, { configFile, interactive: false, compress, channels: 3 });
  cleanups.push(() => s.close());
  return s;
}

describe('ssh2 internals', () => {
  it('ssh2 is pinned to the exact version the hooks were checked against, and that version is installed', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(pkg.dependencies.ssh2).toBe(SSH2_CHECKED);
    const req = createRequire(join(ROOT, 'package.json'));
    const installed = JSON.parse(readFileSync(req.resolve('ssh2/package.json'), 'utf8')) as { version: string };
    expect(installed.version).toBe(SSH2_CHECKED);
  });

  it('with compression on: every hook of the connection and its channels applied', async () => {
    const s = await open(env.srv.sshConfig, 'on');
    expect(s.hooks).toEqual({
      greeting: true,
      signWithoutQuery: true,
      deflater: true,
      deflaterWatch: true,
      earlyReady: true,
      readiedEarly: true,
      coalescing: true,
    });
    // The stream the liveness check reads (connect.ts startLiveness): a socket with its write counters.
    const sock = connectionStream(s.client);
    expect(sock).toBeDefined();
    expect(typeof sock!.bytesWritten).toBe('number');
    expect(typeof sock!.writableLength).toBe('number');
    expect(s.channels).toHaveLength(3);
    expect(s.channels[0].has('posix-rename@openssh.com')).toBe(true);
    expect(s.channels[0].has('fsync@openssh.com')).toBe(true);
  });

  it('auto on a WAN link: the compression offer is rewritten after the greeting', async () => {
    const proxy = await startProxy({ targetPort: env.srv.port, delayMs: 30, rateBitsPerSec: 0 });
    cleanups.push(() => proxy.close());
    const dir = join(env.work, `hooks-proxy-${proxy.port}`);
    mkdirSync(dir);
    const cfg = writeProxyConfig(env.srv, proxy.port, dir);
    const s = await open(cfg, 'auto');
    expect(s.hooks.compressionOffer).toBe(true);
    expect(s.hooks.deflater).toBe(true);
    expect(Object.values(s.hooks).every(Boolean)).toBe(true);
  });

  it('the handshake timer is found and can be stopped while a host key question waits', async () => {
    const client = new ssh2.Client();
    let resumed: boolean | undefined;
    await new Promise<void>((resolve, reject) => {
      client.on('ready', () => resolve());
      client.on('error', reject);
      client.connect({
        host: '127.0.0.1',
        port: env.srv.port,
        username: env.srv.user,
        privateKey: readFileSync(env.srv.userKey),
        // Shorter than the question below: only a stopped timer lets the connection live through it.
        readyTimeout: 1500,
        hostVerifier: ((_key: Buffer, cb: (ok: boolean) => void) => {
          const resume = pauseHandshakeTimer(client, 5000);
          resumed = resume !== undefined;
          setTimeout(() => {
            resume?.();
            cb(true);
          }, 2500);
        }) as never,
      });
    });
    client.end();
    expect(resumed).toBe(true);
  });

  it('an ssh2 without the SFTP extension list is an error, never "no extensions" (fsync and posix-rename off)', () => {
    let err: unknown;
    try {
      sftpExtensions({} as SFTPWrapper);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(WsyncError);
    expect((err as WsyncError).code).toBe('E_INTERNAL');
    expect((err as Error).message).toMatch(new RegExp(`ssh2 ${SSH2_CHECKED.replace(/\./g, '\\.')}`));
  });

  it('no source file but ssh2-internals.ts reaches into a private member', () => {
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p);
        else if (name.endsWith('.ts') && !name.endsWith('.test.ts') && name !== 'ssh2-internals.ts') {
          readFileSync(p, 'utf8')
            .split('\n')
            .forEach((line, i) => {
              if (/(\.|\?\.)_[A-Za-z]/.test(line) || /\b_[A-Za-z]\w*\??:/.test(line)) offenders.push(`${p}:${i + 1}: ${line.trim()}`);
            });
        }
      }
    };
    walk(join(ROOT, 'src'));
    expect(offenders).toEqual([]);
  });
});

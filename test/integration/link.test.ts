/**
 * How wsync uses the SSH link, against a real sshd (directly, and through the benchmark's WAN proxy): compression
 * chosen by link (auto), forced on or off, and SFTP requests packed into few SSH packets.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { join } from 'node:path';
import { appendFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { connect, type SshSession } from '../../src/ssh/connect.js';
import { push } from '../../src/api.js';
import { SftpTransport } from '../../src/transport/sftp/sftp.js';
import { startProxy, type Proxy } from '../../bench/proxy.js';
import { writeProxyConfig } from '../../bench/harness.js';
import { useServer } from '../support/server.js';
import { makeTree, snapshot, type Spec } from '../support/trees.js';
import { keygen } from '../support/sshd.js';

const env = useServer('wsync-link-');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

interface Negotiated {
  cs: { compress: string };
  sc: { compress: string };
}
const negotiated = (s: SshSession) => (s.client as unknown as { _protocol: { _kex: { negotiated: Negotiated } } })._protocol._kex.negotiated;

async function open(configFile: string, compress: 'auto' | 'on' | 'off', compressReplies = false): Promise<SshSession> {
  const s = await connect(env.srv.alias, { configFile, interactive: false, compress, compressReplies, channels: 1 });
  cleanups.push(() => s.close());
  return s;
}

async function wan(delayMs: number): Promise<{ proxy: Proxy; cfg: string }> {
  const proxy = await startProxy({ targetPort: env.srv.port, delayMs, rateBitsPerSec: 0 });
  cleanups.push(() => proxy.close());
  const dir = join(env.work, `proxy-${proxy.port}`);
  mkdirSync(dir);
  return { proxy, cfg: writeProxyConfig(env.srv, proxy.port, dir) };
}

/** ~400 kB of source-like text: compresses several times over. */
function textTree(root: string): number {
  const spec: Spec = {};
  let bytes = 0;
  for (let i = 0; i < 50; i++) {
    const body = Array.from({ length: 200 }, (_, j) => `export const value${i}_${j} = compute(${j}, 'file ${i}');\n`).join('');
    spec[`src/m${i}.ts`] = body;
    bytes += Buffer.byteLength(body);
  }
  makeTree(root, spec);
  return bytes;
}

describe('SSH compression', () => {
  it('auto on a LAN-fast link: not compressed either way', async () => {
    const s = await open(env.srv.sshConfig, 'auto', true);
    // Loopback answers in a few ms, but a machine busy with the rest of the suite can hold sshd's fork past the
    // threshold: then the link counts as slow, which is what auto mode promises for that measurement.
    const slow = s.compression.greetingMs! >= 20;
    expect(negotiated(s).cs.compress).toBe(slow ? 'zlib@openssh.com' : 'none');
    expect(negotiated(s).sc.compress).toBe(slow ? 'zlib@openssh.com' : 'none');
    expect(s.compression.level).toBe(slow ? 1 : undefined);
  });

  it('on: both directions, what we send at level 1', async () => {
    const s = await open(env.srv.sshConfig, 'on');
    expect(negotiated(s).cs.compress).toMatch(/^zlib/);
    expect(negotiated(s).sc.compress).toMatch(/^zlib/);
    expect(s.compression.level).toBe(1);
  });

  it('off: none either way', async () => {
    const s = await open(env.srv.sshConfig, 'off');
    expect(negotiated(s).cs.compress).toBe('none');
    expect(negotiated(s).sc.compress).toBe('none');
    expect(s.compression.level).toBeUndefined();
  });

  it('auto through a 40 ms RTT link: level 1, and a push arrives intact in fewer bytes than it carries', async () => {
    const { proxy, cfg } = await wan(20);
    const s = await open(cfg, 'auto');
    expect(s.compression.greetingMs).toBeGreaterThanOrEqual(40);
    expect(s.compression.level).toBe(1);
    expect(negotiated(s).cs.compress).toBe('zlib@openssh.com');
    // Without `replies` (a pull): what the server sends stays as it is.
    expect(negotiated(s).sc.compress).toBe('none');
    const r = await open(cfg, 'auto', true);
    expect(negotiated(r).sc.compress).toBe('zlib@openssh.com');

    const local = join(env.work, 'auto-src');
    const bytes = textTree(local);
    proxy.resetCounters();
    const res = await push(local, `${env.srv.alias}:${env.srv.remoteRoot}/auto`, { sshConfig: cfg });
    expect(res.ok).toBe(true);
    expect(snapshot(join(env.srv.remoteRoot, 'auto'), { skip: (rel) => rel.startsWith('.wsync') })).toEqual(snapshot(local));
    expect(proxy.bytesUp()).toBeLessThan(bytes / 3);
  });

  it('on that link, data that does not compress is sent stored, and compression resumes when it pays again', async () => {
    const { cfg } = await wan(20);
    const s = await open(cfg, 'auto');
    expect(s.compression.level).toBe(1);
    const dir = join(env.srv.remoteRoot, 'adapt');
    mkdirSync(dir);
    const t = new SftpTransport(s.channels, dir, 'adapt', async () => undefined);
    const put = async (rel: string, data: Buffer) => {
      await t.writeFile(rel, (async function* () {
        for (let off = 0; off < data.length; off += 1 << 20) yield data.subarray(off, off + (1 << 20));
      })(), { size: data.length, mtime: 1_700_000_000, mode: 0o644 });
      expect(readFileSync(join(dir, rel)).equals(data)).toBe(true);
    };
    const noise = randomBytes(12 << 20);
    await put('noise.bin', noise);
    const afterNoise = s.compression.stats!();
    expect(afterNoise.level).toBe(0);
    // Stored after the first 1 MiB window: barely more bytes out than in.
    expect(afterNoise.bytesOut).toBeLessThan(afterNoise.bytesIn * 1.01);
    const text = Buffer.from('const answer = compute(42); // the same line, again and again\n'.repeat(300_000));
    await put('text.ts', text);
    const afterText = s.compression.stats!();
    expect(afterText.level).toBe(1);
    expect(afterText.bytesOut - afterNoise.bytesOut).toBeLessThan((afterText.bytesIn - afterNoise.bytesIn) / 2);
  });

  it('--no-compress through the same link: the bytes go as they are', async () => {
    const { proxy, cfg } = await wan(20);
    const local = join(env.work, 'off-src');
    const bytes = textTree(local);
    proxy.resetCounters();
    const r = await push(local, `${env.srv.alias}:${env.srv.remoteRoot}/off`, { sshConfig: cfg, compress: false });
    expect(r.ok).toBe(true);
    expect(snapshot(join(env.srv.remoteRoot, 'off'), { skip: (rel) => rel.startsWith('.wsync') })).toEqual(snapshot(local));
    expect(proxy.bytesUp()).toBeGreaterThan(bytes);
  });
});

describe('SFTP request packing', () => {
  it('a burst of requests on one channel leaves in a few SSH packets, and every answer is right', async () => {
    const s = await open(env.srv.sshConfig, 'off');
    const ch = s.channels[0];
    // The coalescer wraps ssh2's protocol object; counting at the object itself sees the packets that leave.
    const proto = (s.client as unknown as { _protocol: { channelData: (...a: unknown[]) => void } })._protocol;
    const real = proto.channelData;
    let packets = 0;
    proto.channelData = function (this: unknown, ...a: unknown[]) {
      packets++;
      return real.apply(this, a);
    };
    const dir = join(env.srv.remoteRoot, 'burst');
    mkdirSync(dir);
    makeTree(dir, Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}`, 'x'.repeat(i)])));
    const sizes = await Promise.all(Array.from({ length: 100 }, (_, i) => ch.lstat(`${dir}/f${i}`).then((st) => st.size)));
    expect(sizes).toEqual(Array.from({ length: 100 }, (_, i) => i));
    // 100 LSTATs of ~60 bytes each fit in one 32 KiB packet; allow for a turn boundary or two.
    expect(packets).toBeGreaterThan(0);
    expect(packets).toBeLessThanOrEqual(3);
  });
});

describe('key authentication (a key file is signed with at once, as OpenSSH does)', () => {
  /** The test config with these identity files instead of the test key. */
  const configWith = (name: string, keys: string[]): string => {
    const cfg = readFileSync(env.srv.sshConfig, 'utf8').replace(/^\s*IdentityFile .*\n/m, keys.map((k) => `  IdentityFile ${k}\n`).join(''));
    const p = join(env.work, name);
    writeFileSync(p, cfg);
    return p;
  };

  for (const type of ['rsa', 'ecdsa', 'ed25519']) {
    it(`${type}: accepted`, async () => {
      const key = join(env.work, `id_${type}`);
      keygen(key, { type });
      appendFileSync(join(env.srv.dir, 'authorized_keys'), readFileSync(key + '.pub'));
      const s = await open(configWith(`cfg_${type}`, [key]), 'off');
      expect(s.channels.length).toBeGreaterThan(0);
    });
  }

  it('a key the server refuses, then one it takes: the second signs in', async () => {
    const stranger = join(env.work, 'id_stranger');
    keygen(stranger);
    const s = await open(configWith('cfg_two', [stranger, env.srv.userKey]), 'off');
    expect(s.channels.length).toBeGreaterThan(0);
  });
});

describe('SFTP channel start', () => {
  it('channels are handed out before the server states its limits, which are applied when they come', async () => {
    const { cfg } = await wan(20);
    const s = await connect(env.srv.alias, { configFile: cfg, interactive: false, compress: 'off', channels: 2 });
    cleanups.push(() => s.close());
    // Ready one round trip (40 ms here) before the limits@openssh.com answer: still outstanding now.
    const pending = await Promise.all(s.channels.map((ch) => Promise.race([ch.limits.then(() => false), Promise.resolve(true)])));
    expect(pending).toEqual([true, true]);
    // Usable at once, with ssh2's defaults for OpenSSH; a read bigger than any request size comes back whole.
    const t = new SftpTransport(s.channels, env.work, 'test', async () => undefined);
    const data = randomBytes(1_500_000);
    writeFileSync(join(env.work, 'early.bin'), data);
    expect((await t.readFile('early.bin'))!.equals(data)).toBe(true);
    await Promise.all(s.channels.map((ch) => ch.limits));
    // OpenSSH's sftp-server: 256 KiB packets, reads and writes a little under that, and its handle limit.
    for (const ch of s.channels) {
      expect(ch.maxRead).toBeGreaterThan(200_000);
      expect(ch.maxRead).toBeLessThanOrEqual(256 * 1024);
      expect(ch.maxWrite).toBeGreaterThan(200_000);
      expect(ch.maxOpenHandles).toBeGreaterThan(0);
      expect((ch.sftp as unknown as { maxOpenHandles?: number }).maxOpenHandles, 'the answer was applied').toBeDefined();
    }
  });
});

describe('SFTP without the limits extension (OpenSSH before 8.6)', () => {
  it('reads ask for at most 64 KiB, which such servers answer whole; files of any size read back intact', async () => {
    const { startSshd } = await import('../support/sshd.js');
    const old = await startSshd({ sftpFlags: '-P limits' });
    cleanups.push(() => old.stop());
    const s = await connect(old.alias, { configFile: old.sshConfig, interactive: false, compress: 'off', channels: 1 });
    cleanups.push(() => s.close());
    const [ch] = s.channels;
    expect(ch!.has('limits@openssh.com')).toBe(false);
    await ch!.limits;
    expect(ch!.maxRead).toBe(64 * 1024);
    const t = new SftpTransport(s.channels, old.remoteRoot, 'old', async () => undefined);
    const data = randomBytes(1_000_003);
    writeFileSync(join(old.remoteRoot, 'm.bin'), data);
    expect((await t.readFile('m.bin'))!.equals(data)).toBe(true);
  });
});

import { describe, it, expect } from 'vitest';
import { SftpTransport } from '../../src/transport/sftp/sftp.js';
import type { SftpChannel } from '../../src/transport/sftp/channel.js';

/** Just enough of a channel for writeFile's failure path: every open answers a bare FAILURE (code 4). */
function fullChannel(free: number, opts: { statvfs?: boolean } = {}) {
  const calls = { statvfs: [] as string[] };
  const ch = {
    load: 0,
    maxOpenHandles: 64,
    maxRead: 32768,
    maxWrite: 32768,
    limits: Promise.resolve(),
    has: (ext: string, v = '1') => (ext === 'statvfs@openssh.com' ? opts.statvfs !== false && v === '2' : false),
    open: async () => {
      await new Promise((r) => setTimeout(r, 1));
      throw Object.assign(new Error('Failure'), { code: 4 });
    },
    mkdir: async () => undefined,
    statvfs: async (p: string) => {
      calls.statvfs.push(p);
      await new Promise((r) => setTimeout(r, 5));
      return { frsize: 4096, blocks: 512, bavail: free / 4096, files: 1000, favail: 900, namemax: 255 };
    },
  };
  return { ch: ch as unknown as SftpChannel, calls };
}

const write = (t: SftpTransport, rel: string) =>
  t.writeFile(rel, (async function* () {
    yield Buffer.from('x');
  })(), { mode: 0o644, mtime: 1, size: 1 });

describe('SftpTransport on a full disk', () => {
  it('says "no space left on the server" for each failed upload, with one statvfs per directory for all of them', async () => {
    const { ch, calls } = fullChannel(0);
    const t = new SftpTransport([ch], '/r', 'u@h', async () => undefined);
    const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => write(t, `d/f${i}`)));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason.message).toBe(`cannot create u@h:/r/d/f${results.indexOf(r)}: no space left on the server (u@h:/r/d: 0 bytes free)`);
      expect((r as PromiseRejectedResult).reason.code).toBe('E_REMOTE_IO');
    }
    expect(calls.statvfs).toEqual(['/r/d']);
    await write(t, 'e/g').catch(() => undefined);
    expect(calls.statvfs).toEqual(['/r/d', '/r/e']);
  });

  it('leaves the message alone when there is room, or no statvfs', async () => {
    const roomy = fullChannel(10 * 2 ** 30);
    await expect(write(new SftpTransport([roomy.ch], '/r', 'u@h', async () => undefined), 'a')).rejects.toThrow(/^cannot create u@h:\/r\/a: Failure$/);
    const old = fullChannel(0, { statvfs: false });
    await expect(write(new SftpTransport([old.ch], '/r', 'u@h', async () => undefined), 'a')).rejects.toThrow(/^cannot create u@h:\/r\/a: Failure$/);
    expect(old.calls.statvfs).toEqual([]);
  });
});

/**
 * Delta paths of the engine that a real server rarely takes: a rebuild the server fails, and a local file that
 * changes between being chunked and being sent. Local transports with a fault injected through a Proxy.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { FileReader, Transport } from '../../src/transport/types.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { runSync, type SyncEvent } from '../../src/transfer/engine.js';
import { WsyncError } from '../../src/errors.js';
import { tempDir } from '../support/trees.js';

const work = tempDir('wsync-delta-engine-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

function override(t: Transport, methods: Partial<Record<keyof Transport, unknown>>): Transport {
  return new Proxy(t, {
    get(target, prop) {
      if (prop in methods) return methods[prop as keyof Transport];
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

async function sync(local: Transport, remote: Transport, events: SyncEvent[] = []) {
  return runSync({
    direction: 'push', local, remote, delete: false, force: false, dryRun: false,
    filter: { gitignore: true, excludes: [], includes: [] }, concurrency: 16, lockWaitSeconds: 0, breakLock: false,
    cacheDir: join(work, 'cache'), onEvent: (e) => events.push(e),
  });
}

function setup(label: string) {
  const local = join(work, `${label}-local`);
  const remote = join(work, `${label}-remote`);
  mkdirSync(local, { recursive: true });
  const v1 = randomBytes(3_000_000);
  writeFileSync(join(local, 'f.bin'), v1);
  utimesSync(join(local, 'f.bin'), 1_700_000_000, 1_700_000_000);
  const v2 = Buffer.concat([v1.subarray(0, 1_000_000), randomBytes(5000), v1.subarray(1_000_000)]);
  return { local, remote, v1, v2 };
}

describe('engine delta paths', () => {
  it('falls back to a whole upload when the server fails a rebuild', async () => {
    const { local, remote, v2 } = setup('fallback');
    expect((await sync(new LocalTransport(local), new LocalTransport(remote))).ok).toBe(true);
    writeFileSync(join(local, 'f.bin'), v2);
    utimesSync(join(local, 'f.bin'), 1_700_000_100, 1_700_000_100);
    let tried = 0;
    const broken = override(new LocalTransport(remote), {
      rebuildFile: async () => {
        tried++;
        throw new WsyncError('E_REMOTE_IO', 'copy-data: Failure');
      },
    });
    const events: SyncEvent[] = [];
    const r = await sync(new LocalTransport(local), broken, events);
    expect(tried).toBe(1);
    expect(r.ok).toBe(true);
    expect(r.stats.filesDelta).toBe(0);
    expect(r.stats.bytesSent).toBe(v2.length);
    expect(events.some((e) => e.type === 'notice' && /delta transfer failed/.test(e.message))).toBe(true);
    expect(readFileSync(join(remote, 'f.bin')).equals(v2)).toBe(true);
  });

  it('a local file that changes after it was chunked fails that file and leaves the remote as it was', async () => {
    const { local, remote, v1, v2 } = setup('changing');
    expect((await sync(new LocalTransport(local), new LocalTransport(remote))).ok).toBe(true);
    writeFileSync(join(local, 'f.bin'), v2);
    utimesSync(join(local, 'f.bin'), 1_700_000_100, 1_700_000_100);
    // Reads past the chunking pass (the literal reads) see different bytes, as if an editor saved meanwhile.
    const lt = new LocalTransport(local);
    const changing = override(lt, {
      openReader: async (rel: string): Promise<FileReader> => {
        const r = await lt.openReader(rel);
        let bytes = 0;
        return {
          size: r.size,
          stamp: r.stamp,
          close: () => r.close(),
          read: async (pos, n) => {
            const b = await r.read(pos, n);
            bytes += n;
            if (bytes > r.size) b[0] ^= 0xff;
            return b;
          },
        };
      },
    });
    const r = await sync(changing, new LocalTransport(remote));
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([expect.objectContaining({ path: 'f.bin', code: 'E_CHANGED_DURING_SYNC' })]);
    expect(readFileSync(join(remote, 'f.bin')).equals(v1)).toBe(true);
    // The next run, with the file holding still, converges.
    const again = await sync(new LocalTransport(local), new LocalTransport(remote));
    expect(again.ok).toBe(true);
    expect(again.stats.filesDelta).toBe(1);
    expect(readFileSync(join(remote, 'f.bin')).equals(v2)).toBe(true);
  });
});

describe('engine checkpoints', () => {
  it('a long run records what it has done in the manifest while it runs', async () => {
    const local = join(work, 'cp-local');
    const remote = join(work, 'cp-remote');
    mkdirSync(local, { recursive: true });
    for (let i = 0; i < 12; i++) writeFileSync(join(local, `f${i}.txt`), `file ${i}\n`);
    const { readManifest } = await import('../../src/manifest/manifest.js');
    const rt = new LocalTransport(remote);
    // One file at a time, 400 ms each: the run takes ~5 s, past the first checkpoint at 3 s.
    const slow = override(rt, {
      writeFile: async (...args: Parameters<Transport['writeFile']>) => {
        await new Promise((r) => setTimeout(r, 400));
        return rt.writeFile(...args);
      },
    });
    let seen: number | undefined;
    const probe = setTimeout(() => {
      void readManifest(new LocalTransport(remote)).then((m) => (seen = m?.entries.size));
    }, 4200);
    const r = await runSync({
      direction: 'push', local: new LocalTransport(local), remote: slow, delete: false, force: false, dryRun: false,
      filter: { gitignore: true, excludes: [], includes: [] }, concurrency: 1, lockWaitSeconds: 0, breakLock: false,
      cacheDir: join(work, 'cache'),
    });
    clearTimeout(probe);
    expect(r.ok).toBe(true);
    // Mid-run: some of the files, not yet all.
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThan(12);
    expect((await readManifest(rt))?.entries.size).toBe(12);
  }, 20_000);
});

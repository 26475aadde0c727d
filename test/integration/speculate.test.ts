/**
 * Early rebuilds (src/transfer/speculate.ts) and the manifest written ahead, against a real sshd: a changed big
 * file's rebuild is staged before the plan and adopted only when the manifest, the listing and the local file all
 * confirm it; otherwise it is dropped without a trace and the run does what it would have done anyway.
 *
 * The prewarm (which cuts changed files while connecting) runs from the compiled worker; here the same step is
 * done inline, so the engine gets the cache in the state the prewarm leaves it in.
 */
import { describe, it, expect } from 'vitest';
import { mkdirSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import type { Transport } from '../../src/transport/types.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { openTarget } from '../../src/api.js';
import { runSync, type SyncResult } from '../../src/transfer/engine.js';
import { ChunkCache, fromChunked } from '../../src/transfer/chunkcache.js';
import { chunkFile } from '../../src/chunking/hash.js';
import { readManifest, writeManifest } from '../../src/manifest/manifest.js';
import { LOCK_PATH } from '../../src/manifest/lock.js';
import { isTempName } from '../../src/util/paths.js';
import { WsyncError } from '../../src/errors.js';
import { useServer } from '../support/server.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** What prewarmChunks does, without its worker: re-cut the known files whose stamp changed. */
async function prewarmInline(local: Transport, cache: ChunkCache): Promise<void> {
  for (const { rel, stamp, list } of [...cache.knownFiles()]) {
    const now = await local.stamp(rel);
    if (!now || now === stamp) continue;
    cache.addFile(rel, now, fromChunked(await chunkFile(join(local.root, rel), { spec: list.spec })));
  }
}

interface Client {
  dir: string;
  cacheFile: string;
}

async function push(client: Client, remote: Transport, opts: { local?: Transport; force?: boolean; trace?: string[] } = {}): Promise<{ r: SyncResult; trace: string[] }> {
  const local = opts.local ?? new LocalTransport(client.dir);
  const label = { local: client.dir, target: remote.describe() };
  const cache = await ChunkCache.load(client.cacheFile, label);
  await prewarmInline(new LocalTransport(client.dir), cache);
  const trace: string[] = opts.trace ?? [];
  const r = await runSync({
    direction: 'push', local, remote, delete: false, force: opts.force ?? false, dryRun: false,
    filter: { gitignore: true, excludes: [], includes: [] }, concurrency: 16, lockWaitSeconds: 0, breakLock: false,
    cacheTarget: label.target, cache: Promise.resolve(cache),
    // The shortcuts these tests are about (journal and read-back traces say other things).
    onTrace: (what, path) => /^(speculation|manifest)/.test(what) && trace.push(path ? `${what} ${path}` : what),
  });
  return { r, trace };
}

const temps = (dir: string) => readdirSync(dir).filter(isTempName);

/** `t` with some methods replaced (the rest bound to it). */
function override<T extends object>(t: T, methods: Record<string, unknown>): T {
  return new Proxy(t, {
    get(target, prop) {
      if (typeof prop === 'string' && prop in methods) return methods[prop];
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

describe('early rebuilds and the manifest written ahead', () => {
  const server = useServer('wsync-speculate-');
  let n = 0;
  const setup = async () => {
    const label = `c${n++}`;
    const client: Client = { dir: join(server.work, `${label}-local`), cacheFile: join(server.work, `${label}-cache.json.gz`) };
    const remoteDir = join(server.work, `${label}-remote`);
    mkdirSync(client.dir);
    mkdirSync(remoteDir);
    const remote = await openTarget(`${server.srv.alias}:${remoteDir}`, { sshConfig: server.srv.sshConfig });
    const v1 = randomBytes(3_000_000);
    writeFileSync(join(client.dir, 'f.bin'), v1);
    utimesSync(join(client.dir, 'f.bin'), 1_700_000_000, 1_700_000_000);
    const first = await push(client, remote);
    expect(first.r.ok).toBe(true);
    // Nothing to stage on a first push: the cache did not know the target yet.
    expect(first.trace.filter((t) => t.startsWith('speculation'))).toEqual([]);
    return { client, remote, remoteDir, v1 };
  };
  /** A fresh client and target with f.bin pushed once; the connection is closed afterwards. */
  const withSetup = async (fn: (x: Awaited<ReturnType<typeof setup>>) => Promise<void>) => {
    const x = await setup();
    try {
      await fn(x);
    } finally {
      await x.remote.close();
    }
  };
  /** A copy of `v1` with 4 KiB of new bytes at `at`. */
  const patched = (v1: Buffer, at: number) => {
    const v = Buffer.from(v1);
    randomBytes(4096).copy(v, at);
    return v;
  };
  const edit = (client: Client, data: Buffer, mtime: number) => {
    writeFileSync(join(client.dir, 'f.bin'), data);
    utimesSync(join(client.dir, 'f.bin'), mtime, mtime);
  };

  it('adopts the staged rebuild of an edited big file, and writes the final manifest ahead', async () => {
    await withSetup(async ({ client, remote, remoteDir, v1 }) => {
      const loaded = await ChunkCache.load(client.cacheFile, { local: client.dir, target: remote.describe() });
      expect([...loaded.remoteFiles()].map(([rel, r]) => [rel, r.size, r.mtime, r.list.sha256])).toEqual([['f.bin', v1.length, 1_700_000_000, sha(v1)]]);

      // Overwrite in the middle (same size), then insert at the head (new size).
      const v2 = patched(v1, 1_500_000);
      const v3 = Buffer.concat([randomBytes(100), v2]);
      for (const [data, mtime] of [[v2, 1_700_000_100], [v3, 1_700_000_200]] as const) {
        edit(client, data, mtime);
        const { r, trace } = await push(client, remote);
        expect(r.ok).toBe(true);
        expect(trace).toEqual(['speculation staged f.bin', 'speculation used f.bin', 'manifest prewritten']);
        expect(r.stats.filesDelta).toBe(1);
        expect(r.stats.bytesSent).toBeLessThan(200_000);
        expect(readFileSync(join(remoteDir, 'f.bin')).equals(data)).toBe(true);
        expect(Math.floor(statSync(join(remoteDir, 'f.bin')).mtimeMs / 1000)).toBe(mtime);
        const m = await readManifest(new LocalTransport(remoteDir));
        expect(m?.entries.get('f.bin')).toMatchObject({ size: data.length, mtime, sha256: sha(data) });
        expect(temps(remoteDir)).toEqual([]);
        expect(existsSync(join(remoteDir, LOCK_PATH))).toBe(false);
      }
    });
  });

  it('drops the staged rebuild when the remote file was edited outside wsync: conflict, outside edit kept', async () => {
    await withSetup(async ({ client, remote, remoteDir, v1 }) => {
      const outside = randomBytes(v1.length);
      writeFileSync(join(remoteDir, 'f.bin'), outside);
      utimesSync(join(remoteDir, 'f.bin'), 1_700_000_050, 1_700_000_050);
      const v2 = patched(v1, 100_000);
      edit(client, v2, 1_700_000_100);
      const { r, trace } = await push(client, remote);
      expect(r.ok).toBe(false);
      expect(r.conflicts.map((c) => c.path)).toEqual(['f.bin']);
      expect(trace).toEqual(['speculation staged f.bin']);
      expect(readFileSync(join(remoteDir, 'f.bin')).equals(outside)).toBe(true);
      expect(temps(remoteDir)).toEqual([]);
    });
  });

  it('an outside edit made after the staged rebuild was complete is caught before the rename', async () => {
    await withSetup(async ({ client, remote, remoteDir, v1 }) => {
      const v2 = patched(v1, 500_000);
      edit(client, v2, 1_700_000_100);
      // A slow listing, so that the staged file is complete long before the plan asks for it; then someone saves
      // the remote file just before the rebuild would be renamed in (the adoption's local stamp check).
      const slowList = override(remote, { readdir: async (rel: string) => (await new Promise((r) => setTimeout(r, 300)), remote.readdir(rel)) });
      const outside = randomBytes(v1.length);
      const lt = new LocalTransport(client.dir);
      let stamps = 0;
      const editing = override(lt, {
        stamp: async (rel: string) => {
          if (stamps++ === 1) {
            writeFileSync(join(remoteDir, 'f.bin'), outside);
            utimesSync(join(remoteDir, 'f.bin'), 1_700_000_050, 1_700_000_050);
          }
          return lt.stamp(rel);
        },
      });
      const { r, trace } = await push(client, slowList, { local: editing });
      expect(trace).toContain('speculation discarded f.bin');
      expect(r.conflicts.map((c) => c.path)).toEqual(['f.bin']);
      expect(readFileSync(join(remoteDir, 'f.bin')).equals(outside)).toBe(true);
      expect(temps(remoteDir)).toEqual([]);
    });
  });

  it('drops it when another run replaced the file with other bytes of the same size and mtime', async () => {
    // The old file passes the size/mtime check, so the staged copy is made from the wrong bytes: only the
    // manifest's hash can tell, and the rebuild must not be renamed in.
    await withSetup(async ({ client, remote, remoteDir, v1 }) => {
      // What another machine's wsync would leave after pushing its own f.bin (same size, same mtime).
      const theirs = randomBytes(v1.length);
      writeFileSync(join(remoteDir, 'f.bin'), theirs);
      utimesSync(join(remoteDir, 'f.bin'), 1_700_000_000, 1_700_000_000);
      const rt = new LocalTransport(remoteDir);
      const m = (await readManifest(rt))!;
      m.entries.set('f.bin', { ...m.entries.get('f.bin')!, sha256: sha(theirs) });
      await writeManifest(rt, m, {});

      const v2 = patched(v1, 2_000_000);
      edit(client, v2, 1_700_000_100);
      const { r, trace } = await push(client, remote);
      expect(r.ok).toBe(true);
      expect(trace).toEqual(['speculation staged f.bin', 'manifest prewritten']);
      // Their content is unknown to this client's cache: a whole upload.
      expect(r.stats.filesDelta).toBe(0);
      expect(readFileSync(join(remoteDir, 'f.bin')).equals(v2)).toBe(true);
      expect((await readManifest(rt))?.entries.get('f.bin')?.sha256).toBe(sha(v2));
      expect(temps(remoteDir)).toEqual([]);
    });
  });

  it('a lock held by another run: the staged temp is removed and nothing is written', async () => {
    await withSetup(async ({ client, remote, remoteDir, v1 }) => {
      writeFileSync(join(remoteDir, LOCK_PATH), JSON.stringify({ host: 'elsewhere', pid: 1, started: new Date().toISOString() }) + '\n');
      const v2 = patched(v1, 1_000_000);
      edit(client, v2, 1_700_000_100);
      // The refusal comes 200 ms late, as over a slow link, so that the rebuild is staged before it.
      const slowLock = override(remote, {
        pinned: () => {
          const view = remote.pinned!();
          return override(view, { createExclusive: async (rel: string, data: Buffer) => (await new Promise((r) => setTimeout(r, 200)), view.createExclusive(rel, data)) });
        },
      });
      const trace: string[] = [];
      await expect(push(client, slowLock, { trace })).rejects.toMatchObject({ code: 'E_LOCKED' });
      expect(trace).toEqual(['speculation staged f.bin']);
      expect(readFileSync(join(remoteDir, 'f.bin')).equals(v1)).toBe(true);
      expect(temps(remoteDir)).toEqual([]);
    });
  });

  it('not used when the local file changed after it was cut; the usual rebuild runs instead', async () => {
    await withSetup(async ({ client, remote, remoteDir, v1 }) => {
      const v2 = patched(v1, 1_000_000);
      edit(client, v2, 1_700_000_100);
      // The stamp the adoption checks is not the one the file was cut in (as if it was saved again meanwhile).
      const lt = new LocalTransport(client.dir);
      let stamps = 0;
      const moved = override(lt, { stamp: async (rel: string) => `${await lt.stamp(rel)}${stamps++ > 0 ? ':later' : ''}` });
      const { r, trace } = await push(client, remote, { local: moved });
      expect(r.ok).toBe(true);
      expect(trace).toEqual(['speculation staged f.bin', 'speculation discarded f.bin', 'manifest prewritten']);
      expect(r.stats.filesDelta).toBe(1);
      expect(readFileSync(join(remoteDir, 'f.bin')).equals(v2)).toBe(true);
      expect(temps(remoteDir)).toEqual([]);
    });
  });

  it('a manifest temp left in .wsync/ by a killed run is removed by the next run', async () => {
    await withSetup(async ({ client, remote, remoteDir }) => {
      // What a run killed after writing its manifest ahead leaves (SIGKILL runs no cleanup).
      const stale = join(remoteDir, '.wsync', '.manifest.json.gz.wsync-deadbeef.tmp');
      writeFileSync(stale, randomBytes(5000));
      writeFileSync(join(remoteDir, '.wsync', 'unrelated.txt'), 'kept');
      const { r } = await push(client, remote);
      expect(r.ok).toBe(true);
      expect(existsSync(stale)).toBe(false);
      expect(readdirSync(join(remoteDir, '.wsync')).sort()).toEqual(['.gitignore', 'manifest.json.gz', 'unrelated.txt']);
    });
  });

  it('the manifest written ahead is replaced when a transfer fails', async () => {
    await withSetup(async ({ client, remote, remoteDir }) => {
      // Small files with the same size and a new mtime are hashed before the plan: the final manifest is known.
      writeFileSync(join(client.dir, 'a.txt'), 'one');
      writeFileSync(join(client.dir, 'b.txt'), 'two');
      expect((await push(client, remote)).r.ok).toBe(true);
      writeFileSync(join(client.dir, 'a.txt'), 'ONE');
      writeFileSync(join(client.dir, 'b.txt'), 'TWO');
      utimesSync(join(client.dir, 'a.txt'), 1_700_000_300, 1_700_000_300);
      utimesSync(join(client.dir, 'b.txt'), 1_700_000_300, 1_700_000_300);
      const before = (await readManifest(new LocalTransport(remoteDir)))!.entries.get('b.txt')!;
      const failing = override(remote, {
        writeFile: async (rel: string, ...rest: unknown[]) => {
          if (rel === 'b.txt') throw new WsyncError('E_REMOTE_IO', 'b.txt: Failure');
          return (remote.writeFile as (...a: unknown[]) => Promise<void>)(rel, ...rest);
        },
      });
      const { r, trace } = await push(client, failing);
      expect(r.ok).toBe(false);
      expect(r.problems.map((p) => p.path)).toEqual(['b.txt']);
      expect(trace).not.toContain('manifest prewritten');
      const m = (await readManifest(new LocalTransport(remoteDir)))!;
      expect(m.entries.get('a.txt')).toMatchObject({ sha256: sha(Buffer.from('ONE')), mtime: 1_700_000_300 });
      expect(m.entries.get('b.txt')).toEqual(before);
      expect(readdirSync(join(remoteDir, '.wsync')).filter((x) => x.endsWith('.tmp'))).toEqual([]);

      // The same edit without the failure takes the shortcut.
      const { r: r2, trace: t2 } = await push(client, remote);
      expect(r2.ok).toBe(true);
      expect(t2).toEqual(['manifest prewritten']);
      expect((await readManifest(new LocalTransport(remoteDir)))!.entries.get('b.txt')).toMatchObject({ sha256: sha(Buffer.from('TWO')) });

      // New sizes: the hashes are not known from the plan, so the few small files are hashed for it.
      writeFileSync(join(client.dir, 'a.txt'), 'one, longer');
      writeFileSync(join(client.dir, 'c.txt'), 'new');
      const { r: r3, trace: t3 } = await push(client, remote);
      expect(r3.ok).toBe(true);
      expect(t3).toEqual(['manifest prewritten']);
      const m3 = (await readManifest(new LocalTransport(remoteDir)))!;
      expect([m3.entries.get('a.txt')?.sha256, m3.entries.get('c.txt')?.sha256]).toEqual([sha(Buffer.from('one, longer')), sha(Buffer.from('new'))]);
      expect(readdirSync(join(remoteDir, '.wsync')).filter((x) => x.endsWith('.tmp'))).toEqual([]);
    });
  });
});

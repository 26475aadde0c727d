/**
 * Delta transfer of big files against real sshd servers: one with copy-data, one started with `-P copy-data`
 * (the fallback), and a local target.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { writeFileSync, readFileSync, utimesSync, rmSync, mkdirSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { push, pull, type SyncOptions } from '../../src/api.js';
import { readManifest, writeManifest } from '../../src/manifest/manifest.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { startSshd, type TestServer } from '../support/sshd.js';
import { snapshot, tempDir } from '../support/trees.js';
import { runCli, WSYNC_BIN } from '../support/cli.js';
import { startProxy } from '../../bench/proxy.js';

const MB = 1_000_000;
const FILE_SIZE = 6 * 1024 * 1024 + 12345;

interface Target {
  spec(dir: string): string;
  options: SyncOptions;
  copyData: boolean;
  srv?: TestServer;
  stop(): Promise<void>;
}

/** Each edit sets its own mtime, a second apart, so the quick check always sees the change. */
let clock = 1_700_100_000;
function setTime(p: string): void {
  clock += 10;
  utimesSync(p, clock, clock);
}

const remoteFiles = (dir: string) => readdirSync(dir).filter((n) => !n.startsWith('.wsync'));

function deltaSuite(name: string, setup: () => Promise<Target>) {
  describe(`delta transfer over ${name}`, () => {
    let t: Target;
    let work: string;
    let savedCache: string | undefined;
    beforeAll(async () => {
      t = await setup();
      work = tempDir('wsync-delta-');
      // A private chunk cache, shared by this process and the CLI children it spawns.
      savedCache = process.env.XDG_CACHE_HOME;
      process.env.XDG_CACHE_HOME = join(work, 'cache');
    });
    afterAll(async () => {
      if (savedCache === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = savedCache;
      await t?.stop();
      if (work) rmSync(work, { recursive: true, force: true });
    });
    const dirs = (label: string) => ({ local: join(work, `${label}-local`), remote: join(work, `${label}-remote`) });

    it('after every kind of edit the remote file is byte-identical; with copy-data only about the edit is sent', async () => {
      const { local, remote } = dirs('edits');
      mkdirSync(local, { recursive: true });
      const f = join(local, 'data.bin');
      let cur: Buffer = randomBytes(FILE_SIZE);
      writeFileSync(f, cur);
      setTime(f);
      writeFileSync(join(local, 'small.txt'), 'small\n');
      const first = await push(local, t.spec(remote), t.options);
      expect(first.ok).toBe(true);
      expect(first.stats.bytesSent).toBe(FILE_SIZE + 6);
      const m = await readManifest(new LocalTransport(remote));
      expect(m!.entries.get('data.bin')!.chunker).toMatchObject({ avg: 16 * 1024 });
      expect(m!.entries.get('small.txt')!.chunker).toBeUndefined();

      const mid = Math.floor(FILE_SIZE / 2) + 777;
      // Worst case per edit site: the chunk the edit lands in and the one after it are re-sent, each at most the
      // chunker's max (4 x the 16 KiB average); at the head or the tail only one of them exists.
      const maxChunk = 4 * 16 * 1024;
      const edits: Array<[string, (b: Buffer) => Buffer, number]> = [
        // [label, edit, most literal bytes a delta may send]
        ['overwrite 1 MB in the middle', (b) => Buffer.concat([b.subarray(0, mid), randomBytes(MB), b.subarray(mid + MB)]), MB + 2 * maxChunk],
        ['insert 100 bytes at the head', (b) => Buffer.concat([randomBytes(100), b]), 100 + maxChunk],
        ['append 300 KB', (b) => Buffer.concat([b, randomBytes(300_000)]), 300_000 + maxChunk],
        ['truncate by 1 MB', (b) => b.subarray(0, b.length - MB), maxChunk],
        ['delete 500 KB from the middle', (b) => Buffer.concat([b.subarray(0, mid), b.subarray(mid + 500_000)]), 2 * maxChunk],
        ['the same edit twice in one file', (b) => Buffer.concat([randomBytes(64), b.subarray(0, mid), randomBytes(5000), b.subarray(mid)]), 64 + maxChunk + 5000 + 2 * maxChunk],
      ];
      for (const [label, edit, budget] of edits) {
        cur = edit(cur);
        writeFileSync(f, cur);
        setTime(f);
        const r = await push(local, t.spec(remote), t.options);
        expect(r.ok, `${label}: ${JSON.stringify(r.problems)}`).toBe(true);
        expect(readFileSync(join(remote, 'data.bin')).equals(cur), label).toBe(true);
        expect(snapshot(remote), label).toEqual(snapshot(local));
        expect(r.stats.filesSent, label).toBe(1);
        if (t.copyData) {
          expect(r.stats.filesDelta, label).toBe(1);
          expect(r.stats.bytesSent, label).toBeLessThanOrEqual(budget);
          expect(r.stats.bytesSent + r.stats.bytesReused, label).toBe(cur.length);
        } else {
          expect(r.stats.filesDelta, label).toBe(0);
          expect(r.stats.bytesSent, label).toBe(cur.length);
        }
        expect(remoteFiles(remote).filter((n) => n.includes('.wsync-')), label).toEqual([]);
      }
      // And a no-op run afterwards moves nothing and keeps the chunker in the manifest.
      const noop = await push(local, t.spec(remote), t.options);
      expect(noop.stats.filesSent).toBe(0);
      expect((await readManifest(new LocalTransport(remote)))!.entries.get('data.bin')!.chunker).toBeDefined();
    });

    it('a remote file changed outside wsync is never used as a copy source', async () => {
      const { local, remote } = dirs('outside');
      mkdirSync(local, { recursive: true });
      const a = randomBytes(2 * MB);
      const b = randomBytes(2 * MB);
      writeFileSync(join(local, 'a.bin'), a);
      writeFileSync(join(local, 'b.bin'), b);
      setTime(join(local, 'a.bin'));
      setTime(join(local, 'b.bin'));
      expect((await push(local, t.spec(remote), t.options)).ok).toBe(true);

      // Edited on the remote with the same size (the listing sees a new mtime): a planned conflict.
      const outside = Buffer.from(b);
      outside.write('edited on the remote', 1000);
      writeFileSync(join(remote, 'b.bin'), outside);
      const b2 = Buffer.from(b);
      b2.write('local edit', 1_500_000);
      writeFileSync(join(local, 'b.bin'), b2);
      setTime(join(local, 'b.bin'));
      const r = await push(local, t.spec(remote), t.options);
      expect(r.ok).toBe(false);
      expect(r.conflicts.map((c) => c.path)).toEqual(['b.bin']);
      expect(readFileSync(join(remote, 'b.bin')).equals(outside)).toBe(true);

      // Changed between the listing and the rebuild (same size): the rebuild's own check refuses it.
      rmSync(join(remote, 'b.bin'));
      writeFileSync(join(local, 'b.bin'), b);
      setTime(join(local, 'b.bin'));
      expect((await push(local, t.spec(remote), { ...t.options, force: true })).ok).toBe(true);
      const a2 = Buffer.from(a);
      a2.write('local edit of a', 10);
      writeFileSync(join(local, 'a.bin'), a2);
      setTime(join(local, 'a.bin'));
      writeFileSync(join(local, 'b.bin'), b2);
      setTime(join(local, 'b.bin'));
      const sneaky = Buffer.from(b);
      sneaky.write('raced in', 1_000_000);
      const raced = await push(local, t.spec(remote), {
        ...t.options,
        concurrency: 1,
        afterTransfer: (p) => {
          if (p === 'a.bin') writeFileSync(join(remote, 'b.bin'), sneaky);
        },
      });
      expect(readFileSync(join(remote, 'a.bin')).equals(a2)).toBe(true);
      if (t.copyData) {
        expect(raced.ok).toBe(false);
        expect(raced.conflicts.map((c) => c.path)).toEqual(['b.bin']);
        expect(raced.conflicts[0]!.kind).toBe('changed-during-run');
        expect(raced.conflicts[0]!.found).toMatch(/changed since the last sync/);
        expect(readFileSync(join(remote, 'b.bin')).equals(sneaky)).toBe(true);
        // Still a conflict on the next run (the manifest kept the old entry); --force replaces it, keeping a copy.
        const again = await push(local, t.spec(remote), t.options);
        expect(again.conflicts.map((c) => c.path)).toEqual(['b.bin']);
        const forced = await push(local, t.spec(remote), { ...t.options, force: true });
        expect(forced.ok).toBe(true);
        expect(readFileSync(join(remote, 'b.bin')).equals(b2)).toBe(true);
        const trash = readdirSync(join(remote, '.wsync/trash'));
        expect(trash.some((d) => existsSync(join(remote, '.wsync/trash', d, 'b.bin')) && readFileSync(join(remote, '.wsync/trash', d, 'b.bin')).equals(sneaky))).toBe(true);
      } else {
        // Without copy-data nothing is read from the old file; the whole upload replaces what the listing saw.
        expect(readFileSync(join(remote, 'b.bin')).equals(b2)).toBe(true);
      }
      expect(remoteFiles(remote).filter((n) => n.includes('.wsync-'))).toEqual([]);
    });

    it('without a cached chunk list (cache lost, or an old manifest) the file goes whole once, then as a delta', async () => {
      const { local, remote } = dirs('nocache');
      mkdirSync(local, { recursive: true });
      const f = join(local, 'c.bin');
      let cur = randomBytes(3 * MB);
      const edit = async (expectDelta: boolean, label: string) => {
        cur = Buffer.concat([cur.subarray(0, MB), randomBytes(1000), cur.subarray(MB)]);
        writeFileSync(f, cur);
        setTime(f);
        const r = await push(local, t.spec(remote), t.options);
        expect(r.ok, label).toBe(true);
        expect(r.stats.filesDelta, label).toBe(expectDelta && t.copyData ? 1 : 0);
        expect(readFileSync(join(remote, 'c.bin')).equals(cur), label).toBe(true);
      };
      writeFileSync(f, cur);
      setTime(f);
      await push(local, t.spec(remote), t.options);
      await edit(true, 'cached');
      const saved = process.env.XDG_CACHE_HOME;
      process.env.XDG_CACHE_HOME = join(work, 'lost-cache');
      try {
        await edit(false, 'cache lost');
        await edit(true, 'cache rebuilt by the whole upload');
      } finally {
        process.env.XDG_CACHE_HOME = saved;
      }
      // A manifest written by a wsync without delta support has no chunker: one whole upload, then deltas again.
      const rt = new LocalTransport(remote);
      const m = (await readManifest(rt))!;
      for (const e of m.entries.values()) delete e.chunker;
      await writeManifest(rt, m, {});
      await edit(false, 'old manifest');
      await edit(true, 'after the old manifest');
    });

    it('a pulled big file goes back as a delta; a race under --force keeps the outside copy in the trash', async () => {
      const { local, remote } = dirs('pulled');
      mkdirSync(remote, { recursive: true });
      const v1 = randomBytes(3 * MB);
      const q1 = randomBytes(2 * MB);
      writeFileSync(join(remote, 'p.bin'), v1);
      writeFileSync(join(remote, 'q.bin'), q1);
      setTime(join(remote, 'p.bin'));
      setTime(join(remote, 'q.bin'));
      expect((await pull(local, t.spec(remote), t.options)).ok).toBe(true);
      const v2 = Buffer.concat([v1.subarray(0, MB), randomBytes(2000), v1.subarray(MB)]);
      writeFileSync(join(local, 'p.bin'), v2);
      setTime(join(local, 'p.bin'));
      const r = await push(local, t.spec(remote), t.options);
      expect(r.ok).toBe(true);
      expect(r.stats.filesDelta).toBe(t.copyData ? 1 : 0);
      expect(readFileSync(join(remote, 'p.bin')).equals(v2)).toBe(true);

      // q.bin changes on the remote after the listing, during a --force run: replaced, the outside copy kept.
      const q2 = Buffer.concat([q1, randomBytes(100)]);
      writeFileSync(join(local, 'q.bin'), q2);
      setTime(join(local, 'q.bin'));
      const v3 = Buffer.concat([v2, randomBytes(10)]);
      writeFileSync(join(local, 'p.bin'), v3);
      setTime(join(local, 'p.bin'));
      const outside = randomBytes(2 * MB);
      const forced = await push(local, t.spec(remote), {
        ...t.options,
        force: true,
        concurrency: 1,
        afterTransfer: (p) => {
          if (p === 'p.bin') writeFileSync(join(remote, 'q.bin'), outside);
        },
      });
      expect(forced.ok).toBe(true);
      expect(readFileSync(join(remote, 'q.bin')).equals(q2)).toBe(true);
      if (t.copyData) {
        const trash = join(remote, '.wsync/trash');
        expect(readdirSync(trash).some((d) => existsSync(join(trash, d, 'q.bin')) && readFileSync(join(trash, d, 'q.bin')).equals(outside))).toBe(true);
      }
      expect(snapshot(remote)).toEqual(snapshot(local));
    });

    if (name.startsWith('SFTP')) {
      it('a push killed mid-rebuild leaves the old file intact, and the rerun converges', async () => {
        const srv = t.srv!;
        const { local, remote } = dirs('kill');
        mkdirSync(local, { recursive: true });
        const f = join(local, 'big.bin');
        const v1 = randomBytes(8 * MB);
        writeFileSync(f, v1);
        setTime(f);
        // One alias for every run (the chunk cache is per local root and target), first straight to sshd, then
        // through a slow link.
        const proxy = await startProxy({ targetPort: srv.port, delayMs: 5, rateBitsPerSec: 4e6 });
        try {
          const kh = join(work, 'kill_known_hosts');
          const known = readFileSync(srv.knownHosts, 'utf8');
          writeFileSync(kh, known + known.replace(`:${srv.port} `, `:${proxy.port} `));
          const cfg = join(work, 'kill_config');
          const config = (port: number) =>
            writeFileSync(cfg, ['Host slow', '  HostName 127.0.0.1', `  Port ${port}`, `  User ${srv.user}`, `  IdentityFile ${srv.userKey}`, '  IdentitiesOnly yes', `  UserKnownHostsFile ${kh}`, ''].join('\n'));
          config(srv.port);
          const first = await runCli(['push', local, `slow:${remote}`, '-F', cfg]);
          expect(first.code, first.stderr).toBe(0);
          // 2 MB of new bytes in 4 places: at 4 Mbit/s the rebuild takes seconds, a wide window for the kill.
          const v2 = Buffer.from(v1);
          for (let i = 0; i < 4; i++) randomBytes(MB / 2).copy(v2, i * 2 * MB + 1234);
          writeFileSync(f, v2);
          setTime(f);
          config(proxy.port);
          const child = spawn(process.execPath, [WSYNC_BIN, 'push', '--json', local, `slow:${remote}`, '-F', cfg], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SSH_AUTH_SOCK: '' } });
          let sawTemp = false;
          const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
          // Killed once the rebuilt temp file exists and has some bytes in it.
          for (const until = Date.now() + 30_000; Date.now() < until && child.exitCode === null; ) {
            const tmp = readdirSync(remote).find((n) => n.startsWith('.big.bin.wsync-'));
            if (tmp) {
              sawTemp = true;
              await new Promise((r) => setTimeout(r, 300));
              child.kill('SIGKILL');
              break;
            }
            await new Promise((r) => setTimeout(r, 5));
          }
          await exited;
          expect(sawTemp).toBe(true);
          expect(readFileSync(join(remote, 'big.bin')).equals(v1)).toBe(true);

          config(srv.port);
          const rerun = await runCli(['push', '--json', local, `slow:${remote}`, '-F', cfg]);
          expect(rerun.code, rerun.stderr).toBe(0);
          const summary = JSON.parse(rerun.stdout.trim().split('\n').at(-1)!);
          expect(summary.stats.filesDelta).toBe(t.copyData ? 1 : 0);
          if (t.copyData) expect(summary.stats.bytesSent).toBeLessThan(2.5 * MB);
          expect(readFileSync(join(remote, 'big.bin')).equals(v2)).toBe(true);
          expect(readdirSync(remote).filter((n) => n.includes('.wsync-'))).toEqual([]);
        } finally {
          await proxy.close();
        }
      });
    }

  });
}

deltaSuite('SFTP with copy-data', async () => {
  const srv = await startSshd();
  return { spec: (d) => `${srv.alias}:${d}`, options: { sshConfig: srv.sshConfig }, copyData: true, srv, stop: () => srv.stop() };
});

deltaSuite('SFTP without copy-data (-P copy-data)', async () => {
  const srv = await startSshd({ sftpFlags: '-P copy-data' });
  return { spec: (d) => `${srv.alias}:${d}`, options: { sshConfig: srv.sshConfig }, copyData: false, srv, stop: () => srv.stop() };
});

deltaSuite('a local target', async () => ({ spec: (d) => d, options: {}, copyData: true, stop: async () => undefined }));

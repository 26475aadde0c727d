/**
 * One conformance suite for every Transport: the engine relies on exactly these behaviours.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync, lstatSync, readlinkSync, existsSync, readdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Transport } from '../../src/transport/types.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { openTarget } from '../../src/api.js';
import { startSshd } from '../support/sshd.js';
import { tempDir } from '../support/trees.js';
import { WsyncError } from '../../src/errors.js';

async function* chunks(...bufs: Buffer[]): AsyncIterable<Buffer> {
  for (const b of bufs) yield b;
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

interface Fixture {
  /** A transport rooted at `dir` (a path on this machine), and whether copy-data should be reported. */
  open(dir: string): Promise<Transport>;
  copyData: boolean;
  stop(): Promise<void>;
}

function conformance(name: string, make: () => Promise<Fixture>) {
  describe(`Transport conformance: ${name}`, () => {
    let fx: Fixture;
    let root: string;
    let t: Transport;
    beforeAll(async () => {
      fx = await make();
      root = join(tempDir('wsync-conf-'), 'root');
      t = await fx.open(root);
      await t.ensureRoot();
    });
    afterAll(async () => {
      await t?.close();
      await fx?.stop();
    });

    it('reports its capabilities', () => {
      expect(t.caps.copyData).toBe(fx.copyData);
      expect(t.caps.maxWrite).toBeGreaterThanOrEqual(32 * 1024);
    });

    it('ensureRoot creates the root with parents and is idempotent', async () => {
      expect(lstatSync(root).isDirectory()).toBe(true);
      await t.ensureRoot();
    });

    it('writes a file atomically with mode and mtime, and reads it back in pieces', async () => {
      const data = randomBytes(700 * 1024);
      await t.mkdir('d', 0o750);
      expect(lstatSync(join(root, 'd')).mode & 0o777).toBe(0o750);
      await t.mkdir('d', 0o750); // existing directory: fine
      await t.writeFile('d/f.bin', chunks(data.subarray(0, 1000), data.subarray(1000)), { mode: 0o755, mtime: 1_600_000_000, size: data.length });
      const st = lstatSync(join(root, 'd/f.bin'));
      expect(st.mode & 0o777).toBe(0o755);
      expect(Math.floor(st.mtimeMs / 1000)).toBe(1_600_000_000);
      expect(readFileSync(join(root, 'd/f.bin')).equals(data)).toBe(true);
      expect(await collect(t.openRead('d/f.bin', data.length))).toEqual(data);
      expect(await t.lstat('d/f.bin')).toEqual({ type: 'file', size: data.length, mtime: 1_600_000_000, mode: 0o755 });
      expect(await t.lstat('nope')).toBeNull();
      expect((await t.readFile('d/f.bin'))!.equals(data)).toBe(true);
      expect(await t.readFile('nope')).toBeNull();
    });

    it('a write that fails half-way leaves the old file and no temp file', async () => {
      writeFileSync(join(root, 'keep.txt'), 'old');
      async function* broken(): AsyncIterable<Buffer> {
        yield Buffer.from('new data');
        throw new WsyncError('E_CHANGED_DURING_SYNC', 'source changed');
      }
      await expect(t.writeFile('keep.txt', broken(), { mode: 0o644, mtime: 1, size: 100 })).rejects.toThrow(/source changed/);
      await expect(t.writeFile('keep.txt', chunks(Buffer.from('short')), { mode: 0o644, mtime: 1, size: 100 })).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
      expect(readFileSync(join(root, 'keep.txt'), 'utf8')).toBe('old');
      expect(readdirSync(root).filter((n) => n.includes('.wsync-'))).toEqual([]);
    });

    it('replaces with a backup, and exclusive writes refuse an existing name', async () => {
      writeFileSync(join(root, 'r.txt'), 'before');
      await t.writeFile('r.txt', chunks(Buffer.from('after')), { mode: 0o644, mtime: 5, size: 5 }, { backupTo: '.wsync/trash/x/r.txt' });
      expect(readFileSync(join(root, 'r.txt'), 'utf8')).toBe('after');
      expect(readFileSync(join(root, '.wsync/trash/x/r.txt'), 'utf8')).toBe('before');
      mkdirSync(join(root, '.wsync'), { recursive: true });
      expect(await t.writeSmall('.wsync/excl', Buffer.from('one'), { exclusive: true })).toBe(true);
      expect(await t.writeSmall('.wsync/excl', Buffer.from('two'), { exclusive: true })).toBe(false);
      expect(readFileSync(join(root, '.wsync/excl'), 'utf8')).toBe('one');
      expect(readdirSync(join(root, '.wsync')).filter((n) => n.includes('.wsync-'))).toEqual([]);
      expect(await t.createExclusive('.wsync/lockish', Buffer.from('me'))).toBe(true);
      expect(await t.createExclusive('.wsync/lockish', Buffer.from('you'))).toBe(false);
      // The content follows the create without being awaited: it must land, and never be the loser's.
      const until = Date.now() + 5000;
      while (readFileSync(join(root, '.wsync/lockish'), 'utf8') === '' && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      expect(readFileSync(join(root, '.wsync/lockish'), 'utf8')).toBe('me');
      await expect(t.createExclusive('no/such/dir/lock', Buffer.from('x'))).rejects.toBeInstanceOf(WsyncError);
    });

    it('lists directories with types, sizes and symlink targets; missing is null', async () => {
      mkdirSync(join(root, 'list/sub'), { recursive: true });
      writeFileSync(join(root, 'list/a'), 'abc');
      utimesSync(join(root, 'list/a'), 1_650_000_000, 1_650_000_000);
      await t.symlink('list/l', '../elsewhere');
      expect(readlinkSync(join(root, 'list/l'))).toBe('../elsewhere');
      await t.symlink('list/l', 'a'); // replaces atomically
      const entries = (await t.readdir('list'))!.sort((x, y) => (x.name < y.name ? -1 : 1));
      expect(entries.map((e) => [e.name, e.entry.type])).toEqual([['a', 'file'], ['l', 'symlink'], ['sub', 'dir']]);
      expect(entries[0].entry).toMatchObject({ size: 3, mtime: 1_650_000_000 });
      expect(entries[1].entry.target).toBe('a');
      expect(await t.readdir('missing')).toBeNull();
      const many = join(root, 'many');
      mkdirSync(many);
      for (let i = 0; i < 250; i++) writeFileSync(join(many, `n${i}`), '');
      expect((await t.readdir('many'))!.length).toBe(250);
    });

    it('sets attributes, renames with parents, removes files and empty directories', async () => {
      writeFileSync(join(root, 'm.txt'), 'm');
      await t.setMeta('m.txt', { mode: 0o600, mtime: 1_234_567_890 });
      const st = lstatSync(join(root, 'm.txt'));
      expect([st.mode & 0o777, Math.floor(st.mtimeMs / 1000)]).toEqual([0o600, 1_234_567_890]);
      await t.rename('m.txt', 'deep/new/place.txt');
      expect(readFileSync(join(root, 'deep/new/place.txt'), 'utf8')).toBe('m');
      await t.remove('deep/new/place.txt', 'file');
      await t.remove('deep/new/place.txt', 'file'); // already gone: fine
      await t.remove('deep/new', 'dir');
      expect(existsSync(join(root, 'deep/new'))).toBe(false);
      mkdirSync(join(root, 'full'));
      writeFileSync(join(root, 'full/x'), 'x');
      await expect(t.remove('full', 'dir')).rejects.toBeInstanceOf(WsyncError);
    });

    it('reading a file that changed size is an error, not a silent short file', async () => {
      writeFileSync(join(root, 'grow.txt'), 'abc');
      await expect(collect(t.openRead('grow.txt', 10))).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
      await expect(collect(t.openRead('grow.txt', 2))).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
    });
  });
}

conformance('local', async () => ({ open: async (dir) => new LocalTransport(dir), copyData: true, stop: async () => undefined }));

const sftpFixture = (sftpFlags?: string) => async (): Promise<Fixture> => {
  const srv = await startSshd({ sftpFlags });
  return {
    open: (dir) => openTarget(`${srv.alias}:${dir}`, { sshConfig: srv.sshConfig }),
    copyData: !sftpFlags,
    stop: () => srv.stop(),
  };
};
conformance('sftp (OpenSSH, copy-data)', sftpFixture());
conformance('sftp (OpenSSH, -P copy-data)', sftpFixture('-P copy-data'));

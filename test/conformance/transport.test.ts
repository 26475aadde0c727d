/**
 * One conformance suite for every Transport: the engine relies on exactly these behaviours.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync, lstatSync, readlinkSync, existsSync, readdirSync, utimesSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { RebuildOp, Transport } from '../../src/transport/types.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { openTarget } from '../../src/api.js';
import { startSshd, startServer, type ServerKind } from '../support/sshd.js';
import { tempDir } from '../support/trees.js';
import { WsyncError } from '../../src/errors.js';
import { recoverLinkTarget } from '../../src/util/paths.js';

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
  /** Smallest write size the transport may report (32 KiB; ssh2 gives a server it does not know less). */
  minWrite?: number;
  /** READLINK answers relative targets joined onto the link's directory (ProFTPD). */
  joinsLinks?: boolean;
  /** What a server wrote outside the transport's root where it can be seen (its login directory): none. */
  outside?: () => string[];
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
      expect(t.caps.maxWrite).toBeGreaterThanOrEqual(fx.minWrite ?? 32 * 1024);
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
      expect(await t.lstat('d/f.bin')).toMatchObject({ type: 'file', size: data.length, mtime: 1_600_000_000, mode: 0o755 });
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
      // A server that answers READLINK with the target joined onto the link's directory says so (linkDir), and
      // the target as written is told from that (the walk does it with the manifest's).
      const link = entries[1].entry;
      expect(link.linkDir !== undefined).toBe(fx.joinsLinks ?? false);
      expect(link.linkDir === undefined ? link.target : recoverLinkTarget(link.linkDir, link.target!, 'a')).toBe('a');
      expect(entries[0].entry).toMatchObject({ size: 3, mtime: 1_650_000_000 });
      expect(await t.readdir('missing')).toBeNull();
      const many = join(root, 'many');
      mkdirSync(many);
      for (let i = 0; i < 250; i++) writeFileSync(join(many, `n${i}`), '');
      expect((await t.readdir('many'))!.length).toBe(250);
    });

    it('a symlink is made, replaced and removed as a link: what it points to is never moved or written', async () => {
      // ProFTPD acts on a live link's target for RENAME, posix-rename, LSTAT and hardlink (see SftpTransport.followsLinks).
      mkdirSync(join(root, 'sl'), { recursive: true });
      writeFileSync(join(root, 'sl/t.txt'), 'T');
      writeFileSync(join(root, 'outside.txt'), 'O');
      await t.symlink('sl/l', 't.txt');
      expect(readlinkSync(join(root, 'sl/l'))).toBe('t.txt');
      await t.symlink('sl/l', '../outside.txt');
      expect(readlinkSync(join(root, 'sl/l'))).toBe('../outside.txt');
      const link = await t.lstat('sl/l');
      expect(link).toMatchObject({ type: 'symlink', mtime: Math.floor(lstatSync(join(root, 'sl/l')).mtimeMs / 1000) });
      await t.writeFile('sl/l', chunks(Buffer.from('F')), { mode: 0o644, mtime: 1_600_000_000, size: 1 }, { expect: { type: 'symlink', size: 0, mtime: link!.mtime } });
      expect(readFileSync(join(root, 'sl/l'), 'utf8')).toBe('F');
      expect(lstatSync(join(root, 'sl/l')).isFile()).toBe(true);
      await t.symlink('sl/l', 't.txt', { expect: { type: 'file', size: 1, mtime: 1_600_000_000 } });
      expect(readlinkSync(join(root, 'sl/l'))).toBe('t.txt');
      await t.remove('sl/l', 'file');
      expect(existsSync(join(root, 'sl/l'))).toBe(false);
      expect([readFileSync(join(root, 'sl/t.txt'), 'utf8'), readFileSync(join(root, 'outside.txt'), 'utf8')]).toEqual(['T', 'O']);
      expect(readdirSync(join(root, 'sl'))).toEqual(['t.txt']);
      expect(fx.outside?.() ?? []).toEqual([]);
    });

    it('a file that became a link since it was listed, a link where a directory is made or a rename lands: the link is never followed', async () => {
      mkdirSync(join(root, 'race/outdir'), { recursive: true });
      writeFileSync(join(root, 'race/out.txt'), 'O');
      writeFileSync(join(root, 'race/f1'), 'old');
      utimesSync(join(root, 'race/f1'), 1_600_000_000, 1_600_000_000);
      rmSync(join(root, 'race/f1'));
      symlinkSync('out.txt', join(root, 'race/f1'));
      await expect(t.writeFile('race/f1', chunks(Buffer.from('NEW')), { mode: 0o644, mtime: 1_600_000_100, size: 3 }, { expect: { type: 'file', size: 3, mtime: 1_600_000_000 } })).rejects.toMatchObject({ code: 'E_CONFLICT' });
      // Theirs (the link) is kept, here or beside; what it points to is untouched.
      expect(readdirSync(join(root, 'race')).filter((n) => n.startsWith('f1')).some((n) => lstatSync(join(root, 'race', n)).isSymbolicLink())).toBe(true);
      symlinkSync('outdir', join(root, 'race/dl'));
      await expect(t.mkdir('race/dl', 0o700)).rejects.toBeInstanceOf(WsyncError);
      writeFileSync(join(root, 'race/moving'), 'M');
      symlinkSync('out.txt', join(root, 'race/lto'));
      await t.rename('race/moving', 'race/lto').catch(() => undefined);
      expect(readFileSync(join(root, 'race/out.txt'), 'utf8')).toBe('O');
      expect(readdirSync(join(root, 'race/outdir'))).toEqual([]);
      expect(lstatSync(join(root, 'race/outdir')).mode & 0o777).not.toBe(0o700);
    });

    it('holds an exclusive file open until it is committed over a path or aborted', async () => {
      mkdirSync(join(root, 'ex'), { recursive: true });
      writeFileSync(join(root, 'ex/ref'), 'old\n');
      const a = await t.openExclusive('ex/ref.lock');
      expect(a).not.toBeNull();
      expect(await t.openExclusive('ex/ref.lock')).toBeNull();
      await a!.commit(Buffer.from('new\n'), 'ex/ref');
      expect(readFileSync(join(root, 'ex/ref'), 'utf8')).toBe('new\n');
      expect(existsSync(join(root, 'ex/ref.lock'))).toBe(false);
      await a!.abort(); // after a commit: nothing to do, and the ref stays
      expect(readFileSync(join(root, 'ex/ref'), 'utf8')).toBe('new\n');
      const b = (await t.openExclusive('ex/ref.lock'))!;
      await b.abort();
      expect(existsSync(join(root, 'ex/ref.lock'))).toBe(false);
      const big = randomBytes(300_000);
      const c = (await t.openExclusive('ex/big'))!;
      await c.commit(big);
      expect(readFileSync(join(root, 'ex/big')).equals(big)).toBe(true);
      await expect(t.openExclusive('ex/missing/x.lock')).rejects.toBeInstanceOf(WsyncError);
    });

    it('runs what is asked behind a commit after the rename (on a pinned view: same channel, in order)', async () => {
      mkdirSync(join(root, 'behind'), { recursive: true });
      writeFileSync(join(root, 'behind/lock'), 'held\n');
      const v = t.pinned?.() ?? t;
      const f = (await v.openExclusive('behind/.m.tmp'))!;
      let seen: Awaited<ReturnType<Transport['lstat']>> | undefined;
      // Sent without waiting for the rename's answer; the server must still see the rename first.
      await f.commit(Buffer.from('manifest\n'), 'behind/m', undefined, async () => {
        const [st] = await Promise.all([v.lstat('behind/m'), v.remove('behind/lock', 'file')]);
        seen = st;
      });
      expect(seen?.type).toBe('file');
      expect(readFileSync(join(root, 'behind/m'), 'utf8')).toBe('manifest\n');
      expect(existsSync(join(root, 'behind/lock'))).toBe(false);
    });

    it('creates missing parents for a write when asked, and only then', async () => {
      await expect(t.writeSmall('par/a/b/c.txt', Buffer.from('x'))).rejects.toBeInstanceOf(WsyncError);
      expect(await t.writeSmall('par/a/b/c.txt', Buffer.from('x'), { parents: true })).toBe(true);
      expect(readFileSync(join(root, 'par/a/b/c.txt'), 'utf8')).toBe('x');
      expect(lstatSync(join(root, 'par/a')).isDirectory()).toBe(true);
      // Parents that exist already are fine, and exclusive still refuses an existing name.
      expect(await t.writeSmall('par/a/b/c.txt', Buffer.from('y'), { parents: true, exclusive: true })).toBe(false);
      expect(readFileSync(join(root, 'par/a/b/c.txt'), 'utf8')).toBe('x');
      // 'last' creates the immediate parent only: nothing appears when the one above is missing.
      await expect(t.writeSmall('par2/a/c.txt', Buffer.from('x'), { parents: 'last' })).rejects.toBeInstanceOf(WsyncError);
      expect(existsSync(join(root, 'par2'))).toBe(false);
      const st = await t.stageSmall('par/new/c.txt', Buffer.from('z'), { parents: 'last', tempName: 'tmp_obj_abc123' });
      // Staged under the name asked for, in the same directory, and nothing at the final name yet.
      expect(readFileSync(join(root, 'par/new/tmp_obj_abc123'), 'utf8')).toBe('z');
      expect(existsSync(join(root, 'par/new/c.txt'))).toBe(false);
      expect(await st.commit({ exclusive: true })).toBe(true);
      expect(readFileSync(join(root, 'par/new/c.txt'), 'utf8')).toBe('z');
      expect(existsSync(join(root, 'par/new/tmp_obj_abc123'))).toBe(false);
      const gone = await t.stageSmall('par/new/d.txt', Buffer.from('w'), { tempName: 'tmp_obj_def456' });
      await gone.abort();
      expect(readdirSync(join(root, 'par/new'))).toEqual(['c.txt']);
    });

    it('appends whole records, creating the file when missing', async () => {
      await expect(t.appendFile('log/x', Buffer.from('one\n'))).rejects.toBeInstanceOf(WsyncError); // no parent
      mkdirSync(join(root, 'log'), { recursive: true });
      await Promise.all(Array.from({ length: 20 }, (_, i) => t.appendFile('log/x', Buffer.from(`line ${i}\n`))));
      const lines = readFileSync(join(root, 'log/x'), 'utf8').trimEnd().split('\n').sort();
      expect(lines).toEqual(Array.from({ length: 20 }, (_, i) => `line ${i}`).sort());
      await t.appendFile('log/x', Buffer.from('tail\n'));
      expect(readFileSync(join(root, 'log/x'), 'utf8').endsWith('tail\n')).toBe(true);
      expect(lstatSync(join(root, 'log/x')).mode & 0o111).toBe(0);
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

    it('opens a file for random reads; stamps tell versions apart', async () => {
      const data = randomBytes(600 * 1024 + 7);
      writeFileSync(join(root, 'rand.bin'), data);
      utimesSync(join(root, 'rand.bin'), 1_600_000_000, 1_600_000_000);
      const r = await t.openReader('rand.bin');
      try {
        expect(r.size).toBe(data.length);
        expect(r.stamp).toBe(await t.stamp('rand.bin'));
        expect((await r.read(0, 10)).equals(data.subarray(0, 10))).toBe(true);
        expect((await r.read(100_000, 400_000)).equals(data.subarray(100_000, 500_000))).toBe(true);
        expect((await r.read(data.length - 5, 5)).equals(data.subarray(data.length - 5))).toBe(true);
        await expect(r.read(data.length - 5, 10)).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
      } finally {
        await r.close();
      }
      await r.close(); // twice: harmless
      expect(await t.stamp('nope')).toBeNull();
      expect(await t.stamp('d')).toBeNull();
      await expect(t.openReader('nope')).rejects.toBeInstanceOf(WsyncError);
      const before = await t.stamp('rand.bin');
      writeFileSync(join(root, 'rand.bin'), randomBytes(data.length));
      utimesSync(join(root, 'rand.bin'), 1_600_000_100, 1_600_000_100);
      expect(await t.stamp('rand.bin')).not.toBe(before);
    });

    /** An old file, a new one made of its moved and repeated parts plus new bytes, and the ops between them. */
    const rebuildCase = () => {
      const oldData = randomBytes(1_200_000);
      const lit1 = randomBytes(300_000); // bigger than one SFTP write
      const lit2 = randomBytes(10);
      const parts: Array<{ op: RebuildOp; bytes: Buffer }> = [];
      let at = 0;
      const copy = (srcOffset: number, length: number) => {
        parts.push({ op: { kind: 'copy', srcOffset, length, dstOffset: at }, bytes: oldData.subarray(srcOffset, srcOffset + length) });
        at += length;
      };
      const literal = (b: Buffer) => {
        parts.push({ op: { kind: 'literal', dstOffset: at, length: b.length }, bytes: b });
        at += b.length;
      };
      literal(lit2);
      copy(900_000, 300_000); // the old tail, moved to the front
      literal(lit1);
      copy(0, 500_000);
      copy(0, 100_000); // the same old bytes twice
      literal(lit2);
      copy(1_199_999, 1);
      const newData = Buffer.concat(parts.map((p) => p.bytes));
      const ops = parts.map((p) => p.op);
      const asked: Array<[number, number]> = [];
      const source = async (pos: number, len: number) => {
        asked.push([pos, len]);
        return newData.subarray(pos, pos + len);
      };
      return { oldData, newData, ops, source, asked };
    };

    it('writes a file from ranges of another, or refuses without copy-data', async () => {
      const src = randomBytes(200_000);
      mkdirSync(join(root, 'fr'), { recursive: true });
      writeFileSync(join(root, 'fr/src.pack'), src);
      const ranges: Array<[number, number]> = [[7, 65_535], [65_547, 65_535], [131_087, 1000]];
      const want = Buffer.concat(ranges.map(([o, n]) => src.subarray(o, o + n)));
      const meta = { mode: 0o755, mtime: 1_650_000_700, size: want.length };
      if (!t.caps.copyData) {
        await expect(t.writeFromRanges('fr/out', 'fr/src.pack', ranges, meta)).rejects.toBeInstanceOf(WsyncError);
        expect(existsSync(join(root, 'fr/out'))).toBe(false);
        return;
      }
      await t.writeFromRanges('fr/out', 'fr/src.pack', ranges, meta);
      expect(readFileSync(join(root, 'fr/out')).equals(want)).toBe(true);
      const st = lstatSync(join(root, 'fr/out'));
      expect([st.mode & 0o777, Math.floor(st.mtimeMs / 1000)]).toEqual([0o755, 1_650_000_700]);
      await t.writeFromRanges('fr/empty', 'fr/src.pack', [], { mode: 0o644, mtime: 1_650_000_700, size: 0 });
      expect(readFileSync(join(root, 'fr/empty')).length).toBe(0);
      // A wrong size is caught, and nothing is left at the path.
      await expect(t.writeFromRanges('fr/bad', 'fr/src.pack', [[0, 10]], { mode: 0o644, mtime: 1_650_000_700, size: 11 })).rejects.toBeInstanceOf(WsyncError);
      expect(existsSync(join(root, 'fr/bad'))).toBe(false);
      expect(readdirSync(join(root, 'fr')).sort()).toEqual(['empty', 'out', 'src.pack']);
    });

    it('rebuilds a file from its old version and literal bytes, atomically, or refuses without copy-data', async () => {
      const c = rebuildCase();
      const p = join(root, 'rb.bin');
      writeFileSync(p, c.oldData);
      utimesSync(p, 1_650_000_000, 1_650_000_000);
      const meta = { mode: 0o640, mtime: 1_650_000_500, size: c.newData.length };
      if (!t.caps.copyData) {
        await expect(t.rebuildFile('rb.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, c.ops, c.source, meta)).rejects.toBeInstanceOf(WsyncError);
        expect(readFileSync(p).equals(c.oldData)).toBe(true);
        return;
      }
      await t.rebuildFile('rb.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, c.ops, c.source, meta);
      expect(readFileSync(p).equals(c.newData)).toBe(true);
      const st = lstatSync(p);
      expect([st.mode & 0o777, Math.floor(st.mtimeMs / 1000)]).toEqual([0o640, 1_650_000_500]);
      // Literals were asked for in order, in pieces, never overlapping.
      let next = -1;
      for (const [pos, len] of c.asked) {
        expect(pos).toBeGreaterThan(next);
        next = pos + len - 1;
      }
      expect(c.asked.reduce((n, [, len]) => n + len, 0)).toBe(300_020);
      expect(readdirSync(root).filter((n) => n.includes('.wsync-'))).toEqual([]);

      // With a backup, like writeFile.
      const again = rebuildCase();
      writeFileSync(p, again.oldData);
      utimesSync(p, 1_650_000_000, 1_650_000_000);
      await t.rebuildFile('rb.bin', { size: again.oldData.length, mtime: 1_650_000_000 }, again.ops, again.source, meta, { backupTo: '.wsync/trash/rb/rb.bin' });
      expect(readFileSync(p).equals(again.newData)).toBe(true);
      expect(readFileSync(join(root, '.wsync/trash/rb/rb.bin')).equals(again.oldData)).toBe(true);
    });

    it('a rebuild never reads an old file that is not the expected version, and failures leave it intact', async () => {
      if (!t.caps.copyData) return;
      const c = rebuildCase();
      const p = join(root, 'rc.bin');
      const meta = { mode: 0o644, mtime: 1_650_001_000, size: c.newData.length };
      const reset = () => {
        writeFileSync(p, c.oldData);
        utimesSync(p, 1_650_000_000, 1_650_000_000);
      };
      const intact = () => {
        expect(readFileSync(p).equals(c.oldData)).toBe(true);
        expect(readdirSync(root).filter((n) => n.includes('.wsync-'))).toEqual([]);
      };
      reset();
      // Someone else's version: other mtime, or other size.
      await expect(t.rebuildFile('rc.bin', { size: c.oldData.length, mtime: 1_650_000_001 }, c.ops, c.source, meta)).rejects.toMatchObject({ code: 'E_CONFLICT' });
      intact();
      await expect(t.rebuildFile('rc.bin', { size: c.oldData.length + 1, mtime: 1_650_000_000 }, c.ops, c.source, meta)).rejects.toMatchObject({ code: 'E_CONFLICT' });
      intact();
      await expect(t.rebuildFile('gone.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, c.ops, c.source, meta)).rejects.toMatchObject({ code: 'E_CONFLICT' });
      expect(existsSync(join(root, 'gone.bin'))).toBe(false);
      // Changed while the rebuild reads it (the check after the last copy).
      let calls = 0;
      const meddling = async (pos: number, len: number) => {
        if (calls++ === 0) {
          writeFileSync(p, c.oldData);
          utimesSync(p, 1_650_000_009, 1_650_000_009);
        }
        return c.source(pos, len);
      };
      await expect(t.rebuildFile('rc.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, c.ops, meddling, meta)).rejects.toMatchObject({ code: 'E_CONFLICT' });
      expect(readdirSync(root).filter((n) => n.includes('.wsync-'))).toEqual([]);
      reset();
      // The literal source fails half-way (e.g. the local file changed under it).
      let n = 0;
      const failing = async (pos: number, len: number) => {
        if (n++ === 2) throw new WsyncError('E_CHANGED_DURING_SYNC', 'local file changed');
        return c.source(pos, len);
      };
      await expect(t.rebuildFile('rc.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, c.ops, failing, meta)).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
      intact();
      // Ops that do not describe a file of meta.size, or read outside the old file.
      await expect(t.rebuildFile('rc.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, c.ops, c.source, { ...meta, size: meta.size + 1 })).rejects.toMatchObject({ code: 'E_INTERNAL' });
      const outside: RebuildOp[] = [{ kind: 'copy', srcOffset: 1_000_000, length: 300_000, dstOffset: 0 }];
      await expect(t.rebuildFile('rc.bin', { size: c.oldData.length, mtime: 1_650_000_000 }, outside, c.source, { ...meta, size: 300_000 })).rejects.toMatchObject({ code: 'E_INTERNAL' });
      intact();
    });

    it('stages a rebuild without touching the old file until commit; abort and a refused gate leave nothing', async () => {
      if (!t.caps.copyData) return;
      const p = join(root, 'st.bin');
      const meta = { mode: 0o600, mtime: 1_650_002_000, size: 0 };
      const temps = () => readdirSync(root).filter((n) => n.startsWith('.st.bin.wsync-'));
      const reset = (c: ReturnType<typeof rebuildCase>) => {
        writeFileSync(p, c.oldData);
        utimesSync(p, 1_650_000_000, 1_650_000_000);
      };
      const old = (c: ReturnType<typeof rebuildCase>) => ({ size: c.oldData.length, mtime: 1_650_000_000 });

      // Staged: the temp (under the name asked for) is complete, the old file untouched; commit swaps them.
      const c = rebuildCase();
      reset(c);
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const stagedP = t.stageRebuild('st.bin', old(c), c.ops, c.source, { ...meta, size: c.newData.length }, { gate, tempName: '.st.bin.wsync-0000abcd.tmp' });
      await new Promise((r) => setTimeout(r, 100));
      // Held at the gate: no literal asked for yet, no temp created.
      expect(c.asked).toEqual([]);
      expect(temps()).toEqual([]);
      open();
      const staged = await stagedP;
      expect(readFileSync(p).equals(c.oldData)).toBe(true);
      expect(temps()).toEqual(['.st.bin.wsync-0000abcd.tmp']);
      expect(readFileSync(join(root, '.st.bin.wsync-0000abcd.tmp')).equals(c.newData)).toBe(true);
      expect(await staged.commit()).toBe(true);
      expect(readFileSync(p).equals(c.newData)).toBe(true);
      expect([lstatSync(p).mode & 0o777, Math.floor(lstatSync(p).mtimeMs / 1000)]).toEqual([0o600, 1_650_002_000]);
      expect(temps()).toEqual([]);

      // Aborted: as if it never happened.
      const a = rebuildCase();
      reset(a);
      const dropped = await t.stageRebuild('st.bin', old(a), a.ops, a.source, { ...meta, size: a.newData.length });
      await dropped.abort();
      expect(readFileSync(p).equals(a.oldData)).toBe(true);
      expect(temps()).toEqual([]);

      // The gate refuses (the lock was not ours): the call rejects with its reason, nothing was written.
      const g = rebuildCase();
      reset(g);
      const refused = new WsyncError('E_LOCKED', 'someone else holds the lock');
      await expect(t.stageRebuild('st.bin', old(g), g.ops, g.source, { ...meta, size: g.newData.length }, { gate: Promise.reject(refused) })).rejects.toMatchObject({ code: 'E_LOCKED' });
      expect(g.asked).toEqual([]);
      expect(readFileSync(p).equals(g.oldData)).toBe(true);
      expect(temps()).toEqual([]);
    });

    it('a write keeps to what was listed at the destination: a change made meanwhile is never overwritten unseen', async () => {
      await t.mkdir('exp', 0o755);
      const put = (name: string, body: string, opts: import('../../src/transport/types.js').WriteOptions) =>
        t.writeFile(`exp/${name}`, chunks(Buffer.from(body)), { mode: 0o644, mtime: 1_650_000_000, size: body.length }, opts);
      const listed = (name: string) => {
        const st = lstatSync(join(root, 'exp', name));
        return { type: 'file' as const, size: st.size, mtime: Math.floor(st.mtimeMs / 1000) };
      };
      const names = () => readdirSync(join(root, 'exp')).sort();
      // Unchanged since listed: replaced, nothing left beside it.
      writeFileSync(join(root, 'exp/same.txt'), 'old');
      utimesSync(join(root, 'exp/same.txt'), 1_600_000_000, 1_600_000_000);
      await put('same.txt', 'new!', { expect: listed('same.txt') });
      expect(readFileSync(join(root, 'exp/same.txt'), 'utf8')).toBe('new!');
      // The replaced file's link goes in the background; settle() is where a run waits for it.
      await t.settle?.();
      expect(names()).toEqual(['same.txt']);
      // Changed after the listing: theirs survives (beside ours, or in place), and the write says so.
      writeFileSync(join(root, 'exp/edited.txt'), 'old');
      utimesSync(join(root, 'exp/edited.txt'), 1_600_000_000, 1_600_000_000);
      const seen = listed('edited.txt');
      writeFileSync(join(root, 'exp/edited.txt'), 'theirs');
      await expect(put('edited.txt', 'ours', { expect: seen })).rejects.toMatchObject({ code: 'E_CONFLICT' });
      const texts = names().map((n) => readFileSync(join(root, 'exp', n), 'utf8'));
      expect(texts).toContain('theirs');
      expect(names().filter((n) => /\.wsync-[0-9a-f]{8}\.tmp$/.test(n))).toEqual([]);
      const copy = names().find((n) => /^edited\.sync-conflict-\d{8}-\d{6}-(remote|local)\.txt$/.test(n));
      expect(copy === undefined).toBe(name.includes('-P hardlink'));
      if (copy) expect(readFileSync(join(root, 'exp/edited.txt'), 'utf8')).toBe('ours');
      else expect(readFileSync(join(root, 'exp/edited.txt'), 'utf8')).toBe('theirs');
      // A name near the limit: the kept copy's name is cut to fit, never lost for being too long.
      const long = `${'n'.repeat(240)}.txt`;
      writeFileSync(join(root, 'exp', long), 'old');
      utimesSync(join(root, 'exp', long), 1_600_000_000, 1_600_000_000);
      const seenLong = listed(long);
      writeFileSync(join(root, 'exp', long), 'their long edit');
      await expect(put(long, 'ours', { expect: seenLong })).rejects.toMatchObject({ code: 'E_CONFLICT' });
      const keptLong = names().filter((n) => n.includes('.sync-conflict-') && n.startsWith('nnnn'));
      if (name.includes('-P hardlink')) {
        // Checked before the rename (no hard links): theirs is still in place.
        expect(keptLong).toEqual([]);
        expect(readFileSync(join(root, 'exp', long), 'utf8')).toBe('their long edit');
      } else {
        expect(keptLong.length).toBe(1);
        expect(Buffer.byteLength(keptLong[0])).toBeLessThanOrEqual(255);
        expect(readFileSync(join(root, 'exp', keptLong[0]), 'utf8')).toBe('their long edit');
      }
      expect(names().filter((n) => n.includes('wsync-old'))).toEqual([]);
      // Created after the listing (expect nothing): theirs kept, ours not written.
      writeFileSync(join(root, 'exp/created.txt'), 'theirs');
      await expect(put('created.txt', 'ours', { expect: null })).rejects.toMatchObject({ code: 'E_CONFLICT' });
      expect(readFileSync(join(root, 'exp/created.txt'), 'utf8')).toBe('theirs');
      await put('fresh.txt', 'ours', { expect: null });
      expect(readFileSync(join(root, 'exp/fresh.txt'), 'utf8')).toBe('ours');
      // --force: a change found goes where it is told (the trash), and the write goes ahead.
      writeFileSync(join(root, 'exp/forced.txt'), 'old');
      utimesSync(join(root, 'exp/forced.txt'), 1_600_000_000, 1_600_000_000);
      const seen2 = listed('forced.txt');
      writeFileSync(join(root, 'exp/forced.txt'), 'theirs');
      await put('forced.txt', 'ours', { expect: seen2, changedTo: 'trash/exp/forced.txt' });
      expect(readFileSync(join(root, 'exp/forced.txt'), 'utf8')).toBe('ours');
      expect(readFileSync(join(root, 'trash/exp/forced.txt'), 'utf8')).toBe('theirs');
    });

    it('a file read is one version: not the scanned mtime, or rewritten while read, is an error', async () => {
      writeFileSync(join(root, 'ver.txt'), 'abcdef');
      utimesSync(join(root, 'ver.txt'), 1_600_000_000, 1_600_000_000);
      expect((await collect(t.openRead('ver.txt', 6, 1_600_000_000))).toString()).toBe('abcdef');
      await expect(collect(t.openRead('ver.txt', 6, 1_600_000_001))).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
      const big = randomBytes(3 * 1024 * 1024);
      writeFileSync(join(root, 'ver.bin'), big);
      utimesSync(join(root, 'ver.bin'), 1_600_000_000, 1_600_000_000);
      const it = t.openRead('ver.bin', big.length, 1_600_000_000)[Symbol.asyncIterator]();
      await it.next();
      // Rewritten in place (same size) while the reader is part-way: its end must fail.
      writeFileSync(join(root, 'ver.bin'), randomBytes(big.length));
      const rest = (async () => {
        for (;;) if ((await it.next()).done) return;
      })();
      await expect(rest).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC' });
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
    copyData: !sftpFlags?.includes('copy-data'),
    stop: () => srv.stop(),
  };
};
conformance('sftp (OpenSSH, copy-data)', sftpFixture());
conformance('sftp (OpenSSH, -P copy-data)', sftpFixture('-P copy-data'));
// Without hard links a replaced file is checked by an lstat answered just before the rename.
conformance('sftp (OpenSSH, -P hardlink)', sftpFixture('-P hardlink'));

const otherServer = (kind: ServerKind, copyData: boolean, quirks: { minWrite?: number; joinsLinks?: boolean } = {}) => async (): Promise<Fixture> => {
  const srv = await startServer(kind);
  return {
    open: (dir) => openTarget(`${srv.alias}:${dir}`, { sshConfig: srv.sshConfig }),
    copyData,
    ...quirks,
    outside: () => (existsSync(join(srv.dir, 'home')) ? readdirSync(join(srv.dir, 'home')) : []),
    stop: () => srv.stop(),
  };
};
// dropbear serves SFTP through OpenSSH's sftp-server (copy-data and all); ProFTPD mod_sftp has its own, without
// copy-data or limits@openssh.com (ssh2 then writes 34000-byte packets: 31,952 bytes of data).
conformance('sftp (dropbear + sftp-server)', otherServer('dropbear', true));
conformance('sftp (ProFTPD mod_sftp)', otherServer('proftpd', false, { minWrite: 31_952, joinsLinks: true }));

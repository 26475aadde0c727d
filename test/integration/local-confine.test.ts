/**
 * The local side never writes outside its root, even when a directory under it is swapped for a symlink while a
 * run is going (issue 10, item 4). Two confinement modes: on Linux every write goes through directory fds opened
 * component by component with O_NOFOLLOW ('fd'); elsewhere the ancestor chain is checked right before and after
 * each create or rename ('recheck'), which the tests force on Linux to cover it too.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { LocalTransport } from '../../src/transport/local/local.js';
import { openTarget } from '../../src/api.js';
import { runSync, type SyncResult } from '../../src/transfer/engine.js';
import { isTempName } from '../../src/util/paths.js';
import { useServer } from '../support/server.js';
import { tempDir } from '../support/trees.js';

type Mode = 'fd' | 'recheck';
const FD_AVAILABLE = process.platform === 'linux' && existsSync('/proc/self/fd');
const MODES: Mode[] = FD_AVAILABLE ? ['fd', 'recheck'] : ['recheck'];

const RACE_FILES = 2000;
const ATTEMPTS = 20;

async function* chunks(...bufs: Buffer[]): AsyncIterable<Buffer> {
  for (const b of bufs) yield b;
}

/** Every non-directory under `dir` (files, symlinks), as paths relative to it. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return (readdirSync(dir, { recursive: true }) as string[]).filter((rel) => !lstatSync(join(dir, rel)).isDirectory());
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

describe('a pull never writes through a local directory swapped for a symlink mid-run', () => {
  const server = useServer('wsync-confine-');
  let remoteDir: string;
  /**
   * The local trees go to a tmpfs where there is one: each file is fsynced before its rename, and 40 pulls of 2,000
   * files each spent most of their time waiting for a disk. Path lookups, renames and symlinks work the same.
   */
  let scratch: string;

  beforeAll(() => {
    scratch = existsSync('/dev/shm') ? mkdtempSync('/dev/shm/wsync-confine-') : tempDir('wsync-confine-local-');
    remoteDir = join(server.work, 'remote');
    mkdirSync(join(remoteDir, 'race'), { recursive: true });
    for (let i = 0; i < RACE_FILES; i++) writeFileSync(join(remoteDir, 'race', `f${String(i).padStart(4, '0')}.txt`), `race file ${i}\n`);
    for (const d of ['a', 'b/c', 'd']) {
      mkdirSync(join(remoteDir, d), { recursive: true });
      for (let i = 0; i < 10; i++) writeFileSync(join(remoteDir, d, `g${i}.txt`), `${d} ${i}\n`);
    }
    writeFileSync(join(remoteDir, 'top.txt'), 'top\n');
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it("is 'fd' by default on Linux, so the library's pull and push use it", () => {
    expect(new LocalTransport(server.work).confinement).toBe(process.platform === 'linux' ? 'fd' : FD_AVAILABLE ? 'fd' : 'recheck');
  });

  for (const mode of MODES) {
    it(`${ATTEMPTS} attempts, swap after transfer 20..400, confinement '${mode}': 0 files outside`, async () => {
      const remote = await openTarget(`${server.srv.alias}:${remoteDir}`, { sshConfig: server.srv.sshConfig });
      const leaked: number[] = [];
      const summary: string[] = [];
      const checks: Array<Record<string, boolean>> = [];
      try {
        for (let i = 0; i < ATTEMPTS; i++) {
          const base = join(scratch, `${mode}-${i}`);
          const local = join(base, 'local');
          const outside = join(base, 'outside');
          mkdirSync(local, { recursive: true });
          mkdirSync(outside, { recursive: true });
          const swapAt = 20 + i * 20;
          let transfers = 0;
          let swapped = false;
          const lt = new LocalTransport(local, { confine: mode });
          let r: SyncResult;
          try {
            r = await runSync({
              direction: 'pull', local: lt, remote, delete: false, force: false, dryRun: false,
              filter: { gitignore: true, excludes: [], includes: [] }, concurrency: 1024, lockWaitSeconds: 10, breakLock: false,
              cacheDir: null,
              afterTransfer: () => {
                if (++transfers !== swapAt) return;
                renameSync(join(local, 'race'), join(local, 'race.old'));
                symlinkSync(outside, join(local, 'race'));
                swapped = true;
              },
            });
          } finally {
            await lt.close();
          }
          const out = filesUnder(outside).length;
          leaked.push(out);
          const inOld = filesUnder(join(local, 'race.old'));
          const intoOld = inOld.filter((f) => !isTempName(f)).length;
          // 'recheck': temps made before the swap whose rename was then refused stay where they are (inside the
          // root, in race.old), for the next run to clear like any other leftover temp.
          const temps = inOld.length - intoOld;
          const refused = r.problems.filter((p) => p.path.startsWith('race/')).length;
          summary.push(`k=${swapAt}: outside ${out}, race.old ${intoOld} (+${temps} temps), refused ${refused}${r.ok ? '' : ' (run failed)'}, ${r.durationMs} ms`);
          // Checked after all attempts, so that a failure still shows every attempt's count.
          checks.push({
            swapped,
            // The symlink is still the one put there: nothing replaced it to write through it either.
            stillLink: lstatSync(join(local, 'race')).isSymbolicLink(),
            // Every race file either went into the directory that was moved aside, or failed (and is reported).
            accounted: intoOld + refused >= RACE_FILES,
            onlyRace: r.problems.every((p) => p.path.startsWith('race/') || p.path === 'race'),
            // The rest of the tree is complete.
            rest: filesUnder(join(local, 'b')).length === 10 && filesUnder(join(local, 'a')).length === 10,
          });
          rmSync(base, { recursive: true, force: true });
        }
      } finally {
        await remote.close();
        console.info(`confinement '${mode}': ${summary.join('; ')}`);
      }
      expect(leaked).toEqual(Array(ATTEMPTS).fill(0));
      for (const c of checks) expect(c).toEqual({ swapped: true, stillLink: true, accounted: true, onlyRace: true, rest: true });
    }, 120_000);
  }
});

describe.each(MODES)("each write refuses a path through a symlink to outside (confinement '%s')", (mode) => {
  let work: string;
  let root: string;
  let outside: string;
  let victimDir: string;
  let t: LocalTransport;
  const victimStat = () => {
    const st = statSync(join(victimDir, 'victim'));
    return [st.mode & 0o7777, Math.floor(st.mtimeMs / 1000), st.size];
  };
  let victimBefore: number[];

  beforeAll(async () => {
    work = tempDir('wsync-confine-unit-');
    root = join(work, 'root');
    outside = join(work, 'outside');
    victimDir = join(work, 'victims');
    mkdirSync(join(root, 'real/deeper'), { recursive: true });
    mkdirSync(outside);
    mkdirSync(victimDir);
    writeFileSync(join(victimDir, 'victim'), 'outside data');
    chmodSync(join(victimDir, 'victim'), 0o644);
    utimesSync(join(victimDir, 'victim'), 1_500_000_000, 1_500_000_000);
    victimBefore = victimStat();
    // esc -> an empty outside dir; vic -> a dir holding a file someone else owns; real/esc: deeper down.
    symlinkSync(outside, join(root, 'esc'));
    symlinkSync(victimDir, join(root, 'vic'));
    symlinkSync(outside, join(root, 'real/esc'));
    symlinkSync(join(victimDir, 'victim'), join(root, 'real/lnk'));
    writeFileSync(join(root, 'real/src.bin'), Buffer.alloc(1000, 7));
    t = new LocalTransport(root, { confine: mode });
    await t.ensureRoot();
  });
  afterAll(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
  });

  const nothingOutside = () => {
    expect(filesUnder(outside)).toEqual([]);
    expect(readdirSync(victimDir)).toEqual(['victim']);
    expect(readFileSync(join(victimDir, 'victim'), 'utf8')).toBe('outside data');
    expect(victimStat()).toEqual(victimBefore);
  };
  const unsafe = { code: 'E_UNSAFE_PATH' };
  const meta = { mode: 0o600, mtime: 1_600_000_000, size: 3 };

  it('writeFile, writeSmall, stageSmall and writeFromRanges', async () => {
    for (const dir of ['esc', 'real/esc', 'vic']) {
      await expect(t.writeFile(`${dir}/f`, chunks(Buffer.from('abc')), meta)).rejects.toMatchObject(unsafe);
      await expect(t.writeFile(`${dir}/sub/f`, chunks(Buffer.from('abc')), meta)).rejects.toMatchObject(unsafe);
      await expect(t.writeSmall(`${dir}/s`, Buffer.from('abc'))).rejects.toMatchObject(unsafe);
      await expect(t.writeSmall(`${dir}/new/deep/s`, Buffer.from('abc'), { parents: true })).rejects.toMatchObject(unsafe);
      await expect(t.writeSmall(`${dir}/new/s`, Buffer.from('abc'), { parents: 'last' })).rejects.toMatchObject(unsafe);
      await expect(t.stageSmall(`${dir}/st`, Buffer.from('abc'))).rejects.toMatchObject(unsafe);
      await expect(t.writeFromRanges(`${dir}/fr`, 'real/src.bin', [[0, 3]], meta)).rejects.toMatchObject(unsafe);
      // Replacing the victim with a backup moved aside: neither the victim nor the backup may move.
      writeFileSync(join(root, 'real/b.txt'), 'before');
      await expect(t.writeFile('real/b.txt', chunks(Buffer.from('abc')), meta, { backupTo: `${dir}/trash/b.txt` })).rejects.toMatchObject(unsafe);
      await expect(t.writeFile('real/b.txt', chunks(Buffer.from('abc')), meta, { backupTo: `${dir}/b.txt` })).rejects.toMatchObject(unsafe);
      expect(readFileSync(join(root, 'real/b.txt'), 'utf8')).toBe('before');
      await expect(t.writeFile(`${dir}/victim`, chunks(Buffer.from('abc')), meta, { backupTo: 'real/trash/victim' })).rejects.toMatchObject(unsafe);
      nothingOutside();
    }
  });

  it('mkdir, symlink, createExclusive, appendFile, openExclusive', async () => {
    for (const dir of ['esc', 'real/esc', 'vic']) {
      await expect(t.mkdir(`${dir}/d`, 0o755)).rejects.toMatchObject(unsafe);
      await expect(t.symlink(`${dir}/l`, '/etc/passwd')).rejects.toMatchObject(unsafe);
      await expect(t.createExclusive(`${dir}/lock`, Buffer.from('me'))).rejects.toMatchObject(unsafe);
      await expect(t.appendFile(`${dir}/log`, Buffer.from('line\n'))).rejects.toMatchObject(unsafe);
      await expect(t.appendFile(`${dir}/victim`, Buffer.from('line\n'))).rejects.toMatchObject(unsafe);
      await expect(t.openExclusive(`${dir}/x.lock`)).rejects.toMatchObject(unsafe);
      nothingOutside();
    }
    // An exclusive file taken inside, renamed over a path through the symlink.
    const ex = await t.openExclusive('real/ok.lock');
    expect(ex).not.toBeNull();
    await expect(ex!.commit(Buffer.from('data'), 'vic/victim')).rejects.toMatchObject(unsafe);
    await ex!.abort();
    nothingOutside();
  });

  it('setMeta, remove and rename', async () => {
    await expect(t.setMeta('vic/victim', { mode: 0o600, mtime: 1_600_000_000 })).rejects.toMatchObject(unsafe);
    await expect(t.setMeta('vic/victim', { mtime: 1_600_000_000 })).rejects.toMatchObject(unsafe);
    await expect(t.remove('vic/victim', 'file')).rejects.toMatchObject(unsafe);
    await expect(t.remove('esc/d', 'dir')).rejects.toMatchObject(unsafe);
    await expect(t.rename('vic/victim', 'real/stolen')).rejects.toMatchObject(unsafe);
    writeFileSync(join(root, 'real/mine'), 'mine');
    await expect(t.rename('real/mine', 'esc/mine')).rejects.toMatchObject(unsafe);
    await expect(t.rename('real/mine', 'esc/new/mine')).rejects.toMatchObject(unsafe);
    await expect(t.rename('real/mine', 'vic/victim')).rejects.toMatchObject(unsafe);
    expect(readFileSync(join(root, 'real/mine'), 'utf8')).toBe('mine');
    nothingOutside();
  });

  it('setMeta on a symlink to an outside file leaves that file alone (only the link gets the mtime)', async () => {
    await t.setMeta('real/lnk', { mode: 0o600, mtime: 1_600_000_000 });
    await t.setMeta('real/lnk', { mode: 0o600 });
    await t.setMeta('real/lnk', { mtime: 1_600_000_100 });
    nothingOutside();
    const st = lstatSync(join(root, 'real/lnk'));
    expect(st.isSymbolicLink()).toBe(true);
    expect(Math.floor(st.mtimeMs / 1000)).toBe(1_600_000_100);
    // And on a file or directory: both attributes, as before.
    writeFileSync(join(root, 'real/plain'), 'x');
    await t.setMeta('real/plain', { mode: 0o600, mtime: 1_600_000_200 });
    await t.setMeta('real/deeper', { mode: 0o750, mtime: 1_600_000_300 });
    const f = lstatSync(join(root, 'real/plain'));
    const d = lstatSync(join(root, 'real/deeper'));
    expect([f.mode & 0o7777, Math.floor(f.mtimeMs / 1000)]).toEqual([0o600, 1_600_000_200]);
    expect([d.mode & 0o7777, Math.floor(d.mtimeMs / 1000)]).toEqual([0o750, 1_600_000_300]);
  });

  it('stageRebuild and rebuildFile', async () => {
    const old = { size: 12, mtime: 1_500_000_000 };
    const ops = [{ kind: 'copy' as const, srcOffset: 0, length: 7, dstOffset: 0 }];
    const literal = async (_pos: number, n: number) => Buffer.alloc(n);
    const m = { mode: 0o644, mtime: 1_600_000_000, size: 7 };
    await expect(t.stageRebuild('vic/victim', old, ops, literal, m)).rejects.toMatchObject(unsafe);
    await expect(t.rebuildFile('vic/victim', old, ops, literal, m)).rejects.toMatchObject(unsafe);
    // The old file inside, the new one renamed through the symlink with a backup there: refused as well.
    writeFileSync(join(root, 'real/old.bin'), 'outside data');
    utimesSync(join(root, 'real/old.bin'), 1_500_000_000, 1_500_000_000);
    await expect(t.rebuildFile('real/old.bin', old, ops, literal, m, { backupTo: 'esc/old.bin' })).rejects.toMatchObject(unsafe);
    nothingOutside();
  });

  it('a directory swapped for a symlink after it was used: later writes stay inside or are refused', async () => {
    await t.mkdir('swap', 0o755);
    await t.mkdir('swap/sub', 0o755);
    await t.writeFile('swap/a', chunks(Buffer.from('abc')), meta);
    await t.writeFile('swap/sub/a', chunks(Buffer.from('abc')), meta);
    renameSync(join(root, 'swap'), join(root, 'swap.old'));
    symlinkSync(outside, join(root, 'swap'));
    const attempts = [
      () => t.writeFile('swap/b', chunks(Buffer.from('abc')), meta),
      () => t.writeFile('swap/sub/b', chunks(Buffer.from('abc')), meta),
      () => t.mkdir('swap/d', 0o755),
      () => t.symlink('swap/l', 'x'),
      () => t.setMeta('swap/a', { mode: 0o600, mtime: 1 }),
      () => t.appendFile('swap/log', Buffer.from('x')),
      () => t.createExclusive('swap/lock', Buffer.from('x')),
      () => t.remove('swap/a', 'file'),
      () => t.rename('swap/sub/a', 'swap/sub/c'),
    ];
    for (const f of attempts) {
      const res = await f().then(
        () => 'done',
        (err: unknown) => (err as { code?: string }).code,
      );
      // 'fd': the cached directory is the one moved aside, so the write lands there; 'recheck': refused.
      expect(mode === 'fd' ? ['done', 'E_UNSAFE_PATH'] : ['E_UNSAFE_PATH']).toContain(res);
    }
    expect(filesUnder(outside)).toEqual([]);
    rmSync(join(root, 'swap'));
  });

  it('a directory removed and made again (here or by someone else) is written into, not its old inode', async () => {
    await t.mkdir('again', 0o755);
    await t.writeFile('again/a', chunks(Buffer.from('abc')), meta);
    await t.remove('again/a', 'file');
    await t.remove('again', 'dir');
    await t.mkdir('again', 0o700);
    await t.writeFile('again/b', chunks(Buffer.from('abc')), meta);
    expect(readdirSync(join(root, 'again'))).toEqual(['b']);
    rmSync(join(root, 'again'), { recursive: true });
    mkdirSync(join(root, 'again'));
    await t.writeFile('again/c', chunks(Buffer.from('abc')), meta);
    expect(readdirSync(join(root, 'again'))).toEqual(['c']);
    // Renamed by the transport: the old name is a new directory afterwards.
    await t.rename('again', 'moved/again');
    await t.mkdir('again', 0o755);
    await t.writeFile('again/d', chunks(Buffer.from('abc')), meta);
    expect(readdirSync(join(root, 'again'))).toEqual(['d']);
    expect(readdirSync(join(root, 'moved/again'))).toEqual(['c']);
  });

  if (mode === 'fd') it('keeps a bounded number of directory fds, re-validates evicted ones, and closes them all', async () => {
    const before = openFds();
    const u = new LocalTransport(join(work, 'many'), { confine: mode });
    await u.ensureRoot();
    for (let i = 0; i < 400; i++) {
      await u.mkdir(`d${i}`, 0o755);
      await u.writeFile(`d${i}/f`, chunks(Buffer.from('abc')), meta);
    }
    expect(openFds() - before).toBeLessThanOrEqual(260);
    // d0 was evicted long ago: a swap now is caught when it is opened again.
    renameSync(join(work, 'many/d0'), join(work, 'many/d0.old'));
    symlinkSync(outside, join(work, 'many/d0'));
    await expect(u.writeFile('d0/g', chunks(Buffer.from('abc')), meta)).rejects.toMatchObject(unsafe);
    expect(filesUnder(outside)).toEqual([]);
    await u.close();
    expect(openFds()).toBeLessThanOrEqual(before);
  });
});

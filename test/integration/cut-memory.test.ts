/**
 * What a run cut short leaves for the next one to know (issue 12): an edit that keeps size and mtime, found by
 * the ctime check or made to a file an earlier cut run had already sent (and journaled), is never taken for synced
 * by a later run. Engine-level, with a local directory as the target and the link "cut" after a chosen file: every
 * call to the target fails from then on, and the cut run leaves its lock behind as a real cut does.
 */
import { describe, it, expect } from 'vitest';
import { mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Transport } from '../../src/transport/types.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { runSync } from '../../src/transfer/engine.js';
import { WsyncError } from '../../src/errors.js';

const lost = () => new WsyncError('E_REMOTE_LOST', 'connection to the server was lost');

function cuttable(t: Transport): { t: Transport; cut: () => void } {
  let isCut = false;
  const proxy = new Proxy(t, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => (isCut ? Promise.reject(lost()) : (v as (...a: unknown[]) => unknown).apply(target, args));
    },
  });
  return { t: proxy as Transport, cut: () => (isCut = true) };
}

describe('what a cut run leaves for the next', () => {
  const setup = () => {
    const work = mkdtempSync(join(tmpdir(), 'wsync-cutmem-'));
    const local = join(work, 'L');
    const remote = join(work, 'R');
    mkdirSync(local);
    const put = (rel: string, s: string, mt: number) => {
      writeFileSync(join(local, rel), s);
      utimesSync(join(local, rel), mt, mt);
    };
    const run = async (cutAfter?: string): Promise<{ ok?: boolean; conflicts?: number; error?: string }> => {
      const { t, cut } = cuttable(new LocalTransport(remote));
      try {
        const r = await runSync({
          direction: 'push',
          local: new LocalTransport(local),
          remote: t,
          delete: false,
          force: false,
          dryRun: false,
          filter: { gitignore: true, excludes: [], includes: [] },
          concurrency: 1,
          lockWaitSeconds: 0,
          breakLock: false,
          cacheDir: join(work, 'cache'),
          cacheTarget: 'r',
          afterTransfer: (p) => {
            if (p === cutAfter) {
              cut();
              throw lost();
            }
          },
        });
        return { ok: r.ok, conflicts: r.conflicts.length };
      } catch (err) {
        rmSync(join(remote, '.wsync', 'lock'), { force: true });
        return { error: (err as Error).message };
      }
    };
    const remoteText = (rel: string) => readFileSync(join(remote, rel), 'utf8');
    return { put, run, remoteText };
  };
  const tick = () => new Promise((r) => setTimeout(r, 50));
  const T0 = 1_700_000_000;
  const T1 = 1_700_000_100;

  it('a same-second, same-size edit found by the ctime check survives a run cut before its turn', async () => {
    const { put, run, remoteText } = setup();
    put('a.txt', 'a0', T0);
    put('z.txt', 'BBBB', T1);
    expect(await run()).toMatchObject({ ok: true });
    await tick();
    put('z.txt', 'CCCC', T1);
    await tick();
    put('a.txt', 'a1', T1);
    expect((await run('a.txt')).error).toMatch(/lost/);
    expect(await run()).toMatchObject({ ok: true, conflicts: 0 });
    expect(remoteText('z.txt')).toBe('CCCC');
  });

  it('an edit to a file a cut run had sent (journaled, not in the manifest) is sent by a later run', async () => {
    const { put, run, remoteText } = setup();
    put('a.txt', 'a0', T0);
    put('z.txt', 'AAAA', T0);
    expect(await run()).toMatchObject({ ok: true });
    put('z.txt', 'BBBB', T1);
    expect((await run('z.txt')).error).toMatch(/lost/);
    expect(remoteText('z.txt')).toBe('BBBB');
    await tick();
    put('z.txt', 'CCCC', T1);
    await tick();
    put('a.txt', 'a1', T1);
    expect((await run('a.txt')).error).toMatch(/lost/);
    expect(await run()).toMatchObject({ ok: true, conflicts: 0 });
    expect(remoteText('z.txt')).toBe('CCCC');
  });

  it('the first run ever cut, then a same-second edit: not taken for synced', async () => {
    const { put, run, remoteText } = setup();
    put('a.txt', 'a0', T0);
    put('z.txt', 'BBBB', T1);
    expect((await run('z.txt')).error).toMatch(/lost/);
    await tick();
    put('z.txt', 'CCCC', T1);
    expect(await run()).toMatchObject({ ok: true, conflicts: 0 });
    expect(remoteText('z.txt')).toBe('CCCC');
  });
});

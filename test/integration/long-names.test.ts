import { describe, it, expect } from 'vitest';
import { join } from 'node:path';
import { readdirSync } from 'node:fs';
import { useServer } from '../support/server.js';
import { runCli } from '../support/cli.js';
import { makeTree, snapshot, type Spec } from '../support/trees.js';
import { isTempName } from '../../src/util/paths.js';
import { openTarget } from '../../src/api.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import type { Transport } from '../../src/transport/types.js';

/** A name of exactly n bytes of UTF-8: `unit` repeated, padded with ASCII. */
const nameOf = (n: number, unit: string, tag: string): string => {
  const u = Buffer.byteLength(unit);
  const reps = Math.floor((n - tag.length) / u);
  return tag + unit.repeat(reps) + 'x'.repeat(n - tag.length - reps * u);
};

/** Every temp name left anywhere below root (there should be none after a run). */
const tempsUnder = (root: string): string[] =>
  readdirSync(root, { recursive: true, encoding: 'utf8' }).filter((p) => isTempName(p.split('/').at(-1)!));

describe('names of 236 to 255 bytes (the temp form adds 20) over a real sshd', () => {
  const server = useServer('wsync-names-');

  const names: string[] = [];
  for (const n of [236, 250, 255]) {
    names.push(nameOf(n, 'a', `a${n}-`), nameOf(n, 'é', `e${n}-`), nameOf(n, '€', `u${n}-`), nameOf(n, '😀', `m${n}-`));
  }

  const run = async (args: string[]) => {
    const r = await runCli([...args, '--json', '-F', server.srv.sshConfig]);
    const lines = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    return { ...r, lines, summary: lines.at(-1), items: lines.filter((l) => l.type === 'item') };
  };

  it('push and pull make an exact mirror, and a second run is a no-op', async () => {
    for (const n of names) expect([236, 250, 255]).toContain(Buffer.byteLength(n));
    const local = join(server.work, 'local');
    const remote = join(server.work, 'remote');
    const spec: Spec = {};
    const dir = nameOf(245, 'é', 'dir-');
    for (const [i, n] of names.entries()) {
      spec[n] = `content ${i}\n`;
      // In a subdirectory whose own name is long too, and a symlink with a long name.
      spec[`${dir}/${n}`] = `nested ${i}\n`;
    }
    spec[`d/${names[5]}`] = { link: names[3] };
    makeTree(local, spec);

    const push = await run(['push', local, `${server.srv.alias}:${remote}`]);
    expect(push.code, push.stderr).toBe(0);
    expect(push.summary.ok, push.stderr).toBe(true);
    expect(push.summary.problems).toEqual([]);
    expect(snapshot(remote)).toEqual(snapshot(local));
    expect(tempsUnder(remote)).toEqual([]);

    const again = await run(['push', local, `${server.srv.alias}:${remote}`]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.summary.stats.filesSent).toBe(0);
    expect(again.items).toEqual([]);

    const back = join(server.work, 'back');
    const pull = await run(['pull', back, `${server.srv.alias}:${remote}`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.summary.ok, pull.stderr).toBe(true);
    expect(snapshot(back)).toEqual(snapshot(local));
    expect(tempsUnder(back)).toEqual([]);

    const pullAgain = await run(['pull', back, `${server.srv.alias}:${remote}`]);
    expect(pullAgain.code, pullAgain.stderr).toBe(0);
    expect(pullAgain.summary.stats.filesSent).toBe(0);
    expect(pullAgain.items).toEqual([]);
  });

  it('changed long-named files are replaced in both directions', async () => {
    const local = join(server.work, 'c-local');
    const remote = join(server.work, 'c-remote');
    makeTree(local, Object.fromEntries(names.map((n) => [n, 'one'])));
    expect((await run(['push', local, `${server.srv.alias}:${remote}`])).code).toBe(0);
    makeTree(local, Object.fromEntries(names.map((n) => [n, 'two, longer'])), 1_700_000_100);
    const push = await run(['push', local, `${server.srv.alias}:${remote}`]);
    expect(push.code, push.stderr).toBe(0);
    expect(push.items.length).toBe(names.length);
    expect(snapshot(remote)).toEqual(snapshot(local));
    expect(tempsUnder(remote)).toEqual([]);

    // Edited on the remote side: a pull replaces the local copies.
    makeTree(remote, Object.fromEntries(names.map((n) => [n, 'three, from the remote'])), 1_700_000_200);
    const pull = await run(['pull', local, `${server.srv.alias}:${remote}`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.items.length).toBe(names.length);
    expect(snapshot(local)).toEqual(snapshot(remote));
    expect(tempsUnder(local)).toEqual([]);
  });

  it('a name over 255 bytes (from a system that allows it) fails with "name too long", on either side', async () => {
    const tooLong = nameOf(300, '€', 'long-');
    const meta = { mode: 0o644, mtime: 1_700_000_000, size: 3 };
    const data = async function* () {
      yield Buffer.from('abc');
    };
    const check = async (t: Transport, where: RegExp) => {
      await t.ensureRoot();
      await expect(t.writeFile(tooLong, data(), meta)).rejects.toThrow(where);
      await expect(t.writeFile(`sub/${tooLong}`, data(), meta, { parents: true })).rejects.toThrow(where);
      await expect(t.mkdir(tooLong, 0o755)).rejects.toThrow(where);
      await expect(t.symlink(tooLong, 'target')).rejects.toThrow(where);
      // Nothing left behind: the temp the data went to is removed.
      expect((await t.readdir(''))!.map((e) => e.name).filter(isTempName)).toEqual([]);
      expect(((await t.readdir('sub')) ?? []).map((e) => e.name).filter(isTempName)).toEqual([]);
    };
    const remote = await openTarget(`${server.srv.alias}:${join(server.work, 'too-long-remote')}`, { sshConfig: server.srv.sshConfig });
    try {
      await check(remote, /name too long for the server \(300 bytes/);
    } finally {
      await remote.close();
    }
    await check(new LocalTransport(join(server.work, 'too-long-local')), /name too long \(300 bytes/);
  });
});

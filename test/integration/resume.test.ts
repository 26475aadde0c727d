/**
 * A big upload cut part-way goes on from what the server already holds (issue 12): through a link that drops every
 * connection after 3-6 MB, a 16 MB file (which no single run could send) arrives within a few runs; a partial whose
 * bytes do not match the local file is not trusted; a partial of a version since changed is removed.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readdirSync, readFileSync, statSync, openSync, writeSync, closeSync, utimesSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { runCli, type CliResult } from '../support/cli.js';
import { startCutProxy, type CutProxy } from '../support/cutproxy.js';
import { xorshiftBytes } from '../support/xorshift.js';
import { checkCutRun, finalFiles, PARTIAL_NAME, rng, tempFiles } from '../support/cutcheck.js';

const MB = 1_000_000;

describe('interrupted big uploads resume', () => {
  const server = useServer('wsync-resume-');
  let proxy: CutProxy;
  beforeAll(async () => {
    proxy = await startCutProxy(server.srv, server.work);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const cli = (args: string[]): Promise<CliResult> => runCli([...args, '-F', proxy.sshConfig], { timeoutMs: 60_000, env: { WSYNC_DEBUG: '1' } });
  const push = (src: string, remote: string) => cli(['push', '--no-compress', src, `${server.srv.alias}:${remote}`]);
  const partials = (dir: string) => readdirSync(dir).filter((n) => PARTIAL_NAME.test(n));
  const source = (name: string, seed: number) => {
    const dir = join(server.work, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'big.bin'), xorshiftBytes(seed, 16 * MB));
    writeFileSync(join(dir, 'small.txt'), 'a small file beside it\n');
    return dir;
  };
  /** A push through a link cut after 5 MB: it must end with exit 2. */
  const cutAt5MB = async (src: string, remote: string) => {
    proxy.cutAfter = 5 * MB;
    const r = await push(src, remote);
    proxy.cutAfter = undefined;
    expect(r.code, r.stderr).toBe(2);
  };
  /** The remote holds exactly the source, and no temp or partial is left. */
  const expectMirror = (src: string, remote: string) => {
    expect(finalFiles(remote)).toEqual(finalFiles(src));
    expect(tempFiles(remote)).toEqual([]);
  };
  /** A debug run's stderr lines, without the trace and timing lines WSYNC_DEBUG adds. */
  const plain = (r: CliResult): CliResult => ({ ...r, stderr: r.stderr.split('\n').filter((l) => !/^(trace|timings)/.test(l)).join('\n') });

  it('a 16 MB file arrives through cuts every 3-6 MB, each run going on from the last; nothing is left over', async () => {
    const src = source('src-a', 1);
    const remote = join(server.srv.remoteRoot, 'resume-a');
    const want = finalFiles(src);
    const rand = rng(7);
    const log: string[] = [];
    let resumed = 0;
    let done = false;
    for (let run = 1; run <= 10 && !done; run++) {
      proxy.mode = 'reset';
      proxy.cutAfter = Math.floor(3 * MB + rand() * 3 * MB);
      const r = await push(src, remote);
      if (/trace: resumed big\.bin/.test(r.stderr)) resumed++;
      const held = partials(remote).map((n) => statSync(join(remote, n)).size);
      log.push(`run ${run}: cut at ${proxy.cutAfter}, exit ${r.code}, partial ${held.join(',') || 'none'}`);
      checkCutRun(plain(r), log.join('\n'), finalFiles(remote), want);
      done = r.code === 0;
    }
    proxy.cutAfter = undefined;
    expect(done, log.join('\n')).toBe(true);
    expect(resumed, log.join('\n')).toBeGreaterThanOrEqual(2);
    expect(finalFiles(remote)).toEqual(want);
    expect(tempFiles(remote)).toEqual([]);
  }, 300_000);

  it('a partial whose bytes differ from the local file is not gone on with', async () => {
    const src = source('src-b', 2);
    const remote = join(server.srv.remoteRoot, 'resume-b');
    await cutAt5MB(src, remote);
    const [name] = partials(remote);
    expect(name).toBeDefined();
    // Someone (or a broken disk) changed the end of what it holds.
    const p = join(remote, name);
    const size = statSync(p).size;
    expect(size).toBeGreaterThan(1 * MB);
    const fd = openSync(p, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0x5a), 0, 4096, size - 5000);
    closeSync(fd);
    const r2 = await push(src, remote);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).not.toMatch(/trace: resumed/);
    expectMirror(src, remote);
  }, 120_000);

  it('a partial of a version changed since is removed, and the new version sent whole', async () => {
    const src = source('src-c', 3);
    const remote = join(server.srv.remoteRoot, 'resume-c');
    await cutAt5MB(src, remote);
    expect(partials(remote)).toHaveLength(1);
    // The same first bytes, another end, another mtime: the old partial's prefix would even read back equal.
    const big = join(src, 'big.bin');
    const body = readFileSync(big);
    body.fill(7, 15 * MB);
    writeFileSync(big, body);
    utimesSync(big, new Date(), new Date(Date.now() + 5000));
    const r2 = await push(src, remote);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).not.toMatch(/trace: resumed/);
    expectMirror(src, remote);
  }, 120_000);

  it('a read-only file (mode 0444) cut mid-way is gone on with, and arrives with its mode', async () => {
    const src = source('src-e', 5);
    chmodSync(join(src, 'big.bin'), 0o444);
    const remote = join(server.srv.remoteRoot, 'resume-e');
    await cutAt5MB(src, remote);
    expect(partials(remote)).toHaveLength(1);
    const r2 = await push(src, remote);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toMatch(/trace: resumed big\.bin/);
    expect(statSync(join(remote, 'big.bin')).mode & 0o777).toBe(0o444);
    expectMirror(src, remote);
  }, 120_000);

  it('a delta rebuild cut mid-way leaves the old file intact, and the next run finishes it', async () => {
    const src = source('src-d', 4);
    const remote = join(server.srv.remoteRoot, 'resume-d');
    const first = await push(src, remote);
    expect(first.code, first.stderr).toBe(0);
    const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
    const big = join(src, 'big.bin');
    const oldSha = sha(big);
    // 1 MB of new bytes in the middle: sent as a delta (copy-data for the rest) of about that size.
    const fd = openSync(big, 'r+');
    writeSync(fd, xorshiftBytes(99, MB), 0, MB, 7 * MB);
    closeSync(fd);
    utimesSync(big, new Date(), new Date(Date.now() + 3000));
    const newSha = sha(big);
    const rand = rng(11);
    let cut = 0;
    for (let i = 0; i < 6; i++) {
      proxy.mode = i % 2 ? 'end' : 'reset';
      proxy.cutAfter = Math.floor(60_000 + rand() * 900_000);
      const r = await push(src, remote);
      const now = sha(join(remote, 'big.bin'));
      const what = `cut ${i} at ${proxy.cutAfter}: exit ${r.code}\n${r.stderr}`;
      expect([oldSha, newSha], what).toContain(now);
      expect(r.stderr, what).not.toMatch(/^\s+at /m);
      if (r.code === 0) expect(now, what).toBe(newSha);
      else {
        expect(r.code, what).toBe(2);
        cut++;
      }
    }
    proxy.cutAfter = undefined;
    // The cuts fell inside the run (the rebuild's literal megabyte is most of its bytes), not after it.
    expect(cut).toBeGreaterThanOrEqual(3);
    const last = await push(src, remote);
    expect(last.code, last.stderr).toBe(0);
    expectMirror(src, remote);
  }, 180_000);
});

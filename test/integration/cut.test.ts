/**
 * A link that drops at a random byte (issue 10, items 1 and 2): every cut run ends with exit 2 and one line, no
 * stack trace, no hang; no file at a final path differs from the source; and a run exits 0 only when the
 * destination is an exact mirror. Push and pull, compression on and off, reset and FIN cuts, through a real sshd.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { runCli, type CliResult } from '../support/cli.js';
import { makeTree, snapshot, type Spec } from '../support/trees.js';
import { startCutProxy, type CutProxy, type CutMode } from '../support/cutproxy.js';
import { xorshiftBytes } from '../support/xorshift.js';
import { checkCutRun, finalFiles, rng } from '../support/cutcheck.js';
import { startProxy } from '../../bench/proxy.js';
import { writeProxyConfig } from '../../bench/harness.js';

describe('a link cut at random bytes', () => {
  const server = useServer('wsync-cut-');
  let proxy: CutProxy;
  let source: string;
  let sourceFiles: Map<string, string>;

  beforeAll(async () => {
    proxy = await startCutProxy(server.srv, server.work);
    // ~600 files in nested directories, small text and a few incompressible ones of 64–300 KB.
    source = join(server.work, 'source');
    const spec: Spec = {};
    for (let i = 0; i < 600; i++) {
      const dir = `d${i % 12}/s${i % 5}`;
      spec[`${dir}/f${i}.txt`] = `file ${i}\n`.repeat(1 + (i % 40));
    }
    for (let i = 0; i < 8; i++) spec[`bin/blob${i}.bin`] = xorshiftBytes(1000 + i, 64 * 1024 + i * 30_000);
    makeTree(source, spec);
    sourceFiles = finalFiles(source);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  const cli = (args: string[]): Promise<CliResult> => runCli([...args, '-F', proxy.sshConfig], { timeoutMs: 40_000 });

  /** Full run through the proxy without a cut: how many bytes a whole run moves. */
  const fullRunBytes = async (args: string[], reset: () => void): Promise<number> => {
    reset();
    proxy.cutAfter = undefined;
    const r = await cli(args);
    expect(r.code, r.stderr).toBe(0);
    const n = proxy.lastBytes();
    reset();
    return n;
  };

  const cases: Array<{ dir: 'push' | 'pull'; compress: boolean; mode: CutMode; runs: number }> = [
    { dir: 'push', compress: false, mode: 'reset', runs: 12 },
    { dir: 'push', compress: true, mode: 'reset', runs: 12 },
    { dir: 'push', compress: true, mode: 'end', runs: 8 },
    { dir: 'pull', compress: false, mode: 'reset', runs: 10 },
    { dir: 'pull', compress: true, mode: 'end', runs: 8 },
  ];

  for (const c of cases) {
    it(`${c.dir}, compression ${c.compress ? 'on' : 'off'}, ${c.mode} cuts at ${c.runs} random points`, async () => {
      const seed = 7 + c.runs * 31 + (c.compress ? 1 : 0) + (c.mode === 'end' ? 2 : 0) + (c.dir === 'pull' ? 4 : 0);
      const rand = rng(seed);
      const z = c.compress ? '-z' : '--no-compress';
      const tag = `${c.dir}-${z}-${c.mode}`;
      if (c.dir === 'push') {
        const remote = join(server.srv.remoteRoot, `cut-${tag}`);
        const args = ['push', z, source, `${server.srv.alias}:${remote}`];
        const total = await fullRunBytes(args, () => rmSync(remote, { recursive: true, force: true }));
        for (let i = 0; i < c.runs; i++) {
          rmSync(remote, { recursive: true, force: true });
          proxy.mode = c.mode;
          proxy.cutAfter = Math.floor(rand() * total * 1.05);
          const r = await cli(args);
          checkCutRun(r, `seed ${seed} run ${i}: cut after ${proxy.cutAfter} of ${total} bytes`, finalFiles(remote), sourceFiles);
        }
      } else {
        const remote = join(server.srv.remoteRoot, `cut-src-${tag}`);
        proxy.cutAfter = undefined;
        const seedPush = await cli(['push', source, `${server.srv.alias}:${remote}`]);
        expect(seedPush.code, seedPush.stderr).toBe(0);
        const local = join(server.work, `cut-dst-${tag}`);
        const args = ['pull', z, local, `${server.srv.alias}:${remote}`];
        const total = await fullRunBytes(args, () => rmSync(local, { recursive: true, force: true }));
        for (let i = 0; i < c.runs; i++) {
          rmSync(local, { recursive: true, force: true });
          proxy.mode = c.mode;
          proxy.cutAfter = Math.floor(rand() * total * 1.05);
          const r = await cli(args);
          checkCutRun(r, `seed ${seed} run ${i}: cut after ${proxy.cutAfter} of ${total} bytes`, finalFiles(local), sourceFiles);
        }
      }
      proxy.cutAfter = undefined;
    }, 300_000);
  }

  it('a stalled link (no FIN, no RST) ends the run with exit 2 once keepalives go unanswered', async () => {
    const remote = join(server.srv.remoteRoot, 'cut-stall');
    proxy.mode = 'stall';
    proxy.stallMs = 60_000;
    proxy.cutAfter = 200_000;
    const t0 = Date.now();
    const r = await cli(['push', '--no-compress', source, `${server.srv.alias}:${remote}`]);
    proxy.cutAfter = undefined;
    checkCutRun(r, 'stall after 200 kB', finalFiles(remote), sourceFiles);
    expect(r.code).toBe(2);
    // ServerAliveInterval 1, ServerAliveCountMax 2 in the proxy's ssh_config.
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 60_000);

  it("a stalled link with no ServerAliveInterval configured is noticed by wsync's own check: exit 2 within 15 s", async () => {
    const remote = join(server.srv.remoteRoot, 'cut-stall-default');
    const cfg = join(server.work, 'ssh_config.no-alive');
    writeFileSync(cfg, readFileSync(proxy.sshConfig, 'utf8').replace(/^\s*ServerAlive\w+ .*\n/gm, ''));
    expect(readFileSync(cfg, 'utf8')).not.toMatch(/ServerAlive/);
    proxy.mode = 'stall';
    proxy.stallMs = 60_000;
    proxy.cutAfter = 200_000;
    const t0 = Date.now();
    const r = await runCli(['push', '--no-compress', source, `${server.srv.alias}:${remote}`, '-F', cfg], { timeoutMs: 40_000 });
    proxy.cutAfter = undefined;
    checkCutRun(r, 'stall after 200 kB, default keepalive', finalFiles(remote), sourceFiles);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nothing came from the server for \d+ s/);
    // Dead after 10 s without a sign of life (little was sent: no slow-uplink allowance; ssh's default rule would take 45-60 s).
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 60_000);

  // A slow link whose keepalive answers queue behind the data for longer than that is not taken for dead: at
  // 1 Mbit/s the ~2 MB the server's channel window lets the client queue takes ~16 s to drain (ssh's count rule, 3
  // unanswered at 2 s, would end the connection) and the write replies say the server is there; at 64 kbit/s even
  // those come back only every ~13 s, and what says the link lives is the upload queue draining.
  for (const [rate, size, minMs] of [[1e6, 3_000_000, 20_000], [64e3, 300_000, 30_000]] as const) {
    it(`a ${rate / 1000} kbit/s uplink whose keepalive answers queue behind the data is not taken for dead`, async () => {
      const link = await startProxy({ targetPort: server.srv.port, delayMs: 20, rateBitsPerSec: rate });
      try {
        const dir = join(server.work, `slow-${rate}`);
        mkdirSync(dir, { recursive: true });
        const cfg = writeProxyConfig(server.srv, link.port, dir);
        const src = join(server.work, `slow-src-${rate}`);
        makeTree(src, { 'big.bin': xorshiftBytes(77, size) });
        const remote = join(server.srv.remoteRoot, `slow-dst-${rate}`);
        const t0 = Date.now();
        const r = await runCli(['push', '--no-compress', src, `${server.srv.alias}:${remote}`, '-F', cfg], { timeoutMs: 90_000 });
        expect(r.code, r.stderr).toBe(0);
        expect(Date.now() - t0).toBeGreaterThan(minMs);
        expect(snapshot(remote)).toEqual(snapshot(src));
      } finally {
        await link.close();
      }
    }, 120_000);
  }

  it('after the cuts, a run without one converges to an exact mirror', async () => {
    const remote = join(server.srv.remoteRoot, 'cut-push--z-reset');
    proxy.cutAfter = undefined;
    const r = await cli(['push', source, `${server.srv.alias}:${remote}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(snapshot(remote)).toEqual(snapshot(source));
  });
});

/**
 * What the benchmarks (bench/run.ts: directories, bench/git.ts: git branches) share: running one tool invocation
 * through the proxy with its counters zeroed, table cells, flag/env parsing and the facts about the machine.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, release, platform } from 'node:os';
import { join, dirname, resolve, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { startSshd, type TestServer } from '../test/support/sshd.js';
import { startProxy, type Proxy } from './proxy.js';

/** The repository root (this file runs from dist-bench/bench/). */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface Cell {
  status: 'ok' | 'fail' | 'timeout' | 'mismatch' | 'na' | 'skipped';
  secs?: number;
  up?: number;
  down?: number;
  /** Client → server bytes per second while the bulk of the data moved (proxy timeline), where measured. */
  steadyRate?: number;
  /** Wall times of every run, when a case is run several times (the cell shows the median run). */
  runs?: number[];
  /** Largest up + down of those runs. */
  maxWire?: number;
  note?: string;
  /** Full stderr/stdout tail, for the failures section. */
  detail?: string;
}

/** A numeric setting from `--flag` or else `WSYNC_BENCH_<NAME>`; non-negative. */
export function numSetting(flag: string | undefined, name: string, dflt: number): number {
  const raw = flag ?? benchEnv(name);
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`bad value for ${name}: ${raw}`);
  return n;
}

export const benchEnv = (name: string): string | undefined => process.env[`WSYNC_BENCH_${name}`];

/** First line that explains a failure; Node puts "file:line" and source excerpts before the actual error. */
export function firstUsefulLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const err = lines.find((l) => /^([A-Z]\w*Error|Error|error|fatal|wsync:)\b/.test(l) || /\berror\b/i.test(l));
  return err ?? lines[0] ?? '';
}

let current: ChildProcess | undefined;

export function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/** Stops the tool invocation in progress, if any (for SIGINT cleanup). */
export function killCurrent(): void {
  if (current) killGroup(current);
}

export interface RunOutcome {
  code: number | null;
  signal: string | null;
  secs: number;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  up: number;
  down: number;
}

/**
 * Runs one tool invocation with the proxy counters zeroed. Asynchronous on purpose: the proxy lives in this
 * process, and a blocking spawnSync would freeze the emulated link.
 */
export async function runMeasured(
  proxy: Proxy,
  cmd: string,
  args: string[],
  opts: { timeoutS: number; env: NodeJS.ProcessEnv; log: string; cwd?: string; interruptAfterS?: number },
): Promise<RunOutcome> {
  await quiesce(proxy);
  // Dirty pages from the previous run (or tree copy) written back now, not during this one: tools that fsync
  // (wsync, git) would otherwise wait for another tool's writeback.
  await new Promise<void>((res) => execFile('sync', () => res()));
  proxy.resetCounters();
  const cap = 256 * 1024;
  let stdout = '';
  let stderr = '';
  const t0 = performance.now();
  // detached: own process group, so a timeout also stops the ssh children rsync/scp/git spawn.
  const child = spawn(cmd, args, { cwd: opts.cwd ?? REPO, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  current = child;
  child.stdout!.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-cap)));
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-cap)));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child);
  }, opts.timeoutS * 1000);
  // Ctrl-C in a terminal: SIGINT to the whole foreground process group (the tool and any ssh it spawned).
  const interrupt =
    opts.interruptAfterS !== undefined
      ? setTimeout(() => {
          try {
            process.kill(-child.pid!, 'SIGINT');
          } catch {
            // already gone
          }
        }, opts.interruptAfterS * 1000)
      : undefined;
  const { code, signal, secs } = await new Promise<{ code: number | null; signal: string | null; secs: number }>(
    (res) => {
      child.once('error', (e) => {
        stderr += `\nspawn failed: ${e.message}`;
        res({ code: -1, signal: null, secs: (performance.now() - t0) / 1000 });
      });
      child.once('exit', (c, s) => res({ code: c, signal: s, secs: (performance.now() - t0) / 1000 }));
    },
  );
  clearTimeout(timer);
  clearTimeout(interrupt);
  killGroup(child); // leftovers (e.g. an ssh the tool forgot) must not keep moving bytes into the next run
  current = undefined;
  // The tool's last bytes (disconnect, FIN) may still be in the emulated link; count them before reading.
  await quiesce(proxy);
  writeFileSync(opts.log, `$ ${cmd} ${args.join(' ')}\n--- exit ${code} ${signal ?? ''} ${secs.toFixed(3)} s\n--- stdout\n${stdout}\n--- stderr\n${stderr}\n`);
  return { code, signal, secs, timedOut, stdout, stderr, up: proxy.bytesUp(), down: proxy.bytesDown() };
}

export async function quiesce(proxy: Proxy): Promise<void> {
  const until = Date.now() + 5000;
  while (proxy.activeConnections() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
}

export function shortPath(p: string): string {
  const r = relative(REPO, p);
  return r.startsWith('..') ? p : r;
}

export function fmtBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

export const cellEscape = (s: string) => s.replace(/\|/g, '\\|').replace(/\s+/g, ' ').slice(0, 140);

export function timeCell(c: Cell | undefined): string {
  if (!c) return '—';
  switch (c.status) {
    case 'ok':
      return c.secs!.toFixed(2);
    case 'na':
    case 'skipped':
      return cellEscape(c.note ?? 'n/a');
    case 'timeout':
      return cellEscape(`>${Math.round(c.secs!)} s (stopped${c.note ? '; ' + c.note : ''})`);
    case 'mismatch':
      return cellEscape(`MISMATCH (${c.secs!.toFixed(2)} s): ${c.note ?? ''}`);
    case 'fail':
      return cellEscape(`FAIL: ${c.note ?? ''}`);
  }
}

export function bytesCell(c: Cell | undefined): string {
  if (!c || c.up === undefined || c.down === undefined) return c?.status === 'na' ? 'n/a' : '—';
  return `${fmtBytes(c.up + c.down)} (↑${fmtBytes(c.up)} ↓${fmtBytes(c.down)})`;
}

/** Time ratio w/r of two completed cells. */
export function ratioCell(w: Cell | undefined, r: Cell | undefined): string {
  if (w?.status !== 'ok' || r?.status !== 'ok') return 'n/a';
  return `${(w.secs! / r.secs!).toFixed(2)}×`;
}

export function versionOf(cmd: string, args: string[]): string {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return out.split('\n')[0]!.trim().replace(/\s+/g, ' ');
  } catch (e) {
    const err = e as { stderr?: string };
    return (err.stderr ?? '').split('\n')[0]!.trim() || 'unknown';
  }
}

export function sshVersion(): string {
  try {
    // `ssh -V` prints to stderr.
    const r = execFileSync('sh', ['-c', 'ssh -V 2>&1'], { encoding: 'utf8' });
    return r.trim();
  } catch {
    return 'unknown';
  }
}

/** The benchmarked checkout's commit, flagged when src/ or bin/ differ from it. */
export function gitRev(checkout = REPO): string {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: checkout, encoding: 'utf8', stdio: 'pipe' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin'], { cwd: checkout, encoding: 'utf8', stdio: 'pipe' });
    return dirty.trim() ? `${rev} (src/bin modified)` : rev;
  } catch {
    return 'no commit yet';
  }
}

/** "2 × AMD EPYC, 23.5 GiB RAM, linux 6.x" */
export function machineFacts(): string {
  const cpu = cpus();
  return `${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${platform()} ${release()}`;
}

/** The tests' ssh_config, re-pointed at the proxy, with a known_hosts entry for the proxy's host:port. */
export function writeProxyConfig(srv: TestServer, proxyPort: number, dir: string): string {
  const hostKey = readFileSync(srv.hostKeyPub, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${proxyPort} ${hostKey}\n`);
  const cfg = readFileSync(srv.sshConfig, 'utf8')
    .replace(/^(\s*Port)\s+\d+\s*$/m, `$1 ${proxyPort}`)
    .replace(/^(\s*UserKnownHostsFile)\s+.*$/m, `$1 ${knownHosts}`);
  if (!cfg.includes(`Port ${proxyPort}`) || !cfg.includes(knownHosts)) {
    throw new Error(`could not re-point ${srv.sshConfig} at the proxy; its format changed:\n${cfg}`);
  }
  const path = join(dir, 'ssh_config');
  writeFileSync(path, cfg);
  return path;
}

/** The link description used in the console and the results. */
export function linkDescription(rttMs: number, rateMbit: number): string {
  return `RTT ${rttMs} ms (${rttMs / 2} ms each way), ${rateMbit > 0 ? `${rateMbit} Mbit/s` : 'unlimited'} per direction, TCP handshake emulated`;
}

/**
 * A private HOME (and XDG dirs) under `dir`: no state from earlier bench runs or from the user's real config
 * leaks in.
 */
export function privateHomeEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  mkdirSync(home, { recursive: true });
  return {
    ...process.env,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_STATE_HOME: join(home, '.local/state'),
    NO_COLOR: '1',
    ...extra,
  };
}

/** A benchmark's temp work dir, and the sshd + latency proxy it starts; cleanup() (also on Ctrl-C) stops them. */
export interface BenchRun {
  work: string;
  logs: string;
  /** Starts sshd and the proxy in front of it, writes the ssh_config through it, and probes it with plain ssh. */
  startLink(rttMs: number, rateMbit: number): Promise<BenchLink>;
  cleanup(): Promise<void>;
}

export interface BenchLink {
  srv: TestServer;
  proxy: Proxy;
  /** ssh_config that reaches srv.alias through the proxy. */
  cfg: string;
  link: string;
  probe: RunOutcome;
}

/** Checks the tools are on PATH, makes the work dir and arranges its cleanup. */
export function openBenchRun(tools: string[], prefix: string, keep: boolean): BenchRun {
  for (const t of tools) {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`${t} not found on PATH`);
    }
  }
  const work = mkdtempSync(join(tmpdir(), prefix));
  const logs = join(work, 'logs');
  mkdirSync(logs);
  let srv: TestServer | undefined;
  let proxy: Proxy | undefined;
  const cleanup = async () => {
    killCurrent();
    await proxy?.close();
    await srv?.stop();
    if (!keep) rmSync(work, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    console.error('\ninterrupted; cleaning up');
    void cleanup().finally(() => process.exit(130));
  });
  const startLink = async (rttMs: number, rateMbit: number): Promise<BenchLink> => {
    srv = await startSshd({ alias: 'wsync-bench' });
    proxy = await startProxy({ targetPort: srv.port, delayMs: rttMs / 2, rateBitsPerSec: rateMbit * 1e6 });
    const cfg = writeProxyConfig(srv, proxy.port, work);
    const link = linkDescription(rttMs, rateMbit);
    console.log(`sshd on 127.0.0.1:${srv.port}, proxy on 127.0.0.1:${proxy.port}: ${link}`);
    const probe = await runMeasured(proxy, 'ssh', ['-F', cfg, '-o', 'BatchMode=yes', srv.alias, 'true'], {
      timeoutS: 30,
      env: process.env,
      log: join(logs, 'ssh-probe.log'),
    });
    if (probe.code !== 0) throw new Error(`ssh through the proxy failed (harness problem): ${probe.stderr.trim()}`);
    console.log(`ssh connect + auth + exec through the proxy: ${probe.secs.toFixed(2)} s, ${fmtBytes(probe.up + probe.down)}`);
    return { srv, proxy, cfg, link, probe };
  };
  return { work, logs, startLink, cleanup };
}

/**
 * Prints a run's table, targets, extra sections, notes and failures, and writes bench/results/<name>.md and .json
 * (the settings, the run's own facts in `facts`, and every cell).
 */
export function reportResults(r: {
  name: string;
  table: string;
  targets: string[];
  extra?: string;
  notes: string[];
  failures: string[];
  md: string;
  started: Date;
  settings: object & { keep: boolean };
  facts: object;
  results: Map<string, Map<string, Cell>>;
  work: string;
  logs: string;
}): void {
  console.log('\n' + r.table + '\n');
  for (const t of r.targets) console.log(`target ${t.slice(2)}`);
  if (r.extra) console.log('\n' + r.extra);
  for (const n of r.notes) console.log(`note: ${n}`);
  for (const f of r.failures) console.log(`\n${f}`);
  const outDir = join(REPO, 'bench/results');
  mkdirSync(outDir, { recursive: true });
  const mdPath = join(outDir, `${r.name}.md`);
  writeFileSync(mdPath, r.md);
  const json = {
    date: r.started.toISOString(),
    settings: r.settings,
    ...r.facts,
    results: Object.fromEntries([...r.results].map(([t, m]) => [t, Object.fromEntries(m)])),
  };
  writeFileSync(join(outDir, `${r.name}.json`), JSON.stringify(json, null, 2) + '\n');
  console.log(`\nresults written to ${relative(process.cwd(), mdPath) || mdPath} (and ${r.name}.json)`);
  if (r.settings.keep) console.log(`work dir kept: ${r.work} (tool logs in ${r.logs})`);
}

/** Runs a benchmark's main: a failure prints its message and sets exit code 1. */
export function runMain(main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  });
}

/**
 * `npm run bench:servers`: wsync against each SFTP server the conformance suite runs (OpenSSH, dropbear with
 * OpenSSH's sftp-server, ProFTPD mod_sftp), on loopback: an initial push of a repository-shaped tree, a no-op
 * re-push, and a push of one 200 MB file, medians of 3, each server's time beside OpenSSH's. The targets are issue
 * 20's: ProFTPD's tree push ≤ 1.5× OpenSSH's, dropbear's big file ≤ 1.2×. Client and server share this machine's
 * cores (what a loopback figure measures is mostly CPU).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { generateTree } from './tree.js';
import { REPO, gitRev, machineFacts, numSetting, runMain } from './harness.js';
import { SERVER_KINDS, startServer, type ServerKind } from '../test/support/sshd.js';
import { tmpdir } from 'node:os';
import { mkdtempSync } from 'node:fs';

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; secs: number; stderr: string }> {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO, 'bin/wsync.js'), ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, SSH_AUTH_SOCK: '', ...env } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, secs: (performance.now() - t) / 1000, stderr }));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { files: { type: 'string' }, 'big-mb': { type: 'string' }, runs: { type: 'string' }, keep: { type: 'boolean' } }, strict: false });
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const files = Math.round(numSetting(str(values.files), 'SERVERS_FILES', 3100));
  const bigMb = Math.round(numSetting(str(values['big-mb']), 'SERVERS_BIG_MB', 200));
  const runs = Math.round(numSetting(str(values.runs), 'SERVERS_RUNS', 3));
  const started = new Date();
  const work = mkdtempSync(join(tmpdir(), 'wsync-bench-servers-'));
  try {
    const tree = generateTree(join(work, 'tree'), files, 7, 'repo');
    mkdirSync(join(work, 'big'));
    writeFileSync(join(work, 'big/big.bin'), randomBytes(bigMb * 1024 * 1024));
    const cases = ['tree push', 'no-op push', 'big file push'] as const;
    const results = new Map<ServerKind, Record<(typeof cases)[number], number[]>>();
    const failures: string[] = [];
    for (const kind of SERVER_KINDS) {
      const srv = await startServer(kind, 'wsync-bench');
      const r: Record<(typeof cases)[number], number[]> = { 'tree push': [], 'no-op push': [], 'big file push': [] };
      try {
        for (let i = 0; i < runs; i++) {
          const env = { XDG_CACHE_HOME: join(work, `cache-${kind}-${i}`) };
          const at = (what: string) => `${srv.alias}:${join(srv.remoteRoot, `${what}${i}`)}`;
          for (const [c, args] of [
            ['tree push', ['push', join(work, 'tree'), at('t')]],
            ['no-op push', ['push', join(work, 'tree'), at('t')]],
            ['big file push', ['push', join(work, 'big'), at('b')]],
          ] as const) {
            const out = await run([...args, '-F', srv.sshConfig], env);
            if (out.code !== 0) failures.push(`${kind} ${c} run ${i + 1}: exit ${out.code}: ${out.stderr.trim().split('\n')[0]}`);
            r[c].push(out.secs);
          }
          rmSync(join(srv.remoteRoot, `t${i}`), { recursive: true, force: true });
          rmSync(join(srv.remoteRoot, `b${i}`), { recursive: true, force: true });
        }
      } finally {
        await srv.stop();
      }
      results.set(kind, r);
      console.log(kind, Object.fromEntries(Object.entries(r).map(([c, xs]) => [c, xs.map((x) => x.toFixed(2))])));
    }
    const base = results.get('openssh')!;
    const cell = (kind: ServerKind, c: (typeof cases)[number]) => {
      const m = median(results.get(kind)![c]);
      return kind === 'openssh' ? `${m.toFixed(2)} s` : `${m.toFixed(2)} s (${(m / median(base[c])).toFixed(2)}×)`;
    };
    const rows = [
      `| server | ${cases.join(' | ')} |`,
      `| --- | ${cases.map(() => '---:').join(' | ')} |`,
      ...SERVER_KINDS.map((k) => `| ${k} | ${cases.map((c) => cell(k, c)).join(' | ')} |`),
    ];
    const ratio = (k: ServerKind, c: (typeof cases)[number]) => median(results.get(k)![c]) / median(base[c]);
    const targets = [
      `ProFTPD tree push ≤ 1.5× OpenSSH: ${ratio('proftpd', 'tree push') <= 1.5 ? 'met' : 'NOT met'} (${ratio('proftpd', 'tree push').toFixed(2)}×)`,
      `dropbear big file push ≤ 1.2× OpenSSH: ${ratio('dropbear', 'big file push') <= 1.2 ? 'met' : 'NOT met'} (${ratio('dropbear', 'big file push').toFixed(2)}×)`,
    ];
    const md = [
      '# wsync against OpenSSH, dropbear and ProFTPD mod_sftp (loopback)',
      '',
      `Run ${started.toISOString()} on ${gitRev()}. Tree: ${tree.files.length} files in ${tree.dirs} directories (repository-shaped, seed 7); big file: ${bigMb} MB of random bytes. Medians of ${runs}; each run into a new target with a new cache; times include connecting.`,
      '',
      ...rows,
      '',
      ...targets.map((t) => `target: ${t}`),
      '',
      'ProFTPD serves every channel of a connection from one process: wsync spreads its channels over 4 connections there. dropbear grants each channel a 24 KiB window: a big file goes over one channel.',
      ...(failures.length ? ['', '## Failures', '', ...failures.map((f) => `- ${f}`)] : []),
      '',
      '## Setup',
      '',
      machineFacts(),
      '',
    ].join('\n');
    console.log('\n' + md);
    const outDir = join(REPO, 'bench/results');
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'servers-latest.md'), md);
    writeFileSync(join(outDir, 'servers-latest.json'), JSON.stringify({ date: started.toISOString(), files: tree.files.length, dirs: tree.dirs, bigMb, runs, results: Object.fromEntries(results), failures }, null, 2) + '\n');
    console.log(`results written to ${relative(process.cwd(), join(outDir, 'servers-latest.md'))}`);
    if (failures.length) process.exitCode = 1;
  } finally {
    if (values.keep !== true) rmSync(work, { recursive: true, force: true });
  }
}

runMain(main);

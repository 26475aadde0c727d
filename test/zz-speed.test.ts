import { it } from 'vitest';
import { startServer } from './support/sshd.js';
import { runCli } from './support/cli.js';
import { generateTree } from '../bench/tree.js';
import { randomBytes } from 'node:crypto';
import { writeFileSync, rmSync } from 'node:fs';
it('speed', async () => {
  const base = '/tmp/zz-speed'; rmSync(base, { recursive: true, force: true });
  generateTree(base + '/tree', 3100, 7, 'repo');
  writeFileSync(base + '/big/bin'.replace('/bin', '.bin'), randomBytes(1));
  const bigDir = base + '/bigdir'; require('node:fs').mkdirSync(bigDir, { recursive: true }); writeFileSync(bigDir + '/big.bin', randomBytes(200 * 1024 * 1024));
  for (const k of (process.env.KINDS ?? 'openssh,dropbear,proftpd').split(',') as Array<'openssh' | 'dropbear' | 'proftpd'>) {
    const s = await startServer(k);
    const times: number[] = []; const bt: number[] = [];
    for (let i = 0; i < 3; i++) {
      const env = { XDG_CACHE_HOME: `${base}/cache-${k}-${i}` };
      let t0 = Date.now();
      let r = await runCli(['push', base + '/tree', `${s.alias}:${s.remoteRoot}/t${i}`, '-F', s.sshConfig], { env, timeoutMs: 300000 });
      times.push(Date.now() - t0);
      if (r.code !== 0) console.log(k, r.stderr);
      t0 = Date.now();
      r = await runCli(['push', bigDir, `${s.alias}:${s.remoteRoot}/b${i}`, '-F', s.sshConfig], { env, timeoutMs: 300000 });
      bt.push(Date.now() - t0);
      if (r.code !== 0) console.log(k, r.stderr);
      rmSync(`${s.remoteRoot}/t${i}`, { recursive: true, force: true }); rmSync(`${s.remoteRoot}/b${i}`, { recursive: true, force: true });
    }
    console.log('RESULT', k, 'tree', times.sort((a, b) => a - b)[1], times, 'big', bt.sort((a, b) => a - b)[1], bt);
    await s.stop();
  }
}, 1200000);

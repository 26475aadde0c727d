/**
 * Chunking micro-benchmark: single thread, 256 MiB of random (incompressible) data held in memory, fed in 1 MiB
 * slices as chunkFile does. Reports MB/s (10^6 bytes/s) for
 *   - boundary detection alone (FastCdc),
 *   - boundaries + SHA-256 per chunk (ids only),
 *   - ChunkHasher: boundaries + per-chunk SHA-256 + whole-file SHA-256 (what a scan really pays),
 *   - whole-file SHA-256 alone, for scale,
 *   - chunkFile on a page-cached 256 MiB temp file (adds the read path), with the RSS growth it caused.
 * Each case runs REPS times after a warm-up; best and median are printed, since a shared 2-vCPU VM is noisy.
 *
 *   npx tsc -p bench/tsconfig.json && node dist-bench/bench/chunking.js [MiB] [avgKiB,...]
 */
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FastCdc } from '../src/chunking/fastcdc.js';
import { ChunkHasher, chunkFile } from '../src/chunking/hash.js';
import { specForAvg, toFastCdcOptions } from '../src/chunking/params.js';

const MiB = 1 << 20;
const totalMiB = Number(process.argv[2] ?? 256);
const avgs = (process.argv[3] ?? '16,64,1024').split(',').map((k) => Number(k) * 1024);
const SLICE = MiB;
const REPS = 3;

const data = Buffer.allocUnsafe(totalMiB * MiB);
randomFillSync(data);

function slices(fn: (s: Buffer) => void): void {
  for (let pos = 0; pos < data.length; pos += SLICE) fn(data.subarray(pos, pos + SLICE));
}

function measure(label: string, run: () => number): void {
  run(); // warm-up: JIT tiers and OpenSSL init
  const rates: number[] = [];
  let chunks = 0;
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    chunks = run();
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push(data.length / 1e6 / secs);
  }
  rates.sort((a, b) => a - b);
  const best = rates[rates.length - 1]!;
  const median = rates[Math.floor(rates.length / 2)]!;
  const extra = chunks > 0 ? `  (${chunks} chunks, mean ${(data.length / chunks / 1024).toFixed(1)} KiB)` : '';
  console.log(`${label.padEnd(44)} best ${best.toFixed(0).padStart(5)} MB/s  median ${median.toFixed(0).padStart(5)} MB/s${extra}`);
}

console.log(`node ${process.version}, ${totalMiB} MiB random data, ${SLICE / MiB} MiB slices, ${REPS} reps after warm-up`);

measure('sha256 whole stream (reference)', () => {
  const h = createHash('sha256');
  slices((s) => h.update(s));
  h.digest();
  return 0;
});

for (const avg of avgs) {
  const spec = specForAvg(avg);
  const tag = `${spec.min / 1024}/${spec.avg / 1024}/${spec.max / 1024} KiB`;

  measure(`boundaries only           ${tag}`, () => {
    const cdc = new FastCdc(toFastCdcOptions(spec));
    let n = 0;
    slices((s) => {
      for (let i = 0; ; ) {
        const e = cdc.scan(s, i);
        if (e < 0) break;
        n++;
        i = e;
      }
    });
    if (cdc.finish() !== null) n++;
    return n;
  });

  measure(`boundaries + chunk sha256 ${tag}`, () => {
    const cdc = new FastCdc(toFastCdcOptions(spec));
    let h = createHash('sha256');
    let n = 0;
    slices((s) => {
      let i = 0;
      for (;;) {
        const e = cdc.scan(s, i);
        if (e < 0) break;
        h.update(s.subarray(i, e));
        h.digest();
        h = createHash('sha256');
        n++;
        i = e;
      }
      if (i < s.length) h.update(s.subarray(i));
    });
    if (cdc.finish() !== null) {
      h.digest();
      n++;
    }
    return n;
  });

  measure(`ChunkHasher (+file sha256) ${tag}`, () => {
    const h = new ChunkHasher(spec);
    slices((s) => h.update(s));
    return h.digest().chunks.length;
  });
}

const dir = await mkdtemp(join(tmpdir(), 'wsync-bench-'));
try {
  const path = join(dir, 'big.bin');
  await writeFile(path, data);
  const before = process.memoryUsage();
  let peakRss = before.rss;
  const timer = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 5);
  const t0 = process.hrtime.bigint();
  const r = await chunkFile(path, { spec: specForAvg(avgs[0]!) });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(timer);
  console.log(
    `chunkFile (page cache, avg ${avgs[0]! / 1024} KiB)`.padEnd(44) +
      ` ${(data.length / 1e6 / secs).toFixed(0).padStart(5)} MB/s  (${r.chunks.length} chunks; ` +
      `RSS growth ${((peakRss - before.rss) / MiB).toFixed(1)} MiB while reading ${totalMiB} MiB)`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}

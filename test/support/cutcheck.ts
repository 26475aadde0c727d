/**
 * What a run through a cutting link may and may not leave behind (issues 10 and 12): used by the cut and the
 * convergence tests.
 */
import { expect } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CliResult } from './cli.js';

export const TEMP_NAME = /\.wsync-[0-9a-f]{8}\.tmp$/;
/** A big upload an interrupted run left to be gone on with (paths.ts partialNameFor). */
export const PARTIAL_NAME = /\.wsync-part-[0-9a-f]{16}$/;

/** Regular files below root (wsync's own state and temp files left out), path → sha256. */
export function finalFiles(root: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(root)) return out;
  const visit = (dir: string, rel: string) => {
    for (const name of readdirSync(dir)) {
      const r = rel ? `${rel}/${name}` : name;
      if (r === '.wsync' || TEMP_NAME.test(name) || PARTIAL_NAME.test(name)) continue;
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) visit(p, r);
      else if (st.isFile()) out.set(r, createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  visit(root, '');
  return out;
}

/** Temp files (and partial uploads) anywhere below root, .wsync/ included. */
export function tempFiles(root: string): string[] {
  const out: string[] = [];
  if (!existsSync(root)) return out;
  const visit = (dir: string, rel: string) => {
    for (const name of readdirSync(dir)) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, name);
      if (TEMP_NAME.test(name) || PARTIAL_NAME.test(name)) out.push(r);
      if (lstatSync(p).isDirectory()) visit(p, r);
    }
  };
  visit(root, '');
  return out;
}

/** Deterministic pseudo-random numbers for the cut points (a failure names its seed and cut). */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/**
 * A run through a link that may have been cut: no hang, no stack trace; no file at a final path differs from the
 * source; exit 0 only on an exact mirror, else exit 2 with one line saying the link was lost.
 */
export function checkCutRun(r: CliResult, what: string, dst: Map<string, string>, expected: Map<string, string>): void {
  const label = `${what}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  expect(r.code, label).not.toBeNull(); // not killed by the timeout: no hang
  expect(r.stderr, label).not.toMatch(/^\s+at /m); // no stack trace
  expect(r.stderr, label).not.toMatch(/internal error/);
  for (const [rel, sha] of dst) {
    if (expected.has(rel)) expect(sha, `${label}\n${rel} differs from the source`).toBe(expected.get(rel));
    else throw new Error(`${label}\n${rel} is not in the source`);
  }
  if (r.code === 0) {
    expect([...dst.keys()].sort(), `${label}\nexit 0 on an incomplete destination`).toEqual([...expected.keys()].sort());
  } else {
    expect(r.code, label).toBe(2);
    // WSYNC_DEBUG's trace and timing lines (the convergence test's diagnostics) are not what a user reads.
    const lines = r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.trim() !== '' && !/^(trace|timings)/.test(l));
    expect(lines.length, label).toBe(1);
    expect(lines[0], label).toMatch(/^wsync: .*(lost|closed|timed out)/);
  }
}

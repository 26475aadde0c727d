/**
 * Post-run correctness check: the benchmark's remote is a directory on this machine (the sshd is local), so we
 * read it straight from disk rather than through any tool under test. A run only counts if the remote tree has
 * exactly the local file list, sizes and SHA-256 of every file.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

interface Entry {
  type: 'file' | 'symlink' | 'other';
  size: number;
  hash: string;
}

/** wsync may keep its control data (manifest, locks) in a top-level `.wsync` directory on either side. */
const CONTROL_DIRS = new Set(['.wsync']);

export function snapshot(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (rel: string) => {
    for (const d of readdirSync(join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (!rel && CONTROL_DIRS.has(d.name)) continue;
      const abs = join(root, r);
      if (d.isDirectory()) walk(r);
      else if (d.isFile()) {
        const buf = readFileSync(abs);
        out.set(r, { type: 'file', size: buf.length, hash: createHash('sha256').update(buf).digest('hex') });
      } else if (d.isSymbolicLink()) {
        out.set(r, { type: 'symlink', size: lstatSync(abs).size, hash: readlinkSync(abs) });
      } else out.set(r, { type: 'other', size: 0, hash: '' });
    }
  };
  walk('');
  return out;
}

export interface VerifyResult {
  ok: boolean;
  files: number;
  missing: string[];
  extra: string[];
  differ: string[];
}

export function compareTrees(local: string, remote: string): VerifyResult {
  const a = snapshot(local);
  let b: Map<string, Entry>;
  try {
    b = snapshot(remote);
  } catch {
    b = new Map();
  }
  const missing: string[] = [];
  const differ: string[] = [];
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w) missing.push(k);
    else if (w.type !== v.type || w.size !== v.size || w.hash !== v.hash) differ.push(k);
  }
  const extra = [...b.keys()].filter((k) => !a.has(k));
  return { ok: !missing.length && !extra.length && !differ.length, files: a.size, missing, extra, differ };
}

export function describeMismatch(v: VerifyResult): string {
  const parts: string[] = [];
  const ex = (xs: string[]) => (xs.length ? ` (e.g. ${xs.slice(0, 3).join(', ')})` : '');
  if (v.missing.length) parts.push(`${v.missing.length} missing${ex(v.missing)}`);
  if (v.extra.length) parts.push(`${v.extra.length} extra${ex(v.extra)}`);
  if (v.differ.length) parts.push(`${v.differ.length} differ${ex(v.differ)}`);
  return parts.join('; ');
}

/** Files present under `root`, for progress of a run that was stopped. */
export function countFiles(root: string): number {
  try {
    return snapshotCount(root);
  } catch {
    return 0;
  }
}

function snapshotCount(dir: string): number {
  let n = 0;
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    if (d.isDirectory()) n += snapshotCount(join(dir, d.name));
    else n++;
  }
  return n;
}

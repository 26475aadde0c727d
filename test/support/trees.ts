import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync, symlinkSync, utimesSync, chmodSync, lstatSync, readdirSync, readFileSync, readlinkSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';

export type Spec = Record<string, string | Buffer | { link: string } | { dir: true } | { content: string | Buffer; mode?: number; mtime?: number }>;

export function tempDir(prefix = 'wsync-t-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes a tree: 'a/b.txt': 'text', 'dir/': {dir:true}, 'l': {link:'target'}. Files get a fixed old mtime. */
export function makeTree(root: string, spec: Spec, mtime = 1_700_000_000): void {
  mkdirSync(root, { recursive: true });
  for (const [rel, v] of Object.entries(spec)) {
    const p = join(root, rel);
    if (typeof v === 'object' && 'dir' in v) {
      mkdirSync(p, { recursive: true });
      continue;
    }
    mkdirSync(dirname(p), { recursive: true });
    if (typeof v === 'object' && 'link' in v) {
      symlinkSync(v.link, p);
      continue;
    }
    const content = typeof v === 'string' || Buffer.isBuffer(v) ? v : v.content;
    writeFileSync(p, content);
    const mode = typeof v === 'object' && !Buffer.isBuffer(v) && 'mode' in v && v.mode !== undefined ? v.mode : 0o644;
    chmodSync(p, mode);
    const t = typeof v === 'object' && !Buffer.isBuffer(v) && 'mtime' in v && v.mtime !== undefined ? v.mtime : mtime;
    utimesSync(p, t, t);
  }
}

export interface Snap {
  type: 'file' | 'dir' | 'symlink';
  mode?: number;
  mtime?: number;
  size?: number;
  sha?: string;
  target?: string;
}

/** Everything a sync must preserve, keyed by relative path; `.wsync` state is left out. */
export function snapshot(root: string, opts: { skip?: (rel: string) => boolean } = {}): Record<string, Snap> {
  const out: Record<string, Snap> = {};
  const visit = (dir: string, rel: string) => {
    for (const name of readdirSync(dir).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (r === '.wsync' || opts.skip?.(r)) continue;
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[r] = { type: 'symlink', target: readlinkSync(p) };
      else if (st.isDirectory()) {
        out[r] = { type: 'dir', mode: st.mode & 0o7777 };
        visit(p, r);
      } else out[r] = { type: 'file', mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000), size: st.size, sha: createHash('sha256').update(readFileSync(p)).digest('hex') };
    }
  };
  visit(root, '');
  return out;
}

/**
 * Deterministic synthetic source tree for the benchmark. Same seed + file count ⇒ byte-identical tree with
 * identical mtimes, so runs on different days or machines move the same data.
 *
 * Shape (roughly a mid-size polyglot repo): a few hundred nested directories up to 6 deep, ~86 % text files of
 * 1–20 KB, ~6 % larger text (generated code, fixtures) of 20–150 KB, ~4 % tiny config files, ~2 % binary
 * assets, and five incompressible 1 MiB binaries. Text is token soup from per-file vocabularies: it compresses
 * like source code and, unlike a repeated template, gives content-defined chunking no cross-file duplicates a real
 * repo would not have.
 *
 * Deliberately absent, so every tool transfers exactly the same set: `.git`, `.gitignore`/`.wsyncignore`, names
 * that sync tools ignore by default (node_modules, dist, build, target, .DS_Store), symlinks, empty directories.
 */
import { mkdirSync, writeFileSync, utimesSync, readFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join, dirname } from 'node:path';

/** mulberry32: tiny, fast, and good enough for shaping test data (not for anything security-related). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type FileKind = 'text' | 'doc' | 'asset' | 'blob';

export interface TreeFile {
  rel: string;
  kind: FileKind;
  size: number;
}

export interface TreeSummary {
  files: TreeFile[];
  dirs: number;
  bytes: number;
}

// Fixed mtimes make trees generated at different moments identical for mtime-based change detection.
export const BASE_MTIME = 1_700_000_000;
export const EDIT_MTIME = 1_700_500_000;

const SYLLABLES = [
  'ba', 'ce', 'di', 'fo', 'gu', 'ha', 'je', 'ki', 'lo', 'mu', 'na', 're', 'si', 'to', 'vu', 'xa', 'ze', 'pri', 'str',
  'con', 'act', 'ion', 'get', 'set', 'map', 'dex', 'ter', 'val', 'ent', 'ory', 'sync', 'node', 'path', 'read', 'buf',
];
const TOPS: Array<{ name: string; exts: string[]; kind: FileKind; weight: number }> = [
  { name: 'src', exts: ['ts', 'ts', 'ts', 'tsx', 'js'], kind: 'text', weight: 30 },
  { name: 'packages', exts: ['ts', 'js', 'json', 'ts'], kind: 'text', weight: 25 },
  { name: 'lib', exts: ['c', 'h', 'c', 'cc'], kind: 'text', weight: 10 },
  { name: 'services', exts: ['go', 'go', 'py', 'yaml'], kind: 'text', weight: 10 },
  { name: 'test', exts: ['ts', 'py', 'json', 'snap'], kind: 'text', weight: 12 },
  { name: 'docs', exts: ['md', 'md', 'rst', 'txt'], kind: 'doc', weight: 8 },
  { name: 'scripts', exts: ['sh', 'py', 'mjs'], kind: 'text', weight: 3 },
  { name: 'assets', exts: ['png', 'jpg', 'woff2', 'ico'], kind: 'asset', weight: 2 },
];

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const logUniform = (r: () => number, lo: number, hi: number) => Math.round(lo * Math.pow(hi / lo, r()));

function word(r: () => number): string {
  const n = 1 + Math.floor(r() * 3);
  let w = '';
  for (let i = 0; i < n; i++) w += pick(r, SYLLABLES);
  return w;
}

function textBody(r: () => number, size: number, ext: string): Buffer {
  const vocab = Array.from({ length: 40 + Math.floor(r() * 80) }, () => word(r));
  const id = () => pick(r, vocab);
  const prose = ext === 'md' || ext === 'rst' || ext === 'txt';
  const out: string[] = [];
  let len = 0;
  let depth = 0;
  if (!prose && r() < 0.7) {
    const header = `/*\n * Copyright (c) 2019-2024 The Example Authors.\n * SPDX-License-Identifier: Apache-2.0\n */\n`;
    out.push(header);
    len += header.length;
  }
  while (len < size) {
    let line: string;
    if (prose) {
      const n = 4 + Math.floor(r() * 14);
      const ws: string[] = [];
      for (let i = 0; i < n; i++) ws.push(id());
      line = r() < 0.08 ? `\n## ${ws.slice(0, 3).join(' ')}\n` : ws.join(' ') + '.';
    } else {
      const ind = '  '.repeat(depth);
      const k = r();
      if (k < 0.12 && depth < 5) {
        line = `${ind}${pick(r, ['if', 'for', 'while', 'function', 'switch'])} (${id()}.${id()}(${id()}, ${Math.floor(r() * 1000)})) {`;
        depth++;
      } else if (k < 0.24 && depth > 0) {
        depth--;
        line = `${'  '.repeat(depth)}}`;
      } else if (k < 0.34) {
        line = `${ind}// ${id()} ${id()} ${id()} ${id()} ${id()}`;
      } else if (k < 0.38) {
        line = '';
      } else if (k < 0.7) {
        line = `${ind}const ${id()}${Math.floor(r() * 100)} = ${id()}.${id()}(${id()}, '${id()}');`;
      } else {
        line = `${ind}${id()}.${id()} = ${id()}[${Math.floor(r() * 64)}] + ${Math.floor(r() * 100000)};`;
      }
    }
    out.push(line);
    len += line.length + 1;
  }
  return Buffer.from(out.join('\n') + '\n', 'utf8');
}

function binaryBody(r: () => number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i + 4 <= size; i += 4) b.writeUInt32LE((r() * 4294967296) >>> 0, i);
  for (let i = size - (size % 4); i < size; i++) b[i] = (r() * 256) | 0;
  return b;
}

/**
 * `synthetic`: the mid-size tree described at the top (median file ~5 KB, ~14 files per directory). `repo`: shaped
 * like a real source repository as measured on public ones (median file under 1 KB, ~0.4 directories per file,
 * a long tail of larger files): what per-file costs dominate.
 */
export type TreeShape = 'synthetic' | 'repo';

function fileSize(r: () => number, kind: FileKind, shape: TreeShape): number {
  if (shape === 'repo') {
    if (kind === 'asset') return logUniform(r, 300, 60_000);
    const k = r();
    if (k < 0.75) return logUniform(r, 60, 2_500);
    if (k < 0.985) return logUniform(r, 2_500, 25_000);
    return logUniform(r, 25_000, 200_000);
  }
  if (kind === 'asset') return logUniform(r, 2_000, 300_000);
  const k = r();
  if (k < 0.04) return logUniform(r, 80, 1_000);
  if (k < 0.1) return logUniform(r, 20_000, 150_000);
  return logUniform(r, 1_000, 20_000);
}

/** Writes the tree under `root` (which must not exist or be empty) and returns what it wrote. */
export function generateTree(root: string, fileCount: number, seed: number, shape: TreeShape = 'synthetic'): TreeSummary {
  const r = prng(seed);
  interface Dir { rel: string; depth: number; top: (typeof TOPS)[number]; names: Set<string> }
  const dirs: Dir[] = TOPS.map((t) => ({ rel: t.name, depth: 1, top: t, names: new Set<string>() }));
  // Directories left without a file are not made: the repo shape draws more than 0.4 per file to end near it.
  const wantDirs = Math.max(TOPS.length, Math.round(shape === 'repo' ? fileCount * 0.75 : fileCount / 14));
  while (dirs.length < wantDirs) {
    const parent = pick(r, dirs);
    if (parent.depth >= 6) continue;
    let name = word(r);
    while (parent.names.has(name)) name += pick(r, SYLLABLES);
    parent.names.add(name);
    dirs.push({ rel: `${parent.rel}/${name}`, depth: parent.depth + 1, top: parent.top, names: new Set() });
  }
  const totalWeight = TOPS.reduce((s, t) => s + t.weight, 0);
  const byTop = new Map<string, Dir[]>();
  for (const d of dirs) byTop.set(d.top.name, [...(byTop.get(d.top.name) ?? []), d]);

  const files: TreeFile[] = [];
  const blobs = shape === 'repo' ? 0 : Math.min(5, Math.max(1, Math.floor(fileCount / 1000)));
  for (let i = 0; i < blobs; i++) {
    const d = pick(r, byTop.get('assets')!);
    files.push({ rel: `${d.rel}/bundle-${i}.bin`, kind: 'blob', size: 1 << 20 });
    d.names.add(`bundle-${i}.bin`);
  }
  while (files.length < fileCount) {
    let w = r() * totalWeight;
    const top = TOPS.find((t) => (w -= t.weight) < 0) ?? TOPS[0]!;
    const d = pick(r, byTop.get(top.name)!);
    const ext = pick(r, top.exts);
    let base = word(r);
    while (d.names.has(`${base}.${ext}`)) base += pick(r, SYLLABLES);
    d.names.add(`${base}.${ext}`);
    files.push({ rel: `${d.rel}/${base}.${ext}`, kind: top.kind, size: fileSize(r, top.kind, shape) });
  }

  let bytes = 0;
  const created = new Set<string>();
  files.forEach((f, i) => {
    const dir = dirname(f.rel);
    if (!created.has(dir)) {
      mkdirSync(join(root, dir), { recursive: true });
      created.add(dir);
    }
    const ext = f.rel.slice(f.rel.lastIndexOf('.') + 1);
    const body = f.kind === 'text' || f.kind === 'doc' ? textBody(r, f.size, ext) : binaryBody(r, f.size);
    f.size = body.length;
    bytes += body.length;
    const p = join(root, f.rel);
    writeFileSync(p, body);
    utimesSync(p, BASE_MTIME + i, BASE_MTIME + i);
  });
  // Only directories that received files exist, so there are no empty directories.
  return { files, dirs: created.size, bytes };
}

export interface EditSummary {
  edited: string[];
  touched: string[];
  added: string[];
}

/**
 * The "developer worked for an hour" change set, identical for every tool's copy: 36 text edits (line inserted
 * mid-file, which shifts every later byte; line replaced; lines appended), one 4 KiB overwrite inside a 1 MiB
 * binary, 10 files touched without content change, and 3 new files. All changed files get `mtime` (EDIT_MTIME by
 * default; a second round of edits needs another), so mtime-based tools see them as changed, as after an editor save.
 */
export function applyEdits(root: string, files: TreeFile[], seed: number, mtime = EDIT_MTIME): EditSummary {
  const r = prng(seed ^ 0x5eed);
  const texts = files.filter((f) => f.kind === 'text' || f.kind === 'doc');
  const chosen = new Set<string>();
  const take = (pool: TreeFile[]): TreeFile => {
    for (;;) {
      const f = pick(r, pool);
      if (!chosen.has(f.rel)) {
        chosen.add(f.rel);
        return f;
      }
    }
  };
  const out: EditSummary = { edited: [], touched: [], added: [] };
  const stamp = (p: string) => utimesSync(p, mtime, mtime);

  for (let i = 0; i < 36; i++) {
    const f = take(texts);
    const p = join(root, f.rel);
    const lines = readFileSync(p, 'utf8').split('\n');
    const at = Math.floor(lines.length * (0.2 + 0.6 * r()));
    const fresh = `  const edited${i} = ${word(r)}.${word(r)}(${Math.floor(r() * 1e6)}); // ${word(r)} ${word(r)}`;
    if (i % 3 === 0) lines.splice(at, 0, fresh);
    else if (i % 3 === 1) lines[at] = fresh;
    else lines.splice(lines.length - 1, 0, fresh, `  // ${word(r)} ${word(r)}`, `  ${word(r)}();`);
    writeFileSync(p, lines.join('\n'));
    stamp(p);
    out.edited.push(f.rel);
  }

  const blob = files.find((f) => f.kind === 'blob');
  if (blob) {
    chosen.add(blob.rel);
    const p = join(root, blob.rel);
    const fd = openSync(p, 'r+');
    writeSync(fd, binaryBody(r, 4096), 0, 4096, Math.floor(r() * (blob.size - 4096)));
    closeSync(fd);
    stamp(p);
    out.edited.push(blob.rel);
  }

  for (let i = 0; i < 10; i++) {
    const f = take(files);
    stamp(join(root, f.rel));
    out.touched.push(f.rel);
  }

  for (let i = 0; i < 3; i++) {
    const near = take(texts);
    const rel = `${dirname(near.rel)}/added-${i}-${word(r)}.ts`;
    const p = join(root, rel);
    writeFileSync(p, textBody(r, 3_000 + Math.floor(r() * 6_000), 'ts'));
    stamp(p);
    out.added.push(rel);
  }
  return out;
}

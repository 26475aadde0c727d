import { gzipSync, gunzipSync } from 'node:zlib';
import type { Entry, EntryType, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';
import { type ChunkerSpec, parseChunkerSpec } from '../chunking/params.js';

/**
 * The record of what wsync last wrote at a target: the server cannot hash, so this is how a later run knows
 * what the remote holds and whether someone changed it since. Stored gzipped (a 10,000-file tree is ~1 MB of
 * JSON) and replaced atomically.
 */
export const STATE_DIR = '.wsync';
export const MANIFEST_PATH = `${STATE_DIR}/manifest.json.gz`;
export const MANIFEST_FORMAT = 'wsync-manifest';
/**
 * Still 1: the chunker field (`c`) is optional and an older wsync ignores it. Such a run writes the entry back
 * without it, which costs nothing but one whole upload the next time that file changes.
 */
export const MANIFEST_VERSION = 1;

export interface Manifest {
  entries: Tree;
  writtenAt?: string;
}

/** `c`: the chunker of a big file as [id, min, avg, max]; its chunk list is in the local chunk cache. */
type Wire = { t: 'f' | 'd' | 'l'; s?: number; m: number; p: number; h?: string; l?: string; c?: [string, number, number, number] };

const T2W: Record<EntryType, Wire['t']> = { file: 'f', dir: 'd', symlink: 'l' };
const W2T: Record<Wire['t'], EntryType> = { f: 'file', d: 'dir', l: 'symlink' };

export function encodeManifest(m: Manifest, writer: Record<string, unknown> = {}): Buffer {
  const entries: Array<[string, Wire]> = [];
  for (const [path, e] of [...m.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const w: Wire = { t: T2W[e.type], m: e.mtime, p: e.mode };
    if (e.type === 'file') w.s = e.size;
    if (e.sha256) w.h = e.sha256;
    if (e.type === 'symlink') w.l = e.target ?? '';
    // Without the file hash the chunk lists (cached by hash) cannot be found, so the spec alone is useless.
    if (e.type === 'file' && e.sha256 && e.chunker) w.c = [e.chunker.id, e.chunker.min, e.chunker.avg, e.chunker.max];
    entries.push([path, w]);
  }
  const doc = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, writtenAt: new Date().toISOString(), writer, entries };
  return gzipSync(Buffer.from(JSON.stringify(doc)));
}

export function decodeManifest(buf: Buffer, where: string): Manifest {
  let doc: { format?: string; version?: number; writtenAt?: string; entries?: Array<[string, Wire]> };
  try {
    doc = JSON.parse(gunzipSync(buf).toString('utf8'));
  } catch (err) {
    throw new WsyncError('E_MANIFEST', `the manifest at ${where} is unreadable: ${errorMessage(err)}`, {
      hint: 'it was damaged outside wsync; move .wsync/ away to start over (every remote file then counts as unknown)',
    });
  }
  if (doc.format !== MANIFEST_FORMAT || !Array.isArray(doc.entries)) {
    throw new WsyncError('E_MANIFEST', `${where} is not a wsync manifest`);
  }
  if ((doc.version ?? 0) > MANIFEST_VERSION) {
    throw new WsyncError('E_MANIFEST', `the manifest at ${where} was written by a newer wsync (format ${doc.version})`, {
      hint: 'upgrade wsync on this machine',
    });
  }
  const entries: Tree = new Map();
  for (const [path, w] of doc.entries) {
    const type = W2T[w.t];
    if (!type) continue;
    const e: Entry = { type, size: w.s ?? 0, mtime: w.m, mode: w.p };
    if (w.h) e.sha256 = w.h;
    if (type === 'symlink') e.target = w.l ?? '';
    if (type === 'file' && e.sha256 && w.c !== undefined) {
      const spec = decodeChunker(w.c);
      if (spec) e.chunker = spec;
    }
    entries.set(path, e);
  }
  return { entries, writtenAt: doc.writtenAt };
}

/** A spec this build cannot reproduce (a newer chunker, damage) only loses delta transfer for that file. */
function decodeChunker(c: unknown): ChunkerSpec | null {
  if (!Array.isArray(c) || c.length !== 4) return null;
  try {
    return parseChunkerSpec({ id: c[0], min: c[1], avg: c[2], max: c[3] });
  } catch {
    return null;
  }
}

export async function readManifest(t: Transport): Promise<Manifest | null> {
  const buf = await t.readFile(MANIFEST_PATH);
  if (!buf) return null;
  return decodeManifest(buf, t.describe(MANIFEST_PATH));
}

export async function writeManifest(t: Transport, m: Manifest, writer: Record<string, unknown>): Promise<void> {
  await t.writeSmall(MANIFEST_PATH, encodeManifest(m, writer), { mode: 0o644 });
}

/** Writes `.wsync/.gitignore` ("*": everything in it, itself included, is ignored by git). */
export async function ignoreStateDir(t: Transport): Promise<void> {
  await t.writeSmall(`${STATE_DIR}/.gitignore`, Buffer.from('# wsync state: not part of the tree\n*\n'));
}

/** A pull that moved local files to .wsync/trash/ made the local .wsync/: hidden from git the same way. */
export async function ignoreLocalStateDir(local: Transport): Promise<void> {
  if ((await local.lstat(STATE_DIR).catch(() => null)) && !(await local.lstat(`${STATE_DIR}/.gitignore`).catch(() => null))) {
    await ignoreStateDir(local).catch(() => undefined);
  }
}

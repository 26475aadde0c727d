import { gzipSync, gunzipSync } from 'node:zlib';
import type { Entry, EntryType, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { WsyncError, errorMessage } from '../errors.js';

/**
 * The record of what wsync last wrote at a target: the server cannot hash, so this is how a later run knows
 * what the remote holds and whether someone changed it since. Stored gzipped (a 10,000-file tree is ~1 MB of
 * JSON) and replaced atomically.
 */
export const STATE_DIR = '.wsync';
export const MANIFEST_PATH = `${STATE_DIR}/manifest.json.gz`;
export const MANIFEST_FORMAT = 'wsync-manifest';
export const MANIFEST_VERSION = 1;

export interface Manifest {
  entries: Tree;
  writtenAt?: string;
}

type Wire = { t: 'f' | 'd' | 'l'; s?: number; m: number; p: number; h?: string; l?: string };

const T2W: Record<EntryType, Wire['t']> = { file: 'f', dir: 'd', symlink: 'l' };
const W2T: Record<Wire['t'], EntryType> = { f: 'file', d: 'dir', l: 'symlink' };

export function encodeManifest(m: Manifest, writer: Record<string, unknown> = {}): Buffer {
  const entries: Array<[string, Wire]> = [];
  for (const [path, e] of [...m.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const w: Wire = { t: T2W[e.type], m: e.mtime, p: e.mode };
    if (e.type === 'file') w.s = e.size;
    if (e.sha256) w.h = e.sha256;
    if (e.type === 'symlink') w.l = e.target ?? '';
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
    entries.set(path, e);
  }
  return { entries, writtenAt: doc.writtenAt };
}

export async function readManifest(t: Transport): Promise<Manifest | null> {
  const buf = await t.readFile(MANIFEST_PATH);
  if (!buf) return null;
  return decodeManifest(buf, t.describe(MANIFEST_PATH));
}

export async function writeManifest(t: Transport, m: Manifest, writer: Record<string, unknown>): Promise<void> {
  await t.writeSmall(MANIFEST_PATH, encodeManifest(m, writer), { mode: 0o644 });
}

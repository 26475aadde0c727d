import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Entry, Tree } from '../types.js';
import type { Transport } from '../transport/types.js';
import { STATE_DIR } from '../manifest/manifest.js';

/**
 * The two-way ancestor of one pair (this local directory, one target): the state both sides last agreed on, kept
 * on this machine beside the pair's chunk cache, with the identity of the remote it was agreed with. The remote
 * manifest cannot serve: it says what *someone* last wrote there, and another client's push would make this
 * client's stale files look like edits to send over the other client's work.
 */
export interface Ancestor {
  /** The id in the target's `.wsync/id` when this state was agreed on. */
  remoteId: string;
  entries: Tree;
  /** When the sync that agreed on it began (Date.now()): local files with a later ctime may hide a same-second edit. */
  lastScan?: number;
}

const FORMAT = 'wsync-ancestor';
const VERSION = 1;
/** A random id per target directory, made by the first two-way sync there. */
export const REMOTE_ID_PATH = `${STATE_DIR}/id`;

export function ancestorFileFor(cacheFile: string): string {
  return cacheFile.replace(/\.json\.gz$/, '.ancestor.json.gz');
}

/** The stored ancestor, or null (none yet, unreadable, or of another format: a first contact then). */
export function readAncestor(file: string | null): Ancestor | null {
  if (!file) return null;
  try {
    const doc = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8')) as { format?: unknown; version?: unknown; remoteId?: unknown; entries?: unknown; lastScan?: unknown };
    if (doc.format !== FORMAT || doc.version !== VERSION || typeof doc.remoteId !== 'string' || !Array.isArray(doc.entries)) return null;
    const entries: Tree = new Map();
    for (const item of doc.entries as unknown[]) {
      if (!Array.isArray(item) || typeof item[0] !== 'string' || !item[1] || typeof item[1] !== 'object') return null;
      const e = item[1] as Entry;
      if (!['file', 'dir', 'symlink'].includes(e.type) || typeof e.size !== 'number' || typeof e.mtime !== 'number' || typeof e.mode !== 'number') return null;
      entries.set(item[0], e);
    }
    return { remoteId: doc.remoteId, entries, lastScan: typeof doc.lastScan === 'number' ? doc.lastScan : undefined };
  } catch {
    return null;
  }
}

/** Written whole under a temp name and renamed over the old one: a crash leaves the old state or the new. */
export function writeAncestor(file: string, a: Ancestor): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const entries = [...a.entries].map(([p, e]) => {
    const { ctime: _local, ...rest } = e;
    return [p, rest];
  });
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, gzipSync(JSON.stringify({ format: FORMAT, version: VERSION, remoteId: a.remoteId, lastScan: a.lastScan, entries })));
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * The target's id: read, or made now (with the lock held) when `create` and there is none, or only an empty or
 * unreadable one (a create whose write never landed): then it is written whole and read back.
 */
export async function remoteIdentity(remote: Transport, create: boolean): Promise<string | undefined> {
  const read = async () => {
    const text = (await remote.readFile(REMOTE_ID_PATH, { small: true }).catch(() => null))?.toString('utf8').trim();
    return text && /^[0-9a-f]{32}$/.test(text) ? text : undefined;
  };
  const found = await read();
  if (found || !create) return found;
  const id = randomBytes(16).toString('hex');
  if (!(await remote.createExclusive(REMOTE_ID_PATH, Buffer.from(`${id}\n`)))) {
    const other = await read();
    if (other) return other;
  }
  await remote.writeSmall(REMOTE_ID_PATH, Buffer.from(`${id}\n`));
  return (await read()) === id ? id : undefined;
}

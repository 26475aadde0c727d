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
  /**
   * Local files that sync did not bring into agreement (left alone, failed): their entry here is older than
   * lastScan says, so the next sync compares them by content, whatever their ctime.
   */
  flagged?: string[];
}

const FORMAT = 'wsync-ancestor';
const VERSION = 1;
/** A random id per target directory, made by the first two-way sync there. */
export const REMOTE_ID_PATH = `${STATE_DIR}/id`;

/** The stored ancestor, or null (none yet, unreadable, or of another format: a first contact then). */
export function readAncestor(file: string | null): Ancestor | null {
  if (!file) return null;
  try {
    const doc = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8')) as { format?: unknown; version?: unknown; remoteId?: unknown; entries?: unknown; lastScan?: unknown; flagged?: unknown };
    if (doc.format !== FORMAT || doc.version !== VERSION || typeof doc.remoteId !== 'string' || !Array.isArray(doc.entries)) return null;
    const entries: Tree = new Map();
    for (const item of doc.entries as unknown[]) {
      if (!Array.isArray(item) || typeof item[0] !== 'string' || !item[1] || typeof item[1] !== 'object') return null;
      const e = item[1] as Entry;
      if (!['file', 'dir', 'symlink'].includes(e.type) || typeof e.size !== 'number' || typeof e.mtime !== 'number' || typeof e.mode !== 'number') return null;
      entries.set(item[0], e);
    }
    const flagged = Array.isArray(doc.flagged) ? doc.flagged.filter((x): x is string => typeof x === 'string') : undefined;
    return { remoteId: doc.remoteId, entries, lastScan: typeof doc.lastScan === 'number' ? doc.lastScan : undefined, flagged };
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
    writeFileSync(tmp, gzipSync(JSON.stringify({ format: FORMAT, version: VERSION, remoteId: a.remoteId, lastScan: a.lastScan, flagged: a.flagged, entries })));
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * The target's id: read, or made now (with the lock held) when `create` and there is none. An empty one (a create
 * whose write never landed) is written anew; one in another format is left alone (undefined: nothing is kept for
 * this pair), and a read that fails throws rather than replace an id other clients rely on.
 */
export async function remoteIdentity(remote: Transport, create: boolean): Promise<string | undefined> {
  const read = async () => {
    const buf = await remote.readFile(REMOTE_ID_PATH, { small: true });
    const text = buf?.toString('utf8').trim();
    return { missing: buf === null, empty: text === '', id: text && /^[0-9a-f]{32}$/.test(text) ? text : undefined };
  };
  let found = await read();
  if (found.id || !create) return found.id;
  const id = randomBytes(16).toString('hex');
  if (found.missing) {
    if (await remote.createExclusive(REMOTE_ID_PATH, Buffer.from(`${id}\n`))) return id;
    found = await read();
    if (found.id) return found.id;
  }
  if (!found.empty) return undefined;
  await remote.writeSmall(REMOTE_ID_PATH, Buffer.from(`${id}\n`));
  return (await read()).id === id ? id : undefined;
}

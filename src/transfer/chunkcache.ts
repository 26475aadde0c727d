/**
 * The local chunk cache: what wsync knows about file contents without reading them again.
 *
 * Two maps, one file per (local root, target) pair:
 *   - contents: (SHA-256, chunker spec) → chunk list. Content-addressed, so an entry can never be stale. It holds
 *     the chunk lists of what the remote has (the manifest names each remote file's SHA-256 and spec), which is
 *     what a delta is planned against. Chunk lists are kept here rather than in the remote manifest because every
 *     run reads the manifest: a 200 MB file at 16 KiB chunks would add ~220 KB to each read and each write of it.
 *   - files: local path → (stamp, SHA-256). A stamp is device, inode, size, mtime and ctime (Transport.stamp), so
 *     a file whose stamp is unchanged is not read or hashed again.
 * Plus, for big files, what the target held after the last run (path → size, mtime, content): enough to start a
 * changed file's rebuild before this run has read the manifest, which then confirms or cancels it.
 *
 * Losing the cache costs one whole upload per changed big file, never a wrong result: it is read defensively
 * (anything unexpected is a miss) and replaced atomically.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, accessSync, constants as fsConstants, lstatSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { ChunkedFile, ChunkRef } from '../chunking/hash.js';
import { CHUNK_ID_BYTES } from '../chunking/hash.js';
import { type ChunkerSpec, parseChunkerSpec } from '../chunking/params.js';

export const CACHE_FORMAT = 'wsync-chunk-cache';
export const CACHE_VERSION = 1;
/** Cache files of (root, target) pairs untouched this long are removed when another one is saved. */
const STALE_AFTER_MS = 90 * 24 * 3600 * 1000;

/** A chunk list in the compact form it is cached in: ids back to back, lengths as 32-bit integers. */
export interface ChunkList {
  readonly sha256: string;
  readonly spec: ChunkerSpec;
  readonly size: number;
  /** CHUNK_ID_BYTES per chunk. */
  readonly ids: Buffer;
  readonly lengths: Uint32Array;
}

export function fromChunked(c: ChunkedFile): ChunkList {
  const n = c.chunks.length;
  const ids = Buffer.allocUnsafe(n * CHUNK_ID_BYTES);
  const lengths = new Uint32Array(n);
  c.chunks.forEach((ch, i) => {
    ids.write(ch.id, i * CHUNK_ID_BYTES, CHUNK_ID_BYTES, 'hex');
    lengths[i] = ch.length;
  });
  return { sha256: c.sha256, spec: c.spec, size: c.size, ids, lengths };
}

export function toChunkRefs(l: ChunkList): ChunkRef[] {
  const out: ChunkRef[] = new Array(l.lengths.length);
  let offset = 0;
  for (let i = 0; i < l.lengths.length; i++) {
    const length = l.lengths[i]!;
    out[i] = { offset, length, id: l.ids.toString('hex', i * CHUNK_ID_BYTES, (i + 1) * CHUNK_ID_BYTES) };
    offset += length;
  }
  return out;
}

export function contentKey(sha256: string, spec: ChunkerSpec): string {
  return `${sha256}/${spec.id}/${spec.min}/${spec.avg}/${spec.max}`;
}

/**
 * Where caches live: $XDG_CACHE_HOME/wsync or ~/.cache/wsync, and %LOCALAPPDATA%\wsync\cache on Windows.
 * Null when there is no usable home (the run then simply has no cache).
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform, home: string = safeHome()): string | null {
  if (platform === 'win32') {
    const base = env.LOCALAPPDATA || (home ? path.win32.join(home, 'AppData', 'Local') : '');
    return base ? path.win32.join(base, 'wsync', 'cache') : null;
  }
  const xdg = env.XDG_CACHE_HOME;
  // The XDG spec says relative values are to be ignored.
  if (xdg && path.posix.isAbsolute(xdg)) return path.posix.join(xdg, 'wsync');
  return home ? path.posix.join(home, '.cache', 'wsync') : null;
}

const usable = new Map<string, string | null>();

/**
 * The cache directory to use: defaultCacheDir where it can be written; else (a container run under a user whose
 * home is `/` or read-only, a CI job with a read-only home) a private directory under the system's temp directory,
 * made with mode 0700 and used only while it is ours and no one else can write it. Without any, null: the runs
 * still work, but a run cut before its manifest leaves the next one to read back everything it had finished.
 */
export function usableCacheDir(): string | null {
  const preferred = defaultCacheDir();
  const key = preferred ?? '';
  if (usable.has(key)) return usable.get(key)!;
  const writable = (dir: string) => {
    try {
      mkdirSync(path.join(dir, 'chunks'), { recursive: true });
      accessSync(path.join(dir, 'chunks'), fsConstants.W_OK);
      return true;
    } catch {
      return false;
    }
  };
  let dir: string | null = preferred && writable(preferred) ? preferred : null;
  if (!dir && process.platform !== 'win32' && typeof process.getuid === 'function') {
    const uid = process.getuid();
    const mine = path.join(os.tmpdir(), `wsync-${uid}`);
    try {
      mkdirSync(mine, { mode: 0o700 });
    } catch {
      // There already (checked below), or not possible.
    }
    try {
      const st = lstatSync(mine);
      if (st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0 && writable(path.join(mine, 'cache'))) dir = path.join(mine, 'cache');
    } catch {
      // No temp directory either.
    }
  }
  usable.set(key, dir);
  return dir;
}

function safeHome(): string {
  try {
    return os.homedir();
  } catch {
    return '';
  }
}

/** Another file of the same pair, beside its chunk cache (`.journal`, `.pair.json`, `.ancestor.json.gz`). */
export function pairFileFor(cacheFile: string, suffix: string): string {
  return cacheFile.replace(/\.json\.gz$/, suffix);
}

/** One file per pair: the same local tree pushed to two targets has two remote states to remember. */
export function cacheFileFor(dir: string, localRoot: string, target: string): string {
  const id = createHash('sha256').update(`${localRoot}\0${target}`).digest('hex').slice(0, 32);
  return path.join(dir, 'chunks', `${id}.json.gz`);
}

type WireContent = [key: string, spec: [string, number, number, number], size: number, ids: string, lengths: string];
type WireFile = [path: string, stamp: string, key: string];
type WireRemote = [path: string, size: number, mtime: number, key: string];
interface WireDoc {
  format: string;
  version: number;
  local?: string;
  target?: string;
  contents: WireContent[];
  files: WireFile[];
  /** Added without a version bump: older builds ignore it. */
  remote?: WireRemote[];
}

/** A big file as the target held it after the last run. */
export interface RemoteRecord {
  size: number;
  mtime: number;
  list: ChunkList;
}

export class ChunkCache {
  private contents = new Map<string, ChunkList>();
  private files = new Map<string, { stamp: string; key: string }>();
  private remotes = new Map<string, { size: number; mtime: number; key: string }>();
  private dirty = false;

  private constructor(
    readonly file: string | null,
    private readonly label: { local: string; target: string },
  ) {}

  /** Never throws: a missing, unreadable or foreign file is an empty cache. */
  static async load(file: string | null, label: { local: string; target: string }): Promise<ChunkCache> {
    const c = new ChunkCache(file, label);
    if (!file) return c;
    let doc: WireDoc;
    try {
      doc = JSON.parse(gunzipSync(await fsp.readFile(file)).toString('utf8'));
    } catch {
      return c;
    }
    if (doc?.format !== CACHE_FORMAT || doc.version !== CACHE_VERSION || !Array.isArray(doc.contents) || !Array.isArray(doc.files)) return c;
    for (const rec of doc.contents) {
      const list = decodeContent(rec);
      if (list) c.contents.set(contentKey(list.sha256, list.spec), list);
    }
    for (const rec of doc.files) {
      if (!Array.isArray(rec) || rec.length !== 3 || !rec.every((v) => typeof v === 'string')) continue;
      if (c.contents.has(rec[2])) c.files.set(rec[0], { stamp: rec[1], key: rec[2] });
    }
    for (const rec of Array.isArray(doc.remote) ? doc.remote : []) {
      if (!Array.isArray(rec) || rec.length !== 4) continue;
      const [rel, size, mtime, key] = rec as unknown[];
      if (typeof rel !== 'string' || typeof key !== 'string' || !Number.isSafeInteger(size) || !Number.isSafeInteger(mtime)) continue;
      const list = c.contents.get(key);
      if (list && list.size === size) c.remotes.set(rel, { size: size as number, mtime: mtime as number, key });
    }
    return c;
  }

  get modified(): boolean {
    return this.dirty;
  }

  content(sha256: string, spec: ChunkerSpec): ChunkList | undefined {
    return this.contents.get(contentKey(sha256, spec));
  }

  /** The chunk list of the local file at `rel` if its stamp is still `stamp` and it was cut with `spec`. */
  fileContent(rel: string, stamp: string, spec: ChunkerSpec): ChunkList | undefined {
    const f = this.files.get(rel);
    if (!f || f.stamp !== stamp) return undefined;
    const l = this.contents.get(f.key);
    return l && contentKey(l.sha256, spec) === f.key ? l : undefined;
  }

  /** Local files last seen by this cache, with the stamp and chunk list they had then. */
  *knownFiles(): IterableIterator<{ rel: string; stamp: string; list: ChunkList }> {
    for (const [rel, f] of this.files) {
      const list = this.contents.get(f.key);
      if (list) yield { rel, stamp: f.stamp, list };
    }
  }

  /** The big files the target held after the last run whose chunk lists are here. */
  *remoteFiles(): IterableIterator<[string, RemoteRecord]> {
    for (const [rel, r] of this.remotes) {
      const list = this.contents.get(r.key);
      if (list) yield [rel, { size: r.size, mtime: r.mtime, list }];
    }
  }

  /** Records what the target now holds: its files with a chunker (and a cached chunk list); the rest is forgotten. */
  setRemote(entries: Iterable<[string, { type: string; size: number; mtime: number; sha256?: string; chunker?: ChunkerSpec }]>): void {
    const next = new Map<string, { size: number; mtime: number; key: string }>();
    for (const [rel, e] of entries) {
      if (e.type !== 'file' || !e.sha256 || !e.chunker) continue;
      const key = contentKey(e.sha256, e.chunker);
      if (this.contents.has(key)) next.set(rel, { size: e.size, mtime: e.mtime, key });
    }
    const same = next.size === this.remotes.size && [...next].every(([rel, r]) => {
      const o = this.remotes.get(rel);
      return o !== undefined && o.size === r.size && o.mtime === r.mtime && o.key === r.key;
    });
    if (same) return;
    this.remotes = next;
    this.dirty = true;
  }

  addContent(list: ChunkList): void {
    const key = contentKey(list.sha256, list.spec);
    if (this.contents.has(key)) return;
    this.contents.set(key, list);
    this.dirty = true;
  }

  addFile(rel: string, stamp: string, list: ChunkList): void {
    this.addContent(list);
    const key = contentKey(list.sha256, list.spec);
    const f = this.files.get(rel);
    if (f?.stamp === stamp && f.key === key) return;
    this.files.set(rel, { stamp, key });
    this.dirty = true;
  }

  /**
   * Writes the cache if it changed, keeping file records for `livePaths` and the contents they or `liveContents`
   * (the manifest's entries: what the remote holds, or held before a failed transfer) refer to. Errors are
   * swallowed: a cache that cannot be written costs speed, not correctness.
   */
  async save(livePaths: (rel: string) => boolean, liveContents: Iterable<string>): Promise<void> {
    if (!this.file || !this.dirty) return;
    const keep = new Set(liveContents);
    const files: WireFile[] = [];
    for (const [rel, f] of this.files) {
      if (!livePaths(rel) || !this.contents.has(f.key)) continue;
      files.push([rel, f.stamp, f.key]);
      keep.add(f.key);
    }
    const remote: WireRemote[] = [];
    for (const [rel, r] of this.remotes) {
      if (!this.contents.has(r.key)) continue;
      remote.push([rel, r.size, r.mtime, r.key]);
      keep.add(r.key);
    }
    const contents: WireContent[] = [];
    for (const [key, l] of this.contents) {
      if (!keep.has(key)) continue;
      const lengths = Buffer.allocUnsafe(l.lengths.length * 4);
      l.lengths.forEach((v, i) => lengths.writeUInt32LE(v, i * 4));
      contents.push([key, [l.spec.id, l.spec.min, l.spec.avg, l.spec.max], l.size, l.ids.toString('base64'), lengths.toString('base64')]);
    }
    const doc: WireDoc = { format: CACHE_FORMAT, version: CACHE_VERSION, ...this.label, contents, files, remote };
    const dir = path.dirname(this.file);
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      // Chunk ids are already random bytes; level 1 only shrinks the JSON around them.
      await fsp.writeFile(tmp, gzipSync(Buffer.from(JSON.stringify(doc)), { level: 1 }), { mode: 0o600 });
      await fsp.rename(tmp, this.file);
      this.dirty = false;
    } catch {
      await fsp.unlink(tmp).catch(() => undefined);
      return;
    }
    await removeStale(dir, this.file);
  }
}

function decodeContent(rec: unknown): ChunkList | null {
  if (!Array.isArray(rec) || rec.length !== 5) return null;
  const [key, rawSpec, size, ids64, len64] = rec as unknown[];
  if (typeof key !== 'string' || !Array.isArray(rawSpec) || typeof size !== 'number' || typeof ids64 !== 'string' || typeof len64 !== 'string') return null;
  let spec: ChunkerSpec;
  try {
    spec = parseChunkerSpec({ id: rawSpec[0], min: rawSpec[1], avg: rawSpec[2], max: rawSpec[3] });
  } catch {
    return null;
  }
  const sha256 = key.split('/')[0] ?? '';
  if (!/^[0-9a-f]{64}$/.test(sha256) || contentKey(sha256, spec) !== key) return null;
  const ids = Buffer.from(ids64, 'base64');
  const lenBuf = Buffer.from(len64, 'base64');
  const n = lenBuf.length / 4;
  if (!Number.isInteger(n) || ids.length !== n * CHUNK_ID_BYTES) return null;
  const lengths = new Uint32Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const v = lenBuf.readUInt32LE(i * 4);
    if (v === 0) return null;
    lengths[i] = v;
    total += v;
  }
  // A list that does not tile the file it claims to describe would plan copies from the wrong places.
  if (total !== size) return null;
  return { sha256, spec, size, ids, lengths };
}

async function removeStale(dir: string, keep: string): Promise<void> {
  try {
    const now = Date.now();
    for (const name of await fsp.readdir(dir)) {
      const p = path.join(dir, name);
      if (p === keep || !(name.endsWith('.json.gz') || name.endsWith('.tmp'))) continue;
      const st = await fsp.stat(p).catch(() => null);
      if (st && now - st.mtimeMs > STALE_AFTER_MS) await fsp.unlink(p).catch(() => undefined);
    }
  } catch {
    // Housekeeping only.
  }
}

/**
 * Chunk a file and hash it in one pass: the whole-file SHA-256 plus a strong id per chunk.
 *
 * Identity rules (why they are strong): the remote sftp-server cannot hash, so a wrong chunk match would silently
 * and permanently corrupt the remote copy. Chunk ids are therefore cryptographic, SHA-256 truncated to 128 bits
 * (2^64 birthday work; ~3e-23 collision odds for a terabyte in 8 KiB chunks), never a fast non-cryptographic hash.
 *
 * Encoding: ids are 32 lower-case hex characters, the first 16 bytes of the digest. Hex rather than base64url so
 * that an id is literally the prefix of `sha256sum`'s output for the chunk's bytes, which makes manual checks and a
 * future remote `sha256sum`-based verify trivial; the 10 extra bytes per chunk are ~0.06 % of a 16 KiB chunk.
 * The whole-file hash is the full 64-character hex SHA-256, again the same string `sha256sum` prints.
 *
 * Memory stays flat for any file size: input is consumed in bounded blocks and a chunk is hashed incrementally as
 * its bytes go by, never buffered. Only the chunk list grows (about 8500 entries for a 10 GB file, see params.ts).
 */
import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { FastCdc } from './fastcdc.js';
import { type ChunkerSpec, specForSize, toFastCdcOptions } from './params.js';

/** Bytes in a chunk id, and hex characters in its string form. */
export const CHUNK_ID_BYTES = 16;
export const CHUNK_ID_HEX_LENGTH = CHUNK_ID_BYTES * 2;

/** One chunk of a file: the bytes [offset, offset + length) and their id. */
export interface ChunkRef {
  readonly offset: number;
  readonly length: number;
  /** First 16 bytes of SHA-256 of the chunk's bytes, lower-case hex (32 characters). */
  readonly id: string;
}

/** Result of hashing one file or stream. The chunks tile [0, size) in order, with no gaps. */
export interface ChunkedFile {
  readonly size: number;
  /** Full SHA-256 of the content, lower-case hex (64 characters). */
  readonly sha256: string;
  readonly spec: ChunkerSpec;
  readonly chunks: ChunkRef[];
}

/** Id of one in-memory chunk, computed the same way the streaming path does. */
export function chunkId(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest().toString('hex', 0, CHUNK_ID_BYTES);
}

/**
 * Push-style chunker + hasher, for code that already holds the bytes (for example the uploader, which can hash what
 * it sends without a second read). `update` consumes its argument synchronously and keeps no reference to it, so
 * the caller may reuse the buffer as soon as `update` returns.
 */
export class ChunkHasher {
  readonly spec: ChunkerSpec;
  private readonly cdc: FastCdc;
  private readonly whole: Hash = createHash('sha256');
  private current: Hash = createHash('sha256');
  private chunkStart = 0;
  private size = 0;
  private readonly chunks: ChunkRef[] = [];
  private done = false;

  /** Throws RangeError if `spec` is not one this build can chunk with (validate stored specs with parseChunkerSpec). */
  constructor(spec: ChunkerSpec) {
    this.cdc = new FastCdc(toFastCdcOptions(spec));
    this.spec = { id: spec.id, min: spec.min, avg: spec.avg, max: spec.max };
  }

  /** Bytes consumed so far. */
  get bytes(): number {
    return this.size;
  }

  update(data: Uint8Array): void {
    if (this.done) throw new Error('ChunkHasher.update after digest');
    if (data.length === 0) return;
    this.whole.update(data);
    let i = 0;
    for (;;) {
      const end = this.cdc.scan(data, i);
      if (end < 0) {
        this.current.update(data.subarray(i));
        break;
      }
      this.current.update(data.subarray(i, end));
      this.closeChunk(this.size + end);
      i = end;
      if (i === data.length) break;
    }
    this.size += data.length;
  }

  /** Ends the input and returns the result. The hasher cannot be used afterwards. */
  digest(): ChunkedFile {
    if (this.done) throw new Error('ChunkHasher.digest called twice');
    this.done = true;
    if (this.cdc.finish() !== null) this.closeChunk(this.size);
    return { size: this.size, sha256: this.whole.digest('hex'), spec: this.spec, chunks: this.chunks };
  }

  private closeChunk(end: number): void {
    const id = this.current.digest().toString('hex', 0, CHUNK_ID_BYTES);
    this.chunks.push({ offset: this.chunkStart, length: end - this.chunkStart, id });
    this.chunkStart = end;
    this.current = createHash('sha256');
  }
}

/** Chunks and hashes an in-memory buffer (`spec` defaults to the tier for its size). */
export function chunkBuffer(data: Uint8Array, spec: ChunkerSpec = specForSize(data.length)): ChunkedFile {
  const h = new ChunkHasher(spec);
  h.update(data);
  return h.digest();
}

/**
 * Chunks and hashes an async stream of byte slices, of any sizes. The spec cannot be inferred from a stream, so the
 * caller passes it (usually specForSize(stat.size) or specForUpdate(oldEntry.spec, stat.size)).
 * Rejects with whatever the source throws; also with `signal.reason` if aborted.
 */
export async function chunkStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  spec: ChunkerSpec,
  opts: { signal?: AbortSignal } = {},
): Promise<ChunkedFile> {
  const h = new ChunkHasher(spec);
  for await (const piece of source) {
    opts.signal?.throwIfAborted();
    h.update(piece);
  }
  return h.digest();
}

export interface ChunkFileOptions {
  /** Chunker spec; defaults to the tier for the file's size at open time (specForSize). */
  readonly spec?: ChunkerSpec;
  /** Read size in bytes, default 1 MiB. Two buffers of this size are the only per-file memory. */
  readonly blockSize?: number;
  readonly signal?: AbortSignal;
}

/** Default read block: large enough that syscall overhead is noise, small enough to keep two in cache-ish memory. */
export const DEFAULT_READ_BLOCK = 1 << 20;

/**
 * Reads the file at `path` once and returns its size, SHA-256 and chunk list.
 *
 * Reads are double-buffered: the next block is requested before the current one is hashed, so disk I/O (on the
 * libuv pool) overlaps with hashing (on this thread). The result describes the bytes actually read; if the file
 * changed meanwhile, `size` may differ from an earlier stat, and the caller should compare stats and retry.
 *
 * Rejects with the fs error unchanged (ENOENT, EACCES, EISDIR, …) so the caller can classify it, or with
 * `signal.reason` if aborted.
 */
export async function chunkFile(path: string, opts: ChunkFileOptions = {}): Promise<ChunkedFile> {
  const blockSize = opts.blockSize ?? DEFAULT_READ_BLOCK;
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new RangeError(`bad blockSize: ${blockSize}`);
  const fh = await open(path, 'r');
  try {
    const spec = opts.spec ?? specForSize((await fh.stat()).size);
    const hasher = new ChunkHasher(spec);
    const bufs = [Buffer.allocUnsafe(blockSize), Buffer.allocUnsafe(blockSize)] as const;
    let which = 0;
    let position = 0;
    let pending = fh.read(bufs[0], 0, blockSize, 0);
    for (;;) {
      const { bytesRead } = await pending;
      if (bytesRead === 0) break;
      const filled = bufs[which];
      position += bytesRead;
      which ^= 1;
      pending = fh.read(bufs[which], 0, blockSize, position);
      try {
        opts.signal?.throwIfAborted();
        hasher.update(filled.subarray(0, bytesRead));
      } catch (err) {
        // Settle the in-flight read before the handle is closed under it.
        await pending.catch(() => undefined);
        throw err;
      }
    }
    return hasher.digest();
  } finally {
    await fh.close();
  }
}

/**
 * The engine's side of delta transfer: cutting a local file into chunks, and feeding literal bytes to a rebuild
 * while proving they are the bytes the plan was made from.
 */
import { createHash, type Hash } from 'node:crypto';
import { ChunkHasher, CHUNK_ID_BYTES, type ChunkedFile, type ChunkRef } from '../chunking/hash.js';
import type { ChunkerSpec } from '../chunking/params.js';
import type { FileReader, LiteralSource } from '../transport/types.js';
import { WsyncError } from '../errors.js';

/** Read size for chunking; two of these are the only per-file buffers. */
const READ_BLOCK = 1 << 20;

/**
 * Cuts and hashes a whole file through a reader. Reads are double-buffered so the next block is on its way while
 * this one is hashed.
 */
export async function chunkReader(r: FileReader, spec: ChunkerSpec): Promise<ChunkedFile> {
  const h = new ChunkHasher(spec);
  const size = r.size;
  let pos = 0;
  const next = () => {
    const n = Math.min(READ_BLOCK, size - pos);
    const p = r.read(pos, n);
    p.catch(() => undefined); // awaited below
    pos += n;
    return p;
  };
  let pending = size > 0 ? next() : undefined;
  while (pending) {
    const buf = await pending;
    pending = pos < size ? next() : undefined;
    h.update(buf);
  }
  return h.digest();
}

/**
 * Literal bytes straight from the local file, each chunk checked against the id the plan was made with before
 * its last byte is handed over. The copies in a plan are only right for the new file the chunk list describes;
 * if the file changed after it was chunked (or the cached list is stale), the literals would not fit, and this
 * turns that into E_CHANGED_DURING_SYNC before the rebuilt file is renamed into place.
 *
 * Relies on the LiteralSource contract (in order, one call at a time) and on literal ops covering whole chunks,
 * which planDelta guarantees (copies are whole chunks, so the rest is too).
 */
export function verifiedLiterals(r: FileReader, chunks: readonly ChunkRef[], where: string, onBytes: (n: number) => void): LiteralSource {
  let ci = 0;
  let h: Hash | null = null;
  let hashedTo = -1;
  return async (pos, length) => {
    const buf = await r.read(pos, length);
    let p = pos;
    while (p < pos + length) {
      while (ci < chunks.length && chunks[ci]!.offset + chunks[ci]!.length <= p) ci++;
      const c = chunks[ci];
      if (!c) throw new WsyncError('E_INTERNAL', `${where}: literal read at ${p} is past the last chunk`);
      if (p === c.offset) h = createHash('sha256');
      else if (h === null || hashedTo !== p) throw new WsyncError('E_INTERNAL', `${where}: literal read at ${p} starts inside a chunk`);
      const end = Math.min(c.offset + c.length, pos + length);
      h.update(buf.subarray(p - pos, end - pos));
      p = hashedTo = end;
      if (end === c.offset + c.length) {
        const id = h.digest().toString('hex', 0, CHUNK_ID_BYTES);
        h = null;
        if (id !== c.id) {
          throw new WsyncError('E_CHANGED_DURING_SYNC', `${where} changed while it was being sent (bytes at ${c.offset} differ from when it was read)`);
        }
      }
    }
    onBytes(length);
    return buf;
  };
}

/**
 * Passes a stream through while hashing it: SHA-256 only, or with a spec, the chunk list too (big files, so the
 * next push of a changed copy can be a delta without reading this version again).
 */
export function hashingStream(
  src: AsyncIterable<Buffer>,
  spec: ChunkerSpec | undefined,
  onBytes: (n: number) => void,
): { stream: AsyncIterable<Buffer>; result: () => { sha256: string; chunked?: ChunkedFile } } {
  const plain = spec ? undefined : createHash('sha256');
  const chunker = spec ? new ChunkHasher(spec) : undefined;
  let done: { sha256: string; chunked?: ChunkedFile } | undefined;
  return {
    stream: (async function* () {
      for await (const piece of src) {
        if (chunker) chunker.update(piece);
        else plain!.update(piece);
        onBytes(piece.length);
        yield piece;
      }
      if (chunker) {
        const chunked = chunker.digest();
        done = { sha256: chunked.sha256, chunked };
      } else done = { sha256: plain!.digest('hex') };
    })(),
    result: () => {
      if (!done) throw new Error('hash before the stream ended');
      return done;
    },
  };
}

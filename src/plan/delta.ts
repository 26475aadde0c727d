/**
 * Delta planning: how to rebuild a changed file on the remote from the old remote copy plus literal bytes.
 *
 * The remote executes the plan by creating a temp file, issuing `copy-data` (old file → temp) for copy ops and
 * WRITE for literal ops, then renaming the temp over the original; copy-data refuses to read and write the same
 * file, so an in-place rebuild is impossible. Pure: data in, data out, no I/O.
 *
 * Invariants of every plan returned by planDelta (checked by validateDelta, relied upon by the transfer code):
 *   - ops are sorted by dstOffset and tile [0, newSize) exactly: no gap, no overlap;
 *   - every copy reads inside [0, oldSize) of the old file, where oldSize is what the old chunk list tiles;
 *   - no two adjacent copies are contiguous in both source and destination, and no two literals are adjacent
 *     (each op costs a request/response pair, ≈ 90 wire bytes for copy-data), except the pieces of a copy that
 *     maxCopyLength split;
 *   - every copy is at least minCopyLength long, except such pieces.
 */
import type { ChunkRef } from '../chunking/hash.js';
import { WsyncError } from '../errors.js';

export type DeltaOp =
  | { readonly kind: 'copy'; readonly srcOffset: number; readonly length: number; readonly dstOffset: number }
  | { readonly kind: 'literal'; readonly dstOffset: number; readonly length: number };

export interface DeltaPlan {
  readonly ops: DeltaOp[];
  readonly oldSize: number;
  readonly newSize: number;
  /** Bytes the remote copies from the old file. */
  readonly copyBytes: number;
  /** Bytes that must be sent. copyBytes + literalBytes === newSize. */
  readonly literalBytes: number;
  /** Whether rebuilding beats uploading the whole file; see `reason` and DeltaOptions for the rules. */
  readonly worthIt: boolean;
  readonly reason: 'ok' | 'small-file' | 'no-reuse' | 'low-reuse';
}

/**
 * Thresholds and knobs; every field is optional and defaults to the DELTA_* constants below.
 */
export interface DeltaOptions {
  /** Files smaller than this are always uploaded whole. */
  readonly minFileSize?: number;
  /** Net saving (see estimateNetSaving) needed, as a fraction of the new file's size... */
  readonly minReuseFraction?: number;
  /** ...unless the net saving is at least this many bytes, which is worth it whatever the fraction. */
  readonly bigSaving?: number;
  /** Copies shorter than this are sent as literals instead: the op would cost more than the bytes. */
  readonly minCopyLength?: number;
  /**
   * Split copies longer than this into equal pieces (the server copies synchronously, blocking its channel for the
   * duration); default: no limit.
   */
  readonly maxCopyLength?: number;
}

/**
 * Below 256 KiB a delta saves at most a couple of hundred KiB, paid for with a second open, a handle pair that must
 * live on one channel, and a dependence on the remote old file matching the manifest (a stat check per file).
 * Whole uploads of such files pipeline well and carry no such risk. (The reference measured the protocol floor of a
 * rebuild at ~0.5–1 KB and 6–8 round trips; at 256 KiB and 16 KiB chunks one edit already costs ~7–15 % of the file.)
 */
export const DELTA_MIN_FILE_SIZE = 256 * 1024;

/**
 * Reusing under 10 % of the file saves little wire time but still pays the rebuild's extra requests and the
 * server-side copy, and it usually means the file was rewritten (re-encoded, re-compressed) so the few matches are
 * incidental. The fraction alone would reject a 10 GB file that reuses 500 MB, hence DELTA_BIG_SAVING.
 */
export const DELTA_MIN_REUSE_FRACTION = 0.1;

/** A net saving of 32 MiB is worth a rebuild regardless of the file's size (seconds of upload on typical links). */
export const DELTA_BIG_SAVING = 32 * 2 ** 20;

/** Wire cost of one copy-data op: 62-byte request + 28-byte STATUS reply (sftp-server.c, 4-byte handles). */
export const COPY_OP_WIRE_COST = 90;

/** Extra requests a rebuild needs over a whole upload (open of the old file, its close), rounded up generously. */
export const REBUILD_FIXED_WIRE_COST = 1024;

/** Copies shorter than this become literals; above COPY_OP_WIRE_COST with margin for the op's round trip. */
export const DELTA_MIN_COPY_LENGTH = 256;

/** copyBytes minus the wire overhead the copy ops and the rebuild add. Negative when the delta costs more. */
export function estimateNetSaving(copyBytes: number, copyOps: number): number {
  return copyBytes - copyOps * COPY_OP_WIRE_COST - REBUILD_FIXED_WIRE_COST;
}

/** Size a chunk list tiles; throws unless its chunks are in order, contiguous from 0 and non-empty. */
function tiledSize(chunks: readonly ChunkRef[], which: 'old' | 'new'): number {
  let pos = 0;
  for (let k = 0; k < chunks.length; k++) {
    const c = chunks[k]!;
    if (c.offset !== pos || !Number.isSafeInteger(c.length) || c.length <= 0 || typeof c.id !== 'string') {
      // The old list comes from storage (the chunk cache; recoverable: upload whole); the new one from our chunker.
      throw new WsyncError(
        which === 'old' ? 'E_MANIFEST' : 'E_INTERNAL',
        `${which} chunk list does not tile the file at chunk ${k} (offset ${c.offset}, expected ${pos})`,
      );
    }
    pos += c.length;
  }
  return pos;
}

/**
 * Plans how to build the file described by `newChunks` from the old file described by `oldChunks` (both produced
 * with the same ChunkerSpec; with different specs nothing matches and the plan is one literal).
 *
 * Each new chunk is looked up by id anywhere in the old file, so moved and duplicated content is reused too. Where
 * several old chunks share an id, the one continuing the previous copy is preferred, then one whose successor also
 * matches, which keeps long runs (e.g. zero-filled regions, repeated blocks) as single ops. Chunks with equal ids but different lengths are never matched: that can only
 * be a truncated-hash collision or a corrupt manifest.
 *
 * Throws WsyncError E_MANIFEST if `oldChunks` does not tile a file, E_INTERNAL if `newChunks` does not.
 */
export function planDelta(
  oldChunks: readonly ChunkRef[],
  newChunks: readonly ChunkRef[],
  opts: DeltaOptions = {},
): DeltaPlan {
  const minFileSize = opts.minFileSize ?? DELTA_MIN_FILE_SIZE;
  const minReuseFraction = opts.minReuseFraction ?? DELTA_MIN_REUSE_FRACTION;
  const bigSaving = opts.bigSaving ?? DELTA_BIG_SAVING;
  const minCopyLength = opts.minCopyLength ?? DELTA_MIN_COPY_LENGTH;
  const maxCopyLength = opts.maxCopyLength ?? Number.POSITIVE_INFINITY;
  if (!(maxCopyLength > 0)) throw new RangeError(`maxCopyLength must be positive, got ${maxCopyLength}`);

  const oldSize = tiledSize(oldChunks, 'old');
  const newSize = tiledSize(newChunks, 'new');

  const byId = new Map<string, number[]>();
  const byOffset = new Map<number, number>();
  for (let k = 0; k < oldChunks.length; k++) {
    const c = oldChunks[k]!;
    const list = byId.get(c.id);
    if (list === undefined) byId.set(c.id, [k]);
    else list.push(k);
    byOffset.set(c.offset, k);
  }
  // Where an id occurs more than once in the old file, start the copy at the occurrence whose successor also
  // matches the next new chunk, so the run can continue. Bounded so that a file of identical chunks stays linear.
  const LOOKAHEAD_CANDIDATES = 16;
  const pickSource = (n: number): ChunkRef | undefined => {
    const c = newChunks[n]!;
    const list = byId.get(c.id);
    if (list === undefined) return undefined;
    const next = newChunks[n + 1];
    let choice: ChunkRef | undefined;
    for (let j = 0; j < list.length && j < LOOKAHEAD_CANDIDATES; j++) {
      const cand = oldChunks[list[j]!]!;
      if (cand.length !== c.length) continue;
      choice ??= cand;
      if (next === undefined) break;
      const succ = oldChunks[list[j]! + 1];
      if (succ !== undefined && succ.id === next.id && succ.length === next.length) return cand;
    }
    return choice;
  };

  // Mutable working copies; the public type is readonly.
  type Copy = { kind: 'copy'; srcOffset: number; length: number; dstOffset: number };
  type Literal = { kind: 'literal'; dstOffset: number; length: number };
  const raw: (Copy | Literal)[] = [];
  const pushLiteral = (dstOffset: number, length: number): void => {
    const last = raw[raw.length - 1];
    if (last?.kind === 'literal') last.length += length;
    else raw.push({ kind: 'literal', dstOffset, length });
  };

  for (let n = 0; n < newChunks.length; n++) {
    const c = newChunks[n]!;
    const last = raw[raw.length - 1];
    if (last?.kind === 'copy') {
      const k = byOffset.get(last.srcOffset + last.length);
      const next = k === undefined ? undefined : oldChunks[k]!;
      if (next !== undefined && next.id === c.id && next.length === c.length) {
        last.length += c.length;
        continue;
      }
    }
    const src = pickSource(n);
    if (src !== undefined) raw.push({ kind: 'copy', srcOffset: src.offset, length: c.length, dstOffset: c.offset });
    else pushLiteral(c.offset, c.length);
  }

  // Demote copies too short to pay for their op; this can make literals adjacent, so merge while rebuilding.
  const merged: (Copy | Literal)[] = [];
  for (const op of raw) {
    const last = merged[merged.length - 1];
    const asLiteral = op.kind === 'literal' || op.length < minCopyLength;
    if (asLiteral && last?.kind === 'literal') last.length += op.length;
    else if (asLiteral) merged.push({ kind: 'literal', dstOffset: op.dstOffset, length: op.length });
    else merged.push(op);
  }

  const ops: DeltaOp[] = [];
  let copyBytes = 0;
  let copyOps = 0;
  for (const op of merged) {
    if (op.kind === 'literal') {
      ops.push(op);
      continue;
    }
    copyBytes += op.length;
    // Equal pieces rather than max-size pieces plus a remainder: no runt op that costs as much as a full one.
    const pieces = Math.max(1, Math.ceil(op.length / maxCopyLength));
    const base = Math.floor(op.length / pieces);
    const longer = op.length % pieces;
    for (let p = 0, done = 0; p < pieces; p++) {
      const len = base + (p < longer ? 1 : 0);
      ops.push({ kind: 'copy', srcOffset: op.srcOffset + done, length: len, dstOffset: op.dstOffset + done });
      done += len;
    }
    copyOps += pieces;
  }
  const literalBytes = newSize - copyBytes;

  let reason: DeltaPlan['reason'] = 'ok';
  const net = estimateNetSaving(copyBytes, copyOps);
  if (newSize < minFileSize) reason = 'small-file';
  else if (copyBytes === 0) reason = 'no-reuse';
  else if (net <= 0 || (net < minReuseFraction * newSize && net < bigSaving)) reason = 'low-reuse';

  return { ops, oldSize, newSize, copyBytes, literalBytes, worthIt: reason === 'ok', reason };
}

/**
 * Throws WsyncError E_INTERNAL unless `ops` satisfy the plan invariants (sorted, exact tiling of [0, newSize),
 * positive integer lengths, copies inside [0, oldSize)). Cheap; the transfer code may call it before executing.
 */
export function validateDelta(ops: readonly DeltaOp[], oldSize: number, newSize: number): void {
  let pos = 0;
  for (let k = 0; k < ops.length; k++) {
    const op = ops[k]!;
    const bad = (why: string): never => {
      throw new WsyncError('E_INTERNAL', `invalid delta op #${k} (${JSON.stringify(op)}): ${why}`);
    };
    if (!Number.isSafeInteger(op.length) || op.length <= 0) bad('length must be a positive integer');
    if (op.dstOffset !== pos) bad(`expected dstOffset ${pos}`);
    if (op.kind === 'copy') {
      if (!Number.isSafeInteger(op.srcOffset) || op.srcOffset < 0 || op.srcOffset + op.length > oldSize) {
        bad(`copy source outside old file of ${oldSize} bytes`);
      }
    } else if (op.kind !== 'literal') {
      bad('unknown kind');
    }
    pos += op.length;
  }
  if (pos !== newSize) throw new WsyncError('E_INTERNAL', `delta covers ${pos} bytes, new file has ${newSize}`);
}

/**
 * In-memory reference executor: builds the new file from `oldBytes` and the literal source, exactly as the remote
 * rebuild would. `literals` is either the whole new file (literal ranges are read at their dstOffset) or a function
 * returning the bytes for one literal op. Throws WsyncError E_INTERNAL if the ops are invalid, or if a literal
 * source returns the wrong number of bytes.
 */
export function applyDelta(
  oldBytes: Uint8Array,
  literals: Uint8Array | ((dstOffset: number, length: number) => Uint8Array),
  ops: readonly DeltaOp[],
): Uint8Array {
  const newSize = ops.length === 0 ? 0 : ops[ops.length - 1]!.dstOffset + ops[ops.length - 1]!.length;
  validateDelta(ops, oldBytes.length, newSize);
  const out = new Uint8Array(newSize);
  for (const op of ops) {
    if (op.kind === 'copy') {
      out.set(oldBytes.subarray(op.srcOffset, op.srcOffset + op.length), op.dstOffset);
      continue;
    }
    const bytes =
      typeof literals === 'function'
        ? literals(op.dstOffset, op.length)
        : literals.subarray(op.dstOffset, op.dstOffset + op.length);
    if (bytes.length !== op.length) {
      throw new WsyncError('E_INTERNAL', `literal source gave ${bytes.length} bytes for a ${op.length}-byte op`);
    }
    out.set(bytes, op.dstOffset);
  }
  return out;
}

/**
 * FastCDC content-defined chunking over a 32-bit Gear hash, fed as a stream.
 *
 * Algorithm (chunker id `fastcdc-gear32-v1`, see params.ts). For a chunk that starts at offset `s`, let `L` be the
 * length the chunk would have if it ended after byte `p = s + L - 1`:
 *
 *   - g(p) = Σ_{k=0..31} GEAR[data[p-k]] · 2^k  (mod 2^32): the Gear hash of the 32 bytes ending at p. Because the
 *     hash shifts left by one per byte, a byte's contribution leaves a 32-bit state after 32 steps, so g(p) depends on
 *     those 32 bytes only (never on where the chunk started).
 *   - For min ≤ L < avg, cut after p when (g(p) & MASK_S) == 0; for avg ≤ L < max, when (g(p) & MASK_L) == 0; at
 *     L == max cut unconditionally. The bytes left at end of input form the last chunk, which may be shorter than min.
 *   - MASK_S has log2(avg)+level bits, MASK_L log2(avg)-level bits (normalized chunking, FastCDC 2016 §3.3), and an
 *     N-bit mask is bits 30 … 31-N (the top bits below bit 31).
 *
 * Deliberate deviations from the published algorithm, each for a reason:
 *   - 32-bit state, because JS has no fast 64-bit integer arithmetic (BigInt or split halves are 10–100× slower).
 *   - Masks sit in the top bits because bit k of a Gear hash depends on only the last k+1 bytes; the top bits give
 *     the widest window a 32-bit state offers.
 *   - Bit 31 is never in a mask, so the "two bytes per iteration" loop of FastCDC 2020 (pre-shifted table and mask)
 *     loses no information and cuts exactly where the one-byte loop would.
 *   - Hashing starts 32 bytes before `min` instead of at `min`, so every candidate cut sees a full 32-byte window.
 *     That makes cut decisions a function of local content plus distance from the chunk start, which is what lets
 *     boundaries resynchronise right after an edit.
 *
 * Gear table derivation (so any implementation can reproduce it): for i = 0 … 255,
 *   GEAR[i] = first 4 bytes, read big-endian as an unsigned integer, of SHA-256( ASCII(GEAR_SEED) ‖ byte(i) ),
 * with GEAR_SEED = "wsync-fastcdc-gear32-v1". A hash of a public string is a "nothing up my sleeve" constant: nobody
 * can claim the table was tuned, and other languages need only a SHA-256 to rebuild it.
 */
import { createHash } from 'node:crypto';

/** Seed string of the Gear table; changing it changes every cut point and requires a new chunker id. */
export const GEAR_SEED = 'wsync-fastcdc-gear32-v1';

/** Bytes folded into the hash before the first cut candidate; equals the hash width, see the module comment. */
export const WINDOW = 32;

/** Smallest `min` accepted: below WINDOW the first candidates would see a partial window. */
export const MIN_CHUNK_FLOOR = 64;

/** Largest `max` accepted: lengths and offsets stay exact small integers, and buffers stay addressable. */
export const MAX_CHUNK_CEILING = 1 << 30;

function deriveGear(): Uint32Array {
  const table = new Uint32Array(256);
  const seed = Buffer.from(GEAR_SEED, 'ascii');
  for (let i = 0; i < 256; i++) {
    const d = createHash('sha256').update(seed).update(Uint8Array.of(i)).digest();
    table[i] = d.readUInt32BE(0);
  }
  return table;
}

const GEAR_U32 = deriveGear();
// Signed views keep the hot loop in int32 arithmetic; values are the same bit patterns.
const GEAR = Int32Array.from(GEAR_U32, (v) => v | 0);
const GEAR_LS = Int32Array.from(GEAR_U32, (v) => (v << 1) | 0);

/** A copy of the Gear table, for documentation and golden tests. */
export function gearTable(): Uint32Array {
  return GEAR_U32.slice();
}

/** An N-bit cut mask in bits 30 … 31-N. */
export function topMask(bits: number): number {
  if (!Number.isInteger(bits) || bits < 1 || bits > 31) throw new RangeError(`mask bit count out of range: ${bits}`);
  return (0x7fffffff >>> (31 - bits)) << (31 - bits);
}

export interface FastCdcOptions {
  /** Smallest chunk, except for the last chunk of the input. */
  readonly min: number;
  /** Expected ("normal") size; a power of two. The realised mean is roughly avg + min/2 on random data. */
  readonly avg: number;
  /** Largest chunk; a chunk reaching it is cut regardless of content. */
  readonly max: number;
  /** Normalized chunking level, 0 (off) … 3; default 2. */
  readonly level?: number;
}

/** Normalized chunking level used when none is given; see params.ts for why. */
export const DEFAULT_NC_LEVEL = 2;

/**
 * Throws a RangeError when the options cannot describe a chunker. These are programming or manifest errors, never
 * data-dependent, so callers that parse a stored spec should validate before constructing.
 */
export function validateFastCdcOptions(o: FastCdcOptions): void {
  const level = o.level ?? DEFAULT_NC_LEVEL;
  const ints = [o.min, o.avg, o.max, level];
  if (!ints.every((v) => Number.isSafeInteger(v))) throw new RangeError('chunker sizes must be integers');
  if (o.avg <= 0 || (o.avg & (o.avg - 1)) !== 0) throw new RangeError(`avg must be a power of two, got ${o.avg}`);
  if (o.min < MIN_CHUNK_FLOOR) throw new RangeError(`min must be at least ${MIN_CHUNK_FLOOR}, got ${o.min}`);
  if (!(o.min <= o.avg && o.avg <= o.max)) throw new RangeError('chunker sizes must satisfy min <= avg <= max');
  if (o.max > MAX_CHUNK_CEILING) throw new RangeError(`max must be at most ${MAX_CHUNK_CEILING}, got ${o.max}`);
  if (level < 0 || level > 3) throw new RangeError(`normalization level must be 0..3, got ${level}`);
  const bits = Math.log2(o.avg);
  if (bits - level < 1 || bits + level > 31) throw new RangeError('avg and level give a mask outside 1..31 bits');
}

/**
 * Incremental chunker. Feed it the input in slices of any size (including empty ones); the boundaries it reports
 * are identical to feeding the whole input at once. One instance handles one stream; `finish()` resets it for reuse.
 *
 * Invariant between calls: `len` is the length of the unfinished chunk and, once `len >= min - WINDOW`, `h` is the
 * exact (unshifted) Gear hash of its last bytes. The two-byte loop only ever leaves `h` pre-shifted at a cut, where
 * the state is discarded anyway.
 */
export class FastCdc {
  readonly min: number;
  readonly avg: number;
  readonly max: number;
  readonly level: number;
  private readonly maskS: number;
  private readonly maskL: number;
  private len = 0;
  private h = 0;
  private consumed = 0;

  constructor(opts: FastCdcOptions) {
    validateFastCdcOptions(opts);
    this.min = opts.min;
    this.avg = opts.avg;
    this.max = opts.max;
    this.level = opts.level ?? DEFAULT_NC_LEVEL;
    const bits = Math.log2(this.avg);
    this.maskS = topMask(bits + this.level);
    this.maskL = topMask(bits - this.level);
  }

  /** Bytes consumed since construction or the last `finish()`. */
  get offset(): number {
    return this.consumed;
  }

  /** Length of the chunk that is still open (not yet cut). */
  get pending(): number {
    return this.len;
  }

  /**
   * Consumes `data` from index `start` up to and including the next cut point, and returns the index in `data`
   * just past it (the cut's exclusive end, relative to `data`). Returns -1 when `data` is used up without a cut;
   * the state then carries over to the next call. Allocation-free, for hot paths that hash as they go.
   */
  scan(data: Uint8Array, start = 0): number {
    const end = data.length;
    let i = start;
    let len = this.len;
    const min = this.min;
    const warm = min - WINDOW;
    while (i < end) {
      if (len < warm) {
        // Bytes this far before `min` can never influence a cut decision, so they are skipped unhashed.
        const n = Math.min(warm - len, end - i);
        i += n;
        len += n;
        continue;
      }
      if (len < min - 1) {
        const n = Math.min(min - 1 - len, end - i);
        let h = this.h;
        for (const stop = i + n; i < stop; i++) h = ((h << 1) + GEAR[data[i]]) | 0;
        this.h = h;
        len += n;
        continue;
      }
      let cut = -1;
      if (len < this.avg - 1) {
        const n = Math.min(this.avg - 1 - len, end - i);
        cut = this.seek(data, i, i + n, this.maskS);
        if (cut < 0) {
          i += n;
          len += n;
          continue;
        }
      } else if (len < this.max - 1) {
        const n = Math.min(this.max - 1 - len, end - i);
        cut = this.seek(data, i, i + n, this.maskL);
        if (cut < 0) {
          i += n;
          len += n;
          continue;
        }
      } else {
        cut = i;
      }
      this.consumed += cut + 1 - start;
      this.len = 0;
      this.h = 0;
      return cut + 1;
    }
    this.consumed += end - start;
    this.len = len;
    return -1;
  }

  /**
   * Returns the index of the first byte in [from, to) after which the hash matches `mask`, or -1 after folding all
   * of them into `this.h`. Two bytes per iteration (FastCDC 2020): folding with the pre-shifted table leaves the
   * hash shifted left by one, which is tested against the pre-shifted mask; adding the next byte's plain table
   * entry then restores the exact hash. Exact because no mask uses bit 31.
   */
  private seek(data: Uint8Array, from: number, to: number, mask: number): number {
    const mask2 = mask << 1;
    let h = this.h;
    let i = from;
    for (const last = to - 1; i < last; i += 2) {
      h = ((h << 2) + GEAR_LS[data[i]]) | 0;
      if ((h & mask2) === 0) return i;
      h = (h + GEAR[data[i + 1]]) | 0;
      if ((h & mask) === 0) return i + 1;
    }
    if (i < to) {
      h = ((h << 1) + GEAR[data[i]]) | 0;
      if ((h & mask) === 0) return i;
    }
    this.h = h;
    return -1;
  }

  /** Consumes all of `data` and returns the absolute end offsets of the chunks it completed. */
  push(data: Uint8Array): number[] {
    const cuts: number[] = [];
    let i = 0;
    while (i < data.length) {
      const e = this.scan(data, i);
      if (e < 0) break;
      cuts.push(this.consumed);
      i = e;
    }
    return cuts;
  }

  /**
   * Ends the stream: returns the absolute end offset of the final, possibly short chunk, or null when the input
   * was empty or ended exactly on a cut. Resets the chunker so it can process another stream.
   */
  finish(): number | null {
    const last = this.len > 0 ? this.consumed : null;
    this.len = 0;
    this.h = 0;
    this.consumed = 0;
    return last;
  }
}

/** All chunk end offsets of an in-memory input, the last one being `data.length` (none for empty input). */
export function cutPoints(data: Uint8Array, opts: FastCdcOptions): number[] {
  const cdc = new FastCdc(opts);
  const cuts = cdc.push(data);
  const last = cdc.finish();
  if (last !== null) cuts.push(last);
  return cuts;
}

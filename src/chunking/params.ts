/**
 * Which chunker, with which sizes, a file is cut with.
 *
 * A chunk list is only comparable with another one produced by the same algorithm and sizes: change either and no
 * chunk id matches, so a delta degrades to a full upload. That is why a manifest stores a ChunkerSpec per file, and
 * why a modified file is re-chunked with its old entry's spec (see specForUpdate) rather than with today's tier.
 */
import { WsyncError } from '../errors.js';
import { type FastCdcOptions, validateFastCdcOptions } from './fastcdc.js';

/**
 * Names everything about the algorithm except the sizes: FastCDC over the 32-bit Gear table derived from GEAR_SEED,
 * a normalization level, 32-byte warm-up, masks in bits 30 … 31-N (all documented in fastcdc.ts). Any change to
 * those, however small, needs a new id, and the golden vectors under fixtures/chunking/ exist to catch accidents.
 * v2 is v1 with normalization level 1 instead of 2.
 */
export const CHUNKER_ID = 'fastcdc-gear32-v2';

/**
 * Every id this build can reproduce, with its normalization level. Older ids stay: a manifest entry keeps the spec
 * its file was first cut with, and its chunk ids only match when that exact chunker runs again.
 *
 * Why v2 uses level 1: with normalization the mask depends on the distance from the chunk start, so after an edit
 * shifts the content, old and new cut points can disagree for several chunks before they meet again. Measured on
 * random data at 16 KiB avg (400 edits each): a 1 MB overwrite cost 31 KB of extra literal bytes on average at
 * level 1 (95th percentile 60 KB, worst 133 KB) against 42 KB (101 KB, 297 KB) at level 2; a 100-byte insert at
 * the head 20 KB (38 KB, worst 79 KB) against 19 KB (28 KB, worst 95 KB). Level 1 keeps the tail of what an edit
 * costs about half as long, which is what the per-edit wire targets are about.
 */
const NC_LEVELS: Readonly<Record<string, number>> = { 'fastcdc-gear32-v1': 2, 'fastcdc-gear32-v2': 1 };

/** Serialisable description of how a file was chunked; stored in the manifest next to its chunk list. */
export interface ChunkerSpec {
  readonly id: string;
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

/**
 * Average chunk size by file size: 16 KiB up to 256 MiB, then doubling with each doubling of the file, capped at
 * 1 MiB beyond 8 GiB. Reasons:
 *   - Chunk lists never cross the wire (the remote manifest records only the spec; the lists live in the local
 *     chunk cache), so the only price of small chunks is local: a SHA-256 context per chunk, ~20 bytes of cache per
 *     chunk, planner memory.
 *   - What an edit costs on the wire is the edit plus the chunks it touches. Measured on random data (1 MB
 *     overwritten, 12 placements): the extra literal bytes average ~39 KB (worst 103 KB) at 16 KiB avg, ~68 KB
 *     (162 KB) at 32 KiB and ~211 KB (566 KB) at 64 KiB; a 100-byte insert at the head costs ~23 KB, ~38 KB and
 *     ~91 KB. The per-edit targets (an edit plus at most ~15 %, a small insert under 100 KB) need 16 KiB.
 *   - Chunk + hash speed barely depends on the average (~580 MB/s at 16 KiB vs ~630 at 1 MiB, bench/chunking.ts).
 *   - Past 256 MiB the tiers keep any file up to 8 GiB at ≤ ~15,000 chunks, which bounds cache size and planning
 *     memory; past 8 GiB the count grows linearly (a 10 GB file has ~8,500 chunks at 1 MiB avg), and one edit
 *     still costs a negligible fraction of such a file.
 */
export const SIZE_TIERS: ReadonlyArray<{ readonly upTo: number; readonly avg: number }> = [
  { upTo: 256 * 2 ** 20, avg: 16 * 1024 },
  { upTo: 512 * 2 ** 20, avg: 32 * 1024 },
  { upTo: 2 ** 30, avg: 64 * 1024 },
  { upTo: 2 * 2 ** 30, avg: 128 * 1024 },
  { upTo: 4 * 2 ** 30, avg: 256 * 1024 },
  { upTo: 8 * 2 ** 30, avg: 512 * 1024 },
  { upTo: Number.POSITIVE_INFINITY, avg: 1024 * 1024 },
];

/** The spec with the given average and the standard ratios min = avg/4, max = avg*4. */
export function specForAvg(avg: number): ChunkerSpec {
  const spec: ChunkerSpec = { id: CHUNKER_ID, min: avg / 4, avg, max: avg * 4 };
  validateFastCdcOptions(toFastCdcOptions(spec));
  return spec;
}

/** The spec a new (never synced) file of `size` bytes is chunked with. */
export function specForSize(size: number): ChunkerSpec {
  const tier = SIZE_TIERS.find((t) => size <= t.upTo) ?? SIZE_TIERS[SIZE_TIERS.length - 1]!;
  return specForAvg(tier.avg);
}

/**
 * The spec a changed file should be chunked with, given the spec its manifest entry recorded (if any).
 *
 * Keeps the old spec, so chunk ids stay comparable, unless it is unknown/invalid or the file has drifted two or more
 * tiers away (a factor of 4 in average size either way). The drift rule stops a file that started tiny and grew to
 * gigabytes from being cut into millions of 16 KiB chunks forever; the price is one sync without chunk reuse.
 */
export function specForUpdate(old: unknown, newSize: number): ChunkerSpec {
  const fresh = specForSize(newSize);
  const prev = tryParseChunkerSpec(old);
  if (prev === null) return fresh;
  const ratio = prev.avg / fresh.avg;
  return ratio >= 4 || ratio <= 1 / 4 ? fresh : prev;
}

/** Options for FastCdc that a spec stands for. Throws RangeError if the spec's id is not one this build knows. */
export function toFastCdcOptions(spec: ChunkerSpec): FastCdcOptions {
  const level = Object.hasOwn(NC_LEVELS, spec.id) ? NC_LEVELS[spec.id] : undefined;
  if (level === undefined) throw new RangeError(`unknown chunker id: ${spec.id}`);
  return { min: spec.min, avg: spec.avg, max: spec.max, level };
}

function tryParseChunkerSpec(value: unknown): ChunkerSpec | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.id !== 'string' || !Object.hasOwn(NC_LEVELS, v.id)) return null;
  if (typeof v.min !== 'number' || typeof v.avg !== 'number' || typeof v.max !== 'number') return null;
  const spec: ChunkerSpec = { id: v.id, min: v.min, avg: v.avg, max: v.max };
  try {
    validateFastCdcOptions(toFastCdcOptions(spec));
  } catch {
    return null;
  }
  return spec;
}

/**
 * Validates a spec read from a manifest and returns a clean copy (extra properties dropped). Any valid sizes are
 * accepted, not only the current tiers, so entries written under older tiering stay usable.
 *
 * Throws WsyncError E_MANIFEST when the value is not a spec this build can reproduce (unknown id, bad sizes).
 */
export function parseChunkerSpec(value: unknown): ChunkerSpec {
  const spec = tryParseChunkerSpec(value);
  if (spec === null) {
    throw new WsyncError('E_MANIFEST', `unsupported chunker spec in manifest: ${safeJson(value)}`, {
      hint: `this wsync understands chunkers ${Object.keys(NC_LEVELS).map((k) => `"${k}"`).join(', ')}; a newer version may have written the manifest`,
    });
  }
  return spec;
}

/** True when chunk ids produced under `a` and `b` are comparable. */
export function sameSpec(a: ChunkerSpec, b: ChunkerSpec): boolean {
  return a.id === b.id && a.min === b.min && a.avg === b.avg && a.max === b.max;
}

function safeJson(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 200 ? `${s.slice(0, 200)}…` : s;
  } catch {
    return String(v);
  }
}

/**
 * Which chunker, with which sizes, a file is cut with.
 *
 * A chunk list is only comparable with another one produced by the same algorithm and sizes: change either and no
 * chunk id matches, so a delta degrades to a full upload. That is why a manifest stores a ChunkerSpec per file, and
 * why a modified file is re-chunked with its old entry's spec (see specForUpdate) rather than with today's tier.
 */
import { WsyncError } from '../errors.js';
import { DEFAULT_NC_LEVEL, type FastCdcOptions, validateFastCdcOptions } from './fastcdc.js';

/**
 * Names everything about the algorithm except the sizes: FastCDC over the 32-bit Gear table derived from GEAR_SEED,
 * normalization level 2, 32-byte warm-up, masks in bits 30 … 31-N (all documented in fastcdc.ts). Any change to
 * those, however small, needs a new id, and the golden vectors under fixtures/chunking/ exist to catch accidents.
 */
export const CHUNKER_ID = 'fastcdc-gear32-v1';

/**
 * NC level 2 (as in the FastCDC reference code and borg): a tighter size distribution than level 1, so the cost of
 * an edit (≈ 1–2 chunks of literal data) is more predictable, for a small loss in boundary-shift resistance that
 * the min = avg/4 skip dominates anyway.
 */
const NC_LEVEL_V1 = DEFAULT_NC_LEVEL;

/** Serialisable description of how a file was chunked; stored in the manifest next to its chunk list. */
export interface ChunkerSpec {
  readonly id: string;
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

/**
 * Average chunk size by file size: 16 KiB up to 64 MiB, then doubling with each doubling of the file, capped at
 * 1 MiB beyond 2 GiB. Reasons:
 *   - The manifest is local, so unlike rsync or casync no signature traffic pushes towards large chunks; the cost of
 *     one edit is about 1–2 average chunks of literal bytes (the reference measured ~26 KiB of wire
 *     bytes per small edit at 16 KiB avg, ~257 KiB at 256 KiB avg).
 *   - Smaller averages would shrink that further (~9 KiB at 8 KiB avg), but per-chunk costs (a SHA-256 context, a
 *     manifest entry of ~70 bytes, planner work) double with every halving; 16 KiB is the reference's floor, and at
 *     it chunk + hash still runs at ~600 MB/s (bench/chunking.ts).
 *   - Above 64 MiB the tiers keep a file up to 2 GiB at ≤ ~4096 chunks, which bounds manifest size and planning
 *     memory while one edit still costs only ~0.05 % of the file; past 2 GiB the count grows linearly (a 10 GB
 *     file has ~8500 chunks at 1 MiB avg, whose per-edit cost is still negligible next to the file).
 */
export const SIZE_TIERS: ReadonlyArray<{ readonly upTo: number; readonly avg: number }> = [
  { upTo: 64 * 2 ** 20, avg: 16 * 1024 },
  { upTo: 128 * 2 ** 20, avg: 32 * 1024 },
  { upTo: 256 * 2 ** 20, avg: 64 * 1024 },
  { upTo: 512 * 2 ** 20, avg: 128 * 1024 },
  { upTo: 2 ** 30, avg: 256 * 1024 },
  { upTo: 2 * 2 ** 30, avg: 512 * 1024 },
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
  if (spec.id !== CHUNKER_ID) throw new RangeError(`unknown chunker id: ${spec.id}`);
  return { min: spec.min, avg: spec.avg, max: spec.max, level: NC_LEVEL_V1 };
}

function tryParseChunkerSpec(value: unknown): ChunkerSpec | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.id !== CHUNKER_ID) return null;
  if (typeof v.min !== 'number' || typeof v.avg !== 'number' || typeof v.max !== 'number') return null;
  const spec: ChunkerSpec = { id: CHUNKER_ID, min: v.min, avg: v.avg, max: v.max };
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
      hint: `this wsync understands chunker "${CHUNKER_ID}"; a newer version may have written the manifest`,
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

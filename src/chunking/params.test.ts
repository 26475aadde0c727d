import { describe, expect, it } from 'vitest';
import { WsyncError } from '../errors.js';
import {
  CHUNKER_ID,
  SIZE_TIERS,
  parseChunkerSpec,
  sameSpec,
  specForAvg,
  specForSize,
  specForUpdate,
  toFastCdcOptions,
} from './params.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('chunker params', () => {
  it('uses min = avg/4 and max = avg*4 under the v1 id', () => {
    expect(specForAvg(16 * KiB)).toEqual({ id: CHUNKER_ID, min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB });
    expect(CHUNKER_ID).toBe('fastcdc-gear32-v2');
    expect(toFastCdcOptions(specForAvg(16 * KiB)).level).toBe(1);
    // The previous id is still reproduced (normalization level 2), so specs already recorded keep matching.
    const v1 = { id: 'fastcdc-gear32-v1', min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };
    expect(parseChunkerSpec(v1)).toEqual(v1);
    expect(toFastCdcOptions(v1).level).toBe(2);
    expect(specForUpdate(v1, 10 * MiB)).toEqual(v1);
  });

  it('tiers the average from 16 KiB to 1 MiB by file size', () => {
    const cases: [number, number][] = [
      [0, 16 * KiB],
      [1, 16 * KiB],
      [64 * MiB, 16 * KiB],
      [200 * MiB, 16 * KiB],
      [256 * MiB, 16 * KiB],
      [256 * MiB + 1, 32 * KiB],
      [512 * MiB, 32 * KiB],
      [GiB, 64 * KiB],
      [2 * GiB, 128 * KiB],
      [4 * GiB, 256 * KiB],
      [8 * GiB, 512 * KiB],
      [8 * GiB + 1, MiB],
      [10e9, MiB],
      [2 ** 50, MiB],
    ];
    for (const [size, avg] of cases) expect(specForSize(size).avg, `size ${size}`).toBe(avg);
    // Monotone, powers of two, every tier a valid spec.
    let prev = 0;
    for (const t of SIZE_TIERS) {
      expect(t.avg).toBeGreaterThan(prev);
      prev = t.avg;
      expect(() => specForAvg(t.avg)).not.toThrow();
    }
  });

  it('keeps the old spec for a changed file unless the size drifted two tiers', () => {
    const old = specForSize(10 * MiB);
    expect(specForUpdate(old, 100 * MiB)).toEqual(old);
    expect(specForUpdate(old, 400 * MiB)).toEqual(old);
    expect(specForUpdate(old, 600 * MiB)).toEqual(specForSize(600 * MiB));
    expect(specForSize(600 * MiB).avg).toBe(64 * KiB);
    const big = specForSize(5 * GiB);
    expect(specForUpdate(big, 3 * GiB)).toEqual(big);
    expect(specForUpdate(big, 1.5 * GiB)).toEqual(specForSize(1.5 * GiB));
    // A non-tier spec written by an older wsync is still honoured.
    const odd = { id: CHUNKER_ID, min: 3000, avg: 16 * KiB, max: 100_000 };
    expect(specForUpdate(odd, MiB)).toEqual(odd);
    expect(specForUpdate(undefined, MiB)).toEqual(specForSize(MiB));
    expect(specForUpdate({ id: 'rabin-v9', min: 1, avg: 2, max: 3 }, MiB)).toEqual(specForSize(MiB));
  });

  it('parses stored specs and rejects ones it cannot reproduce', () => {
    const s = specForAvg(64 * KiB);
    const roundTrip = parseChunkerSpec(JSON.parse(JSON.stringify({ ...s, extra: true })));
    expect(roundTrip).toEqual(s);
    expect(sameSpec(roundTrip, s)).toBe(true);
    expect(sameSpec(s, specForAvg(32 * KiB))).toBe(false);
    const bad: unknown[] = [
      null,
      'fastcdc-gear32-v1',
      { ...s, id: 'fastcdc-gear32-v3' },
      { ...s, id: 'toString' },
      { ...s, avg: 3000 },
      { ...s, min: '1024' },
      { ...s, min: 16 },
      { ...s, max: s.avg / 2 },
    ];
    for (const b of bad) {
      let err: unknown;
      try {
        parseChunkerSpec(b);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(b)).toBeInstanceOf(WsyncError);
      expect((err as WsyncError).code).toBe('E_MANIFEST');
    }
  });

  it('refuses to build a chunker for an unknown id', () => {
    expect(() => toFastCdcOptions({ id: 'other', min: 1024, avg: 4096, max: 16384 })).toThrow(RangeError);
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FastCdc, type FastCdcOptions, cutPoints, gearTable, topMask, validateFastCdcOptions } from './fastcdc.js';
import { xorshiftBytes } from '../../test/support/xorshift.js';

/**
 * The chunking rule written straight from its definition in fastcdc.ts (fresh 32-byte window hash at every
 * candidate, one byte at a time), sharing nothing with the optimised loop but the Gear table.
 */
function referenceCuts(data: Uint8Array, o: FastCdcOptions): number[] {
  const gear = gearTable();
  const level = o.level ?? 2;
  const bits = Math.log2(o.avg);
  const maskOf = (n: number): number => {
    let m = 0;
    for (let b = 30; b > 30 - n; b--) m += 2 ** b;
    return m;
  };
  const maskS = maskOf(bits + level);
  const maskL = maskOf(bits - level);
  const cuts: number[] = [];
  let s = 0;
  while (s < data.length) {
    let end = data.length;
    for (let len = o.min; len <= o.max && s + len <= data.length; len++) {
      if (len === o.max) {
        end = s + len;
        break;
      }
      const p = s + len - 1;
      let g = 0;
      for (let k = 0; k < 32; k++) g = (g + ((gear[data[p - k]!]! << k) >>> 0)) % 2 ** 32;
      if ((g & (len < o.avg ? maskS : maskL)) === 0) {
        end = s + len;
        break;
      }
    }
    cuts.push(end);
    s = end;
  }
  return cuts;
}

/** Random, zero-run and low-alphabet segments, so tests reach max-length cuts and both masks. */
const inputArb = fc
  .array(
    fc.record({
      kind: fc.constantFrom('random', 'zeros', 'twoBits', 'repeat'),
      seed: fc.integer({ min: 1, max: 0x7fffffff }),
      length: fc.integer({ min: 0, max: 6000 }),
    }),
    { minLength: 1, maxLength: 6 },
  )
  .map((segs) => {
    const parts = segs.map(({ kind, seed, length }) => {
      const r = xorshiftBytes(seed, length);
      if (kind === 'zeros') return new Uint8Array(length);
      if (kind === 'twoBits') return r.map((b) => b & 3);
      if (kind === 'repeat') return r.map((_, i) => r[i % 97]!);
      return r;
    });
    return Buffer.concat(parts);
  });

const smallOptsArb = fc
  .record({ avgBits: fc.integer({ min: 8, max: 11 }), level: fc.integer({ min: 0, max: 3 }), minDiv: fc.constantFrom(1, 2, 4) })
  .filter(({ avgBits, minDiv }) => 2 ** avgBits / minDiv >= 64)
  .map(({ avgBits, level, minDiv }): FastCdcOptions => {
    const avg = 2 ** avgBits;
    return { min: avg / minDiv, avg, max: avg * 4, level };
  });

function feedInSlices(data: Uint8Array, o: FastCdcOptions, sizes: number[]): number[] {
  const cdc = new FastCdc(o);
  const cuts: number[] = [];
  let pos = 0;
  let k = 0;
  while (pos < data.length) {
    const n = sizes.length === 0 ? data.length : sizes[k++ % sizes.length]!;
    cuts.push(...cdc.push(data.subarray(pos, pos + n)));
    pos += n;
  }
  cdc.push(new Uint8Array(0));
  const last = cdc.finish();
  if (last !== null) cuts.push(last);
  return cuts;
}

describe('FastCdc', () => {
  it('derives the documented Gear table', () => {
    const g = gearTable();
    expect(g.length).toBe(256);
    expect(new Set(g).size).toBe(256);
    // Spot values pinned so a change in derivation fails here with a readable message (full table: golden test).
    expect(g[0]).toBe(0xcb39aa3d);
    expect(g[255]).toBe(0x2b6c31c9);
  });

  it('places masks in the top bits below bit 31', () => {
    expect(topMask(1)).toBe(0x40000000);
    expect(topMask(14)).toBe(0x7ffe0000);
    expect(topMask(31)).toBe(0x7fffffff);
    for (let n = 1; n <= 31; n++) {
      const m = topMask(n);
      expect(m).toBeGreaterThan(0);
      expect(m.toString(2).replace(/0/g, '').length).toBe(n);
    }
    expect(() => topMask(0)).toThrow(RangeError);
    expect(() => topMask(32)).toThrow(RangeError);
  });

  it('matches the definition (reference implementation) on varied inputs and parameters', () => {
    fc.assert(
      fc.property(inputArb, smallOptsArb, (data, o) => {
        expect(cutPoints(data, o)).toEqual(referenceCuts(data, o));
      }),
      { numRuns: 150 },
    );
  });

  it('gives the same boundaries however the stream is sliced', () => {
    fc.assert(
      fc.property(inputArb, smallOptsArb, fc.array(fc.integer({ min: 0, max: 700 }), { maxLength: 20 }), (data, o, sizes) => {
        // Zero-length slices are legal; a list of only zeros would never advance, so give it one non-zero size.
        const usable = sizes.some((s) => s > 0) ? sizes : [...sizes, 1];
        expect(feedInSlices(data, o, usable)).toEqual(cutPoints(data, o));
      }),
      { numRuns: 200 },
    );
  });

  it('respects min and max, and tiles the input', () => {
    fc.assert(
      fc.property(inputArb, smallOptsArb, (data, o) => {
        const cuts = cutPoints(data, o);
        let prev = 0;
        cuts.forEach((c, i) => {
          const len = c - prev;
          expect(len).toBeGreaterThan(0);
          expect(len).toBeLessThanOrEqual(o.max);
          if (i < cuts.length - 1) expect(len).toBeGreaterThanOrEqual(o.min);
          prev = c;
        });
        expect(prev).toBe(data.length);
      }),
      { numRuns: 100 },
    );
  });

  it('cuts incompressible data near the configured average', () => {
    const o = { min: 4096, avg: 16384, max: 65536 };
    const data = xorshiftBytes(7, 16 << 20);
    const cuts = cutPoints(data, o);
    const mean = data.length / cuts.length;
    // min-skipping shifts the realised mean above avg (≈ avg + min/2 with NC2); a broken mask would be far off.
    expect(mean).toBeGreaterThan(o.avg);
    expect(mean).toBeLessThan(o.avg * 1.5);
    const lengths = cuts.map((c, i) => c - (i === 0 ? 0 : cuts[i - 1]!));
    const forced = lengths.filter((l) => l === o.max).length;
    expect(forced / lengths.length).toBeLessThan(0.01);
  });

  it('cuts content without boundaries at max', () => {
    const o = { min: 256, avg: 1024, max: 4096, level: 2 };
    // A run of one byte value b has the constant window hash Σ G[b]·2^k = -G[b] (mod 2^32); pick a b that fails
    // the looser mask so the run has no content boundary at all.
    const maskL = topMask(Math.log2(o.avg) - o.level);
    const g = gearTable();
    const b = g.findIndex((v) => ((-v | 0) & maskL) !== 0);
    const cuts = cutPoints(new Uint8Array(5 * 4096 + 10).fill(b), o);
    expect(cuts).toEqual([4096, 8192, 12288, 16384, 20480, 20490]);
  });

  it('cuts constant runs at a fixed length', () => {
    const o = { min: 256, avg: 1024, max: 4096 };
    for (const b of [0, 1, 0xff]) {
      const cuts = cutPoints(new Uint8Array(50_000).fill(b), o);
      const lengths = new Set(cuts.slice(0, -1).map((c, i) => c - (i === 0 ? 0 : cuts[i - 1]!)));
      expect(lengths.size).toBe(1);
      expect([o.min, o.avg, o.max]).toContain([...lengths][0]);
    }
  });

  it('handles empty input and inputs shorter than min', () => {
    const o = { min: 256, avg: 1024, max: 4096 };
    expect(cutPoints(new Uint8Array(0), o)).toEqual([]);
    expect(cutPoints(new Uint8Array(100), o)).toEqual([100]);
    const cdc = new FastCdc(o);
    expect(cdc.finish()).toBeNull();
  });

  it('is reusable after finish()', () => {
    const o = { min: 256, avg: 1024, max: 4096 };
    const a = xorshiftBytes(3, 50_000);
    const cdc = new FastCdc(o);
    cdc.push(xorshiftBytes(4, 12_345));
    cdc.finish();
    const cuts = cdc.push(a);
    cuts.push(cdc.finish()!);
    expect(cuts).toEqual(cutPoints(a, o));
  });

  it('scan() reports cut ends relative to the slice and tracks the offset', () => {
    const o = { min: 256, avg: 1024, max: 4096 };
    const data = xorshiftBytes(11, 40_000);
    const expected = cutPoints(data, o);
    const cdc = new FastCdc(o);
    const got: number[] = [];
    const half = 20_001;
    for (const [from, to] of [
      [0, half],
      [half, data.length],
    ] as const) {
      const slice = data.subarray(from, to);
      for (let i = 0; ; ) {
        const e = cdc.scan(slice, i);
        if (e < 0) break;
        got.push(from + e);
        expect(cdc.offset).toBe(from + e);
        i = e;
      }
    }
    expect(cdc.offset).toBe(data.length);
    expect(got).toEqual(expected.slice(0, -1));
    expect(cdc.pending).toBe(data.length - got[got.length - 1]!);
  });

  it('rejects impossible parameters', () => {
    const bad: FastCdcOptions[] = [
      { min: 256, avg: 1000, max: 4096 },
      { min: 32, avg: 1024, max: 4096 },
      { min: 2048, avg: 1024, max: 4096 },
      { min: 256, avg: 1024, max: 512 },
      { min: 256, avg: 1024, max: 4096, level: 4 },
      { min: 256, avg: 1024, max: 4096, level: 1.5 },
      { min: 256, avg: 2 ** 30, max: 2 ** 31 },
      { min: 256.5, avg: 1024, max: 4096 },
    ];
    for (const o of bad) {
      expect(() => validateFastCdcOptions(o), JSON.stringify(o)).toThrow(RangeError);
      expect(() => new FastCdc(o)).toThrow(RangeError);
    }
    expect(() => validateFastCdcOptions({ min: 256, avg: 256, max: 256 })).not.toThrow();
  });
});

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type ChunkRef, chunkBuffer, chunkId } from '../chunking/hash.js';
import { specForAvg } from '../chunking/params.js';
import { WsyncError } from '../errors.js';
import {
  DELTA_MIN_COPY_LENGTH,
  DELTA_MIN_FILE_SIZE,
  type DeltaOp,
  type DeltaOptions,
  applyDelta,
  estimateNetSaving,
  planDelta,
  validateDelta,
} from './delta.js';
import { xorshiftBytes } from '../../test/support/xorshift.js';

const concat = (...parts: Uint8Array[]): Uint8Array => Buffer.concat(parts);
const view = (a: Uint8Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const KiB = 1024;
const MiB = 1024 * KiB;

/** Synthetic chunk list (sizes and ids only): planning needs no bytes. */
function synth(ids: string[], len = 64 * KiB): ChunkRef[] {
  return ids.map((id, i) => ({ offset: i * len, length: len, id }));
}

/** Ids per chunk of a real buffer along a fixed tiling, so equal content gets equal ids. */
function tile(data: Uint8Array, lengths: number[]): ChunkRef[] {
  const out: ChunkRef[] = [];
  for (let pos = 0, k = 0; pos < data.length; k++) {
    const len = Math.min(lengths[k % lengths.length]!, data.length - pos);
    out.push({ offset: pos, length: len, id: chunkId(data.subarray(pos, pos + len)) });
    pos += len;
  }
  return out;
}

/** Invariants every plan must satisfy, beyond validateDelta. */
function checkPlan(plan: ReturnType<typeof planDelta>, oldData: Uint8Array, newData: Uint8Array, opts: DeltaOptions = {}): void {
  validateDelta(plan.ops, oldData.length, newData.length);
  expect(plan.newSize).toBe(newData.length);
  expect(plan.oldSize).toBe(oldData.length);
  expect(plan.copyBytes + plan.literalBytes).toBe(newData.length);
  // Plain checks in the loop: a plan can have thousands of ops and expect() per op dominates the run time.
  let copy = 0;
  const problems: string[] = [];
  const maxCopy = opts.maxCopyLength ?? Infinity;
  const joined = (a: DeltaOp | undefined, b: DeltaOp | undefined): boolean =>
    a?.kind === 'copy' && b?.kind === 'copy' && a.srcOffset + a.length === b.srcOffset;
  plan.ops.forEach((op, i) => {
    const prev = plan.ops[i - 1];
    if (op.kind === 'copy') {
      copy += op.length;
      const isPiece = joined(prev, op) || joined(op, plan.ops[i + 1]);
      if (op.length < (opts.minCopyLength ?? DELTA_MIN_COPY_LENGTH) && !isPiece) problems.push(`#${i}: short copy`);
      if (op.length > maxCopy) problems.push(`#${i}: copy above maxCopyLength`);
    }
    if (prev?.kind === 'literal' && op.kind === 'literal') problems.push(`#${i}: adjacent literals not coalesced`);
    if (joined(prev, op) && prev!.length + op.length <= maxCopy) problems.push(`#${i}: contiguous copies not coalesced`);
  });
  expect(problems).toEqual([]);
  expect(copy).toBe(plan.copyBytes);
  expect(view(applyDelta(oldData, newData, plan.ops)).equals(view(newData))).toBe(true);
  const viaFn = applyDelta(oldData, (o, l) => newData.subarray(o, o + l), plan.ops);
  expect(view(viaFn).equals(view(newData))).toBe(true);
}

type Edit =
  | { kind: 'overwrite'; at: number; seed: number; len: number }
  | { kind: 'insert'; at: number; seed: number; len: number }
  | { kind: 'delete'; at: number; len: number }
  | { kind: 'append'; seed: number; len: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'move'; from: number; len: number; to: number };

/** Positions are fractions of the current length, so every edit stays meaningful whatever came before. */
const frac = fc.double({ min: 0, max: 1, noNaN: true });
const editArb: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ kind: fc.constant('overwrite' as const), at: frac, seed: fc.integer({ min: 1 }), len: fc.integer({ min: 1, max: 5000 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: frac, seed: fc.integer({ min: 1 }), len: fc.integer({ min: 1, max: 5000 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: frac, len: fc.integer({ min: 1, max: 8000 }) }),
  fc.record({ kind: fc.constant('append' as const), seed: fc.integer({ min: 1 }), len: fc.integer({ min: 1, max: 5000 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: frac }),
  fc.record({ kind: fc.constant('move' as const), from: frac, len: fc.integer({ min: 1, max: 8000 }), to: frac }),
);

function applyEdit(data: Uint8Array, e: Edit): Uint8Array {
  const pos = (f: number): number => Math.floor(f * data.length);
  switch (e.kind) {
    case 'overwrite': {
      const out = new Uint8Array(data);
      const at = pos(e.at);
      out.set(xorshiftBytes(e.seed, Math.min(e.len, data.length - at)), at);
      return out;
    }
    case 'insert': {
      const at = pos(e.at);
      return concat(data.subarray(0, at), xorshiftBytes(e.seed, e.len), data.subarray(at));
    }
    case 'delete': {
      const at = pos(e.at);
      return concat(data.subarray(0, at), data.subarray(Math.min(data.length, at + e.len)));
    }
    case 'append':
      return concat(data, xorshiftBytes(e.seed, e.len));
    case 'truncate':
      return data.subarray(0, pos(e.at));
    case 'move': {
      const from = pos(e.from);
      const block = data.subarray(from, Math.min(data.length, from + e.len));
      const rest = concat(data.subarray(0, from), data.subarray(from + block.length));
      const to = Math.floor(e.to * rest.length);
      return concat(rest.subarray(0, to), block, rest.subarray(to));
    }
  }
}

/** Random bytes with zero runs and a repeated block, so ids repeat within a file as in real data. */
const oldFileArb = fc
  .record({ seed: fc.integer({ min: 1 }), length: fc.integer({ min: 0, max: 120_000 }), zeros: fc.integer({ min: 0, max: 20_000 }), repeat: fc.boolean() })
  .map(({ seed, length, zeros, repeat }) => {
    const r = xorshiftBytes(seed, length);
    const block = r.subarray(0, Math.min(5000, r.length));
    return repeat ? concat(r, new Uint8Array(zeros), block, block) : concat(r, new Uint8Array(zeros));
  });

const smallSpec = specForAvg(1024);

describe('planDelta', () => {
  it('rebuilds the new file exactly after arbitrary edits (content-defined chunks)', () => {
    fc.assert(
      fc.property(
        oldFileArb,
        fc.array(editArb, { minLength: 0, maxLength: 6 }),
        fc.option(fc.integer({ min: 300, max: 20_000 }), { nil: undefined }),
        (oldData, edits, maxCopyLength) => {
          const newData = edits.reduce(applyEdit, oldData);
          const opts: DeltaOptions = { maxCopyLength };
          const plan = planDelta(chunkBuffer(oldData, smallSpec).chunks, chunkBuffer(newData, smallSpec).chunks, opts);
          checkPlan(plan, oldData, newData, opts);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rebuilds exactly with arbitrary tilings and heavily repeated ids', () => {
    const tinyAlphabet = fc.uint8Array({ minLength: 0, maxLength: 400 }).map((a) => a.map((b) => b & 1));
    const lengths = fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 5 });
    fc.assert(
      fc.property(tinyAlphabet, tinyAlphabet, lengths, lengths, (oldData, newData, lo, ln) => {
        const opts: DeltaOptions = { minCopyLength: 1 };
        const plan = planDelta(tile(oldData, lo), tile(newData, ln), opts);
        checkPlan(plan, oldData, newData, opts);
      }),
      { numRuns: 300 },
    );
  });

  it('copies an unchanged file in one op', () => {
    const data = xorshiftBytes(1, 2 * MiB);
    const chunks = chunkBuffer(data, specForAvg(16 * KiB)).chunks;
    const plan = planDelta(chunks, chunks);
    expect(plan.ops).toEqual([{ kind: 'copy', srcOffset: 0, length: data.length, dstOffset: 0 }]);
    expect(plan).toMatchObject({ copyBytes: data.length, literalBytes: 0, worthIt: true, reason: 'ok' });
  });

  it('sends only the edited region of a big file', () => {
    const spec = specForAvg(16 * KiB);
    const oldData = xorshiftBytes(2, 6 * MiB);
    const newData = concat(oldData.subarray(0, 3 * MiB), xorshiftBytes(3, 100), oldData.subarray(3 * MiB));
    const plan = planDelta(chunkBuffer(oldData, spec).chunks, chunkBuffer(newData, spec).chunks);
    checkPlan(plan, oldData, newData);
    expect(plan.ops.map((o) => o.kind)).toEqual(['copy', 'literal', 'copy']);
    expect(plan.literalBytes).toBeLessThanOrEqual(2 * spec.max + 100);
    expect(plan.worthIt).toBe(true);
  });

  it('uploads unrelated content whole', () => {
    const a = synth(['a', 'b', 'c', 'd', 'e']);
    const b = synth(['v', 'w', 'x', 'y', 'z']);
    const plan = planDelta(a, b);
    expect(plan.ops).toEqual([{ kind: 'literal', dstOffset: 0, length: 5 * 64 * KiB }]);
    expect(plan).toMatchObject({ copyBytes: 0, worthIt: false, reason: 'no-reuse' });
  });

  it('reuses moved and reordered chunks from anywhere in the old file', () => {
    const plan = planDelta(synth(['a', 'b', 'c', 'd']), synth(['c', 'd', 'a', 'b', 'x']));
    const L = 64 * KiB;
    expect(plan.ops).toEqual([
      { kind: 'copy', srcOffset: 2 * L, length: 2 * L, dstOffset: 0 },
      { kind: 'copy', srcOffset: 0, length: 2 * L, dstOffset: 2 * L },
      { kind: 'literal', dstOffset: 4 * L, length: L },
    ]);
  });

  it('starts a copy at the duplicate whose successor also matches', () => {
    const L = 64 * KiB;
    const plan = planDelta(synth(['a', 'x', 'a', 'b']), synth(['a', 'b', 'q']));
    expect(plan.ops[0]).toEqual({ kind: 'copy', srcOffset: 2 * L, length: 2 * L, dstOffset: 0 });
    const zeros = planDelta(synth(Array(50).fill('z')), synth(Array(60).fill('z')));
    expect(zeros.ops).toEqual([
      { kind: 'copy', srcOffset: 0, length: 50 * L, dstOffset: 0 },
      { kind: 'copy', srcOffset: 0, length: 10 * L, dstOffset: 50 * L },
    ]);
  });

  it('never matches equal ids of different lengths', () => {
    const old: ChunkRef[] = [{ offset: 0, length: 300_000, id: 'same' }];
    const neu: ChunkRef[] = [{ offset: 0, length: 300_001, id: 'same' }];
    expect(planDelta(old, neu).ops).toEqual([{ kind: 'literal', dstOffset: 0, length: 300_001 }]);
  });

  it('sends copies shorter than minCopyLength as literals', () => {
    const old: ChunkRef[] = [
      { offset: 0, length: 300_000, id: 'big' },
      { offset: 300_000, length: 10, id: 'tail' },
    ];
    const neu: ChunkRef[] = [
      { offset: 0, length: 5000, id: 'new' },
      { offset: 5000, length: 10, id: 'tail' },
      { offset: 5010, length: 300_000, id: 'big' },
    ];
    expect(planDelta(old, neu).ops).toEqual([
      { kind: 'literal', dstOffset: 0, length: 5010 },
      { kind: 'copy', srcOffset: 0, length: 300_000, dstOffset: 5010 },
    ]);
    expect(planDelta(old, neu, { minCopyLength: 1 }).ops).toHaveLength(3);
  });

  it('splits long copies at maxCopyLength', () => {
    const L = 64 * KiB;
    const plan = planDelta(synth(['a', 'b', 'c']), synth(['a', 'b', 'c']), { maxCopyLength: 100_000 });
    expect(plan.ops.map((o) => o.length)).toEqual([98_304, 98_304]);
    expect(plan.copyBytes).toBe(3 * L);
    const odd = planDelta(synth(['a', 'b', 'c']), synth(['a', 'b', 'c']), { maxCopyLength: 65_000 });
    expect(odd.ops.map((o) => o.length)).toEqual([49_152, 49_152, 49_152, 49_152]);
    const uneven = planDelta(synth(['a'], 10), synth(['a'], 10), { maxCopyLength: 3, minCopyLength: 1 });
    expect(uneven.ops.map((o) => [o.kind === 'copy' && o.srcOffset, o.length])).toEqual([
      [0, 3],
      [3, 3],
      [6, 2],
      [8, 2],
    ]);
    expect(() => planDelta([], [], { maxCopyLength: 0 })).toThrow(RangeError);
  });

  describe('worthIt', () => {
    it('is false below the size threshold even with full reuse', () => {
      const chunks = synth(['a', 'b', 'c'], (DELTA_MIN_FILE_SIZE - 1) / 3 + 1);
      expect(planDelta(chunks, chunks)).toMatchObject({ worthIt: true });
      const small = synth(['a', 'b', 'c'], 80_000);
      expect(planDelta(small, small)).toMatchObject({ worthIt: false, reason: 'small-file' });
    });

    it('is false when under 10 % would be reused, unless the saving is large in absolute terms', () => {
      const ids = (n: number, p: string) => Array.from({ length: n }, (_, i) => `${p}${i}`);
      // 100 chunks of 64 KiB, 9 reused: 9 % < 10 %.
      const low = planDelta(synth(ids(100, 'o')), synth([...ids(9, 'o'), ...ids(91, 'n')]));
      expect(low).toMatchObject({ worthIt: false, reason: 'low-reuse' });
      const enough = planDelta(synth(ids(100, 'o')), synth([...ids(11, 'o'), ...ids(89, 'n')]));
      expect(enough).toMatchObject({ worthIt: true, reason: 'ok' });
      // A 16 GiB file reusing 5 % (~800 MiB) is worth it despite the fraction.
      const huge = planDelta(synth(ids(1000, 'o'), 16 * MiB), synth([...ids(50, 'o'), ...ids(950, 'n')], 16 * MiB));
      expect(huge).toMatchObject({ worthIt: true, reason: 'ok' });
      expect(estimateNetSaving(1000, 20)).toBeLessThan(0);
    });

    it('accepts custom thresholds', () => {
      const small = synth(['a', 'b'], 1000);
      expect(planDelta(small, small, { minFileSize: 0 }).worthIt).toBe(true);
    });
  });

  it('handles empty files', () => {
    expect(planDelta([], [])).toMatchObject({ ops: [], copyBytes: 0, literalBytes: 0, newSize: 0, worthIt: false });
    expect(planDelta(synth(['a']), []).ops).toEqual([]);
    expect(applyDelta(new Uint8Array(5), new Uint8Array(0), [])).toEqual(new Uint8Array(0));
  });

  it('rejects chunk lists that do not tile a file', () => {
    const gap: ChunkRef[] = [
      { offset: 0, length: 10, id: 'a' },
      { offset: 11, length: 10, id: 'b' },
    ];
    const codeOf = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        return e instanceof WsyncError ? e.code : 'not-wsync';
      }
      return undefined;
    };
    expect(codeOf(() => planDelta(gap, synth(['a'])))).toBe('E_MANIFEST');
    expect(codeOf(() => planDelta(synth(['a']), gap))).toBe('E_INTERNAL');
    expect(codeOf(() => planDelta([{ offset: 0, length: 0, id: 'a' }], []))).toBe('E_MANIFEST');
  });
});

describe('validateDelta / applyDelta', () => {
  const good: DeltaOp[] = [
    { kind: 'copy', srcOffset: 5, length: 5, dstOffset: 0 },
    { kind: 'literal', dstOffset: 5, length: 3 },
  ];

  it('accepts a valid plan and rejects gaps, overlaps, out-of-bounds copies and wrong totals', () => {
    expect(() => validateDelta(good, 10, 8)).not.toThrow();
    const bad: [DeltaOp[], number, number][] = [
      [good, 9, 8],
      [good, 10, 9],
      [[good[1]!, good[0]!], 10, 8],
      [[good[0]!, { kind: 'literal', dstOffset: 6, length: 2 }], 10, 8],
      [[good[0]!, { kind: 'literal', dstOffset: 4, length: 4 }], 10, 8],
      [[{ kind: 'copy', srcOffset: -1, length: 5, dstOffset: 0 }], 10, 5],
      [[{ kind: 'literal', dstOffset: 0, length: 0 }], 10, 0],
    ];
    for (const [ops, o, n] of bad) expect(() => validateDelta(ops, o, n), JSON.stringify(ops)).toThrow(WsyncError);
  });

  it('applies copies and literals', () => {
    const old = Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Array.from(applyDelta(old, () => Uint8Array.from([7, 7, 7]), good))).toEqual([5, 6, 7, 8, 9, 7, 7, 7]);
    expect(() => applyDelta(old, () => new Uint8Array(2), good)).toThrow(WsyncError);
    expect(() => applyDelta(old.subarray(0, 9), new Uint8Array(8), good)).toThrow(WsyncError);
  });
});

import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chunkBuffer } from '../chunking/hash.js';
import { specForAvg } from '../chunking/params.js';
import { planDelta } from '../plan/delta.js';
import type { FileReader } from '../transport/types.js';
import { chunkReader, hashingStream, verifiedLiterals } from './delta.js';

const spec = specForAvg(16 * 1024);

function memReader(data: Buffer): FileReader & { reads: number } {
  const r = {
    size: data.length,
    stamp: 's',
    reads: 0,
    read: async (pos: number, len: number) => {
      r.reads++;
      if (pos + len > data.length) throw Object.assign(new Error('short'), { code: 'E_CHANGED_DURING_SYNC' });
      return Buffer.from(data.subarray(pos, pos + len));
    },
    close: async () => undefined,
  };
  return r;
}

/** Feeds every literal op to `src` in pieces of `piece` bytes, as a transport would. */
async function drain(ops: ReturnType<typeof planDelta>['ops'], src: (p: number, n: number) => Promise<Buffer>, piece: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const op of ops) {
    if (op.kind !== 'literal') continue;
    for (let done = 0; done < op.length; done += piece) out.push(await src(op.dstOffset + done, Math.min(piece, op.length - done)));
  }
  return out;
}

describe('engine delta helpers', () => {
  it('chunkReader gives the same result as chunking the bytes in memory', async () => {
    for (const n of [0, 1, 3 * 1024 * 1024 + 17]) {
      const data = randomBytes(n);
      expect(await chunkReader(memReader(data), spec)).toEqual(chunkBuffer(data, spec));
    }
  });

  it('hashingStream passes bytes through and yields the SHA-256, plus chunks when given a spec', async () => {
    const data = randomBytes(700_000);
    async function* src() {
      yield data.subarray(0, 1000);
      yield data.subarray(1000);
    }
    let n = 0;
    const hs = hashingStream(src(), spec, (k) => (n += k));
    const got: Buffer[] = [];
    expect(() => hs.result()).toThrow();
    for await (const b of hs.stream) got.push(b);
    expect(Buffer.concat(got).equals(data)).toBe(true);
    expect(n).toBe(data.length);
    const expected = chunkBuffer(data, spec);
    expect(hs.result()).toEqual({ sha256: expected.sha256, chunked: expected });
    const plain = hashingStream(src(), undefined, () => undefined);
    for await (const b of plain.stream) void b;
    expect(plain.result()).toEqual({ sha256: expected.sha256 });
  });

  it('verifiedLiterals hands over the planned literal bytes, in any piece size', async () => {
    const old = randomBytes(2_000_000);
    const cur = Buffer.concat([old.subarray(0, 500_000), randomBytes(70_000), old.subarray(600_000), randomBytes(1000)]);
    const plan = planDelta(chunkBuffer(old, spec).chunks, chunkBuffer(cur, spec).chunks);
    expect(plan.worthIt).toBe(true);
    for (const piece of [1000, 261_120, 1 << 20]) {
      let counted = 0;
      const src = verifiedLiterals(memReader(cur), chunkBuffer(cur, spec).chunks, 'f', (k) => (counted += k));
      const parts = await drain(plan.ops, src, piece);
      expect(counted).toBe(plan.literalBytes);
      expect(Buffer.concat(parts).length).toBe(plan.literalBytes);
    }
  });

  it('verifiedLiterals refuses bytes that differ from what was chunked, before the chunk ends', async () => {
    const old = randomBytes(1_000_000);
    const cur = Buffer.concat([randomBytes(50_000), old]);
    const chunks = chunkBuffer(cur, spec).chunks;
    const plan = planDelta(chunkBuffer(old, spec).chunks, chunks);
    const changed = Buffer.from(cur);
    changed[100] ^= 1;
    const src = verifiedLiterals(memReader(changed), chunks, 'the file', () => undefined);
    await expect(drain(plan.ops, src, 261_120)).rejects.toMatchObject({ code: 'E_CHANGED_DURING_SYNC', message: expect.stringMatching(/the file changed while it was being sent/) });
    // A read that starts inside a chunk means the caller broke the contract.
    const src2 = verifiedLiterals(memReader(cur), chunks, 'f', () => undefined);
    await expect(src2(10, 100)).rejects.toMatchObject({ code: 'E_INTERNAL' });
  });
});

import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChunkHasher, type ChunkRef, chunkBuffer, chunkFile, chunkId, chunkStream } from './hash.js';
import { specForAvg, specForSize } from './params.js';
import { xorshiftBytes } from '../../test/support/xorshift.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const MiB = 1 << 20;
const small = specForAvg(1024);

function* slices(data: Uint8Array, sizes: number[]): Generator<Uint8Array> {
  for (let pos = 0, k = 0; pos < data.length; k++) {
    const n = Math.max(1, sizes[k % sizes.length]!);
    yield data.subarray(pos, pos + n);
    pos += n;
  }
}

describe('chunk hashing', () => {
  it('produces tiling chunks with truncated SHA-256 ids and the full file hash', () => {
    const data = xorshiftBytes(5, 300_000);
    const r = chunkBuffer(data, small);
    expect(r.size).toBe(data.length);
    expect(r.sha256).toBe(sha256(data));
    expect(r.spec).toEqual(small);
    let pos = 0;
    for (const c of r.chunks) {
      expect(c.offset).toBe(pos);
      const bytes = data.subarray(c.offset, c.offset + c.length);
      expect(c.id).toBe(sha256(bytes).slice(0, 32));
      expect(c.id).toBe(chunkId(bytes));
      pos += c.length;
    }
    expect(pos).toBe(data.length);
    expect(r.chunks.length).toBeGreaterThan(100);
  });

  it('handles the empty input', () => {
    const r = chunkBuffer(new Uint8Array(0));
    expect(r).toEqual({ size: 0, sha256: sha256(new Uint8Array(0)), spec: specForSize(0), chunks: [] });
  });

  it('gives the same result for any slicing of a stream', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        fc.integer({ min: 0, max: 60_000 }),
        fc.array(fc.integer({ min: 0, max: 9000 }), { minLength: 1, maxLength: 12 }),
        async (seed, length, sizes) => {
          const data = xorshiftBytes(seed, length);
          const viaStream = await chunkStream(slices(data, sizes), small);
          expect(viaStream).toEqual(chunkBuffer(data, small));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('does not keep references to buffers passed to update()', () => {
    const data = xorshiftBytes(9, 100_000);
    const h = new ChunkHasher(small);
    const scratch = Buffer.alloc(777);
    for (let pos = 0; pos < data.length; pos += scratch.length) {
      const n = data.copy(scratch, 0, pos, pos + scratch.length);
      h.update(scratch.subarray(0, n));
      scratch.fill(0xaa);
    }
    expect(h.digest()).toEqual(chunkBuffer(data, small));
    expect(() => h.update(data)).toThrow();
    expect(() => h.digest()).toThrow();
  });

  describe('chunkFile', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'wsync-chunk-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('reads a file in blocks and matches the in-memory result', async () => {
      const data = xorshiftBytes(21, 3 * MiB + 12_345);
      const path = join(dir, 'f.bin');
      await writeFile(path, data);
      const expected = chunkBuffer(data, specForSize(data.length));
      expect(await chunkFile(path)).toEqual(expected);
      expect(await chunkFile(path, { blockSize: 100_003 })).toEqual(expected);
      expect(await chunkFile(path, { blockSize: 1 << 16, spec: small })).toEqual(chunkBuffer(data, small));
    });

    it('handles an empty file', async () => {
      const path = join(dir, 'empty');
      await writeFile(path, '');
      expect((await chunkFile(path)).chunks).toEqual([]);
    });

    it('passes fs errors through and honours abort', async () => {
      await expect(chunkFile(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      const path = join(dir, 'g.bin');
      await writeFile(path, xorshiftBytes(2, MiB));
      const ac = new AbortController();
      ac.abort(new Error('stop'));
      await expect(chunkFile(path, { signal: ac.signal, blockSize: 65536 })).rejects.toThrow('stop');
      await expect(chunkFile(path, { blockSize: 0 })).rejects.toThrow(RangeError);
    });
  });

  describe('edit locality (16 KiB average over 8 MiB)', () => {
    const spec = specForAvg(16 * 1024);
    const base = xorshiftBytes(77, 8 * MiB);
    const before = chunkBuffer(base, spec);
    const oldIds = new Set(before.chunks.map((c) => c.id));
    const fresh = (chunks: ChunkRef[]): ChunkRef[] => chunks.filter((c) => !oldIds.has(c.id));

    it('re-uses every chunk but the first after a 100-byte insert at the head', () => {
      const edited = Buffer.concat([xorshiftBytes(1234, 100), base]);
      const after = chunkBuffer(edited, spec);
      const changed = fresh(after.chunks);
      // The first boundary past min is content-defined and shifts with the insert, so only chunk 0 changes.
      expect(changed.length).toBe(1);
      expect(changed[0]!.offset).toBe(0);
      expect(after.chunks.length).toBe(before.chunks.length);
    });

    it('re-uses every chunk away from a 1 MiB overwrite in the middle', () => {
      const edited = Buffer.from(base);
      const at = 3 * MiB + 4321;
      xorshiftBytes(999, MiB).copy(edited, at);
      const after = chunkBuffer(edited, spec);
      const changed = fresh(after.chunks);
      const reach = spec.max; // a boundary disturbed by the edit resynchronises within one max-size chunk
      for (const c of after.chunks) {
        const far = c.offset + c.length <= at - reach || c.offset >= at + MiB + reach;
        if (far) expect(oldIds.has(c.id), `chunk at ${c.offset}`).toBe(true);
      }
      for (const c of changed) {
        expect(c.offset + c.length).toBeGreaterThan(at - reach);
        expect(c.offset).toBeLessThan(at + MiB + reach);
      }
      const changedBytes = changed.reduce((n, c) => n + c.length, 0);
      expect(changedBytes).toBeGreaterThanOrEqual(MiB);
      expect(changedBytes).toBeLessThanOrEqual(MiB + 2 * spec.max);
      // ~1 MiB / ~18 KiB realised mean ≈ 57 new chunks, plus at most a couple straddling the edit's edges.
      expect(changed.length).toBeLessThan(80);
      expect(after.chunks.length - changed.length).toBeGreaterThan(before.chunks.length - 90);
    });
  });
});

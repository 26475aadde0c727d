/**
 * The prewarm runs from the compiled build (its worker is a .js file), so this test loads dist/, which the test
 * run's global setup has just built.
 */
import { describe, it, expect } from 'vitest';
import { writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { tempDir } from '../support/trees.js';

const dist = (m: string) => import(/* @vite-ignore */ new URL(`../../dist/${m}`, import.meta.url).href);

describe('prewarmChunks (worker thread)', () => {
  it('re-cuts a changed big file the cache knows, and leaves unchanged ones alone', async () => {
    const { ChunkCache, fromChunked } = await dist('transfer/chunkcache.js');
    const { prewarmChunks } = await dist('transfer/prewarm.js');
    const { LocalTransport } = await dist('transport/local/local.js');
    const { chunkFile } = await dist('chunking/hash.js');
    const { specForSize } = await dist('chunking/params.js');
    const dir = tempDir('wsync-prewarm-');
    const local = new LocalTransport(join(dir, 'tree'));
    await local.ensureRoot();
    const big = join(local.root, 'big.bin');
    const same = join(local.root, 'same.bin');
    writeFileSync(big, randomBytes(3 << 20));
    writeFileSync(same, randomBytes(1 << 20));
    const cache = await ChunkCache.load(join(dir, 'cache.gz'), { local: local.root, target: 't' });
    const spec = specForSize(3 << 20);
    for (const [rel, p] of [['big.bin', big], ['same.bin', same]] as const) cache.addFile(rel, await local.stamp(rel), fromChunked(await chunkFile(p, { spec })));
    const sameStamp = await local.stamp('same.bin');
    const fd = openSync(big, 'r+');
    writeSync(fd, randomBytes(4096), 0, 4096, 1 << 20);
    closeSync(fd);
    const stamp = await local.stamp('big.bin');
    await prewarmChunks(local, cache);
    const hit = cache.fileContent('big.bin', stamp, spec);
    expect(hit, 'the edited file was re-cut').toBeDefined();
    const { readFileSync } = await import('node:fs');
    expect(hit.sha256).toBe(createHash('sha256').update(readFileSync(big)).digest('hex'));
    expect(cache.fileContent('same.bin', sameStamp, spec)).toBeDefined();
  });
});

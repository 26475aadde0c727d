import { describe, it, expect } from 'vitest';
import { gzipSync, gunzipSync } from 'node:zlib';
import type { Tree } from '../types.js';
import { specForAvg } from '../chunking/params.js';
import { decodeManifest, encodeManifest } from './manifest.js';

const sha = 'a'.repeat(64);

describe('manifest', () => {
  it('records the chunker of big files and reads it back; version stays 1', () => {
    const spec = specForAvg(16 * 1024);
    const entries: Tree = new Map([
      ['big.bin', { type: 'file', size: 10_000_000, mtime: 5, mode: 0o644, sha256: sha, chunker: spec }],
      ['small.txt', { type: 'file', size: 3, mtime: 5, mode: 0o644, sha256: sha }],
      ['nohash.bin', { type: 'file', size: 10_000_000, mtime: 5, mode: 0o644, chunker: spec }],
      ['d', { type: 'dir', size: 0, mtime: 5, mode: 0o755 }],
    ]);
    const buf = encodeManifest({ entries });
    expect(JSON.parse(gunzipSync(buf).toString()).version).toBe(1);
    const back = decodeManifest(buf, 'x').entries;
    expect(back.get('big.bin')).toEqual(entries.get('big.bin'));
    expect(back.get('small.txt')).toEqual(entries.get('small.txt'));
    // A chunker is only findable through the content hash; without one it is not worth keeping.
    expect(back.get('nohash.bin')!.chunker).toBeUndefined();
  });

  it('reads manifests written before chunkers existed, and drops chunkers it cannot reproduce', () => {
    const doc = {
      format: 'wsync-manifest',
      version: 1,
      entries: [
        ['old.bin', { t: 'f', s: 10, m: 1, p: 420, h: sha }],
        ['future.bin', { t: 'f', s: 10, m: 1, p: 420, h: sha, c: ['fastcdc-gear64-v9', 4096, 16384, 65536] }],
        ['broken.bin', { t: 'f', s: 10, m: 1, p: 420, h: sha, c: ['fastcdc-gear32-v1', 4096, 1000, 65536] }],
        ['weird.bin', { t: 'f', s: 10, m: 1, p: 420, h: sha, c: 'nonsense' }],
      ],
    };
    const m = decodeManifest(gzipSync(JSON.stringify(doc)), 'x');
    for (const p of ['old.bin', 'future.bin', 'broken.bin', 'weird.bin']) {
      expect(m.entries.get(p)).toEqual({ type: 'file', size: 10, mtime: 1, mode: 420, sha256: sha });
    }
  });
});

import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, utimesSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { chunkBuffer } from '../chunking/hash.js';
import { specForAvg } from '../chunking/params.js';
import { ChunkCache, cacheFileFor, contentKey, defaultCacheDir, fromChunked, toChunkRefs, usableCacheDir } from './chunkcache.js';

const label = { local: '/l', target: 'u@h:/r' };
const spec = specForAvg(16 * 1024);

function sample(n = 300_000) {
  return fromChunked(chunkBuffer(randomBytes(n), spec));
}

describe('chunk cache', () => {
  it('lives under XDG_CACHE_HOME, ~/.cache or LOCALAPPDATA; one file per local root and target', () => {
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/x/cache' }, 'linux', '/home/u')).toBe('/x/cache/wsync');
    expect(defaultCacheDir({ XDG_CACHE_HOME: 'relative' }, 'linux', '/home/u')).toBe('/home/u/.cache/wsync');
    expect(defaultCacheDir({}, 'darwin', '/Users/u')).toBe('/Users/u/.cache/wsync');
    expect(defaultCacheDir({ LOCALAPPDATA: 'C:\\Users\\u\\AppData\\Local' }, 'win32', 'C:\\Users\\u')).toBe('C:\\Users\\u\\AppData\\Local\\wsync\\cache');
    expect(defaultCacheDir({}, 'linux', '')).toBeNull();
    const a = cacheFileFor('/c', '/l', 'u@h:/r');
    expect(a).toBe(cacheFileFor('/c', '/l', 'u@h:/r'));
    expect(a).not.toBe(cacheFileFor('/c', '/l', 'u@h:/other'));
    expect(a).not.toBe(cacheFileFor('/c', '/l2', 'u@h:/r'));
  });

  it('round-trips chunk lists compactly and exactly', () => {
    const c = chunkBuffer(randomBytes(500_000), spec);
    expect(toChunkRefs(fromChunked(c))).toEqual(c.chunks);
  });

  it('remembers the big files the target holds, with their contents, and forgets the rest', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wsync-cc-'));
    try {
      const file = join(dir, 'r.json.gz');
      const c = await ChunkCache.load(file, label);
      const a = sample();
      c.addContent(a);
      const unknown = sample();
      c.setRemote([
        ['big.bin', { type: 'file', size: a.size, mtime: 1_700_000_000, sha256: a.sha256, chunker: a.spec }],
        // No chunk list here, no chunker, not a file: nothing to start a rebuild from.
        ['other.bin', { type: 'file', size: unknown.size, mtime: 1, sha256: unknown.sha256, chunker: unknown.spec }],
        ['small.txt', { type: 'file', size: 3, mtime: 1, sha256: 'ab'.repeat(32) }],
        ['dir', { type: 'dir', size: 0, mtime: 1 }],
      ]);
      await c.save(() => false, []);
      const d = await ChunkCache.load(file, label);
      expect([...d.remoteFiles()].map(([rel, r]) => [rel, r.size, r.mtime, r.list.sha256])).toEqual([['big.bin', a.size, 1_700_000_000, a.sha256]]);
      // The record keeps its content even when nothing else refers to it.
      expect(d.content(a.sha256, a.spec)).toBeDefined();
      d.setRemote([['big.bin', { type: 'file', size: a.size, mtime: 1_700_000_000, sha256: a.sha256, chunker: a.spec }]]);
      expect(d.modified).toBe(false);
      d.setRemote([]);
      expect(d.modified).toBe(true);
      await d.save(() => false, []);
      expect([...(await ChunkCache.load(file, label)).remoteFiles()]).toEqual([]);
      // A record whose size does not match its content's is damage: ignored.
      const doc = JSON.parse(gunzipSync(readFileSync(file)).toString());
      const e = await ChunkCache.load(file, label);
      e.addContent(a);
      await e.save(() => false, [contentKey(a.sha256, a.spec)]);
      const doc2 = JSON.parse(gunzipSync(readFileSync(file)).toString());
      doc2.remote = [['big.bin', a.size + 1, 5, contentKey(a.sha256, a.spec)], ['x', 'nan', 5, 'k']];
      writeFileSync(file, gzipSync(JSON.stringify(doc2)));
      expect([...(await ChunkCache.load(file, label)).remoteFiles()]).toEqual([]);
      expect(doc.remote).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('saves atomically, loads what it saved, and keeps only what is still referenced', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wsync-cc-'));
    try {
      const file = join(dir, 'chunks', 'x.json.gz');
      const c = await ChunkCache.load(file, label);
      const a = sample();
      const b = sample();
      const gone = sample();
      c.addFile('a.bin', 'stamp-a', a);
      c.addContent(b);
      c.addFile('deleted.bin', 'stamp-d', gone);
      expect(c.modified).toBe(true);
      await c.save((p) => p !== 'deleted.bin', [contentKey(b.sha256, b.spec)]);
      expect(readdirSync(join(dir, 'chunks'))).toEqual(['x.json.gz']);
      const d = await ChunkCache.load(file, label);
      expect(d.fileContent('a.bin', 'stamp-a', spec)).toEqual(a);
      expect(d.fileContent('a.bin', 'stamp-changed', spec)).toBeUndefined();
      expect(d.fileContent('a.bin', 'stamp-a', specForAvg(32 * 1024))).toBeUndefined();
      expect(d.content(b.sha256, spec)).toEqual(b);
      expect(d.content(gone.sha256, spec)).toBeUndefined();
      expect(d.fileContent('deleted.bin', 'stamp-d', spec)).toBeUndefined();
      expect(d.modified).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('treats a missing, corrupt or inconsistent cache as a miss, never an error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wsync-cc-'));
    try {
      const file = join(dir, 'c.json.gz');
      expect((await ChunkCache.load(file, label)).content('0'.repeat(64), spec)).toBeUndefined();
      writeFileSync(file, 'not gzip');
      expect((await ChunkCache.load(file, label)).content('0'.repeat(64), spec)).toBeUndefined();
      writeFileSync(file, gzipSync('{"format":"wsync-chunk-cache","version":1,"contents":"no","files":[]}'));
      expect((await ChunkCache.load(file, label)).modified).toBe(false);
      // One good list, one whose lengths do not add up to its size: the bad one alone is dropped.
      const good = sample();
      const bad = sample();
      const c = await ChunkCache.load(file, label);
      c.addContent(good);
      c.addContent(bad);
      await c.save(() => true, [contentKey(good.sha256, spec), contentKey(bad.sha256, spec)]);
      const doc = JSON.parse(gunzipSync(readFileSync(file)).toString());
      const rec = doc.contents.find((r: unknown[]) => r[0] === contentKey(bad.sha256, spec));
      rec[2] += 1;
      writeFileSync(file, gzipSync(JSON.stringify(doc)));
      const d = await ChunkCache.load(file, label);
      expect(d.content(good.sha256, spec)).toEqual(good);
      expect(d.content(bad.sha256, spec)).toBeUndefined();
      // A file that cannot be written is not an error either.
      const ro = await ChunkCache.load(join(dir, 'c.json.gz', 'under-a-file.json.gz'), label);
      ro.addContent(good);
      await ro.save(() => true, [contentKey(good.sha256, spec)]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('removes cache files of other pairs that were not used for months', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wsync-cc-'));
    try {
      const old = join(dir, 'old.json.gz');
      const recent = join(dir, 'recent.json.gz');
      writeFileSync(old, 'x');
      writeFileSync(recent, 'x');
      const t = Date.now() / 1000 - 200 * 24 * 3600;
      utimesSync(old, t, t);
      const c = await ChunkCache.load(join(dir, 'mine.json.gz'), label);
      c.addContent(sample());
      await c.save(() => true, []);
      expect(readdirSync(dir).sort()).toEqual(['mine.json.gz', 'recent.json.gz']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('falls back to a private directory under the temp directory when the cache directory cannot be made', () => {
    const work = mkdtempSync(join(tmpdir(), 'wsync-cachedir-'));
    const saved = process.env.XDG_CACHE_HOME;
    try {
      // A path below a regular file: not creatable, even for root (a read-only home is the usual cause).
      writeFileSync(join(work, 'file'), '');
      process.env.XDG_CACHE_HOME = join(work, 'file', 'cache');
      const dir = usableCacheDir();
      expect(dir).toBe(join(tmpdir(), `wsync-${process.getuid!()}`, 'cache'));
      expect(statSync(join(tmpdir(), `wsync-${process.getuid!()}`)).mode & 0o077).toBe(0);
      expect(statSync(join(dir!, 'chunks')).isDirectory()).toBe(true);
      process.env.XDG_CACHE_HOME = join(work, 'fine');
      expect(usableCacheDir()).toBe(join(work, 'fine', 'wsync'));
    } finally {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
      rmSync(work, { recursive: true, force: true });
    }
  });
});

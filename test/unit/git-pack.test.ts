import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync, inflateSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { encodeTree, hashObject, type GitObject, type ObjectType } from '../../src/git/objects.js';
import {
  applyDelta,
  bufferAccess,
  createDelta,
  encodeEntryHeader,
  PACK_TYPE,
  PackIndex,
  PackReader,
  PackWriter,
  storedZlib,
  writeIndex,
} from '../../src/git/pack.js';
import { xorshiftBytes } from '../support/xorshift.js';

const ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Ann Author',
  GIT_AUTHOR_EMAIL: 'ann@example.com',
  GIT_AUTHOR_DATE: '1700000000 +0000',
  GIT_COMMITTER_NAME: 'Cid Committer',
  GIT_COMMITTER_EMAIL: 'cid@example.com',
  GIT_COMMITTER_DATE: '1700000000 +0000',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
};

let root: string;
function git(cwd: string, args: string[], input?: string | Buffer): Buffer {
  return execFileSync('git', ['-c', 'user.name=T', '-c', 'user.email=t@example.com', '-c', 'init.defaultBranch=main', ...args], {
    cwd,
    env: ENV,
    input,
    maxBuffer: 256 * 1024 * 1024,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}
const gitText = (cwd: string, args: string[], input?: string | Buffer): string => git(cwd, args, input).toString('utf8').trim();

function newRepo(name: string): string {
  const dir = join(root, name);
  mkdirSync(dir);
  git(dir, ['init', '-q']);
  return dir;
}

/** Deterministic text of `lines` lines; `version` rewrites a few of them, so consecutive versions delta well. */
function textVersion(lines: number, version: number, seed = 1): Buffer {
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    let edits = 0;
    for (let v = 1; v <= version; v++) if ((i + v * 31 + seed) % 83 < 3) edits++;
    out.push(`line ${i} of file ${seed}: the quick brown fox ${(i * 2654435761) % 100003} jumps v${edits}`);
  }
  return Buffer.from(out.join('\n') + '\n');
}

interface VerifyLine {
  oid: string;
  type: string;
  sizeInPack: number;
  offset: number;
  depth: number;
}
function verifyPack(cwd: string, idxPath: string): VerifyLine[] {
  return gitText(cwd, ['verify-pack', '-v', idxPath])
    .split('\n')
    .map((l) => l.split(/\s+/))
    .filter((f) => /^[0-9a-f]{40}$/.test(f[0]))
    .map((f) => ({ oid: f[0], type: f[1], sizeInPack: Number(f[3]), offset: Number(f[4]), depth: f[5] ? Number(f[5]) : 0 }));
}

/** All objects of a repo via one `git cat-file --batch`. */
function catAll(cwd: string, oids: string[]): Map<string, GitObject> {
  const out = git(cwd, ['cat-file', '--batch'], oids.join('\n') + '\n');
  const map = new Map<string, GitObject>();
  let p = 0;
  while (p < out.length) {
    const nl = out.indexOf(10, p);
    const [oid, type, size] = out.toString('utf8', p, nl).split(' ');
    const body = out.subarray(nl + 1, nl + 1 + Number(size));
    map.set(oid, { type: type as ObjectType, body });
    p = nl + 1 + Number(size) + 1;
  }
  return map;
}

function packFiles(dir: string): { pack: Buffer; idx: Buffer; idxPath: string }[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.idx'))
    .map((f) => ({ idxPath: join(dir, f), idx: readFileSync(join(dir, f)), pack: readFileSync(join(dir, f.replace(/\.idx$/, '.pack'))) }));
}

let histRepo: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'wsync-gitpack-'));
  histRepo = newRepo('hist');
  for (let v = 0; v < 30; v++) {
    for (let f = 1; f <= 3; f++) writeFileSync(join(histRepo, `f${f}.txt`), textVersion(200, v, f));
    if (v % 10 === 5) writeFileSync(join(histRepo, `bin${v}.dat`), xorshiftBytes(v + 1, 3000));
    git(histRepo, ['add', '-A']);
    git(histRepo, ['commit', '-q', '-m', `version ${v}`]);
  }
  git(histRepo, ['tag', '-a', '-m', 'a tag', 'v1']);
  git(histRepo, ['repack', '-a', '-d', '-f', '-q', '--depth=50', '--window=50']);
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('reading packs git wrote', () => {
  it('parses the idx with the offsets git verify-pack reports', () => {
    const [p] = packFiles(join(histRepo, '.git', 'objects', 'pack'));
    const idx = PackIndex.parse(p.idx);
    const lines = verifyPack(histRepo, p.idxPath);
    expect(idx.count).toBe(lines.length);
    expect(idx.packChecksum).toBe(p.pack.subarray(p.pack.length - 20).toString('hex'));
    expect(idx.oids()).toEqual(lines.map((l) => l.oid).sort());
    for (const l of lines) {
      expect(idx.offsetOf(l.oid)).toBe(l.offset);
      expect(idx.has(l.oid)).toBe(true);
      expect(idx.entryEnd(l.offset, p.pack.length)).toBe(l.offset + l.sizeInPack);
      expect(idx.crc32Of(l.oid)).toBe(crc32(p.pack.subarray(l.offset, l.offset + l.sizeInPack)));
    }
    expect(lines.some((l) => l.depth > 1)).toBe(true);
    expect(idx.offsetOf('0'.repeat(40))).toBeUndefined();
    expect(idx.offsetOf('not an oid')).toBeUndefined();
  });

  it('reads every object (ofs-deltas resolved) as git cat-file does', async () => {
    const [p] = packFiles(join(histRepo, '.git', 'objects', 'pack'));
    const idx = PackIndex.parse(p.idx);
    const expected = catAll(histRepo, idx.oids());
    // A small cache forces re-reading bases; the second reader reads all at once through the shared cache.
    for (const reader of [new PackReader(bufferAccess(p.pack), idx, undefined, { cacheBytes: 50_000 }), new PackReader(bufferAccess(p.pack), idx)]) {
      await reader.verifyTrailer();
      const got = await Promise.all(idx.oids().map((oid) => reader.read(oid)));
      idx.oids().forEach((oid, i) => {
        expect(got[i].type).toBe(expected.get(oid)!.type);
        expect(got[i].body.equals(expected.get(oid)!.body)).toBe(true);
      });
    }
    const reader = new PackReader(bufferAccess(p.pack), idx);
    await expect(reader.read('0'.repeat(40))).rejects.toThrow(/not in this pack/);
  });

  it('reads a REF_DELTA pack', async () => {
    const objs = gitText(histRepo, ['rev-list', '--objects', '--all']);
    const name = gitText(histRepo, ['pack-objects', '-q', '--no-delta-base-offset', '--depth=50', join(root, 'refdelta')], objs + '\n');
    const pack = readFileSync(join(root, `refdelta-${name}.pack`));
    const idx = PackIndex.parse(readFileSync(join(root, `refdelta-${name}.idx`)));
    const types = idx.oids().map((oid) => (pack[idx.offsetOf(oid)!] >> 4) & 7);
    expect(types).toContain(PACK_TYPE.refDelta);
    expect(types).not.toContain(PACK_TYPE.ofsDelta);
    const reader = new PackReader(bufferAccess(pack), idx);
    const expected = catAll(histRepo, idx.oids());
    for (const oid of idx.oids()) expect((await reader.read(oid)).body.equals(expected.get(oid)!.body)).toBe(true);
  });

  it('resolves a REF_DELTA against an external base (thin pack)', async () => {
    const base = textVersion(300, 0, 9);
    const target = textVersion(300, 2, 9);
    const baseOid = hashObject('blob', base);
    const targetOid = hashObject('blob', target);
    const delta = createDelta(base, target)!;
    expect(delta).not.toBeNull();
    const other = Buffer.from('plain object\n');
    const entries = [
      Buffer.concat([encodeEntryHeader(PACK_TYPE.refDelta, delta.length), Buffer.from(baseOid, 'hex'), deflateSync(delta)]),
      Buffer.concat([encodeEntryHeader(PACK_TYPE.blob, other.length), deflateSync(other)]),
    ];
    const header = Buffer.from([0x50, 0x41, 0x43, 0x4b, 0, 0, 0, 2, 0, 0, 0, 2]);
    const body = Buffer.concat([header, ...entries]);
    const trailer = createHash('sha1').update(body).digest();
    const pack = Buffer.concat([body, trailer]);
    const idx = PackIndex.parse(
      writeIndex(
        [
          { oid: targetOid, offset: 12, crc32: crc32(entries[0]) },
          { oid: hashObject('blob', other), offset: 12 + entries[0].length, crc32: crc32(entries[1]) },
        ],
        trailer,
      ),
    );
    const asked: string[] = [];
    const reader = new PackReader(bufferAccess(pack), idx, async (oid) => {
      asked.push(oid);
      return oid === baseOid ? { type: 'blob', body: base } : null;
    });
    expect((await reader.read(targetOid)).body.equals(target)).toBe(true);
    expect((await reader.read(hashObject('blob', other))).body.equals(other)).toBe(true);
    expect(asked).toEqual([baseOid]);
    await expect(new PackReader(bufferAccess(pack), idx).read(targetOid)).rejects.toThrow(/neither in the pack/);
    await expect(new PackReader(bufferAccess(pack), idx, async () => null).read(targetOid)).rejects.toThrow(/neither in the pack/);
    // A base that is not what the delta was made from fails the size check or the final sha1 check.
    await expect(new PackReader(bufferAccess(pack), idx, async () => ({ type: 'blob', body: Buffer.from(base).fill(65, 0, 10) })).read(targetOid)).rejects.toThrow(
      /hashes to/,
    );
  });
});

describe('idx format', () => {
  it('round-trips large offsets through the 64-bit table', () => {
    const oids = ['11'.repeat(20), '22'.repeat(20), 'ee'.repeat(20), 'ff'.repeat(20), '00'.repeat(20)];
    const offsets = [12, 2 ** 31 - 1, 2 ** 31, 2 ** 33 + 5, 2 ** 40 + 12345];
    const entries = oids.map((oid, i) => ({ oid, offset: offsets[i], crc32: 0xdeadbeef + i }));
    const checksum = Buffer.alloc(20, 7);
    const buf = writeIndex(entries, checksum);
    expect(buf.length).toBe(8 + 1024 + 5 * 28 + 3 * 8 + 40);
    const idx = PackIndex.parse(buf);
    expect(idx.count).toBe(5);
    expect(idx.packChecksum).toBe(checksum.toString('hex'));
    expect(idx.oids()).toEqual([...oids].sort());
    oids.forEach((oid, i) => {
      expect(idx.offsetOf(oid)).toBe(offsets[i]);
      expect(idx.crc32Of(oid)).toBe((0xdeadbeef + i) >>> 0);
    });
    expect(idx.entryEnd(2 ** 33 + 5, 2 ** 41)).toBe(2 ** 40 + 12345);
    expect(idx.entryEnd(2 ** 40 + 12345, 2 ** 41)).toBe(2 ** 41 - 20);
    // Large-table slots follow sorted-oid order (00.., ee.., ff..); 2^31-1 still fits the 31-bit table.
    const offs = 8 + 1024 + 5 * 24;
    expect([0, 1, 2, 3, 4].map((i) => buf.readUInt32BE(offs + 4 * i))).toEqual([0x80000000, 12, 2 ** 31 - 1, 0x80000001, 0x80000002]);
  });

  it('rejects v1, corrupt and truncated idx files', () => {
    const good = writeIndex([{ oid: 'ab'.repeat(20), offset: 12, crc32: 1 }], Buffer.alloc(20));
    expect(PackIndex.parse(good).count).toBe(1);
    const v1 = Buffer.alloc(1024 + 24 + 40); // a v1 idx starts straight with the fanout table
    expect(() => PackIndex.parse(v1)).toThrow(/version 2/);
    const v3 = Buffer.from(good);
    v3.writeUInt32BE(3, 4);
    expect(() => PackIndex.parse(v3)).toThrow(/version 3/);
    const flipped = Buffer.from(good);
    flipped[OIDS_AT]++;
    expect(() => PackIndex.parse(flipped)).toThrow(/checksum/);
    expect(() => PackIndex.parse(good.subarray(0, good.length - 1))).toThrow();
    expect(() => PackIndex.parse(good.subarray(0, 100))).toThrow(/too short/);
  });
});
const OIDS_AT = 8 + 1024;

describe('deltas', () => {
  const edit = fc.record({ pos: fc.nat(), del: fc.nat({ max: 300 }), ins: fc.uint8Array({ maxLength: 120 }) });
  const applyEdits = (base: Uint8Array, edits: { pos: number; del: number; ins: Uint8Array }[]): Buffer => {
    let t = Buffer.from(base);
    for (const e of edits) {
      const p = e.pos % (t.length + 1);
      t = Buffer.concat([t.subarray(0, p), Buffer.from(e.ins), t.subarray(Math.min(t.length, p + e.del))]);
    }
    return t;
  };

  it('applyDelta inverts createDelta on random edits (random and low-entropy bases)', () => {
    const bases = fc.oneof(fc.uint8Array({ maxLength: 4000 }), fc.uint8Array({ maxLength: 4000, max: 2 }), fc.uint8Array({ maxLength: 100 }));
    fc.assert(
      fc.property(bases, fc.array(edit, { maxLength: 10 }), (b, edits) => {
        const base = Buffer.from(b);
        const target = applyEdits(base, edits);
        const d = createDelta(base, target);
        if (d !== null) {
          expect(applyDelta(base, d).equals(target)).toBe(true);
          expect(d.length).toBeLessThanOrEqual(target.length / 2);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('stays correct with unrelated data and with copies longer than one 64 KiB op', () => {
    const base = xorshiftBytes(5, 300_000);
    const target = Buffer.concat([base.subarray(1000, 200_000), Buffer.from('xyz'), base.subarray(0, 90_000)]);
    const d = createDelta(base, target)!;
    expect(d.length).toBeLessThan(100);
    expect(applyDelta(base, d).equals(target)).toBe(true);
    expect(createDelta(base, xorshiftBytes(6, 10_000))).toBeNull();
    expect(createDelta(Buffer.from('tiny'), Buffer.from('tiny but longer'))).toBeNull();
    const same = createDelta(base, base)!;
    expect(applyDelta(base, same).equals(base)).toBe(true);
  });

  it('finds a small edit to a 10 KB random buffer', () => {
    const base = xorshiftBytes(42, 10_000);
    const target = Buffer.concat([base.subarray(0, 5000), Buffer.from('EDIT'), base.subarray(5010)]);
    const d = createDelta(base, target);
    expect(d).not.toBeNull();
    expect(d!.length).toBeLessThan(40);
    expect(applyDelta(base, d!).equals(target)).toBe(true);
  });

  it('is fast on multi-MB inputs', () => {
    const base = xorshiftBytes(7, 8 * 1024 * 1024);
    const target = Buffer.from(base);
    for (let i = 0; i < 200; i++) target[(i * 40_009) % target.length] ^= 0xff;
    const t0 = performance.now();
    const d = createDelta(base, target)!;
    const ms = performance.now() - t0;
    expect(d).not.toBeNull();
    expect(applyDelta(base, d).equals(target)).toBe(true);
    expect(ms).toBeLessThan(3000);
  });

  it('applyDelta rejects malformed deltas', () => {
    const base = Buffer.from('0123456789');
    expect(applyDelta(base, Buffer.from([10, 4, 0x91, 2, 4]))).toEqual(Buffer.from('2345'));
    expect(applyDelta(base, Buffer.from([10, 3, 3, 0x61, 0x62, 0x63]))).toEqual(Buffer.from('abc'));
    expect(() => applyDelta(base, Buffer.from([10, 4, 0x91, 8, 4]))).toThrow(/outside/);
    expect(() => applyDelta(base, Buffer.from([10, 0x80, 0x80, 4, 0x80]))).toThrow(/outside/); // size 0 means 64 KiB
    expect(() => applyDelta(base, Buffer.from([9, 4, 0x91, 2, 4]))).toThrow(/base/);
    expect(() => applyDelta(base, Buffer.from([10, 5, 0x91, 2, 4]))).toThrow(/header says 5/);
    expect(() => applyDelta(base, Buffer.from([10, 3, 0x91, 2, 4]))).toThrow(/larger/);
    expect(() => applyDelta(base, Buffer.from([10, 4, 0x91, 2]))).toThrow(/truncated/);
    expect(() => applyDelta(base, Buffer.from([10, 4, 5, 0x61]))).toThrow(/truncated/);
    expect(() => applyDelta(base, Buffer.from([10, 4, 0]))).toThrow(/reserved/);
    expect(() => applyDelta(base, Buffer.from([10]))).toThrow(/truncated/);
  });
});

describe('writing packs', () => {
  interface Version {
    blob: string;
    tree: string;
    commit: string;
    body: Buffer;
  }
  /** `n` commits of a 20 KB file with small edits; blobs delta against the previous version when `delta`. */
  function buildHistory(n: number, delta: boolean, w: PackWriter): Version[] {
    const out: Version[] = [];
    let parent: string | undefined;
    let prevBlob: string | undefined;
    let prevTree: string | undefined;
    for (let v = 0; v < n; v++) {
      const body = textVersion(250, v, 3);
      const blob = hashObject('blob', body);
      w.add(blob, 'blob', body, delta ? prevBlob : undefined);
      const treeBody = encodeTree([
        { mode: '100644', name: 'big.txt', oid: blob },
        { mode: '100644', name: 'const.txt', oid: hashObject('blob', Buffer.from('const\n')) },
      ]);
      if (v === 0) w.add(hashObject('blob', Buffer.from('const\n')), 'blob', Buffer.from('const\n'));
      const tree = hashObject('tree', treeBody);
      w.add(tree, 'tree', treeBody, delta ? prevTree : undefined);
      const commitBody = Buffer.from(
        `tree ${tree}\n${parent ? `parent ${parent}\n` : ''}author A <a@x> ${1700000000 + v} +0000\ncommitter A <a@x> ${1700000000 + v} +0000\n\nversion ${v}\n`,
      );
      const commit = hashObject('commit', commitBody);
      // A commit as delta base for a blob is refused (types differ): written whole.
      w.add(commit, 'commit', commitBody, delta ? blob : undefined);
      out.push({ blob, tree, commit, body });
      parent = commit;
      prevBlob = blob;
      prevTree = tree;
    }
    return out;
  }

  function install(repo: string, r: { pack: Buffer; idx: Buffer; name: string }): string {
    const base = join(repo, '.git', 'objects', 'pack', `pack-${r.name}`);
    writeFileSync(`${base}.pack`, r.pack);
    writeFileSync(`${base}.idx`, r.idx);
    return base;
  }

  it('writes a pack git indexes byte-identically, verifies, and reads; deltas shrink it', async () => {
    const w = new PackWriter();
    const hist = buildHistory(30, true, w);
    expect(w.count).toBe(91);
    const r = w.finish();
    expect(r.name).toBe(r.pack.subarray(r.pack.length - 20).toString('hex'));

    const plain = new PackWriter();
    buildHistory(30, false, plain);
    const whole = plain.finish();
    expect(r.pack.length).toBeLessThan(whole.pack.length * 0.3);

    const repo = newRepo('written');
    writeFileSync(join(root, 'check.pack'), r.pack);
    git(repo, ['index-pack', '-o', join(root, 'check.idx'), join(root, 'check.pack')]);
    expect(readFileSync(join(root, 'check.idx')).equals(r.idx)).toBe(true);

    const base = install(repo, r);
    const lines = verifyPack(repo, `${base}.idx`);
    expect(lines.length).toBe(91);
    expect(Math.max(...lines.map((l) => l.depth))).toBeGreaterThan(20);
    git(repo, ['update-ref', 'refs/heads/main', hist[hist.length - 1].commit]);
    git(repo, ['fsck', '--strict', '--no-dangling']);
    expect(gitText(repo, ['rev-list', '--count', 'HEAD'])).toBe('30');
    for (const v of [hist[0], hist[17], hist[29]]) expect(git(repo, ['cat-file', 'blob', v.blob]).equals(v.body)).toBe(true);

    const reader = new PackReader(bufferAccess(r.pack), PackIndex.parse(r.idx));
    for (const v of hist) expect((await reader.read(v.blob)).body.equals(v.body)).toBe(true);
  });

  it('stores whole objects as zlib stored blocks: valid zlib, valid for git, and their bytes at the offsets it gives', async () => {
    for (const n of [0, 1, 65535, 65536, 200_000]) {
      const body = xorshiftBytes(n + 1, n);
      const { stream, ranges } = storedZlib(body);
      expect(inflateSync(stream).equals(body)).toBe(true);
      expect(Buffer.concat(ranges.map(([o, len]) => stream.subarray(o, o + len))).equals(body)).toBe(true);
    }
    const w = new PackWriter();
    const hist = buildHistory(3, true, w);
    // The newest version whole and stored; an older one as a delta against it (altBase), as a push lays out a tip.
    const tip = Buffer.concat([textVersion(3000, 9, 3), xorshiftBytes(5, 70_000)]);
    const tipOid = hashObject('blob', tip);
    w.addStored(tipOid, 'blob', tip);
    const older = Buffer.concat([textVersion(3000, 8, 3), xorshiftBytes(5, 70_000)]);
    const olderOid = hashObject('blob', older);
    w.add(olderOid, 'blob', older, hist[2].blob, tipOid);
    const r = w.finish();
    const ranges = w.storedRanges.get(tipOid)!;
    expect(ranges.length).toBeGreaterThan(1);
    expect(Buffer.concat(ranges.map(([o, len]) => r.pack.subarray(o, o + len))).equals(tip)).toBe(true);
    const repo = newRepo('stored');
    const base = install(repo, r);
    const lines = verifyPack(repo, `${base}.idx`);
    expect(lines.find((l) => l.oid === olderOid)?.depth).toBe(1);
    git(repo, ['fsck', '--strict', '--no-dangling', '--no-reflogs', '--unreachable']);
    expect(git(repo, ['cat-file', 'blob', tipOid]).equals(tip)).toBe(true);
    expect(git(repo, ['cat-file', 'blob', olderOid]).equals(older)).toBe(true);
    const reader = new PackReader(bufferAccess(r.pack), PackIndex.parse(r.idx));
    expect((await reader.read(tipOid)).body.equals(tip)).toBe(true);
  });

  it('caps delta chains at depth 50', () => {
    const w = new PackWriter();
    let prev: string | undefined;
    const blobs: string[] = [];
    for (let v = 0; v < 60; v++) {
      const body = Buffer.concat([textVersion(60, 0, 4), Buffer.from(`version ${v}\n`)]);
      const oid = hashObject('blob', body);
      w.add(oid, 'blob', body, prev);
      blobs.push(oid);
      prev = oid;
    }
    const r = w.finish();
    const repo = newRepo('depth');
    const lines = verifyPack(repo, `${install(repo, r)}.idx`);
    const depth = new Map(lines.map((l) => [l.oid, l.depth]));
    expect(depth.get(blobs[50])).toBe(50);
    expect(depth.get(blobs[51])).toBe(0);
    expect(depth.get(blobs[59])).toBe(8);
  });

  it('guards its inputs', () => {
    const w = new PackWriter();
    const body = Buffer.from('x\n');
    const oid = hashObject('blob', body);
    expect(() => w.add('ab'.repeat(20), 'blob', body)).toThrow(/hashes to/);
    expect(() => w.add('nope', 'blob', body)).toThrow(/bad oid/);
    w.add(oid, 'blob', body, 'cd'.repeat(20)); // unknown base: written whole
    w.add(oid, 'blob', body); // duplicate: ignored
    expect(w.count).toBe(1);
    const r = w.finish();
    expect(() => w.add(oid, 'blob', body)).toThrow(/after finish/);
    expect(() => w.finish()).toThrow(/twice/);
    expect(PackIndex.parse(r.idx).offsetOf(oid)).toBe(12);
  });
});

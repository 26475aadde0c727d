/**
 * Pack files (v2) and their idx (v2), read and written in memory. The remote end of a git sync is a bare
 * repository we only reach over SFTP, so packs are read by ranged reads through the idx (never whole), and the
 * packs we upload are built here, with our own deltas, so that a push moves compressed history, not loose files.
 *
 * Formats: gitformat-pack(5). No I/O here: the caller supplies a RandomAccess and writes the returned bytes.
 */
import { createHash } from 'node:crypto';
import { crc32, deflateSync, inflateSync } from 'node:zlib';
import { hashObject, isOid, type GitObject, type ObjectType } from './objects.js';

export interface RandomAccess {
  readonly size: number;
  /** Exactly `length` bytes at `pos`. */
  read(pos: number, length: number): Promise<Buffer>;
}

export function bufferAccess(buf: Buffer): RandomAccess {
  return {
    size: buf.length,
    async read(pos, length) {
      if (pos < 0 || length < 0 || pos + length > buf.length) throw new Error(`read ${pos}+${length} outside ${buf.length} bytes`);
      return buf.subarray(pos, pos + length);
    },
  };
}

// Entry type codes in a pack entry header.
export const PACK_TYPE = { commit: 1, tree: 2, blob: 3, tag: 4, ofsDelta: 6, refDelta: 7 } as const;
const TYPE_OF_CODE: Record<number, ObjectType | undefined> = { 1: 'commit', 2: 'tree', 3: 'blob', 4: 'tag' };

const IDX_MAGIC = 0xff744f63; // "\377tOc"
const FANOUT = 8;
const OIDS = FANOUT + 256 * 4;
const MSB = 0x80000000;
const TWO32 = 0x100000000;

function sha1(parts: readonly Buffer[]): Buffer {
  const h = createHash('sha1');
  for (const p of parts) h.update(p);
  return h.digest();
}

export class PackIndex {
  readonly count: number;
  readonly packChecksum: string;
  private readonly crcs: number;
  private readonly offs: number;
  private readonly large: number;
  private sorted?: Float64Array;

  private constructor(private readonly buf: Buffer, count: number) {
    this.count = count;
    this.crcs = OIDS + 20 * count;
    this.offs = this.crcs + 4 * count;
    this.large = this.offs + 4 * count;
    this.packChecksum = buf.toString('hex', buf.length - 40, buf.length - 20);
  }

  static parse(buf: Buffer): PackIndex {
    if (buf.length < OIDS + 40) throw new Error(`pack idx: too short (${buf.length} bytes)`);
    if (buf.readUInt32BE(0) !== IDX_MAGIC) throw new Error('pack idx: not a version 2 idx (v1 idx files are not supported)');
    const version = buf.readUInt32BE(4);
    if (version !== 2) throw new Error(`pack idx: unsupported version ${version}`);
    let prev = 0;
    for (let i = 0; i < 256; i++) {
      const v = buf.readUInt32BE(FANOUT + 4 * i);
      if (v < prev) throw new Error('pack idx: fanout table not monotonic');
      prev = v;
    }
    const count = prev;
    const fixed = OIDS + 28 * count + 40;
    const largeBytes = buf.length - fixed;
    if (largeBytes < 0 || largeBytes % 8 !== 0) throw new Error(`pack idx: size ${buf.length} does not fit ${count} objects`);
    const nLarge = largeBytes / 8;
    const want = buf.subarray(buf.length - 20);
    if (!sha1([buf.subarray(0, buf.length - 20)]).equals(want)) throw new Error('pack idx: checksum mismatch');
    const idx = new PackIndex(buf, count);
    // Lookups binary-search within fanout ranges, so a disordered table would silently miss objects: check once.
    for (let i = 1; i < count; i++) {
      if (buf.compare(buf, OIDS + 20 * (i - 1), OIDS + 20 * i, OIDS + 20 * i, OIDS + 20 * (i + 1)) <= 0) {
        throw new Error('pack idx: object names not strictly sorted');
      }
    }
    for (let i = 0, b = 0; i < count; i++) {
      const first = buf[OIDS + 20 * i];
      while (b < first) b++;
      if (i < (b === 0 ? 0 : buf.readUInt32BE(FANOUT + 4 * (b - 1))) || i >= buf.readUInt32BE(FANOUT + 4 * b)) {
        throw new Error('pack idx: fanout does not match object names');
      }
      const v = buf.readUInt32BE(idx.offs + 4 * i);
      if (v & MSB && (v & ~MSB) >>> 0 >= nLarge) throw new Error('pack idx: large offset index out of range');
    }
    return idx;
  }

  private offsetAt(i: number): number {
    const v = this.buf.readUInt32BE(this.offs + 4 * i);
    if (!(v & MSB)) return v;
    const at = this.large + 8 * ((v & ~MSB) >>> 0);
    return this.buf.readUInt32BE(at) * TWO32 + this.buf.readUInt32BE(at + 4);
  }

  private find(oid: string): number {
    if (!isOid(oid)) return -1;
    const want = Buffer.from(oid, 'hex');
    const first = want[0];
    let lo = first === 0 ? 0 : this.buf.readUInt32BE(FANOUT + 4 * (first - 1));
    let hi = this.buf.readUInt32BE(FANOUT + 4 * first);
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.buf.compare(want, 0, 20, OIDS + 20 * mid, OIDS + 20 * mid + 20);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    return -1;
  }

  offsetOf(oid: string): number | undefined {
    const i = this.find(oid);
    return i < 0 ? undefined : this.offsetAt(i);
  }

  crc32Of(oid: string): number | undefined {
    const i = this.find(oid);
    return i < 0 ? undefined : this.buf.readUInt32BE(this.crcs + 4 * i);
  }

  has(oid: string): boolean {
    return this.find(oid) >= 0;
  }

  oids(): string[] {
    const out = new Array<string>(this.count);
    for (let i = 0; i < this.count; i++) out[i] = this.buf.toString('hex', OIDS + 20 * i, OIDS + 20 * i + 20);
    return out;
  }

  /** End of the entry that starts at `offset` (next larger offset, or packSize-20) */
  entryEnd(offset: number, packSize: number): number {
    if (!this.sorted) {
      // Built on first use: a reader that never needs entry bounds should not pay for sorting millions of offsets.
      const s = new Float64Array(this.count);
      for (let i = 0; i < this.count; i++) s[i] = this.offsetAt(i);
      this.sorted = s.sort();
    }
    const s = this.sorted;
    let lo = 0;
    let hi = s.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (s[mid] <= offset) lo = mid + 1;
      else hi = mid;
    }
    const end = lo < s.length ? s[lo] : packSize - 20;
    if (end <= offset) throw new Error(`pack: offset ${offset} is past the last entry (pack size ${packSize})`);
    return end;
  }
}

export function writeIndex(entries: { oid: string; offset: number; crc32: number }[], packChecksum: Buffer): Buffer {
  if (packChecksum.length !== 20) throw new Error('pack idx: pack checksum must be 20 bytes');
  for (const e of entries) if (!isOid(e.oid)) throw new Error(`pack idx: bad oid ${e.oid}`);
  // Lowercase hex sorts like the raw bytes, which is the order git's binary search expects.
  const sorted = [...entries].sort((a, b) => (a.oid < b.oid ? -1 : a.oid > b.oid ? 1 : 0));
  const n = sorted.length;
  // git puts an offset in the large table only when it does not fit 31 bits (pack_idx_option.off32_limit).
  const nLarge = sorted.reduce((k, e) => k + (e.offset >= MSB ? 1 : 0), 0);
  const buf = Buffer.alloc(OIDS + 28 * n + 8 * nLarge + 40);
  buf.writeUInt32BE(IDX_MAGIC, 0);
  buf.writeUInt32BE(2, 4);
  const counts = new Uint32Array(256);
  const crcs = OIDS + 20 * n;
  const offs = crcs + 4 * n;
  const large = offs + 4 * n;
  let li = 0;
  for (let i = 0; i < n; i++) {
    const e = sorted[i];
    if (i > 0 && e.oid === sorted[i - 1].oid) throw new Error(`pack idx: duplicate object ${e.oid}`);
    if (!Number.isSafeInteger(e.offset) || e.offset < 0) throw new Error(`pack idx: bad offset ${e.offset}`);
    buf.write(e.oid, OIDS + 20 * i, 'hex');
    counts[buf[OIDS + 20 * i]]++;
    buf.writeUInt32BE(e.crc32 >>> 0, crcs + 4 * i);
    if (e.offset < MSB) {
      buf.writeUInt32BE(e.offset, offs + 4 * i);
    } else {
      buf.writeUInt32BE((MSB | li) >>> 0, offs + 4 * i);
      buf.writeUInt32BE(Math.floor(e.offset / TWO32), large + 8 * li);
      buf.writeUInt32BE(e.offset % TWO32, large + 8 * li + 4);
      li++;
    }
  }
  let acc = 0;
  for (let b = 0; b < 256; b++) {
    acc += counts[b];
    buf.writeUInt32BE(acc, FANOUT + 4 * b);
  }
  const trailer = large + 8 * nLarge;
  packChecksum.copy(buf, trailer);
  sha1([buf.subarray(0, trailer + 20)]).copy(buf, trailer + 20);
  return buf;
}

// ---------------------------------------------------------------------------------------------------------------
// Deltas

function readVarint(d: Buffer, p: number): [number, number] {
  let v = 0;
  let mult = 1;
  for (let i = 0; ; i++) {
    if (p >= d.length || i > 7) throw new Error('delta: truncated or oversized size header');
    const c = d[p++];
    v += (c & 0x7f) * mult;
    mult *= 128;
    if (!(c & 0x80)) return [v, p];
  }
}

function writeVarint(out: Buffer, o: number, v: number): number {
  while (v >= 0x80) {
    out[o++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[o++] = v;
  return o;
}

export function applyDelta(base: Buffer, delta: Buffer): Buffer {
  let [srcSize, p] = readVarint(delta, 0);
  let dstSize: number;
  [dstSize, p] = readVarint(delta, p);
  if (srcSize !== base.length) throw new Error(`delta: expects a ${srcSize}-byte base, got ${base.length}`);
  const out = Buffer.allocUnsafe(dstSize);
  let o = 0;
  while (p < delta.length) {
    const cmd = delta[p++];
    if (cmd & 0x80) {
      let off = 0;
      let size = 0;
      // Bit i of cmd says whether byte i of the little-endian offset (bits 0-3) or size (bits 4-6) is present.
      for (let i = 0; i < 4; i++) if (cmd & (1 << i)) off += delta[p++] * 2 ** (8 * i);
      for (let i = 0; i < 3; i++) if (cmd & (0x10 << i)) size += delta[p++] * 2 ** (8 * i);
      if (p > delta.length) throw new Error('delta: truncated copy op');
      if (size === 0) size = 0x10000;
      if (off + size > base.length) throw new Error(`delta: copy ${off}+${size} outside the ${base.length}-byte base`);
      if (o + size > dstSize) throw new Error('delta: result larger than its header says');
      base.copy(out, o, off, off + size);
      o += size;
    } else if (cmd !== 0) {
      if (p + cmd > delta.length) throw new Error('delta: truncated insert op');
      if (o + cmd > dstSize) throw new Error('delta: result larger than its header says');
      delta.copy(out, o, p, p + cmd);
      p += cmd;
      o += cmd;
    } else {
      throw new Error('delta: reserved opcode 0');
    }
  }
  if (o !== dstSize) throw new Error(`delta: result is ${o} bytes, header says ${dstSize}`);
  return out;
}

// Block size of the base index: a match shorter than this is never found, and each target position costs one
// rolling-hash step. 16 is git's RABIN_WINDOW.
const W = 16;
const HASH_MUL = 0x01000193;
let HASH_OUT = 1; // HASH_MUL^(W-1) mod 2^32: the weight of the byte that leaves the window.
for (let i = 0; i < W - 1; i++) HASH_OUT = Math.imul(HASH_OUT, HASH_MUL);
// Candidates tried per target position; bounds the cost on repetitive bases where one hash has many blocks.
const MAX_CANDIDATES = 64;
// A match this long is taken without looking at further candidates.
const GOOD_ENOUGH = 4096;

function windowHash(b: Buffer, p: number): number {
  let h = 0;
  for (let i = 0; i < W; i++) h = (Math.imul(h, HASH_MUL) + b[p + i]) | 0;
  return h;
}

/**
 * A git-format delta turning `base` into `target`, or null when it would not pay (over half the target's size).
 * Like git's diff-delta: index the base's aligned 16-byte blocks by a rolling hash, slide that hash over the
 * target, and at a hit extend the match both ways; everything unmatched becomes insert ops.
 */
export function createDelta(base: Buffer, target: Buffer, maxSize = Math.floor(target.length / 2)): Buffer | null {
  if (base.length < 2 * W || target.length < W || base.length >= TWO32) return null;
  const blen = base.length;
  const tlen = target.length;

  const nBlocks = Math.floor(blen / W);
  let bits = 4;
  while (1 << bits < nBlocks && bits < 30) bits++;
  const shift = 32 - bits;
  const head = new Int32Array(1 << bits).fill(-1);
  const next = new Int32Array(nBlocks);
  const hashes = new Int32Array(nBlocks);
  for (let i = 0; i < nBlocks; i++) hashes[i] = windowHash(base, i * W);
  // Inserted back to front so each chain lists blocks in ascending order; of a run of identical blocks only the
  // first is indexed, since extending a match forward covers the rest of the run anyway.
  for (let i = nBlocks - 1; i >= 0; i--) {
    if (i > 0 && hashes[i] === hashes[i - 1]) continue;
    const slot = Math.imul(hashes[i], 0x9e3779b1) >>> shift;
    next[i] = head[slot];
    head[slot] = i;
  }

  const cap = maxSize;
  const out = Buffer.allocUnsafe(cap + 8);
  let o = writeVarint(out, 0, blen);
  o = writeVarint(out, o, tlen);
  if (o > cap) return null;

  let insStart = 0;
  // Appends inserts for target[insStart, end); false when the delta outgrows `cap`.
  const flushInserts = (end: number): boolean => {
    let n = end - insStart;
    if (o + n + Math.ceil(n / 127) > cap) return false;
    while (n > 0) {
      const k = n > 127 ? 127 : n;
      out[o++] = k;
      target.copy(out, o, insStart, insStart + k);
      o += k;
      insStart += k;
      n -= k;
    }
    return true;
  };

  let p = 0;
  let h = windowHash(target, 0);
  while (p + W <= tlen) {
    let bestLen = 0;
    let bestC = 0;
    for (let b = head[Math.imul(h, 0x9e3779b1) >>> shift], k = 0; b >= 0 && k < MAX_CANDIDATES; b = next[b], k++) {
      if (hashes[b] !== h) continue;
      const c = b * W;
      const maxL = Math.min(blen - c, tlen - p);
      let l = 0;
      while (l < maxL && base[c + l] === target[p + l]) l++;
      if (l > bestLen) {
        bestLen = l;
        bestC = c;
        if (l >= GOOD_ENOUGH) break;
      }
    }
    if (bestLen < W) {
      if (p + W < tlen) h = (Math.imul(h - Math.imul(target[p], HASH_OUT), HASH_MUL) + target[p + W]) | 0;
      p++;
      // Give up early on unrelated data instead of building a delta nobody will use.
      const pending = p - insStart;
      if (o + pending + Math.ceil(pending / 127) > cap) return null;
      continue;
    }
    // The match may start before the block boundary: reclaim bytes that were about to be inserted.
    let c = bestC;
    let q = p;
    let len = bestLen;
    while (q > insStart && c > 0 && base[c - 1] === target[q - 1]) {
      c--;
      q--;
      len++;
    }
    if (!flushInserts(q)) return null;
    for (let done = 0; done < len; ) {
      // 0x10000 per op, as git writes; encoded as size 0.
      const size = Math.min(len - done, 0x10000);
      const off = c + done;
      if (o + 8 > cap) return null;
      const at = o++;
      let cmd = 0x80;
      for (let i = 0; i < 4; i++) {
        const byte = Math.floor(off / 2 ** (8 * i)) & 0xff;
        if (byte) {
          cmd |= 1 << i;
          out[o++] = byte;
        }
      }
      if (size !== 0x10000) {
        for (let i = 0; i < 3; i++) {
          const byte = (size >>> (8 * i)) & 0xff;
          if (byte) {
            cmd |= 0x10 << i;
            out[o++] = byte;
          }
        }
      }
      out[at] = cmd;
      done += size;
    }
    p = q + len;
    insStart = p;
    if (p + W <= tlen) h = windowHash(target, p);
  }
  if (!flushInserts(tlen)) return null;
  return Buffer.from(out.subarray(0, o));
}

// ---------------------------------------------------------------------------------------------------------------
// Pack entries

export function encodeEntryHeader(typeCode: number, size: number): Buffer {
  const bytes: number[] = [];
  let c = (typeCode << 4) | (size & 15);
  let rest = Math.floor(size / 16);
  while (rest > 0) {
    bytes.push(c | 0x80);
    c = rest & 0x7f;
    rest = Math.floor(rest / 128);
  }
  bytes.push(c);
  return Buffer.from(bytes);
}

/** OFS_DELTA distance: big-endian 7-bit groups where each continuation adds one, so no value has two spellings. */
export function encodeOfsDistance(rel: number): Buffer {
  const bytes = [rel & 127];
  let rest = Math.floor(rel / 128);
  while (rest > 0) {
    rest -= 1;
    bytes.unshift(128 | (rest & 127));
    rest = Math.floor(rest / 128);
  }
  return Buffer.from(bytes);
}

interface RawEntry {
  code: number;
  size: number;
  data: Buffer;
  baseOffset?: number;
  baseOid?: string;
}

function parseEntry(raw: Buffer, offset: number): RawEntry {
  let p = 0;
  const at = (): number => {
    if (p >= raw.length) throw new Error(`pack: truncated entry header at offset ${offset}`);
    return raw[p++];
  };
  let c = at();
  const code = (c >> 4) & 7;
  let size = c & 15;
  let mult = 16;
  while (c & 0x80) {
    c = at();
    size += (c & 0x7f) * mult;
    mult *= 128;
  }
  const entry: RawEntry = { code, size, data: raw };
  if (code === PACK_TYPE.ofsDelta) {
    c = at();
    let rel = c & 127;
    while (c & 128) {
      c = at();
      rel = (rel + 1) * 128 + (c & 127);
    }
    if (rel <= 0 || rel > offset - 12) throw new Error(`pack: bad delta base distance ${rel} at offset ${offset}`);
    entry.baseOffset = offset - rel;
  } else if (code === PACK_TYPE.refDelta) {
    if (p + 20 > raw.length) throw new Error(`pack: truncated entry header at offset ${offset}`);
    entry.baseOid = raw.toString('hex', p, p + 20);
    p += 20;
  } else if (!TYPE_OF_CODE[code]) {
    throw new Error(`pack: unknown entry type ${code} at offset ${offset}`);
  }
  try {
    entry.data = inflateSync(raw.subarray(p));
  } catch (err) {
    throw new Error(`pack: corrupt data at offset ${offset} (${(err as Error).message})`, { cause: err });
  }
  if (entry.data.length !== size) throw new Error(`pack: entry at offset ${offset} inflates to ${entry.data.length} bytes, header says ${size}`);
  return entry;
}

// A corrupt pack could chain REF_DELTAs in a circle; git's own limit on real chains is far below this.
const MAX_CHAIN = 10_000;

export interface PackReaderOptions {
  /** Bytes of resolved objects kept for reuse as delta bases. */
  cacheBytes?: number;
}

/** Reads objects out of one pack by ranged reads (the pack may be remote over SFTP: batch/pipeline-friendly, no whole-pack reads). */
export class PackReader {
  private readonly cache = new Map<number, GitObject>();
  private cached = 0;
  private readonly cacheBytes: number;
  private readonly inflight = new Map<number, Promise<RawEntry>>();

  constructor(
    private readonly pack: RandomAccess,
    private readonly idx: PackIndex,
    private readonly external?: (oid: string) => Promise<GitObject | null>,
    opts: PackReaderOptions = {},
  ) {
    this.cacheBytes = opts.cacheBytes ?? 64 * 1024 * 1024;
  }

  has(oid: string): boolean {
    return this.idx.has(oid);
  }

  /** Compares the pack's trailer with the checksum the idx recorded: catches an idx paired with the wrong pack. */
  async verifyTrailer(): Promise<void> {
    if (this.pack.size < 32) throw new Error('pack: too short');
    const t = await this.pack.read(this.pack.size - 20, 20);
    if (t.toString('hex') !== this.idx.packChecksum) throw new Error('pack: trailer does not match its idx');
  }

  /**
   * Object content with ofs/ref deltas resolved, sha1 verified against `oid`; caches resolved bases (bounded LRU).
   * Throws if missing. The returned body may be shared with the cache: do not mutate it.
   */
  async read(oid: string): Promise<GitObject> {
    const offset = this.idx.offsetOf(oid);
    if (offset === undefined) throw new Error(`pack: object ${oid} not in this pack`);
    const obj = await this.resolve(offset);
    const got = hashObject(obj.type, obj.body);
    if (got !== oid) throw new Error(`pack: object at offset ${offset} hashes to ${got}, expected ${oid}`);
    return obj;
  }

  private async resolve(offset: number): Promise<GitObject> {
    // Walk down the chain iteratively (chains can be thousands deep in hand-made packs), then apply outwards.
    const deltas: Array<{ offset: number; delta: Buffer }> = [];
    let base: GitObject | undefined;
    let off = offset;
    for (;;) {
      if (deltas.length > MAX_CHAIN) throw new Error(`pack: delta chain at offset ${offset} longer than ${MAX_CHAIN}`);
      const hit = this.cacheGet(off);
      if (hit) {
        base = hit;
        break;
      }
      const e = await this.entry(off);
      const type = TYPE_OF_CODE[e.code];
      if (type) {
        base = { type, body: e.data };
        this.cachePut(off, base);
        break;
      }
      deltas.push({ offset: off, delta: e.data });
      if (e.baseOffset !== undefined) {
        off = e.baseOffset;
        continue;
      }
      const baseOid = e.baseOid!;
      const inPack = this.idx.offsetOf(baseOid);
      if (inPack !== undefined) {
        off = inPack;
        continue;
      }
      const ext = this.external ? await this.external(baseOid) : null;
      if (!ext) throw new Error(`pack: delta base ${baseOid} (for offset ${off}) is neither in the pack nor available`);
      base = ext;
      break;
    }
    for (let i = deltas.length - 1; i >= 0; i--) {
      base = { type: base.type, body: applyDelta(base.body, deltas[i].delta) };
      this.cachePut(deltas[i].offset, base);
    }
    return base;
  }

  private entry(offset: number): Promise<RawEntry> {
    // Concurrent reads of objects sharing a base would otherwise fetch the same range once each.
    let pending = this.inflight.get(offset);
    if (!pending) {
      const end = this.idx.entryEnd(offset, this.pack.size);
      pending = this.pack.read(offset, end - offset).then((raw) => parseEntry(raw, offset));
      this.inflight.set(offset, pending);
      const clear = (): void => void this.inflight.delete(offset);
      pending.then(clear, clear);
    }
    return pending;
  }

  private cacheGet(offset: number): GitObject | undefined {
    const hit = this.cache.get(offset);
    if (hit) {
      this.cache.delete(offset);
      this.cache.set(offset, hit);
    }
    return hit;
  }

  private cachePut(offset: number, obj: GitObject): void {
    // One huge object would flush everything else for a single use; leave it out.
    if (obj.body.length > this.cacheBytes / 4 || this.cache.has(offset)) return;
    this.cache.set(offset, obj);
    this.cached += obj.body.length;
    for (const [k, v] of this.cache) {
      if (this.cached <= this.cacheBytes) break;
      this.cache.delete(k);
      this.cached -= v.body.length;
    }
  }
}

export interface PackWriterOptions {
  /** Bytes of added bodies kept as possible delta bases; a base evicted from this is written whole instead. */
  baseCacheBytes?: number;
  /** Longest delta chain (git's pack.depth default is 50). */
  maxDepth?: number;
  /** zlib level. */
  level?: number;
}

/** zlib's checksum (RFC 1950), which node:zlib does not expose. */
export function adler32(buf: Buffer): number {
  let a = 1;
  let b = 0;
  // Reduced every 5,552 bytes, as zlib does: the most that keeps the sums within 32 bits.
  for (let i = 0; i < buf.length; ) {
    const end = Math.min(buf.length, i + 5552);
    for (; i < end; i++) {
      a += buf[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

const STORED_BLOCK = 65535;

/**
 * A zlib stream of *stored* blocks: the body's bytes appear in it as they are, at offsets known in advance, so the
 * server can copy a file out of the pack with copy-data. Returns the stream and where the body's bytes sit in it.
 */
export function storedZlib(body: Buffer): { stream: Buffer; ranges: Array<[number, number]> } {
  const parts: Buffer[] = [Buffer.from([0x78, 0x01])];
  const ranges: Array<[number, number]> = [];
  let pos = 2;
  let off = 0;
  do {
    const len = Math.min(STORED_BLOCK, body.length - off);
    const last = off + len >= body.length;
    const hdr = Buffer.alloc(5);
    hdr[0] = last ? 1 : 0;
    hdr.writeUInt16LE(len, 1);
    hdr.writeUInt16LE(~len & 0xffff, 3);
    parts.push(hdr, body.subarray(off, off + len));
    pos += 5;
    if (len > 0) ranges.push([pos, len]);
    pos += len;
    off += len;
  } while (off < body.length);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32BE(adler32(body), 0);
  parts.push(trailer);
  return { stream: Buffer.concat(parts), ranges };
}

/** Builds a pack (v2) in memory plus its idx. Objects are added in an order where a delta base is always added before the objects that use it. */
export class PackWriter {
  private readonly chunks: Buffer[] = [];
  private pos = 12;
  private readonly entries: Array<{ oid: string; offset: number; crc32: number }> = [];
  private readonly info = new Map<string, { offset: number; depth: number; type: ObjectType }>();
  private readonly bodies = new Map<string, Buffer>();
  private bodyBytes = 0;
  private finished = false;
  private readonly baseCacheBytes: number;
  private readonly maxDepth: number;
  private readonly level: number;

  constructor(opts: PackWriterOptions = {}) {
    this.baseCacheBytes = opts.baseCacheBytes ?? 256 * 1024 * 1024;
    this.maxDepth = opts.maxDepth ?? 50;
    this.level = opts.level ?? 6;
  }

  get count(): number {
    return this.entries.length;
  }

  /** Where the raw bytes of objects added with addStored sit in the pack: [offset, length] runs, in order. */
  readonly storedRanges = new Map<string, Array<[number, number]>>();

  /**
   * A whole object whose zlib stream is stored blocks (see storedZlib): bigger on disk, the same on a compressed
   * link, and its bytes can be copied out of the pack on the server.
   */
  addStored(oid: string, type: ObjectType, body: Buffer): void {
    if (this.finished) throw new Error('pack writer: add after finish');
    if (this.info.has(oid)) return;
    this.checkNew(oid, type, body);
    const offset = this.pos;
    const header = encodeEntryHeader(PACK_TYPE[type], body.length);
    const { stream, ranges } = storedZlib(body);
    this.push(oid, type, body, offset, 0, [header, stream]);
    this.storedRanges.set(oid, ranges.map(([o, n]) => [offset + header.length + o, n]));
  }

  private checkNew(oid: string, type: ObjectType, body: Buffer): void {
    if (!isOid(oid)) throw new Error(`pack writer: bad oid ${oid}`);
    // A wrong oid here would end up in a remote repository as corruption that git only notices much later.
    const actual = hashObject(type, body);
    if (actual !== oid) throw new Error(`pack writer: ${type} hashes to ${actual}, not ${oid}`);
    if (this.entries.length >= 0xffffffff) throw new Error('pack writer: too many objects');
  }

  /** Delta against `base` if it is usable and the delta pays. */
  private deltaAgainst(base: string | undefined, type: ObjectType, body: Buffer): { delta: Buffer; base: { offset: number; depth: number } } | undefined {
    const b = base === undefined ? undefined : this.info.get(base);
    // The reader gives a delta its base's type, so a base of another type cannot be used.
    if (!b || b.type !== type || b.depth >= this.maxDepth) return undefined;
    const baseBody = this.bodies.get(base!);
    if (!baseBody) return undefined;
    this.bodies.delete(base!);
    this.bodies.set(base!, baseBody);
    const delta = createDelta(baseBody, body);
    return delta ? { delta, base: b } : undefined;
  }

  /**
   * deltaBase (and altBase): oids of objects already added; an OFS_DELTA against the one giving the smaller delta is
   * written if createDelta pays, else the whole object.
   */
  add(oid: string, type: ObjectType, body: Buffer, deltaBase?: string, altBase?: string): void {
    if (this.finished) throw new Error('pack writer: add after finish');
    if (this.info.has(oid)) return;
    this.checkNew(oid, type, body);
    const offset = this.pos;
    let depth = 0;
    let parts: Buffer[] | undefined;
    const a = this.deltaAgainst(deltaBase, type, body);
    const b = altBase !== undefined && altBase !== deltaBase ? this.deltaAgainst(altBase, type, body) : undefined;
    const d = a && b ? (b.delta.length < a.delta.length ? b : a) : a ?? b;
    if (d) {
      parts = [encodeEntryHeader(PACK_TYPE.ofsDelta, d.delta.length), encodeOfsDistance(offset - d.base.offset), deflateSync(d.delta, { level: this.level })];
      depth = d.base.depth + 1;
    }
    parts ??= [encodeEntryHeader(PACK_TYPE[type], body.length), deflateSync(body, { level: this.level })];
    this.push(oid, type, body, offset, depth, parts);
  }

  private push(oid: string, type: ObjectType, body: Buffer, offset: number, depth: number, parts: Buffer[]): void {
    let crc = 0;
    for (const p of parts) {
      crc = crc32(p, crc);
      this.chunks.push(p);
      this.pos += p.length;
    }
    this.entries.push({ oid, offset, crc32: crc });
    this.info.set(oid, { offset, depth, type });
    if (depth < this.maxDepth && body.length <= this.baseCacheBytes) {
      this.bodies.set(oid, body);
      this.bodyBytes += body.length;
      for (const [k, v] of this.bodies) {
        if (this.bodyBytes <= this.baseCacheBytes) break;
        this.bodies.delete(k);
        this.bodyBytes -= v.length;
      }
    }
  }

  /** Pack bytes, idx bytes, and the pack name (hex of the pack trailer sha1, as in pack-<name>.pack). */
  finish(): { pack: Buffer; idx: Buffer; name: string } {
    if (this.finished) throw new Error('pack writer: finish called twice');
    this.finished = true;
    this.bodies.clear();
    const header = Buffer.alloc(12);
    header.write('PACK', 0, 'latin1');
    header.writeUInt32BE(2, 4);
    header.writeUInt32BE(this.entries.length, 8);
    const trailer = sha1([header, ...this.chunks]);
    const pack = Buffer.concat([header, ...this.chunks, trailer]);
    this.chunks.length = 0;
    return { pack, idx: writeIndex(this.entries, trailer), name: trailer.toString('hex') };
  }
}

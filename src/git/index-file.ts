import { createHash } from 'node:crypto';

/**
 * Codec for git's index file (.git/index), versions 2 and 3. We read and rewrite the index of a remote repository
 * over SFTP, where no git runs, so anything we do not fully understand is refused rather than guessed at: a
 * misread index either loses staged work or makes git on the remote see every file as modified.
 */

export interface IndexEntry {
  /** POSIX path relative to the work tree, utf8. */
  path: string;
  /** 40 hex digits (SHA-1). */
  oid: string;
  /** 0o100644, 0o100755, 0o120000 or 0o160000. */
  mode: number;
  /** File size modulo 2^32, as git stores it. */
  size: number;
  mtimeSeconds: number;
  mtimeNanoseconds: number;
  ctimeSeconds: number;
  ctimeNanoseconds: number;
  dev: number;
  ino: number;
  uid: number;
  gid: number;
  /** 0 for a merged entry, 1..3 for the base/ours/theirs sides of a conflict. */
  stage: number;
  assumeValid: boolean;
  /** Extended flags: only a version 3 index can hold them. */
  skipWorktree: boolean;
  intentToAdd: boolean;
}

export interface GitIndex {
  version: 2 | 3;
  entries: IndexEntry[];
  /** Extension signatures found, in file order, e.g. ['TREE', 'UNTR']. */
  extensions: string[];
}

export type IndexFormatReason =
  | 'signature'
  | 'version'
  | 'checksum'
  | 'hash-algorithm'
  | 'truncated'
  | 'entry'
  | 'path-encoding'
  | 'split-index'
  | 'sparse-index'
  | 'required-extension'
  | 'extension'
  | 'invalid-entry';

export class IndexFormatError extends Error {
  readonly reason: IndexFormatReason;
  constructor(reason: IndexFormatReason, message: string) {
    super(message);
    this.name = 'IndexFormatError';
    this.reason = reason;
  }
}

const SIGNATURE = 'DIRC';
const HEADER_SIZE = 12;
const HASH_SIZE = 20;
/** ctime, mtime (8 bytes each), dev, ino, mode, uid, gid, size (4 each), oid, flags (2). */
const ENTRY_FIXED_SIZE = 62;
const NAME_MASK = 0x0fff;

const FLAG_ASSUME_VALID = 0x8000;
const FLAG_EXTENDED = 0x4000;
const FLAG_STAGE_MASK = 0x3000;
const FLAG_STAGE_SHIFT = 12;
const XFLAG_SKIP_WORKTREE = 0x4000;
const XFLAG_INTENT_TO_ADD = 0x2000;
const XFLAG_KNOWN = XFLAG_SKIP_WORKTREE | XFLAG_INTENT_TO_ADD;

// fatal: a path that is not valid UTF-8 would come back from a rewrite as U+FFFD, i.e. as a different file.
const utf8 = new TextDecoder('utf-8', { fatal: true });

export function parseIndex(buf: Buffer): GitIndex {
  if (buf.length < HEADER_SIZE + HASH_SIZE) {
    throw new IndexFormatError('truncated', `index is ${buf.length} bytes, shorter than a header and checksum`);
  }
  const sig = buf.toString('latin1', 0, 4);
  if (sig !== SIGNATURE) throw new IndexFormatError('signature', `not a git index (signature ${JSON.stringify(sig)})`);
  const version = buf.readUInt32BE(4);
  if (version === 4) {
    throw new IndexFormatError('version', 'index version 4 (path-compressed) is not supported; run `git update-index --index-version 3` on that repository');
  }
  if (version !== 2 && version !== 3) throw new IndexFormatError('version', `unknown index version ${version}`);

  const body = buf.subarray(0, buf.length - HASH_SIZE);
  const stored = buf.subarray(buf.length - HASH_SIZE);
  // git >= 2.40 with index.skipHash writes zeros instead of a checksum, and git itself accepts that.
  if (!stored.every((b) => b === 0) && !createHash('sha1').update(body).digest().equals(stored)) {
    throw checksumFailure(buf);
  }
  return parseBody(buf, version);
}

/** Says why the checksum does not match, when that can be told apart from plain corruption. */
function checksumFailure(buf: Buffer): IndexFormatError {
  if (buf.length >= HEADER_SIZE + 32) {
    const tail = buf.subarray(buf.length - 32);
    if (createHash('sha256').update(buf.subarray(0, buf.length - 32)).digest().equals(tail)) {
      return new IndexFormatError('hash-algorithm', 'index of a SHA-256 repository is not supported');
    }
  }
  try {
    parseBody(buf, buf.readUInt32BE(4) as 2 | 3);
  } catch (err) {
    // With the checksum gone, only "the entries run past the end" says anything more than "corrupt".
    if (err instanceof IndexFormatError && err.reason === 'truncated') return err;
  }
  return new IndexFormatError('checksum', 'index checksum mismatch: the file is corrupt');
}

function parseBody(buf: Buffer, version: 2 | 3): GitIndex {
  const end = buf.length - HASH_SIZE;
  const count = buf.readUInt32BE(8);
  const entries: IndexEntry[] = [];
  // Problems inside an entry wait until the extensions are read: a split index stores replaced entries with empty
  // names, and "split index not supported" is the useful thing to say about it.
  let problem: IndexFormatError | undefined;
  const defer = (err: IndexFormatError): void => {
    problem ??= err;
  };
  let off = HEADER_SIZE;
  for (let i = 0; i < count; i++) {
    if (off + ENTRY_FIXED_SIZE > end) throw truncated(i, count);
    const flags = buf.readUInt16BE(off + 60);
    let nameStart = off + ENTRY_FIXED_SIZE;
    let xflags = 0;
    if (flags & FLAG_EXTENDED) {
      if (version < 3) defer(new IndexFormatError('entry', `entry ${i} has extended flags in a version ${version} index`));
      if (nameStart + 2 > end) throw truncated(i, count);
      xflags = buf.readUInt16BE(nameStart);
      // git dies on bits it does not know too: they may change what the entry means.
      if (xflags & ~XFLAG_KNOWN) defer(new IndexFormatError('entry', `entry ${i} has unknown extended flags 0x${xflags.toString(16)}`));
      nameStart += 2;
    }
    let nameLen = flags & NAME_MASK;
    if (nameLen === NAME_MASK) {
      // The length field saturates; such names are found by their NUL terminator.
      const nul = buf.indexOf(0, nameStart);
      if (nul < 0 || nul >= end) throw truncated(i, count);
      nameLen = nul - nameStart;
    }
    const fixed = nameStart - off;
    const entryLen = padded(fixed + nameLen);
    if (off + entryLen > end) throw truncated(i, count);
    const nameBytes = buf.subarray(nameStart, nameStart + nameLen);
    let path = '';
    if (nameLen === 0 || nameBytes.includes(0)) {
      defer(new IndexFormatError('entry', `entry ${i} has a malformed path`));
    } else {
      try {
        path = utf8.decode(nameBytes);
      } catch {
        defer(new IndexFormatError('path-encoding', `entry ${i} has a path that is not valid UTF-8 (${nameBytes.toString('hex')})`));
      }
    }
    entries.push({
      path,
      oid: buf.toString('hex', off + 40, off + 60),
      mode: buf.readUInt32BE(off + 24),
      size: buf.readUInt32BE(off + 36),
      ctimeSeconds: buf.readUInt32BE(off),
      ctimeNanoseconds: buf.readUInt32BE(off + 4),
      mtimeSeconds: buf.readUInt32BE(off + 8),
      mtimeNanoseconds: buf.readUInt32BE(off + 12),
      dev: buf.readUInt32BE(off + 16),
      ino: buf.readUInt32BE(off + 20),
      uid: buf.readUInt32BE(off + 28),
      gid: buf.readUInt32BE(off + 32),
      stage: (flags & FLAG_STAGE_MASK) >> FLAG_STAGE_SHIFT,
      assumeValid: (flags & FLAG_ASSUME_VALID) !== 0,
      skipWorktree: (xflags & XFLAG_SKIP_WORKTREE) !== 0,
      intentToAdd: (xflags & XFLAG_INTENT_TO_ADD) !== 0,
    });
    off += entryLen;
  }

  const extensions: string[] = [];
  while (off < end) {
    if (off + 8 > end) throw new IndexFormatError('truncated', `index has ${end - off} stray bytes after its entries`);
    const sig = buf.toString('latin1', off, off + 4);
    const size = buf.readUInt32BE(off + 4);
    if (off + 8 + size > end) throw new IndexFormatError('truncated', `index extension ${JSON.stringify(sig)} runs past the end of the file`);
    // Split and sparse indexes are required extensions too; named here because the fix differs for each.
    if (sig === 'link') {
      throw new IndexFormatError('split-index', 'split index is not supported; run `git update-index --no-split-index` on that repository');
    }
    if (sig === 'sdir') {
      throw new IndexFormatError('sparse-index', 'sparse index is not supported; run `git sparse-checkout set --no-sparse-index` on that repository');
    }
    // git's rule: an extension whose signature starts with A..Z may be ignored, any other must be understood.
    const first = buf[off]!;
    if (first < 0x41 || first > 0x5a) {
      throw new IndexFormatError('required-extension', `index has a required extension ${JSON.stringify(sig)} that wsync does not understand`);
    }
    extensions.push(sig);
    off += 8 + size;
  }
  if (problem) throw problem;
  return { version, entries, extensions };
}

function truncated(i: number, count: number): IndexFormatError {
  return new IndexFormatError('truncated', `index ends inside entry ${i} of ${count}`);
}

/** Entries are NUL-padded to a multiple of 8 with at least one NUL, which also terminates long names. */
function padded(len: number): number {
  return (len + 8) & ~7;
}

/** Git's order: path bytes (not UTF-16 code units, which differ above U+FFFF), then stage. Returns a new array. */
export function sortEntries(entries: IndexEntry[]): IndexEntry[] {
  const keyed = entries.map((e) => ({ e, key: Buffer.from(e.path, 'utf8') }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key) || a.e.stage - b.e.stage);
  return keyed.map((k) => k.e);
}

/**
 * Writes version 2 unless an entry needs extended flags. No extensions are written: TREE and UNTR are caches that
 * git rebuilds, and keeping them would mean keeping them correct after our edits.
 */
export function serializeIndex(entries: IndexEntry[]): Buffer {
  const sorted = sortEntries(entries);
  checkStages(sorted);
  const version = sorted.some((e) => e.skipWorktree || e.intentToAdd) ? 3 : 2;

  const parts: Buffer[] = [];
  const header = Buffer.alloc(HEADER_SIZE);
  header.write(SIGNATURE, 0, 'latin1');
  header.writeUInt32BE(version, 4);
  header.writeUInt32BE(sorted.length, 8);
  parts.push(header);
  for (const e of sorted) parts.push(encodeEntry(e));

  const body = Buffer.concat(parts);
  return Buffer.concat([body, createHash('sha1').update(body).digest()]);
}

function encodeEntry(e: IndexEntry): Buffer {
  const name = Buffer.from(e.path, 'utf8');
  if (name.length === 0 || name.includes(0)) throw invalid(e, 'path is empty or contains NUL');
  if (!/^[0-9a-f]{40}$/.test(e.oid)) throw invalid(e, `oid ${JSON.stringify(e.oid)} is not 40 lowercase hex digits`);
  if (!Number.isInteger(e.stage) || e.stage < 0 || e.stage > 3) throw invalid(e, `stage ${e.stage} is not 0..3`);

  const extended = e.skipWorktree || e.intentToAdd;
  const fixed = ENTRY_FIXED_SIZE + (extended ? 2 : 0);
  const out = Buffer.alloc(padded(fixed + name.length));
  out.writeUInt32BE(u32(e, 'ctimeSeconds', e.ctimeSeconds), 0);
  out.writeUInt32BE(u32(e, 'ctimeNanoseconds', e.ctimeNanoseconds), 4);
  out.writeUInt32BE(u32(e, 'mtimeSeconds', e.mtimeSeconds), 8);
  out.writeUInt32BE(u32(e, 'mtimeNanoseconds', e.mtimeNanoseconds), 12);
  out.writeUInt32BE(u32(e, 'dev', e.dev), 16);
  out.writeUInt32BE(u32(e, 'ino', e.ino), 20);
  out.writeUInt32BE(u32(e, 'mode', e.mode), 24);
  out.writeUInt32BE(u32(e, 'uid', e.uid), 28);
  out.writeUInt32BE(u32(e, 'gid', e.gid), 32);
  out.writeUInt32BE(u32(e, 'size', e.size), 36);
  out.write(e.oid, 40, 'hex');
  let flags = (e.stage << FLAG_STAGE_SHIFT) | Math.min(name.length, NAME_MASK);
  if (e.assumeValid) flags |= FLAG_ASSUME_VALID;
  if (extended) flags |= FLAG_EXTENDED;
  out.writeUInt16BE(flags, 60);
  if (extended) {
    out.writeUInt16BE((e.skipWorktree ? XFLAG_SKIP_WORKTREE : 0) | (e.intentToAdd ? XFLAG_INTENT_TO_ADD : 0), 62);
  }
  name.copy(out, fixed);
  return out;
}

/** git refuses to read an index with a path twice at one stage, or both merged and conflicted. */
function checkStages(sorted: IndexEntry[]): void {
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (a.path !== b.path) continue;
    if (a.stage === b.stage) throw invalid(b, `appears twice at stage ${b.stage}`);
    if (a.stage === 0) throw invalid(b, 'is both merged (stage 0) and conflicted');
  }
}

/** Stat fields wider than 32 bits are stored modulo 2^32, as git does when it fills them in from stat(). */
function u32(e: IndexEntry, field: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw invalid(e, `${field} ${v} is not a non-negative integer`);
  return v % 0x1_0000_0000;
}

function invalid(e: IndexEntry, what: string): IndexFormatError {
  return new IndexFormatError('invalid-entry', `index entry ${JSON.stringify(e.path)}: ${what}`);
}

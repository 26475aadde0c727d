import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, symlinkSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIndex, serializeIndex, sortEntries, IndexFormatError, type IndexEntry } from '../../src/git/index-file.js';

// The user's git config (index.version, feature.manyFiles, splitIndex...) must not decide what these tests see.
const env = { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null', LC_ALL: 'C' };

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@e', ...args], {
    cwd, env, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 << 20,
  });
}

/** For commands that exit non-zero on purpose, like a conflicting merge. */
function gitStatus(cwd: string, ...args: string[]): number {
  return spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@e', ...args], { cwd, env, stdio: 'ignore' }).status ?? -1;
}

let root: string;
let n = 0;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'wsync-git-index-'));
});
afterAll(() => {
  // rm, not fs.rmSync: the deep test path is longer than PATH_MAX once made absolute.
  if (root) execFileSync('rm', ['-rf', root]);
});

function newRepo(): string {
  const dir = join(root, `r${n++}`);
  mkdirSync(dir);
  git(dir, 'init', '-q', '-b', 'main');
  return dir;
}

const indexOf = (repo: string): Buffer => readFileSync(join(repo, '.git', 'index'));
const writeIndex = (repo: string, buf: Buffer): void => writeFileSync(join(repo, '.git', 'index'), buf);

/** Our entries in exactly the shape of `git ls-files -s --debug -z`, so one string compare checks every field. */
function render(entries: IndexEntry[]): string {
  return entries
    .map((e) => {
      const flags =
        (e.assumeValid ? 0x8000 : 0) +
        (e.skipWorktree || e.intentToAdd ? 0x4000 : 0) +
        e.stage * 0x1000 +
        // git shows the extended flags shifted into the upper half of its in-memory flags word.
        (e.skipWorktree ? 0x4000_0000 : 0) +
        (e.intentToAdd ? 0x2000_0000 : 0);
      return (
        `${e.mode.toString(8).padStart(6, '0')} ${e.oid} ${e.stage}\t${e.path}\0` +
        `  ctime: ${e.ctimeSeconds}:${e.ctimeNanoseconds}\n` +
        `  mtime: ${e.mtimeSeconds}:${e.mtimeNanoseconds}\n` +
        `  dev: ${e.dev}\tino: ${e.ino}\n` +
        `  uid: ${e.uid}\tgid: ${e.gid}\n` +
        `  size: ${e.size}\tflags: ${flags.toString(16)}\n`
      );
    })
    .join('');
}

const lsDebug = (repo: string): string => git(repo, 'ls-files', '-s', '--debug', '-z');

/** A path of exactly 4095 bytes: the longest Linux lets exist, and the one where the name-length field saturates. */
function makeDeepFile(repo: string): string {
  const dirs = Array.from({ length: 16 }, (_, i) => String.fromCharCode(97 + i).repeat(250));
  const dir = dirs.join('/');
  const rel = `${dir}/${'z'.repeat(4095 - dir.length - 1)}`;
  // Relative to the repo, through tools that never build the absolute path (which would exceed PATH_MAX).
  execFileSync('mkdir', ['-p', dir], { cwd: repo });
  execFileSync('sh', ['-c', 'printf deep > "$1"', 'sh', rel], { cwd: repo });
  return rel;
}

function populate(repo: string): { deep: string } {
  mkdirSync(join(repo, 'src/lib/deeper'), { recursive: true });
  writeFileSync(join(repo, 'src/lib/deeper/x.ts'), 'export {};\n');
  writeFileSync(join(repo, 'src/main.ts'), 'main\n');
  writeFileSync(join(repo, 'run.sh'), '#!/bin/sh\n');
  chmodSync(join(repo, 'run.sh'), 0o755);
  symlinkSync('src/main.ts', join(repo, 'link'));
  writeFileSync(join(repo, 'ünï cödé name.txt'), 'u\n');
  writeFileSync(join(repo, 'a.b'), '1');
  writeFileSync(join(repo, 'a-b'), '2');
  mkdirSync(join(repo, 'a'));
  writeFileSync(join(repo, 'a/b'), '3');
  return { deep: makeDeepFile(repo) };
}

function entry(path: string, over: Partial<IndexEntry> = {}): IndexEntry {
  return {
    path, oid: 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391', mode: 0o100644, size: 0,
    mtimeSeconds: 0, mtimeNanoseconds: 0, ctimeSeconds: 0, ctimeNanoseconds: 0,
    dev: 0, ino: 0, uid: 0, gid: 0, stage: 0, assumeValid: false, skipWorktree: false, intentToAdd: false,
    ...over,
  };
}

/** Append an extension before the checksum and re-hash, as a writer that knows it would. */
function withExtension(buf: Buffer, sig: string, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(8);
  head.write(sig, 0, 'latin1');
  head.writeUInt32BE(data.length, 4);
  return rehash(Buffer.concat([buf.subarray(0, buf.length - 20), head, data]));
}

function rehash(body: Buffer): Buffer {
  return Buffer.concat([body, createHash('sha1').update(body).digest()]);
}

function formatError(fn: () => unknown): IndexFormatError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(IndexFormatError);
    return err as IndexFormatError;
  }
  throw new Error('expected an IndexFormatError');
}

describe('parseIndex on indexes git wrote', () => {
  it('reads every field of a real index: nested dirs, exec, symlink, unicode and space, a 4095-byte path', () => {
    const repo = newRepo();
    const { deep } = populate(repo);
    git(repo, 'add', '-A');
    const idx = parseIndex(indexOf(repo));
    expect(idx.version).toBe(2);
    expect(render(idx.entries)).toBe(lsDebug(repo));
    const byPath = new Map(idx.entries.map((e) => [e.path, e]));
    expect(byPath.get('run.sh')!.mode).toBe(0o100755);
    expect(byPath.get('link')!.mode).toBe(0o120000);
    expect(byPath.get('ünï cödé name.txt')!.size).toBe(2);
    expect(Buffer.byteLength(byPath.get(deep)!.path)).toBe(0xfff);
    expect(byPath.get(deep)!.size).toBe(4);
  });

  it('reads the three stages of a merge conflict', () => {
    const repo = newRepo();
    writeFileSync(join(repo, 'f'), 'base\n');
    writeFileSync(join(repo, 'g'), 'same\n');
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'base');
    git(repo, 'checkout', '-qb', 'other');
    writeFileSync(join(repo, 'f'), 'theirs\n');
    git(repo, 'commit', '-qam', 'theirs');
    git(repo, 'checkout', '-q', 'main');
    writeFileSync(join(repo, 'f'), 'ours\n');
    git(repo, 'commit', '-qam', 'ours');
    expect(gitStatus(repo, 'merge', '-q', 'other')).not.toBe(0);

    const idx = parseIndex(indexOf(repo));
    expect(idx.entries.map((e) => `${e.path}:${e.stage}`)).toEqual(['f:1', 'f:2', 'f:3', 'g:0']);
    expect(render(idx.entries)).toBe(lsDebug(repo));

    const before = lsDebug(repo);
    writeIndex(repo, serializeIndex(idx.entries));
    expect(lsDebug(repo)).toBe(before);
    expect(git(repo, 'diff', '--name-only', '--diff-filter=U')).toBe('f\n');
  });

  it('reads skip-worktree and intent-to-add (v3), and writes them back so git sees them', () => {
    const repo = newRepo();
    writeFileSync(join(repo, 'kept'), 'k\n');
    writeFileSync(join(repo, 'hidden'), 'h\n');
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'c');
    git(repo, 'update-index', '--skip-worktree', 'hidden');
    writeFileSync(join(repo, 'later'), 'l\n');
    git(repo, 'add', '-N', 'later');
    // A path longer than any file could have: only reachable through --cacheinfo, so skip-worktree keeps status quiet.
    const huge = Array.from({ length: 20 }, () => 'q'.repeat(200)).join('/') + '/tail';
    const blob = execFileSync('git', ['hash-object', '-w', '--stdin'], { cwd: repo, env, input: 'huge\n', encoding: 'utf8' }).trim();
    git(repo, 'update-index', '--add', '--cacheinfo', `100644,${blob},${huge}`);
    git(repo, 'update-index', '--skip-worktree', huge);

    const buf = indexOf(repo);
    expect(buf.readUInt32BE(4)).toBe(3);
    const idx = parseIndex(buf);
    expect(idx.version).toBe(3);
    expect(render(idx.entries)).toBe(lsDebug(repo));
    const byPath = new Map(idx.entries.map((e) => [e.path, e]));
    expect(byPath.get('hidden')).toMatchObject({ skipWorktree: true, intentToAdd: false });
    expect(byPath.get('later')).toMatchObject({ skipWorktree: false, intentToAdd: true });
    expect(byPath.get('kept')).toMatchObject({ skipWorktree: false, intentToAdd: false, assumeValid: false });
    expect(byPath.get(huge)).toMatchObject({ skipWorktree: true, oid: blob });

    const debug = lsDebug(repo);
    const status = git(repo, 'status', '--porcelain');
    const out = serializeIndex(idx.entries);
    expect(out.readUInt32BE(4)).toBe(3);
    writeIndex(repo, out);
    expect(lsDebug(repo)).toBe(debug);
    expect(git(repo, 'ls-files', '-v', 'hidden', 'kept')).toBe('S hidden\nH kept\n');
    expect(git(repo, 'status', '--porcelain')).toBe(status);
    expect(status).toMatch(/^ A later\nA  q{200}\//);
  });

  it('reads assume-valid', () => {
    const repo = newRepo();
    writeFileSync(join(repo, 'f'), 'f\n');
    git(repo, 'add', 'f');
    git(repo, 'update-index', '--assume-unchanged', 'f');
    const idx = parseIndex(indexOf(repo));
    expect(idx.entries[0]).toMatchObject({ path: 'f', assumeValid: true });
    expect(render(idx.entries)).toBe(lsDebug(repo));
    writeIndex(repo, serializeIndex(idx.entries));
    expect(git(repo, 'ls-files', '-v')).toBe('h f\n');
  });

  it('lists the optional extensions it skips (TREE, UNTR, EOIE)', () => {
    const repo = newRepo();
    populate(repo);
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'c');
    writeFileSync(join(repo, 'untracked'), 'u\n');
    git(repo, '-c', 'core.untrackedCache=true', '-c', 'index.recordEndOfIndexEntries=true', 'status', '--porcelain');
    const idx = parseIndex(indexOf(repo));
    expect(idx.extensions).toEqual(expect.arrayContaining(['TREE', 'UNTR', 'EOIE']));
    expect(render(idx.entries)).toBe(lsDebug(repo));
  });
});

describe('serializeIndex', () => {
  it('round-trips a committed repo: git sees the same entries, a clean status, and fsck is happy', () => {
    const repo = newRepo();
    populate(repo);
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'c');
    const buf = indexOf(repo);
    const idx = parseIndex(buf);
    expect(idx.extensions).toContain('TREE');
    const debug = lsDebug(repo);

    const out = serializeIndex(idx.entries);
    expect(out.readUInt32BE(4)).toBe(2);
    // Byte for byte what git wrote, up to where git's extensions start.
    const entriesEnd = out.length - 20;
    expect(out.subarray(0, entriesEnd).equals(buf.subarray(0, entriesEnd))).toBe(true);
    expect(parseIndex(out)).toEqual({ version: 2, entries: idx.entries, extensions: [] });

    writeIndex(repo, out);
    expect(lsDebug(repo)).toBe(debug);
    expect(git(repo, 'status', '--porcelain')).toBe('');
    expect(git(repo, 'fsck', '--strict', '--no-dangling')).toBe('');
    // git accepts the file as its own: rewriting it (and rebuilding TREE) changes no entry.
    git(repo, 'update-index', '--refresh');
    expect(parseIndex(indexOf(repo)).entries).toEqual(idx.entries);
  });

  it('sorts in git order (path bytes, then stage) whatever order it is given', () => {
    const repo = newRepo();
    const names = ['a b', 'a-b', 'a.b', 'a/b', 'a0', 'ab', 'B', '\uff21', '\u{1f600}'];
    for (const name of names) {
      if (name.includes('/')) mkdirSync(join(repo, name.split('/')[0]!), { recursive: true });
      writeFileSync(join(repo, name), name);
    }
    git(repo, 'add', '-A');
    const gitOrder = parseIndex(indexOf(repo)).entries;
    // Byte order, not UTF-16 order: U+FF21 (EF BC A1) before U+1F600 (F0 ...), though its surrogate D83D is smaller.
    expect(gitOrder.map((e) => e.path)).toEqual(['B', 'a b', 'a-b', 'a.b', 'a/b', 'a0', 'ab', '\uff21', '\u{1f600}']);

    const shuffled = [...gitOrder].reverse();
    expect(sortEntries(shuffled)).toEqual(gitOrder);
    expect(shuffled[0]!.path).toBe('\u{1f600}'); // sortEntries left its input alone
    const out = serializeIndex(shuffled);
    expect(out.equals(indexOf(repo))).toBe(true);
    writeIndex(repo, out);
    expect(git(repo, 'status', '--porcelain')).toBe('A  B\nA  "a b"\nA  a-b\nA  a.b\nA  a/b\nA  a0\nA  ab\nA  "\\357\\274\\241"\nA  "\\360\\237\\230\\200"\n');
  });

  it('orders stages within a path and writes v2 without extended flags', () => {
    const entries = [entry('x', { stage: 3 }), entry('x', { stage: 1 }), entry('w'), entry('x', { stage: 2 })];
    expect(sortEntries(entries).map((e) => `${e.path}:${e.stage}`)).toEqual(['w:0', 'x:1', 'x:2', 'x:3']);
    const out = serializeIndex(entries);
    expect(out.readUInt32BE(4)).toBe(2);
    expect(parseIndex(out).entries).toEqual(sortEntries(entries));
  });

  it('round-trips names of every padding length, saturated lengths, flags and 32-bit extremes', () => {
    const max = 0xffff_ffff;
    const entries: IndexEntry[] = [];
    for (let len = 1; len <= 17; len++) entries.push(entry('p'.repeat(len), { size: len }));
    for (const len of [0xffe, 0xfff, 0x1000, 5000]) entries.push(entry(`long/${'l'.repeat(len - 5)}`, { stage: 2 }));
    entries.push(entry('flags/sw', { skipWorktree: true }), entry('flags/ita', { intentToAdd: true }));
    entries.push(entry('flags/av', { assumeValid: true, stage: 1, mode: 0o120000 }));
    entries.push(entry('gitlink', {
      mode: 0o160000, oid: 'f'.repeat(40), size: max, mtimeSeconds: max, mtimeNanoseconds: 999_999_999,
      ctimeSeconds: max, ctimeNanoseconds: 1, dev: max, ino: max, uid: max, gid: max,
    }));
    const out = serializeIndex(entries);
    expect(out.readUInt32BE(4)).toBe(3);
    const back = parseIndex(out);
    expect(back.version).toBe(3);
    expect(back.entries).toEqual(sortEntries(entries));
    expect(serializeIndex(back.entries).equals(out)).toBe(true);
  });

  it('stores stat fields modulo 2^32, as git does', () => {
    const out = serializeIndex([entry('big', { size: 2 ** 32 + 5, ino: 2 ** 40 + 7 })]);
    expect(parseIndex(out).entries[0]).toMatchObject({ size: 5, ino: 7 });
  });

  it('refuses entries git would refuse to read', () => {
    expect(formatError(() => serializeIndex([entry('x'), entry('x')])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('x'), entry('x', { stage: 2 })])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('x', { oid: 'abc' })])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('x', { stage: 4 })])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('')])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('a\0b')])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('x', { size: -1 })])).reason).toBe('invalid-entry');
    expect(formatError(() => serializeIndex([entry('x', { mtimeSeconds: 1.5 })])).reason).toBe('invalid-entry');
  });

  it('writes an empty index git accepts', () => {
    const repo = newRepo();
    writeIndex(repo, serializeIndex([]));
    expect(git(repo, 'ls-files')).toBe('');
    expect(parseIndex(serializeIndex([]))).toEqual({ version: 2, entries: [], extensions: [] });
  });
});

describe('parseIndex refusals', () => {
  function committedRepo(): string {
    const repo = newRepo();
    for (const f of ['one', 'two', 'three']) writeFileSync(join(repo, f), f);
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'c');
    return repo;
  }

  it('refuses index version 4', () => {
    const repo = committedRepo();
    git(repo, 'update-index', '--index-version', '4');
    expect(indexOf(repo).readUInt32BE(4)).toBe(4);
    expect(formatError(() => parseIndex(indexOf(repo))).reason).toBe('version');
  });

  it('refuses a split index', () => {
    const repo = committedRepo();
    git(repo, '-c', 'core.splitIndex=true', 'update-index', '--split-index');
    expect(formatError(() => parseIndex(indexOf(repo))).reason).toBe('split-index');
  });

  it('refuses a sparse index', () => {
    const repo = newRepo();
    mkdirSync(join(repo, 'in'));
    mkdirSync(join(repo, 'out'));
    writeFileSync(join(repo, 'in/a'), 'a');
    writeFileSync(join(repo, 'out/b'), 'b');
    git(repo, 'add', '-A');
    git(repo, 'commit', '-qm', 'c');
    git(repo, 'sparse-checkout', 'set', '--sparse-index', 'in');
    expect(formatError(() => parseIndex(indexOf(repo))).reason).toBe('sparse-index');
  });

  it('refuses a flipped byte anywhere as a checksum mismatch', () => {
    const buf = indexOf(committedRepo());
    expect(parseIndex(buf).entries).toHaveLength(3);
    for (const at of [12, 40 + 12, 62 + 12, buf.length - 30, buf.length - 1]) {
      const bad = Buffer.from(buf);
      bad[at]! ^= 0x01;
      expect(formatError(() => parseIndex(bad)).reason).toBe('checksum');
    }
  });

  it('refuses a truncated index, and says so when the cut falls inside the entries', () => {
    const buf = indexOf(committedRepo());
    const entriesEnd = serializeIndex(parseIndex(buf).entries).length - 20;
    expect(entriesEnd).toBeLessThan(buf.length - 20); // git wrote a TREE extension after them
    for (let len = 0; len < buf.length; len++) {
      const err = formatError(() => parseIndex(buf.subarray(0, len)));
      if (len < entriesEnd + 20) expect([len, err.reason]).toEqual([len, 'truncated']);
      else expect(['truncated', 'checksum']).toContain(err.reason);
    }
  });

  it('refuses what is not an index', () => {
    expect(formatError(() => parseIndex(rehash(Buffer.from('DIRX\0\0\0\x02\0\0\0\0')))).reason).toBe('signature');
    expect(formatError(() => parseIndex(rehash(Buffer.from('DIRC\0\0\0\x05\0\0\0\0')))).reason).toBe('version');
  });

  it('refuses the index of a SHA-256 repository by name', () => {
    const repo = join(root, `r${n++}`);
    mkdirSync(repo);
    git(repo, 'init', '-q', '--object-format=sha256');
    writeFileSync(join(repo, 'f'), 'f');
    git(repo, 'add', 'f');
    expect(formatError(() => parseIndex(indexOf(repo))).reason).toBe('hash-algorithm');
  });

  it('skips unknown optional extensions, refuses unknown required ones', () => {
    const base = serializeIndex([entry('a'), entry('b')]);
    expect(parseIndex(withExtension(withExtension(base, 'ZZZZ', Buffer.from('opaque')), 'Abcd')).extensions).toEqual(['ZZZZ', 'Abcd']);
    expect(formatError(() => parseIndex(withExtension(base, 'abcd', Buffer.from('x')))).reason).toBe('required-extension');
    expect(formatError(() => parseIndex(withExtension(base, '1BCD'))).reason).toBe('required-extension');
    expect(formatError(() => parseIndex(withExtension(base, 'link', Buffer.alloc(20)))).reason).toBe('split-index');
    expect(formatError(() => parseIndex(withExtension(base, 'sdir'))).reason).toBe('sparse-index');
    // An extension that claims more bytes than there are, with a valid checksum.
    const over = withExtension(base, 'TREE', Buffer.from('xx'));
    over.writeUInt32BE(3, over.length - 20 - 6);
    expect(formatError(() => parseIndex(rehash(over.subarray(0, over.length - 20)))).reason).toBe('truncated');
  });

  it('accepts the all-zero checksum of index.skipHash (git >= 2.40)', () => {
    const out = serializeIndex([entry('a')]);
    out.fill(0, out.length - 20);
    expect(parseIndex(out).entries.map((e) => e.path)).toEqual(['a']);
  });

  it('refuses a path that is not UTF-8 rather than rewrite it as another name', () => {
    const out = serializeIndex([entry('ab')]);
    const at = out.indexOf('ab', 12);
    out[at + 1] = 0xff;
    expect(formatError(() => parseIndex(rehash(out.subarray(0, out.length - 20)))).reason).toBe('path-encoding');
  });

  it('refuses extended flags in a version 2 index, and extended flags it does not know', () => {
    const v3 = serializeIndex([entry('a', { skipWorktree: true })]);
    const v2 = Buffer.from(v3.subarray(0, v3.length - 20));
    v2.writeUInt32BE(2, 4);
    expect(formatError(() => parseIndex(rehash(v2))).reason).toBe('entry');
    const unknown = Buffer.from(v3.subarray(0, v3.length - 20));
    unknown.writeUInt16BE(0x1000, 12 + 62);
    expect(formatError(() => parseIndex(rehash(unknown))).reason).toBe('entry');
  });
});

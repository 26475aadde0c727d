import { describe, it, expect } from 'vitest';
import { appendFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Journal, trustedEntries } from './journal.js';
import type { Entry } from '../types.js';

const file = (size: number, mtime: number, sha = 'a'.repeat(64)): Entry => ({ type: 'file', size, mtime, mode: 0o644, sha256: sha });

describe('Journal', () => {
  it('records finished files, reads the last line per path, skips torn and foreign lines, and starts over on clear', () => {
    const f = join(mkdtempSync(join(tmpdir(), 'wsync-journal-')), 'sub', 'pair.journal');
    const j = new Journal(f);
    j.add('a.txt', file(1, 10));
    j.add('b.txt', file(2, 20));
    j.add('a.txt', file(3, 30, 'b'.repeat(64)));
    // Directories, symlinks and unhashed files say nothing about content: not recorded.
    j.add('d', { type: 'dir', size: 0, mtime: 1, mode: 0o755 });
    j.add('nohash', { type: 'file', size: 1, mtime: 1, mode: 0o644 });
    j.flush();
    appendFileSync(f, '{"p":"x","e":{"type":"file","size":1,"mtime":1,"mode":420,"sha256":"zz"}}\n{"p":"torn","e":{"ty');
    const read = Journal.read(f);
    expect([...read.keys()].sort()).toEqual(['a.txt', 'b.txt']);
    expect(read.get('a.txt')).toEqual(file(3, 30, 'b'.repeat(64)));
    j.add('c.txt', file(4, 40));
    j.close();
    expect(readFileSync(f, 'utf8')).toContain('c.txt');
    j.clear();
    expect(existsSync(f)).toBe(false);
    expect(Journal.read(f).size).toBe(0);
  });

  it('a dry run (no file) records nothing', () => {
    const j = new Journal(null);
    j.add('a', file(1, 1));
    j.close();
    expect(Journal.read(null).size).toBe(0);
  });

  it('is trusted only where the target lists the file as written and the manifest does not already say so', () => {
    const journal = new Map<string, Entry>([
      ['same.txt', file(5, 50)],
      ['changed-size.txt', file(5, 50)],
      ['changed-mtime.txt', file(5, 50)],
      ['gone.txt', file(5, 50)],
      ['recorded.txt', file(5, 50)],
    ]);
    const remote = new Map<string, Entry>([
      ['same.txt', { ...file(5, 50), sha256: undefined }],
      ['changed-size.txt', file(6, 50)],
      ['changed-mtime.txt', file(5, 51)],
      ['recorded.txt', file(5, 50)],
    ]);
    const manifest = new Map<string, Entry>([['recorded.txt', file(5, 50)]]);
    expect(trustedEntries(journal, remote, manifest).map(([p]) => p)).toEqual(['same.txt']);
  });
});

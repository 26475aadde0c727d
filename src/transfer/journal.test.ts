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
    j.add('a.txt', file(1, 10), 's1');
    j.add('b.txt', file(2, 20), 's2');
    j.add('a.txt', file(3, 30, 'b'.repeat(64)), 's3');
    // Without a local stamp nothing could tell a later edit from it: not recorded.
    j.add('nostamp', file(1, 1), null);
    // Directories, symlinks and unhashed files say nothing about content: not recorded.
    j.add('d', { type: 'dir', size: 0, mtime: 1, mode: 0o755 }, 's');
    j.add('nohash', { type: 'file', size: 1, mtime: 1, mode: 0o644 }, 's');
    j.flush();
    appendFileSync(f, '{"p":"x","e":{"type":"file","size":1,"mtime":1,"mode":420,"sha256":"zz"},"s":"s"}\n{"p":"torn","e":{"ty');
    const read = Journal.read(f);
    expect([...read.keys()].sort()).toEqual(['a.txt', 'b.txt']);
    expect(read.get('a.txt')).toEqual({ e: file(3, 30, 'b'.repeat(64)), s: 's3' });
    j.add('c.txt', file(4, 40), 's4');
    j.close();
    expect(readFileSync(f, 'utf8')).toContain('c.txt');
    // Closed (the run is over): what a straggling transfer adds is dropped.
    j.add('late.txt', file(5, 50), 's5');
    j.flush();
    expect(readFileSync(f, 'utf8')).not.toContain('late.txt');
    j.clear();
    expect(existsSync(f)).toBe(false);
    expect(Journal.read(f).size).toBe(0);
  });

  it('a dry run (no file) records nothing', () => {
    const j = new Journal(null);
    j.add('a', file(1, 1), 's');
    j.close();
    expect(Journal.read(null).size).toBe(0);
  });

  it('is trusted where the destination lists the file as written and the manifest does not already say so; a local file touched since is marked changed', async () => {
    const line = (s: string) => ({ e: file(5, 50), s });
    const journal = new Map([
      ['same.txt', line('ok')],
      ['changed-size.txt', line('ok')],
      ['changed-mtime.txt', line('ok')],
      ['gone.txt', line('ok')],
      ['recorded.txt', line('ok')],
      ['edited-locally.txt', line('before')],
      ['local-gone.txt', line('ok')],
    ]);
    const dst = new Map<string, Entry>([
      ['same.txt', { ...file(5, 50), sha256: undefined }],
      ['changed-size.txt', file(6, 50)],
      ['changed-mtime.txt', file(5, 51)],
      ['recorded.txt', file(5, 50)],
      ['edited-locally.txt', file(5, 50)],
      ['local-gone.txt', file(5, 50)],
    ]);
    const manifest = new Map<string, Entry>([['recorded.txt', file(5, 50)]]);
    const stamps: Record<string, string> = { 'same.txt': 'ok', 'edited-locally.txt': 'after' };
    const trusted = await trustedEntries(journal, dst, manifest, async (rel) => stamps[rel] ?? null);
    expect(trusted).toEqual([
      { path: 'same.txt', entry: file(5, 50), changed: false },
      { path: 'edited-locally.txt', entry: file(5, 50), changed: true },
      { path: 'local-gone.txt', entry: file(5, 50), changed: true },
    ]);
  });
});

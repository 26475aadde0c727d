import { describe, it, expect } from 'vitest';
import { walk } from './walk.js';
import { IgnoreRules } from './ignore.js';
import type { DirEntry, DirListing, Transport } from '../transport/types.js';

/** A listing-only transport that answers what a hostile server might: names no honest filesystem returns. */
function fakeTransport(listing: Record<string, DirListing>): Transport {
  const t = {
    kind: 'sftp',
    root: '/r',
    caps: { copyData: false, fsync: false, maxRead: 1, maxWrite: 1 },
    describe: (rel = '') => `evil:/r/${rel}`,
    readdir: async (rel: string) => listing[rel] ?? null,
    readFile: async () => null,
  };
  return t as unknown as Transport;
}

const f = (name: string): DirEntry => ({ name, entry: { type: 'file', size: 1, mtime: 1, mode: 0o644 } });
const d = (name: string): DirEntry => ({ name, entry: { type: 'dir', size: 0, mtime: 1, mode: 0o755 } });

describe('walk', () => {
  it('links read back joined onto their directory (ProFTPD): the target wsync wrote, else reported and blocked', async () => {
    const link = (name: string, target: string, mtime = 5): DirEntry => ({ name, entry: { type: 'symlink', size: 0, mtime, mode: 0o777, target, linkDir: '/r' } });
    const t = fakeTransport({
      '': [d('a'), d('b'), link('rel', '/r/t.txt'), link('abs', '/etc/hostname'), link('up', '/t.txt'), link('theirs', '/r/x'), link('dangling', ''), link('moved', '', 6), f('z')],
      a: [f('in-a')],
      b: [f('in-b')],
    });
    const known = new Map([
      ['rel', { type: 'symlink' as const, size: 0, mtime: 5, mode: 0o777, target: 't.txt' }],
      ['abs', { type: 'symlink' as const, size: 0, mtime: 5, mode: 0o777, target: '/etc/hostname' }],
      ['up', { type: 'symlink' as const, size: 0, mtime: 5, mode: 0o777, target: '../t.txt' }],
      ['dangling', { type: 'symlink' as const, size: 0, mtime: 5, mode: 0o777, target: 'nowhere' }],
      ['moved', { type: 'symlink' as const, size: 0, mtime: 5, mode: 0o777, target: 'nowhere' }],
    ]);
    // The manifest comes late: the subdirectories are listed meanwhile, and the walk still waits for every entry.
    const knownLinks = () => new Promise<typeof known>((r) => setTimeout(() => r(known), 30));
    const w = await walk(t, { rules: new IgnoreRules({ gitignore: true, excludes: [], includes: [] }), concurrency: 4, knownLinks });
    expect(Object.fromEntries([...w.tree].map(([p, e]) => [p, e.target ?? e.type]))).toEqual({
      a: 'dir', b: 'dir', 'a/in-a': 'file', 'b/in-b': 'file', z: 'file', rel: 't.txt', abs: '/etc/hostname', up: '../t.txt', dangling: 'nowhere',
    });
    expect([...w.tree.values()].some((e) => e.linkDir !== undefined)).toBe(false);
    expect(w.problems.map((p) => p.path).sort()).toEqual(['moved', 'theirs']);
    expect(w.blocked.sort()).toEqual(['moved', 'theirs']);
  });

  it('refuses names that would escape the root and reports each', async () => {
    const t = fakeTransport({
      '': [f('ok.txt'), f('..'), f('.'), f('../../etc/passwd'), f('/abs'), f(''), d('sub'), f('nul\0byte')],
      sub: [f('inner'), d('..')],
    });
    const r = await walk(t, { rules: new IgnoreRules({ gitignore: true, excludes: [], includes: [] }), concurrency: 4 });
    expect([...r.tree.keys()].sort()).toEqual(['ok.txt', 'sub', 'sub/inner']);
    expect(r.problems.map((p) => p.code)).toEqual(Array(7).fill('E_UNSAFE_PATH'));
  });

  it('collects temp files of interrupted runs instead of listing them', async () => {
    const t = fakeTransport({ '': [f('a.txt'), f('.a.txt.wsync-0123abcd.tmp')] });
    const r = await walk(t, { rules: new IgnoreRules({ gitignore: true, excludes: [], includes: [] }), concurrency: 4 });
    expect([...r.tree.keys()]).toEqual(['a.txt']);
    expect(r.temps).toEqual(['.a.txt.wsync-0123abcd.tmp']);
  });

  it('lists the special files a listing left out, except excluded ones', async () => {
    const withSkipped = (entries: DirEntry[], skipped: DirListing['skipped']): DirListing => Object.assign(entries, { skipped });
    const t = fakeTransport({
      '': withSkipped([f('a.txt'), d('sub'), d('logs')], [{ name: 'fifo', kind: 'fifo' }, { name: 'dev', kind: 'device' }, { name: 'x.sock', kind: 'socket' }]),
      sub: withSkipped([f('b')], [{ name: 'sock', kind: 'socket' }]),
      logs: withSkipped([], [{ name: 'pipe', kind: 'fifo' }]),
    });
    const r = await walk(t, { rules: new IgnoreRules({ gitignore: true, excludes: ['*.sock', 'logs/'], includes: [] }), concurrency: 4 });
    expect([...r.tree.keys()].sort()).toEqual(['a.txt', 'sub', 'sub/b']);
    expect(r.skipped.sort((a, b) => a.path.localeCompare(b.path))).toEqual([
      { path: 'dev', kind: 'device' },
      { path: 'fifo', kind: 'fifo' },
      { path: 'sub/sock', kind: 'socket' },
    ]);
  });
});

import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { plan, sameContent, type Op } from './plan.js';
import type { Entry, Tree } from '../types.js';
import { ancestors, isUnder } from '../util/paths.js';

const file = (size: number, mtime: number, mode = 0o644): Entry => ({ type: 'file', size, mtime, mode });
const dir = (mode = 0o755): Entry => ({ type: 'dir', size: 0, mtime: 0, mode });
const link = (target: string): Entry => ({ type: 'symlink', size: 0, mtime: 0, mode: 0o777, target });

/** Builds a consistent tree: every ancestor of an entry is a directory. */
function treeOf(items: Array<[string, Entry]>): Tree {
  const t: Tree = new Map();
  for (const [p, e] of items) {
    if (ancestors(p).some((a) => t.has(a) && t.get(a)!.type !== 'dir')) continue;
    if (t.has(p)) continue;
    if ([...t.keys()].some((k) => isUnder(k, p)) && e.type !== 'dir') continue;
    for (const a of ancestors(p)) if (!t.has(a)) t.set(a, dir());
    t.set(p, e);
  }
  return t;
}

const arbPath = fc
  .array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 })
  .map((parts) => parts.join('/'));
const arbEntry: fc.Arbitrary<Entry> = fc.oneof(
  fc.record({ size: fc.integer({ min: 0, max: 3 }), mtime: fc.integer({ min: 1, max: 3 }), mode: fc.constantFrom(0o644, 0o755) }).map((r) => file(r.size, r.mtime, r.mode)),
  fc.constant(dir()),
  fc.constantFrom('x', 'y').map(link),
);
const arbTree = fc.array(fc.tuple(arbPath, arbEntry), { maxLength: 8 }).map(treeOf);

/** Applies a plan to a copy of dst the way the executor does. */
function apply(dst: Tree, p: ReturnType<typeof plan>): Tree {
  const out: Tree = new Map(dst);
  const rm = (path: string, withChildren: boolean) => {
    out.delete(path);
    if (withChildren) for (const k of [...out.keys()]) if (isUnder(k, path)) out.delete(k);
  };
  const run = (op: Op) => {
    switch (op.kind) {
      case 'remove':
        if (op.type === 'dir' && !op.backup && [...out.keys()].some((k) => isUnder(k, op.path))) throw new Error(`rmdir of non-empty ${op.path}`);
        rm(op.path, op.backup);
        break;
      case 'mkdir':
        if (ancestors(op.path).some((a) => out.get(a)?.type !== 'dir')) throw new Error(`mkdir ${op.path} without parent`);
        out.set(op.path, dir(op.mode));
        break;
      case 'put':
      case 'link':
        if (ancestors(op.path).some((a) => out.get(a)?.type !== 'dir')) throw new Error(`write ${op.path} without parent`);
        if (out.get(op.path)?.type === 'dir') throw new Error(`write over a directory ${op.path}`);
        out.set(op.path, op.entry);
        break;
      case 'meta': {
        const e = out.get(op.path)!;
        out.set(op.path, { ...e, mode: op.mode ?? e.mode, mtime: op.mtime ?? e.mtime });
        break;
      }
    }
  };
  for (const op of [...p.prepare, ...p.mkdirs, ...p.transfers, ...p.metas, ...p.deletes]) run(op);
  return out;
}

describe('plan', () => {
  it('converges, never touches a changed destination path without --force, and deletes only with --delete', () => {
    fc.assert(
      fc.property(arbTree, arbTree, arbTree, fc.boolean(), fc.boolean(), (src, dst, base, del, force) => {
        const p = plan({ src, dst, base, delete: del, force, dstName: 'remote' });
        const after = apply(dst, p);
        const conflicted = new Set(p.conflicts.map((c) => c.path));
        const underConflict = (k: string) => conflicted.has(k) || ancestors(k).some((a) => conflicted.has(a));
        for (const [k, s] of src) {
          if (underConflict(k)) continue;
          const d = after.get(k);
          expect(d && sameContent(s, d), `src path ${k} not synced`).toBe(true);
          if (s.type !== 'symlink') expect(d!.mode).toBe(s.mode);
        }
        for (const k of conflicted) {
          expect(force, 'conflicts only without --force').toBe(false);
          expect(after.get(k)).toEqual(dst.get(k));
        }
        const allOps = [...p.prepare, ...p.mkdirs, ...p.transfers, ...p.metas, ...p.deletes];
        const backedUp = new Set(allOps.filter((op) => 'backup' in op && op.backup).map((op) => op.path));
        for (const op of allOps) {
          const d = dst.get(op.path);
          const b = base.get(op.path);
          const changedOutside = d !== undefined && !(b && sameContent(d, b));
          if (changedOutside && op.kind !== 'meta' && op.kind !== 'mkdir') {
            const wouldLose = !(op.kind === 'put' || op.kind === 'link') || !sameContent(d!, op.entry);
            if (wouldLose) {
              expect(force, `op ${op.kind} on changed ${op.path} without --force`).toBe(true);
              expect(backedUp.has(op.path), `changed ${op.path} replaced without backup`).toBe(true);
            }
          }
        }
        if (!del) expect(p.deletes).toEqual([]);
        if (del && p.conflicts.length === 0) {
          expect([...after.keys()].sort()).toEqual([...src.keys()].sort());
        }
        for (const op of p.deletes) {
          const d = dst.get(op.path)!;
          const b = base.get(op.path);
          if (!(b && sameContent(d, b))) expect(op.kind === 'remove' && op.backup).toBe(true);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('adopts identical destination files without a manifest and keeps the base of untouched ones', () => {
    const src = treeOf([['a', file(3, 10)], ['b', file(1, 5)]]);
    const dst = treeOf([['a', file(3, 10)], ['b', file(2, 5)]]);
    const p = plan({ src, dst, base: new Map(), delete: false, force: false, dstName: 'remote' });
    expect(p.transfers).toEqual([]);
    expect(p.conflicts.map((c) => c.path)).toEqual(['b']);
    expect(p.next.get('a')).toEqual(file(3, 10));
    expect(p.next.has('b')).toBe(false);
  });

  it('turns a touched file with a matching hash into a time update', () => {
    const base = treeOf([['a', { ...file(3, 10), sha256: 'h' }]]);
    const dst = treeOf([['a', file(3, 10)]]);
    const src = treeOf([['a', { ...file(3, 20), sha256: 'h' }]]);
    const p = plan({ src, dst, base, delete: false, force: false, dstName: 'remote' });
    expect(p.transfers).toEqual([]);
    expect(p.metas).toEqual([{ kind: 'meta', path: 'a', entry: src.get('a'), mtime: 20, mode: undefined }]);
  });

  it('counts deletions for the delete limit', () => {
    const base = treeOf([['a', file(1, 1)], ['b', file(1, 1)], ['c', file(1, 1)]]);
    const p = plan({ src: treeOf([['a', file(1, 1)]]), dst: base, base, delete: true, force: false, dstName: 'remote' });
    expect(p.deleteCount).toBe(2);
    expect(p.dstFileCount).toBe(3);
    expect(p.deletes.map((d) => d.path)).toEqual(['c', 'b']);
  });
});

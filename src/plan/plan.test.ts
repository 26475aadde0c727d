import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { plan, sameContent } from './plan.js';
import { describeConflict } from '../cli/conflicts.js';
import { ancestors } from '../util/paths.js';
import { apply, arbTree, file, treeOf } from '../../test/support/model.js';

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
    // More than half: the verdict is the plan's; --force lifts it, and one of three is under it.
    expect(p.tooManyDeletes).toBe(true);
    expect(plan({ src: treeOf([['a', file(1, 1)]]), dst: base, base, delete: true, force: true, dstName: 'remote' }).tooManyDeletes).toBe(false);
    expect(plan({ src: treeOf([['a', file(1, 1)], ['b', file(1, 1)]]), dst: base, base, delete: true, force: false, dstName: 'remote' }).tooManyDeletes).toBe(false);
  });

  it('says each conflict as a kind plus data (cli/ says it in words)', () => {
    const base = treeOf([['changed', file(1, 1)], ['gone', file(1, 1)], ['d/x', file(1, 1)]]);
    const dst = treeOf([['changed', file(2, 2)], ['gone', file(2, 2)], ['mine', file(5, 5)], ['d/x', file(9, 9)], ['d/y', file(1, 1)]]);
    const src = treeOf([['changed', file(3, 3)], ['mine', file(6, 6)], ['d', file(4, 4)]]);
    const p = plan({ src, dst, base, delete: true, force: false, dstName: 'local' });
    expect(p.conflicts).toEqual([
      { path: 'changed', kind: 'changed', op: 'replace', side: 'local' },
      { path: 'd', kind: 'dir-holds-changes', op: 'replace', side: 'local', count: 2, example: 'd/x' },
      { path: 'gone', kind: 'changed', op: 'delete', side: 'local' },
      { path: 'mine', kind: 'unmanaged', op: 'replace', side: 'local' },
    ]);
    expect(p.conflicts.map(describeConflict)).toEqual([
      'changed on the local side since the last sync',
      'would replace a directory holding 2 path(s) changed on the local side (e.g. d/x)',
      'changed on the local side since the last sync; not deleted',
      'exists on the local side and differs (not written by wsync); --force replaces it',
    ]);
  });

  it('carries the chunker of an unchanged big file over into the next manifest', () => {
    const chunker = { avg: 65536, min: 16384, max: 262144, seed: 0 } as unknown as NonNullable<ReturnType<typeof file>['chunker']>;
    const base = treeOf([['big', { ...file(9, 9), sha256: 'h', chunker }]]);
    const p = plan({ src: treeOf([['big', file(9, 9)]]), dst: base, base, delete: false, force: false, dstName: 'remote' });
    expect(p.next.get('big')).toEqual({ ...file(9, 9), sha256: 'h', chunker });
  });
});

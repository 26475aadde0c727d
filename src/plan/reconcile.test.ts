import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { conflictCopyName, reconcile } from './reconcile.js';
import { sameContent } from './plan.js';
import type { Entry, Tree } from '../types.js';
import { isUnder } from '../util/paths.js';
import { apply, arbEntry, arbPath, dir, file, link, treeOf } from '../../test/support/model.js';

/** Trees whose files sometimes carry a hash (what the caller learned by hashing): a touch keeps it, an edit in the same second at the same size changes it. */
const arbTree = fc
  .array(fc.tuple(arbPath, arbEntry, fc.constantFrom(undefined, 'h1', 'h2')), { maxLength: 8 })
  .map((items) => treeOf(items.map(([p, e, h]) => [p, e.type === 'file' && h ? { ...e, sha256: h } : e])));
/** The truth the properties judge by: the planner's quick check, overruled by hashes where both carry one. */
const bytesEq = (x: Entry, y: Entry) => sameContent(x, y) || (x.type === 'file' && y.type === 'file' && x.size === y.size && !!x.sha256 && x.sha256 === y.sha256);

const copyName = (p: string) => conflictCopyName(p, new Date(Date.UTC(2026, 11, 6, 3, 15, 0)), 'box');

/** A side that started from the ancestor: some of its entries kept, some new or changed ones first or after. */
const arbSide = (a: Tree) =>
  fc.tuple(fc.array(fc.boolean(), { minLength: a.size, maxLength: a.size }), arbTree, fc.boolean()).map(([keep, extra, changesFirst]) => {
    const kept = [...a].filter((_, i) => keep[i]);
    return treeOf(changesFirst ? [...extra, ...kept] : [...kept, ...extra]);
  });
const arbState = arbTree.chain((a) => fc.tuple(fc.constant(a), arbSide(a), arbSide(a)));

const same = (x: Entry | undefined, y: Entry | undefined) => (!x || !y ? x === y : sameContent(x, y) && (x.type === 'symlink' || x.mode === y.mode));
/** Bytes, not modes: a mode change may be merged with the other side's edit. */
const changedFrom = (x: Entry | undefined, a: Entry | undefined) => (!x || !a ? x !== a : !bytesEq(x, a));

function run(a: Tree, l: Tree, r: Tree) {
  const rec = reconcile({ ancestor: a, local: l, remote: r, copyName });
  const renamed: Tree = new Map(r);
  for (const { from, to } of rec.renames) {
    expect(renamed.get(from)?.type, `rename of ${from}`).toBe('file');
    expect(renamed.has(to), `rename onto ${to}`).toBe(false);
    renamed.set(to, renamed.get(from)!);
    renamed.delete(from);
  }
  return { rec, localAfter: apply(l, rec.toLocal), remoteAfter: apply(renamed, rec.toRemote) };
}

describe('reconcile', () => {
  it('for random states: both sides end equal, no content either side changed is lost, the plans raise no conflict of their own', () => {
    fc.assert(
      fc.property(arbState, ([a, l, r]) => {
        const { rec, localAfter, remoteAfter } = run(a, l, r);
        expect(rec.toLocal.conflicts).toEqual([]);
        expect(rec.toRemote.conflicts).toEqual([]);
        const left = (p: string) => rec.blocked.some((b) => p === b || isUnder(p, b));
        // Outside what was left alone, both sides hold the merged tree.
        for (const t of [localAfter, remoteAfter]) {
          const keys = [...t.keys()].filter((k) => !left(k)).sort();
          expect(keys).toEqual([...rec.merged.keys()].filter((k) => !left(k)).sort());
          for (const k of keys) expect(same(t.get(k), rec.merged.get(k)), `${k} as merged`).toBe(true);
        }
        // What was left alone is untouched on both sides.
        for (const [before, after] of [[l, localAfter], [r, remoteAfter]] as const) {
          for (const k of new Set([...before.keys(), ...after.keys()])) if (left(k)) expect(after.get(k), `left-alone ${k}`).toEqual(before.get(k));
        }
        // Every file or link a side changed since the ancestor is still somewhere, on both sides unless left alone.
        for (const side of [l, r]) {
          for (const [p, e] of side) {
            if (e.type === 'dir' || !changedFrom(e, a.get(p))) continue;
            const found = (t: Tree) => [...t.values()].some((x) => bytesEq(x, e));
            if (left(p)) expect(found(localAfter) || found(remoteAfter), `${p} lost`).toBe(true);
            else expect(found(localAfter) && found(remoteAfter), `${p} not on both sides`).toBe(true);
          }
        }
        // Nothing is left alone without a conflict saying so (no listing failed here).
        for (const b of rec.blocked) expect(rec.conflicts.some((c) => c.path === b)).toBe(true);
      }),
      { numRuns: 4000 },
    );
  });

  it('with one side as the ancestor left it, is a one-way mirror of the other side', () => {
    fc.assert(
      fc.property(arbState, ([a, l]) => {
        for (const [src, dstName] of [[l, 'remote'], [l, 'local']] as const) {
          const { rec, localAfter, remoteAfter } = dstName === 'remote' ? run(a, src, a) : run(a, a, src);
          expect(rec.conflicts).toEqual([]);
          for (const t of [localAfter, remoteAfter]) {
            expect([...t.keys()].sort()).toEqual([...src.keys()].sort());
            for (const [k, e] of src) expect(same(t.get(k), e), k).toBe(true);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps both versions of a file edited on both sides, the remote one under a conflict name on both sides', () => {
    const a = treeOf([['src/x.ts', file(1, 1)]]);
    const rec = reconcile({ ancestor: a, local: treeOf([['src/x.ts', file(2, 2)]]), remote: treeOf([['src/x.ts', file(3, 3)]]), copyName });
    const copy = 'src/x.sync-conflict-20261206-031500-box.ts';
    expect(rec.conflicts).toEqual([{ path: 'src/x.ts', kind: 'both-edited', copy, local: file(2, 2), remote: file(3, 3) }]);
    expect(rec.renames).toEqual([{ from: 'src/x.ts', to: copy }]);
    expect(rec.toRemote.transfers.map((o) => o.path)).toEqual(['src/x.ts']);
    expect(rec.toLocal.transfers.map((o) => o.path)).toEqual([copy]);
  });

  it('lets an edit beat a delete, and keeps what one side added in a directory the other deleted', () => {
    const a = treeOf([['d/old', file(1, 1)], ['e', file(1, 1)]]);
    const l = treeOf([['e', file(2, 2)]]); // d deleted here, e edited
    const r = treeOf([['d/old', file(1, 1)], ['d/new', file(5, 5)]]); // e deleted there, d/new added
    const { rec, localAfter, remoteAfter } = run(a, l, r);
    expect(rec.conflicts).toEqual([]);
    for (const t of [localAfter, remoteAfter]) expect([...t.keys()].sort()).toEqual(['d', 'd/new', 'e']);
    expect(localAfter.get('e')).toEqual(file(2, 2));
  });

  it('leaves a path alone where one side made a directory and the other a link', () => {
    const a = treeOf([['p', file(1, 1)]]);
    const { rec, localAfter, remoteAfter } = run(a, treeOf([['p/q', file(2, 2)]]), treeOf([['p', link('x')]]));
    expect(rec.conflicts.map((c) => [c.path, c.kind])).toEqual([['p', 'both-changed']]);
    expect(localAfter.get('p')).toEqual(dir());
    expect(remoteAfter.get('p')).toEqual(link('x'));
    expect(rec.merged.get('p')).toEqual(file(1, 1));
  });

  it('names conflict copies as syncthing does, the extension kept last', () => {
    const when = new Date(Date.UTC(2026, 0, 2, 3, 4, 5));
    expect(conflictCopyName('a/b/notes.md', when, 'dev box')).toBe('a/b/notes.sync-conflict-20260102-030405-dev_box.md');
    expect(conflictCopyName('Makefile', when, 'h')).toBe('Makefile.sync-conflict-20260102-030405-h');
    expect(conflictCopyName('.env', when, 'h')).toBe('.env.sync-conflict-20260102-030405-h');
  });
});

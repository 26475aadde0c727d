/**
 * The shared vocabulary of the plan and reconcile property tests: entries, consistent trees, their generators, and
 * a model executor that applies a plan to a tree the way the engine does (failing where the engine would: an rmdir
 * of a non-empty directory, a write without its parent). The coming two-way reconcile is checked with the same model.
 */
import fc from 'fast-check';
import type { Op, Plan } from '../../src/plan/plan.js';
import type { Entry, Tree } from '../../src/types.js';
import { ancestors, isUnder } from '../../src/util/paths.js';

export const file = (size: number, mtime: number, mode = 0o644): Entry => ({ type: 'file', size, mtime, mode });
export const dir = (mode = 0o755): Entry => ({ type: 'dir', size: 0, mtime: 0, mode });
export const link = (target: string): Entry => ({ type: 'symlink', size: 0, mtime: 0, mode: 0o777, target });

/** Builds a consistent tree: every ancestor of an entry is a directory. */
export function treeOf(items: Array<[string, Entry]>): Tree {
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

export const arbPath = fc
  .array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 3 })
  .map((parts) => parts.join('/'));
export const arbEntry: fc.Arbitrary<Entry> = fc.oneof(
  fc.record({ size: fc.integer({ min: 0, max: 3 }), mtime: fc.integer({ min: 1, max: 3 }), mode: fc.constantFrom(0o644, 0o755) }).map((r) => file(r.size, r.mtime, r.mode)),
  fc.constant(dir()),
  fc.constantFrom('x', 'y').map(link),
);
export const arbTree = fc.array(fc.tuple(arbPath, arbEntry), { maxLength: 8 }).map(treeOf);

/** Applies a plan to a copy of dst the way the executor does. */
export function apply(dst: Tree, p: Plan): Tree {
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

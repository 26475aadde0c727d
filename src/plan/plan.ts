import type { Entry, Tree } from '../types.js';
import { ancestors, comparePaths, isUnder } from '../util/paths.js';

/**
 * Pure planning: two listings plus the manifest in, operations out. The same function serves push (src = local,
 * dst = remote) and pull (src = remote, dst = local).
 *
 * Invariants:
 * - A destination entry that differs from the manifest (changed outside wsync) is never overwritten or deleted
 *   unless `force`, and then only after being moved to the trash (op.backup).
 * - Nothing is planned at or below a path whose listing failed (`blocked`), or below a conflicted path.
 * - Deletions (`--delete`) are only of destination entries the manifest vouches for, children before parents.
 * - `next` is the manifest to write if every operation succeeds; the executor restores the base entry of any
 *   path whose operation failed.
 */
export type Op =
  | { kind: 'mkdir'; path: string; mode: number }
  | { kind: 'put'; path: string; entry: Entry; replace: boolean; backup: boolean }
  | { kind: 'link'; path: string; entry: Entry; replace: boolean; backup: boolean }
  | { kind: 'meta'; path: string; entry: Entry; mode?: number; mtime?: number }
  | { kind: 'remove'; path: string; type: 'file' | 'dir'; backup: boolean };

/** Why a path was left alone, as data (cli/conflicts.ts says it in words). */
export type ConflictKind =
  /** The destination changed since wsync last wrote it there. */
  | 'changed'
  /** The destination holds something else that wsync never wrote. */
  | 'unmanaged'
  /** A directory the source replaces with a file or link holds paths changed on the destination. */
  | 'dir-holds-changes'
  /** A directory the source replaces could not be fully listed. */
  | 'unlisted'
  /** Found changed while the run was working, right before it would have replaced or deleted it. */
  | 'changed-during-run'
  /** An interrupted replacement kept an old version aside that may hold someone's edit: kept under a conflict name. */
  | 'kept-aside';

export interface Conflict {
  path: string;
  kind: ConflictKind;
  /** What the run would have done to the path. */
  op: 'replace' | 'delete';
  /** The side holding the version that was kept. */
  side: 'local' | 'remote';
  /** dir-holds-changes: how many paths below changed, and one of them. */
  count?: number;
  example?: string;
  /** kept-aside: where the kept version is now. */
  keptAt?: string;
  /** changed-during-run: what the check found there (the transport's words). */
  found?: string;
}

export interface PlanInput {
  src: Tree;
  dst: Tree;
  /** Manifest entries from the last run; empty when the target has none. */
  base: Tree;
  delete: boolean;
  force: boolean;
  blocked?: string[];
  /** Which side the destination is (conflicts say where the kept version is). */
  dstName: 'local' | 'remote';
}

export interface Plan {
  /** Removals that must happen before creations (a path changing type). */
  prepare: Op[];
  mkdirs: Op[];
  transfers: Op[];
  metas: Op[];
  /** --delete removals: run last, and only when everything before succeeded. */
  deletes: Op[];
  conflicts: Conflict[];
  next: Tree;
  /** Files (and symlinks) --delete would remove vs files present at the destination. */
  deleteCount: number;
  dstFileCount: number;
  /** The delete limit's verdict: --delete (without --force) would remove more than half the destination's files. */
  tooManyDeletes: boolean;
}

/**
 * Quick check (size + mtime, as rsync does), overruled by content hashes when both sides carry one: the engine
 * hashes both copies when the quick check alone would call an outside edit "identical".
 */
export function sameContent(a: Entry, b: Entry): boolean {
  if (a.type !== b.type) return false;
  if (a.type === 'file') return a.size === b.size && a.mtime === b.mtime && !(a.sha256 && b.sha256 && a.sha256 !== b.sha256);
  if (a.type === 'symlink') return a.target === b.target;
  return true;
}

/** The destination still holds what wsync last wrote there. */
function isClean(d: Entry, b: Entry | undefined): boolean {
  return b !== undefined && sameContent(d, b);
}

function withHash(s: Entry, known: Entry | undefined): Entry {
  if (s.sha256 || !known?.sha256 || !sameContent(s, known)) return s;
  return { ...s, sha256: known.sha256 };
}

export function plan(input: PlanInput): Plan {
  const { src, dst, base } = input;
  const out: Plan = { prepare: [], mkdirs: [], transfers: [], metas: [], deletes: [], conflicts: [], next: new Map(), deleteCount: 0, dstFileCount: 0, tooManyDeletes: false };
  const blocked = new Set(input.blocked ?? []);
  const skipped = new Set<string>(); // conflicted paths whose subtrees are left alone
  const replacedDirs = new Set<string>(); // dst dirs removed wholesale because src has a non-dir there
  const paths = [...new Set([...src.keys(), ...dst.keys(), ...base.keys()])].sort(comparePaths);
  for (const e of dst.values()) if (e.type !== 'dir') out.dstFileCount++;

  const keepBase = (p: string) => {
    const b = base.get(p);
    if (b) out.next.set(p, b);
  };
  const underSkipped = (p: string) =>
    (skipped.size > 0 || blocked.size > 0) && (blocked.has(p) || ancestors(p).some((a) => skipped.has(a) || blocked.has(a)));
  const side = input.dstName;
  const conflict = (p: string, kind: ConflictKind, op: Conflict['op'], more: Partial<Conflict> = {}) => {
    out.conflicts.push({ path: p, kind, op, side, ...more });
    skipped.add(p);
    keepBase(p);
  };

  // Destination descendants of a dir that src replaces with a non-dir: they go with it.
  const dstUnder = (dir: string) => [...dst.keys()].filter((k) => isUnder(k, dir));

  for (const p of paths) {
    if (underSkipped(p)) {
      keepBase(p);
      continue;
    }
    if (replacedDirs.size > 0 && ancestors(p).some((a) => replacedDirs.has(a))) continue; // handled with its directory
    const s = src.get(p);
    const d = dst.get(p);
    const b = base.get(p);

    if (s) {
      if (d && sameContent(s, d)) {
        if (s.type !== 'symlink' && s.mode !== d.mode) out.metas.push({ kind: 'meta', path: p, entry: s, mode: s.mode });
        out.next.set(p, withHash(s, b));
        continue;
      }
      // Same bytes on both sides by hash, another mtime (a copy made by git, cp, or an interrupted run): adopted,
      // whoever wrote it; only the time (and mode) is fixed. No content is replaced, so nothing can be lost.
      if (d && s.type === 'file' && d.type === 'file' && s.size === d.size && s.sha256 && d.sha256 && s.sha256 === d.sha256) {
        out.metas.push({ kind: 'meta', path: p, entry: s, mtime: s.mtime, mode: s.mode !== d.mode ? s.mode : undefined });
        out.next.set(p, s);
        continue;
      }
      // Same bytes by hash, only the mtime moved (a touch): fix the time instead of resending.
      if (d && s.type === 'file' && isClean(d, b) && b!.type === 'file' && s.size === b!.size && s.sha256 && s.sha256 === b!.sha256) {
        out.metas.push({ kind: 'meta', path: p, entry: s, mtime: s.mtime, mode: s.mode !== d.mode ? s.mode : undefined });
        out.next.set(p, s);
        continue;
      }
      let backup = false;
      if (d) {
        if (!isClean(d, b)) {
          if (!input.force) {
            conflict(p, b ? 'changed' : 'unmanaged', 'replace');
            continue;
          }
          backup = true;
        }
        if (d.type === 'dir' && s.type !== 'dir') {
          const below = dstUnder(p);
          const dirtyBelow = below.filter((k) => !isClean(dst.get(k)!, base.get(k)));
          if (dirtyBelow.length > 0 && !input.force) {
            conflict(p, 'dir-holds-changes', 'replace', { count: dirtyBelow.length, example: dirtyBelow[0] });
            continue;
          }
          if (below.some((k) => blocked.has(k) || ancestors(k).some((a) => blocked.has(a)))) {
            conflict(p, 'unlisted', 'replace');
            continue;
          }
          replacedDirs.add(p);
          if (dirtyBelow.length > 0 || backup) {
            out.prepare.push({ kind: 'remove', path: p, type: 'dir', backup: true });
          } else {
            for (const k of below.sort(comparePaths).reverse()) {
              out.prepare.push({ kind: 'remove', path: k, type: dst.get(k)!.type === 'dir' ? 'dir' : 'file', backup: false });
            }
            out.prepare.push({ kind: 'remove', path: p, type: 'dir', backup: false });
          }
          backup = false;
        } else if (s.type === 'dir' && d.type !== 'dir') {
          out.prepare.push({ kind: 'remove', path: p, type: 'file', backup });
          backup = false;
        }
      }
      const replace = d !== undefined && !(d.type === 'dir') && s.type !== 'dir';
      if (s.type === 'dir') out.mkdirs.push({ kind: 'mkdir', path: p, mode: s.mode });
      else if (s.type === 'file') out.transfers.push({ kind: 'put', path: p, entry: s, replace, backup });
      else out.transfers.push({ kind: 'link', path: p, entry: s, replace, backup });
      out.next.set(p, s);
      continue;
    }

    if (!d) continue; // gone from both sides: forget it
    const clean = isClean(d, b);
    if (!input.delete) {
      if (b) out.next.set(p, b);
      continue;
    }
    if (!clean && !input.force) {
      conflict(p, b ? 'changed' : 'unmanaged', 'delete');
      continue;
    }
    out.deletes.push({ kind: 'remove', path: p, type: d.type === 'dir' ? 'dir' : 'file', backup: !clean });
    if (d.type !== 'dir') out.deleteCount++;
  }

  // A directory can only go when everything below it goes too.
  const surviving = new Set<string>();
  const deleting = new Set(out.deletes.map((o) => o.path));
  for (const k of dst.keys()) if (!deleting.has(k)) for (const a of ancestors(k)) surviving.add(a);
  out.deletes = out.deletes
    .filter((o) => {
      if (o.kind === 'remove' && o.type === 'dir' && surviving.has(o.path)) {
        keepBase(o.path);
        return false;
      }
      return true;
    })
    .sort((a, b) => comparePaths(b.path, a.path));
  out.mkdirs.sort((a, b) => comparePaths(a.path, b.path));
  carryChunkers(out.next, base);
  out.tooManyDeletes = input.delete && !input.force && out.deleteCount > 0 && out.deleteCount * 2 > out.dstFileCount;
  return out;
}

/**
 * The listings know nothing of chunkers. Where the content is the one the old entry describes, its chunker still
 * applies (the chunk list is cached by content).
 */
function carryChunkers(next: Tree, base: Tree): void {
  for (const [p, n] of next) {
    const b = base.get(p);
    if (n.type !== 'file' || n.chunker || b?.type !== 'file' || !b.chunker || !b.sha256 || n.size !== b.size) continue;
    const same = n.sha256 ? n.sha256 === b.sha256 : n.mtime === b.mtime;
    if (same) next.set(p, { ...n, sha256: b.sha256, chunker: b.chunker });
  }
}

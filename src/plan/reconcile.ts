import type { Entry, Tree } from '../types.js';
import { ancestors, baseName, comparePaths, isUnder, NAME_MAX, parentOf, utf8Prefix } from '../util/paths.js';
import { plan, sameContent, type Plan } from './plan.js';

/**
 * Two-way reconcile, pure: the ancestor (what this pair last agreed on), the local and the remote tree in; the tree
 * both sides should hold, two one-way plans that get them there, the conflict copies to make first, and the
 * conflicts out. The plans come from the one-way planner with the ancestor as their base, so its own rule (a
 * destination path that differs from the base is never replaced or deleted) still guards every operation: the
 * merged tree only ever takes a side's version where the other side still holds the ancestor's.
 *
 * Rules (syncthing's and unison's, where their users asked for them after losing data):
 * - a change on one side only propagates; a file's bytes and its mode are merged apart (a chmod on one side and an
 *   edit on the other both stand), and a touch is no change where the caller hashed the file (same bytes);
 * - the same change on both sides is agreed on;
 * - an edit beats a delete, on either side, and a directory deleted on one side keeps what the other side added
 *   below it (with the directories above it);
 * - a file edited on both sides keeps both: the local version stays at its name, the remote's moves aside to
 *   `name.sync-conflict-<stamp>.ext` (renamed on the remote, copied to the local side);
 * - anything else changed on both sides (a directory against a file, two different links) is left as it is on
 *   both sides and reported; the ancestor keeps its old entry there, so the next sync finds it again.
 */
export type SyncConflictKind =
  /** Both sides changed a file: both versions kept, the remote's under `copy`. */
  | 'both-edited'
  /** Both sides changed the path in ways that cannot both be kept by a copy: left alone on both sides. */
  | 'both-changed';

export interface SyncConflict {
  path: string;
  kind: SyncConflictKind;
  /** both-edited: where the remote's version goes (on both sides). */
  copy?: string;
  local?: Entry;
  remote?: Entry;
}

export interface ReconcileInput {
  ancestor: Tree;
  local: Tree;
  remote: Tree;
  /** The name a conflict copy of this path gets (before collisions are avoided): see conflictCopyName. */
  copyName: (path: string) => string;
  /** Paths that could not be listed on either side: left alone, with everything below them. */
  unlisted?: string[];
  /**
   * Local files written since the last sync began whose size and mtime are still the ancestor's, where the
   * ancestor has no hash to compare with: taken as changed (an edit within the same second at the same size).
   */
  touchedLocal?: ReadonlySet<string>;
}

export interface Reconciled {
  /** What both sides hold once everything succeeded (the new ancestor; left-alone paths keep the old entry). */
  merged: Tree;
  /** Conflict copies made first, on the remote, by rename (the local side gets them through toLocal). */
  renames: Array<{ from: string; to: string }>;
  /** local → remote, planned against the remote as it is after the renames (remoteTree), on remoteBase. */
  toRemote: Plan;
  remoteTree: Tree;
  remoteBase: Tree;
  /** remote → local, on localBase. */
  toLocal: Plan;
  localBase: Tree;
  conflicts: SyncConflict[];
  /** Paths left alone on both sides (with everything below them). */
  blocked: string[];
}

/**
 * `dir/name.sync-conflict-20261206-031500-host.ext`, as syncthing names them (the extension kept last); the stem is
 * shortened to keep the name within 255 bytes.
 */
export function conflictCopyName(path: string, when: Date, host: string): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const stamp = `${when.getUTCFullYear()}${pad(when.getUTCMonth() + 1)}${pad(when.getUTCDate())}-${pad(when.getUTCHours())}${pad(when.getUTCMinutes())}${pad(when.getUTCSeconds())}`;
  const safeHost = host.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40) || 'host';
  const name = baseName(path);
  const dot = name.lastIndexOf('.');
  let [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const tag = `.sync-conflict-${stamp}-${safeHost}`;
  // Room for the tag and a collision suffix (".99"); an over-long extension goes into the stem's budget.
  if (Buffer.byteLength(ext) > 40) [stem, ext] = [name, ''];
  stem = utf8Prefix(stem, NAME_MAX - Buffer.byteLength(tag) - Buffer.byteLength(ext) - 4);
  const dir = parentOf(path);
  const copy = `${stem}${tag}${ext}`;
  return dir ? `${dir}/${copy}` : copy;
}

/** The same bytes: the quick check, or both hashed (the caller hashes where a touch or a same-second edit may hide). */
export function sameBytes(x: Entry, y: Entry): boolean {
  return sameContent(x, y) || (x.type === 'file' && y.type === 'file' && x.size === y.size && !!x.sha256 && x.sha256 === y.sha256);
}

/** A path's content changed from the ancestor's: appeared, went, or holds something else (a mode change does not). */
function changed(x: Entry | undefined, a: Entry | undefined): boolean {
  if (!x || !a) return x !== a;
  return !sameBytes(x, a);
}

const modeMoved = (x: Entry | undefined, a: Entry | undefined) => !!x && !!a && x.type === a.type && x.type !== 'symlink' && x.mode !== a.mode;

/**
 * The mode the merged entry gets: a side's own change of it wins over the other side's old mode (the local side's
 * when both changed it), so that a chmod on one side does not make an edit on the other a conflict.
 */
function withMode(m: Entry, l: Entry | undefined, r: Entry | undefined, a: Entry | undefined): Entry {
  if (m.type === 'symlink') return m;
  const mode = l?.type === m.type && modeMoved(l, a) ? l.mode : r?.type === m.type && modeMoved(r, a) ? r.mode : m.mode;
  return mode === m.mode ? m : { ...m, mode };
}

export function reconcile(input: ReconcileInput): Reconciled {
  const { ancestor: A, local: L, remote: R } = input;
  const merged: Tree = new Map();
  const conflicts: SyncConflict[] = [];
  const blocked = new Set<string>(input.unlisted ?? []);
  const copies: Array<{ from: string; to: string; entry: Entry }> = [];
  const paths = [...new Set([...A.keys(), ...L.keys(), ...R.keys()])].sort(comparePaths);
  const taken = new Set(paths);

  const underBlocked = (p: string) => blocked.size > 0 && ancestors(p).some((x) => blocked.has(x));

  for (const p of paths) {
    if (blocked.has(p) || underBlocked(p)) continue;
    const a = A.get(p);
    const l = L.get(p);
    const r = R.get(p);
    const cl = changed(l, a) || (!!l && !!input.touchedLocal?.has(p));
    const cr = changed(r, a);
    let m: Entry | undefined;
    // The same bytes on both sides: a side that touched the file (another mtime, the same bytes by hash) moves it.
    if (!cl && !cr) m = r && a && r.type === 'file' && r.mtime !== a.mtime && !(l && l.mtime !== a.mtime) ? r : l ?? r;
    else if (cl && !cr) m = l;
    else if (!cl && cr) m = r;
    else if (!l || !r) m = l ?? r; // an edit beats a delete (both deleted: gone)
    else {
      const same = sameBytes(l, r) ? l : undefined;
      if (same) m = same;
      else if (l.type === 'file' && r.type === 'file') {
        let copy = input.copyName(p);
        for (let n = 2; taken.has(copy); n++) copy = `${input.copyName(p)}.${n}`;
        taken.add(copy);
        copies.push({ from: p, to: copy, entry: r });
        conflicts.push({ path: p, kind: 'both-edited', copy, local: l, remote: r });
        m = l;
      } else {
        conflicts.push({ path: p, kind: 'both-changed', local: l, remote: r });
        blocked.add(p);
        continue;
      }
    }
    if (m) merged.set(p, withMode(m, l, r, a));
  }

  for (const c of copies) merged.set(c.to, c.entry);
  // Whatever the merged tree keeps needs its directories: a directory deleted on one side comes back where the
  // other side added something below it. Where a side turned such a directory into a file or link, neither wins:
  // that path is left alone too, with the ancestor's entries at and below it, until nothing more changes.
  for (let again = true; again; ) {
    again = false;
    for (const b of blocked) {
      for (const k of [...merged.keys()]) if (k === b || isUnder(k, b)) merged.delete(k);
      for (const [k, e] of A) if (k === b || isUnder(k, b)) merged.set(k, e);
    }
    for (const p of [...merged.keys()].sort(comparePaths)) {
      for (const d of ancestors(p)) {
        const e = merged.get(d);
        if (e?.type === 'dir') continue;
        const asDir = [L.get(d), R.get(d), A.get(d)].find((x) => x?.type === 'dir');
        if (!e && asDir) {
          merged.set(d, asDir);
          continue;
        }
        if (!blocked.has(d)) {
          conflicts.push({ path: d, kind: 'both-changed', local: L.get(d), remote: R.get(d) });
          blocked.add(d);
          again = true;
        }
        break;
      }
    }
  }
  // A conflict copy at or below a path left alone after all is not made (nor reported as one).
  const renames = copies.filter((c) => merged.get(c.to) === c.entry && !blocked.has(c.from) && !underBlocked(c.from));
  for (const c of copies) {
    if (renames.includes(c)) continue;
    if (merged.get(c.to) === c.entry) merged.delete(c.to);
    const i = conflicts.findIndex((x) => x.path === c.from && x.kind === 'both-edited');
    if (i >= 0) conflicts.splice(i, 1, { path: c.from, kind: 'both-changed', local: L.get(c.from), remote: R.get(c.from) });
  }

  // What each plan takes for clean: the ancestor, except where a side only touched a file (its bytes are the
  // ancestor's, by hash): that entry is clean there. On the remote, after the renames, the copies are clean too.
  const baseFor = (side: Tree): Tree => {
    const b: Tree = new Map(A);
    for (const [p, a] of A) {
      const x = side.get(p);
      if (x && !sameContent(x, a) && sameBytes(x, a)) b.set(p, x);
    }
    return b;
  };
  const remoteAfter: Tree = new Map(R);
  const remoteBase = baseFor(R);
  for (const c of renames) {
    remoteAfter.delete(c.from);
    remoteAfter.set(c.to, c.entry);
    remoteBase.set(c.to, c.entry);
  }
  const blockedList = [...blocked].sort(comparePaths);
  const toRemote = plan({ src: merged, dst: remoteAfter, base: remoteBase, delete: true, force: false, blocked: blockedList, dstName: 'remote' });
  const localBase = baseFor(L);
  const toLocal = plan({ src: merged, dst: L, base: localBase, delete: true, force: false, blocked: blockedList, dstName: 'local' });
  return { merged, renames: renames.map(({ from, to }) => ({ from, to })), toRemote, remoteTree: remoteAfter, remoteBase, toLocal, localBase, conflicts, blocked: blockedList };
}

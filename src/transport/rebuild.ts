import { WsyncError } from '../errors.js';
import type { OldVersion, RebuildOp, WriteOptions } from './types.js';
import type { Entry } from '../types.js';
import { NAME_MAX, utf8Prefix } from '../util/paths.js';

/**
 * Guards every rebuildFile implementation against a plan that does not describe the file it claims to: a wrong op
 * list would otherwise produce a file of the right size with the wrong bytes, renamed into place.
 */
export function checkRebuildOps(ops: readonly RebuildOp[], oldSize: number, newSize: number): void {
  let pos = 0;
  for (const op of ops) {
    const bad = op.dstOffset !== pos || !Number.isSafeInteger(op.length) || op.length <= 0 ||
      (op.kind === 'copy' && (!Number.isSafeInteger(op.srcOffset) || op.srcOffset < 0 || op.srcOffset + op.length > oldSize));
    if (bad) throw new WsyncError('E_INTERNAL', `rebuild op does not fit: ${JSON.stringify(op)} at ${pos} (old ${oldSize} bytes)`);
    pos += op.length;
  }
  if (pos !== newSize) throw new WsyncError('E_INTERNAL', `rebuild ops cover ${pos} bytes, the new file has ${newSize}`);
}

/** The old file is not what the manifest says: someone else changed it, so it must not be a copy source. */
export function outsideEdit(where: string, old: OldVersion, now: { size: number; mtime: number } | null): WsyncError {
  const seen = now ? `${now.size} bytes, mtime ${now.mtime}` : 'missing';
  return new WsyncError('E_CONFLICT', `${where} changed since the last sync (expected ${old.size} bytes, mtime ${old.mtime}; found ${seen}); left untouched`, {
    hint: 'someone edited it outside wsync; --force replaces it and keeps the old copy in .wsync/trash/',
  });
}

/** ExclusiveFile.commit's first step: write `data` now, or wait for what an earlier write() started. */
export function dataWritten(rel: string, data: Buffer | null, write: (d: Buffer) => Promise<void>, written: Promise<void> | undefined): Promise<void> {
  if (data) return write(data);
  if (!written) throw new WsyncError('E_INTERNAL', `${rel}: commit without data`);
  return written;
}

/**
 * The destination right before a rename, against what the plan saw there (WriteOptions.expect): any difference is
 * someone else's change made while this run was sending, which must not be overwritten.
 */
export function checkExpected(where: string, now: Entry | null, expect: WriteOptions['expect'] & {} | null): void {
  if (expect === null) {
    if (now) throw new WsyncError('E_CONFLICT', `${where} was created by someone else while this run was sending it; theirs was kept, ours not written`);
    return;
  }
  if (!asExpected(now, expect)) {
    const what = now ? 'changed' : 'removed';
    throw new WsyncError('E_CONFLICT', `${where} was ${what} by someone else while this run was sending it; theirs was kept, ours not written`);
  }
}

/** The destination is still what the listing showed (type, mtime, and size for a file). */
export function asExpected(now: Entry | null, expect: NonNullable<WriteOptions['expect']>): boolean {
  return now !== null && now.type === expect.type && now.mtime === expect.mtime && (now.type !== 'file' || now.size === expect.size);
}

/**
 * Where a version someone else made is kept beside the one that replaced it, as syncthing names them:
 * `dir/name.sync-conflict-YYYYMMDD-HHMMSS-<who>.ext` (a dotfile keeps its whole name before the suffix).
 */
export function conflictName(rel: string, when: Date, who = 'remote'): string {
  const slash = rel.lastIndexOf('/');
  const dir = slash < 0 ? '' : rel.slice(0, slash + 1);
  const name = rel.slice(slash + 1);
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const p = (n: number) => String(n).padStart(2, '0');
  const stamp = `${when.getFullYear()}${p(when.getMonth() + 1)}${p(when.getDate())}-${p(when.getHours())}${p(when.getMinutes())}${p(when.getSeconds())}`;
  const suffix = `.sync-conflict-${stamp}-${who}`;
  // Within the 255 bytes a name may have: a long stem is cut (between characters), never the suffix.
  const room = NAME_MAX - Buffer.byteLength(suffix + ext, 'utf8');
  const fits = room > 0 ? utf8Prefix(stem, room) : '';
  const e = room > 0 ? ext : utf8Prefix(ext, NAME_MAX - Buffer.byteLength(suffix, 'utf8'));
  return `${dir}${fits}${suffix}${e}`;
}

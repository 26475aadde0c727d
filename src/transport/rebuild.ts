import { WsyncError } from '../errors.js';
import type { OldVersion, RebuildOp } from './types.js';

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

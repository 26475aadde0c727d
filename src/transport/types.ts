import type { WsyncError } from '../errors.js';
import type { Entry } from '../types.js';
import type { LinkMeter } from '../transfer/window.js';

/**
 * One small interface that both the local filesystem and an SFTP server implement, so that push and pull are the
 * same engine run in opposite directions. Paths are relative to the transport's root (POSIX, validated by the
 * caller). Every method that writes a file does so atomically: temp name in the same directory, data, mode and
 * mtime, fsync where possible, then an atomic rename over the final name.
 */
export interface Capabilities {
  /**
   * rebuildFile is available: SFTP copy-data (OpenSSH >= 9.0, not hidden with `sftp-server -P copy-data`), or a
   * filesystem the transport can copy within itself.
   */
  copyData: boolean;
  /** Durable writes before rename. */
  fsync: boolean;
  /** Largest single read/write request. */
  maxRead: number;
  maxWrite: number;
  /** writeFile takes WriteOptions.partial: an interrupted upload can be kept and gone on with. */
  partialWrites?: boolean;
}

export interface DirEntry {
  name: string;
  entry: Entry;
}

/** What a name that is neither a file, a directory nor a symlink is; such names are never synced. */
export type SpecialKind = 'fifo' | 'socket' | 'device' | 'other';

/**
 * A directory listing. `skipped` names the entries left out because they are special (FIFOs, sockets, devices),
 * so that a sync can say so instead of passing over them in silence; absent when there were none.
 */
export type DirListing = DirEntry[] & { skipped?: Array<{ name: string; kind: SpecialKind }> };

/** The kind of a special file from its st_mode (Node's Stats.mode and SFTP attrs carry the same S_IFMT bits). */
export function specialKindOf(mode: number): SpecialKind {
  switch (mode & 0o170000) {
    case 0o010000:
      return 'fifo';
    case 0o140000:
      return 'socket';
    case 0o020000:
    case 0o060000:
      return 'device';
    default:
      return 'other';
  }
}

export interface WriteMeta {
  mode: number;
  mtime: number;
  /** Expected byte count; a mismatch aborts the write before anything is renamed. */
  size: number;
}

export interface WriteOptions {
  /** When the final path exists, move it here (relative to the root) just before the new file is renamed in. */
  backupTo?: string;
  /** Fail instead of replacing when the final path exists. */
  exclusive?: boolean;
  /**
   * Create missing parent directories (0755) first; over SFTP they are sent ahead of the write, unawaited.
   * 'last': only the immediate parent, so a wrong guess about the layout above it creates nothing.
   */
  parents?: boolean | 'last';
  /** The temp file's name (in the same directory) instead of wsync's own pattern, e.g. git's `tmp_obj_*`. */
  tempName?: string;
  /**
   * SFTP: the temp goes into this directory (relative to the root, one the caller knows to be real) and is renamed
   * across, so that nothing is written before the file's own directory has been looked at. The local transport
   * keeps it beside the file: it never writes through a parent that is not a real directory.
   */
  tempIn?: string;
  /**
   * What the destination path must still be right before the rename: a file (or symlink) of this size and mtime,
   * or null for nothing there. Otherwise the new file is not renamed in (its temp is removed) and the write fails
   * with E_CONFLICT: someone changed the destination after it was listed. Over SFTP the check is sent behind the
   * data and answered with it, so a change in the round trip before the rename can still be overwritten.
   */
  expect?: { type: 'file' | 'symlink'; size: number; mtime: number } | null;
  /**
   * With `expect`: where a destination found changed goes instead (relative to the root, e.g. the trash under
   * --force), and the write goes ahead. Without it such a change is kept beside the new file, or the write refused.
   */
  changedTo?: string;
  /**
   * (caps.partialWrites) The temp gets this name (in the same directory), and is kept instead of removed when the
   * write fails part-way (a lost link, an interrupt), so that a later run can go on from what it holds. With
   * `from` > 0 the temp already holds the first `from` bytes: it is opened without truncation and the data given
   * is what follows them.
   */
  partial?: { name: string; from: number };
}

/**
 * One step of rebuilding a file from its previous version: bytes [srcOffset, srcOffset+length) of the old file, or
 * literal bytes supplied by the caller, land at dstOffset of the new one. Same shape as the planner's DeltaOp.
 */
export type RebuildOp =
  | { readonly kind: 'copy'; readonly srcOffset: number; readonly length: number; readonly dstOffset: number }
  | { readonly kind: 'literal'; readonly dstOffset: number; readonly length: number };

/** What the caller believes the old file is; the rebuild refuses to read from anything else. */
export interface OldVersion {
  size: number;
  mtime: number;
}

/**
 * Supplies the bytes of literal ops. The transport asks in increasing dstOffset order, one call at a time, in
 * pieces it chooses (at most a few MiB), and each call must resolve with exactly `length` bytes. The sequential
 * contract lets the caller verify what it reads against chunk ids as the bytes go by.
 */
export type LiteralSource = (dstOffset: number, length: number) => Promise<Buffer>;

/**
 * A file created with O_EXCL and kept open, the way git holds a `.lock` file: taking it costs one round trip, and
 * committing it one more for the data, fsync and close, then the rename.
 */
export interface ExclusiveFile {
  /**
   * Writes `data`, fsyncs and closes, without renaming: a later commit(null, …) only renames. For content that
   * can be written while other work still runs and turns out to be final.
   */
  write(data: Buffer): Promise<void>;
  /**
   * Writes `data` (null: what write() already wrote), fsyncs, closes, then (with `renameTo`) renames it over that
   * path atomically; with `after`, the rename waits for it (and is not made if it fails), so the data is on its way
   * while other work finishes. `behind` is started right after the rename is sent, without waiting for its answer:
   * requests it makes on the same channel (a pinned view) reach the server after the rename; commit resolves when
   * both are done.
   */
  commit(data: Buffer | null, renameTo?: string, after?: Promise<unknown>, behind?: () => Promise<unknown>): Promise<void>;
  /**
   * Closes and removes it (idempotent; does nothing after a commit). Never throws; false when it may still be there
   * (the connection was lost before the removal was confirmed).
   */
  abort(): Promise<boolean>;
}

/** Data written under a temp name next to its final path, not yet visible there. */
export interface StagedFile {
  /**
   * Renames it into place; with exclusive, resolves false (and removes the temp) when the name already exists;
   * with backupTo, the file it replaces is moved there first; expect and changedTo as for writeFile (the temp is
   * removed when the check fails).
   */
  commit(opts?: Pick<WriteOptions, 'exclusive' | 'backupTo' | 'expect' | 'changedTo'>): Promise<boolean>;
  /** Removes the temp (idempotent). */
  abort(): Promise<void>;
}

/** Random access to one open file. */
export interface FileReader {
  /** Size when opened. */
  readonly size: number;
  /** Version identity when opened (see Transport.stamp). */
  readonly stamp: string;
  /** Exactly `length` bytes at `pos`; E_CHANGED_DURING_SYNC if the file ends first. */
  read(pos: number, length: number): Promise<Buffer>;
  /**
   * A view whose requests reach the server in the order they are issued (one SFTP channel, where sftp-server
   * handles requests in turn). Lets a reader take a lock and read what it protects in the same round trip.
   * Absent where the order is not kept (local: operations run on a thread pool).
   */
  pinned?(): Transport;
  close(): Promise<void>;
}

export interface Transport {
  readonly kind: 'local' | 'sftp';
  readonly caps: Capabilities;
  /** Absolute root, as the transport addresses it. */
  readonly root: string;
  /** Human-readable location for messages: 'host:/abs/path' or '/abs/path'. */
  describe(rel?: string): string;

  /**
   * Entries of a directory (lstat semantics, symlink targets filled in); null when it does not exist. Special
   * files are not among them, only named in the listing's `skipped`.
   */
  readdir(rel: string): Promise<DirListing | null>;
  lstat(rel: string): Promise<Entry | null>;
  /** Whole small file, null when missing. */
  /** `small`: the caller expects a few KB at most (git refs, loose objects), so no read ahead is asked for. */
  readFile(rel: string, opts?: { small?: boolean }): Promise<Buffer | null>;
  /**
   * The file's bytes in order. Fails with E_CHANGED_DURING_SYNC, at the end at the latest (so that a write fed by
   * it is never renamed into place), when the file is not `size` bytes, or its mtime is not `mtime` (when given), or
   * it was modified while it was read: what was read must be one version of the file, never a mix.
   */
  openRead(rel: string, size: number, mtime?: number): AsyncIterable<Buffer>;
  openReader(rel: string): Promise<FileReader>;
  /** Waits for the clean-up requests writes left in flight (links of replaced files being removed). */
  settle?(): Promise<void>;
  /** Latency of the link's requests (remote transports): what the engine bounds the bytes in flight by. */
  readonly link?: LinkMeter;
  /**
   * Called as a run begins: what a transport remembers of the tree between calls (directories known to exist,
   * cached directory handles) is forgotten, since a session's next run may come after others changed it.
   */
  beginRun?(): Promise<void>;
  /** Remote transports: the error the connection was lost with; undefined while it works. */
  readonly lost?: WsyncError;
  /** SFTP: which of ssh2's internals were hooked on this connection (ssh2-internals.ts), for WSYNC_DEBUG. */
  readonly hooks?: Record<string, boolean>;
  /**
   * A string that changes whenever the regular file at `rel` may have changed: null when it is missing or not a
   * regular file. Local: device, inode, size, mtime and ctime in nanoseconds (ctime catches a write that put the
   * mtime back). SFTP v3 has only size and whole-second mtime, so its stamps are weak; callers cache local ones.
   */
  stamp(rel: string): Promise<string | null>;

  /** Creates the root (and parents) if missing. */
  ensureRoot(): Promise<void>;
  /** Creates one directory; succeeds if a directory is already there. */
  mkdir(rel: string, mode: number): Promise<void>;
  writeFile(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts?: WriteOptions): Promise<void>;
  /**
   * Replaces the file at `rel` with one built from its current content and literal bytes, the way writeFile
   * replaces it (temp name, mode and mtime, fsync, size check, atomic rename, backupTo honoured); the old file is
   * only read, and stays intact until the rename. Before reading it, and again after the last copy, the old
   * file's size and mtime must equal `old`: otherwise it was changed by someone else and the call fails with
   * E_CONFLICT without touching it (a missing file is also E_CONFLICT). Needs caps.copyData.
   */
  rebuildFile(rel: string, old: OldVersion, ops: readonly RebuildOp[], literal: LiteralSource, meta: WriteMeta, opts?: WriteOptions): Promise<void>;
  /**
   * rebuildFile up to, not including, the rename: the checks, copies, writes, mode, mtime, fsync and size check are
   * done when it resolves, and the staged file is renamed in (or removed) later. Lets a rebuild start before the
   * run has decided it wants it. With `gate`, nothing is opened, created or written before it resolves, and if it
   * rejects, so does the call. `tempName` as in WriteOptions.
   */
  stageRebuild(rel: string, old: OldVersion, ops: readonly RebuildOp[], literal: LiteralSource, meta: WriteMeta, opts?: { gate?: Promise<unknown>; tempName?: string }): Promise<StagedFile>;
  /**
   * Writes `rel` (as writeFile does: temp name, mode and mtime, fsync, atomic rename) from byte ranges of another
   * file on the same side, `ranges` = [offset, length] in order; over SFTP the server copies them (copy-data), so
   * no file bytes cross the link. Needs caps.copyData. The source must not change meanwhile (it is read, not
   * checked): meant for a file this run wrote, such as a just committed git pack.
   */
  writeFromRanges(rel: string, srcRel: string, ranges: ReadonlyArray<readonly [number, number]>, meta: WriteMeta): Promise<void>;
  /** Writes a small file atomically; with exclusive, returns false when the name already exists. */
  writeSmall(rel: string, data: Buffer, opts?: { exclusive?: boolean; mode?: number; parents?: boolean | 'last' }): Promise<boolean>;
  /**
   * Creates a new file with O_EXCL semantics in one round trip; false when the name exists. The content may land
   * just after the promise resolves (lock files: a reader treats empty content as held by someone unknown).
   */
  createExclusive(rel: string, data: Buffer): Promise<boolean>;
  /**
   * writeSmall in two halves: the data, mode and fsync now, the rename on commit(). Lets a caller put data in
   * place and still withdraw it without a trace (git's quarantine of a push's objects until it is accepted).
   */
  stageSmall(rel: string, data: Buffer, opts?: { mode?: number; mtime?: number; parents?: boolean | 'last'; tempName?: string; tempIn?: string }): Promise<StagedFile>;
  /** O_EXCL create kept open until commit or abort; null when the name exists. */
  openExclusive(rel: string): Promise<ExclusiveFile | null>;
  /**
   * Appends to a file with O_APPEND, creating it (mode 0644) when missing: each call lands whole at the end even
   * when another process appends too, which is how git writes reflogs.
   */
  appendFile(rel: string, data: Buffer): Promise<void>;
  symlink(rel: string, target: string, opts?: WriteOptions): Promise<void>;
  setMeta(rel: string, meta: { mode?: number; mtime?: number }): Promise<void>;
  /** Removes a file or symlink ('file'), or an empty directory ('dir'). Missing is not an error. */
  remove(rel: string, type: 'file' | 'dir'): Promise<void>;
  /** Atomic replace-rename (posix-rename). Creates the destination's parent directories. */
  rename(from: string, to: string): Promise<void>;
  /**
   * A view whose requests reach the server in the order they are issued (one SFTP channel, where sftp-server
   * handles requests in turn). Lets a reader take a lock and read what it protects in the same round trip.
   * Absent where the order is not kept (local: operations run on a thread pool).
   */
  pinned?(): Transport;
  close(): Promise<void>;
}

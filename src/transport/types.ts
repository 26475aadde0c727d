import type { Entry } from '../types.js';

/**
 * One small interface that both the local filesystem and an SFTP server implement, so that push and pull are the
 * same engine run in opposite directions. Paths are relative to the transport's root (POSIX, validated by the
 * caller). Every method that writes a file does so atomically: temp name in the same directory, data, mode and
 * mtime, fsync where possible, then an atomic rename over the final name.
 */
export interface Capabilities {
  /** Server-side copy between two open handles (SFTP copy-data, OpenSSH >= 9.0). */
  copyData: boolean;
  /** Durable writes before rename. */
  fsync: boolean;
  /** Largest single read/write request. */
  maxRead: number;
  maxWrite: number;
}

export interface DirEntry {
  name: string;
  entry: Entry;
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
}

export interface Transport {
  readonly kind: 'local' | 'sftp';
  readonly caps: Capabilities;
  /** Absolute root, as the transport addresses it. */
  readonly root: string;
  /** Human-readable location for messages: 'host:/abs/path' or '/abs/path'. */
  describe(rel?: string): string;

  /** Entries of a directory (lstat semantics, symlink targets filled in); null when it does not exist. */
  readdir(rel: string): Promise<DirEntry[] | null>;
  lstat(rel: string): Promise<Entry | null>;
  /** Whole small file, null when missing. */
  readFile(rel: string): Promise<Buffer | null>;
  /** Streams `size` bytes of a file; throws E_CHANGED_DURING_SYNC if it no longer has that size. */
  openRead(rel: string, size: number): AsyncIterable<Buffer>;

  /** Creates the root (and parents) if missing. */
  ensureRoot(): Promise<void>;
  /** Creates one directory; succeeds if a directory is already there. */
  mkdir(rel: string, mode: number): Promise<void>;
  writeFile(rel: string, data: AsyncIterable<Buffer>, meta: WriteMeta, opts?: WriteOptions): Promise<void>;
  /** Writes a small file atomically; with exclusive, returns false when the name already exists. */
  writeSmall(rel: string, data: Buffer, opts?: { exclusive?: boolean; mode?: number }): Promise<boolean>;
  /**
   * Creates a new file with O_EXCL semantics in one round trip; false when the name exists. The content may land
   * just after the promise resolves (lock files: a reader treats empty content as held by someone unknown).
   */
  createExclusive(rel: string, data: Buffer): Promise<boolean>;
  symlink(rel: string, target: string, opts?: WriteOptions): Promise<void>;
  setMeta(rel: string, meta: { mode?: number; mtime?: number }): Promise<void>;
  /** Removes a file or symlink ('file'), or an empty directory ('dir'). Missing is not an error. */
  remove(rel: string, type: 'file' | 'dir'): Promise<void>;
  /** Atomic replace-rename (posix-rename). Creates the destination's parent directories. */
  rename(from: string, to: string): Promise<void>;
  close(): Promise<void>;
}

/** Domain types shared by every stage. Paths are POSIX, relative to the sync root, never '' or with '..'. */
import type { ChunkerSpec } from './chunking/params.js';

export type EntryType = 'file' | 'dir' | 'symlink';

export interface Entry {
  type: EntryType;
  /** Bytes for files; 0 otherwise. */
  size: number;
  /** Whole seconds: SFTP v3 carries nothing finer, so both sides compare at that precision. */
  mtime: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  /** Symlink target, verbatim. */
  target?: string;
  /**
   * Symlinks read from a server whose READLINK joins relative targets onto the link's directory (ProFTPD): that
   * directory (absolute), and `target` is what the server answered. The walk recovers the target as written from
   * the manifest, or reports the link (scan/walk.ts); never stored, never compared.
   */
  linkDir?: string;
  /** Full SHA-256 (hex) when known. */
  sha256?: string;
  /**
   * How the content was cut into chunks when wsync last moved it (big files only). The chunk list itself lives in
   * the local chunk cache, keyed by sha256 + this spec; a changed file is re-cut with the same spec so ids match.
   */
  chunker?: ChunkerSpec;
  /**
   * Local files only: the inode's change time in ms. Any write moves it, even one that kept the size and put the
   * mtime back, so it finds edits the size + mtime check cannot see (never sent, never in the manifest).
   */
  ctime?: number;
}

export type Tree = Map<string, Entry>;

/** A per-path problem that did not stop the run. */
export interface Problem {
  path: string;
  code: string;
  message: string;
}

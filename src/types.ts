/** Domain types shared by every stage. Paths are POSIX, relative to the sync root, never '' or with '..'. */
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
  /** Full SHA-256 (hex) when known. */
  sha256?: string;
}

export type Tree = Map<string, Entry>;

/** A per-path problem that did not stop the run. */
export interface Problem {
  path: string;
  code: string;
  message: string;
}

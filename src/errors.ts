/**
 * Every failure wsync reports carries a stable code (for scripts and --json) and a hint for the person at the
 * keyboard. The CLI maps the exit-code class; nothing below src/cli prints or exits.
 */
export type ExitClass = 'usage' | 'local' | 'remote' | 'partial' | 'interrupted';

/** 130: what a shell reports for a process ended by Ctrl-C (128 + SIGINT). */
export const EXIT_CODES: Record<ExitClass, number> = { usage: 1, local: 1, remote: 2, partial: 3, interrupted: 130 };

export type ErrorCode =
  | 'E_USAGE'
  | 'E_TARGET'
  | 'E_LOCAL_MISSING'
  | 'E_LOCAL_IO'
  | 'E_SSH_CONFIG'
  | 'E_CONNECT'
  | 'E_AUTH'
  | 'E_PASSPHRASE'
  | 'E_HOSTKEY_UNKNOWN'
  | 'E_HOSTKEY_CHANGED'
  | 'E_HOSTKEY_REVOKED'
  | 'E_KNOWN_HOSTS'
  | 'E_REMOTE_PERMISSION'
  | 'E_REMOTE_IO'
  | 'E_REMOTE_LOST'
  | 'E_LOCKED'
  | 'E_MANIFEST'
  | 'E_DELETE_LIMIT'
  /** A two-way sync found one side empty where the last sync left files (an unmounted disk, a wrong path). */
  | 'E_EMPTY_ROOT'
  | 'E_UNSAFE_PATH'
  | 'E_CONFLICT'
  | 'E_CHANGED_DURING_SYNC'
  | 'E_GIT_REPO'
  | 'E_GIT_REJECTED'
  | 'E_GIT_UNSUPPORTED'
  | 'E_GIT_CORRUPT'
  /** The run was stopped (its session's AbortSignal, Ctrl-C): what it finished is recorded, its lock removed. */
  | 'E_ABORTED'
  | 'E_INTERNAL';

const CLASS_OF: Record<ErrorCode, ExitClass> = {
  E_USAGE: 'usage',
  E_TARGET: 'usage',
  E_LOCAL_MISSING: 'local',
  E_LOCAL_IO: 'local',
  E_SSH_CONFIG: 'remote',
  E_CONNECT: 'remote',
  E_AUTH: 'remote',
  E_PASSPHRASE: 'remote',
  E_HOSTKEY_UNKNOWN: 'remote',
  E_HOSTKEY_CHANGED: 'remote',
  E_HOSTKEY_REVOKED: 'remote',
  E_KNOWN_HOSTS: 'remote',
  E_REMOTE_PERMISSION: 'remote',
  E_REMOTE_IO: 'remote',
  E_REMOTE_LOST: 'remote',
  E_LOCKED: 'local',
  E_MANIFEST: 'remote',
  E_DELETE_LIMIT: 'local',
  E_EMPTY_ROOT: 'local',
  E_UNSAFE_PATH: 'partial',
  E_CONFLICT: 'partial',
  E_CHANGED_DURING_SYNC: 'partial',
  // The local repository is missing or unusable (not a repo, no such branch).
  E_GIT_REPO: 'local',
  // Like a sync conflict: the remote has something a push would lose (non-fast-forward, a dirty work tree).
  E_GIT_REJECTED: 'partial',
  E_GIT_UNSUPPORTED: 'remote',
  E_GIT_CORRUPT: 'remote',
  E_ABORTED: 'interrupted',
  E_INTERNAL: 'local',
};

export class WsyncError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  constructor(code: ErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'WsyncError';
    this.code = code;
    this.hint = opts.hint;
  }
  get exitClass(): ExitClass {
    return CLASS_OF[this.code];
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof WsyncError) return EXIT_CODES[err.exitClass];
  return EXIT_CODES.local;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** What a run stopped by its signal rejects with (ExecuteOptions.signal). */
export function abortedError(): WsyncError {
  return new WsyncError('E_ABORTED', 'stopped before it was done: what it finished is recorded', { hint: 'run it again to go on' });
}

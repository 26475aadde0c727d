import type { Argv } from 'yargs';
import { parseArgs } from 'node:util';
import type { SyncOptions } from '../api.js';
import { WsyncError, errorMessage, exitCodeFor, EXIT_CODES } from '../errors.js';
import { parseTarget } from '../target.js';
import { Renderer, type Verbosity } from './render.js';
import { COMPRESS_HELP, gitCommand, parseGitFast, SHARED_FAST_OPTIONS, sharedFastArgs } from './git.js';
import { connectionArgs, isInteractive, ttyHostKeyPrompt } from './prompt.js';
import { normalizeSyncArgs, type Normalized } from './rsync-compat.js';

const EPILOG = `Targets: host:path, user@host:path, ssh://user@host:port/path, or a local directory.
Exit codes: 0 done; 1 usage or local error (or the target is locked); 2 SSH, network, auth or remote access error;
3 finished but some paths were not synced (conflicts or per-file failures, each listed).`;

export interface SyncArgs {
  local: string;
  remote: string;
  delete: boolean;
  'dry-run': boolean;
  exclude: string[];
  include: string[];
  gitignore: boolean;
  json: boolean;
  quiet: boolean;
  verbose: boolean;
  force: boolean;
  'ssh-config'?: string;
  identity?: string;
  'accept-new': boolean;
  compress?: boolean;
  concurrency: number;
  channels: number;
  wait: number;
  'break-lock': boolean;
  checksum: boolean;
}

function syncOptions(y: Argv): Argv<SyncArgs> {
  return y
    .positional('local', { type: 'string', describe: 'local directory', demandOption: true })
    .positional('remote', { type: 'string', describe: 'target: host:path, user@host:path, ssh://user@host:port/path or a local path', demandOption: true })
    .option('delete', { type: 'boolean', default: false, describe: 'remove destination paths the source no longer has (never after an error)' })
    .option('dry-run', { alias: 'n', type: 'boolean', default: false, describe: 'show what would change (+ new, * changed, - deleted, . attributes) and change nothing' })
    .option('exclude', { type: 'string', array: true, default: [], describe: 'leave out paths matching GLOB (repeatable)' })
    .option('include', { type: 'string', array: true, default: [], describe: 'take paths matching GLOB even if ignored (repeatable)' })
    .option('gitignore', { type: 'boolean', default: true, describe: 'honour .gitignore files (--no-gitignore to send ignored files)' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON lines: one event per change and a final summary object' })
    .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'print only errors' })
    .option('verbose', { alias: 'v', type: 'boolean', default: false, describe: 'list every change' })
    .option('force', { type: 'boolean', default: false, describe: 'replace or delete paths changed on the other side (old copies kept in .wsync/trash/); lift the delete limit' })
    .option('ssh-config', { alias: 'F', type: 'string', describe: 'ssh_config file to use instead of ~/.ssh/config' })
    .option('identity', { alias: 'i', type: 'string', describe: 'private key to try first' })
    .option('accept-new', { type: 'boolean', default: false, describe: 'record an unknown host key in known_hosts (a changed key is still refused)' })
    .option('compress', { alias: 'z', type: 'boolean', describe: COMPRESS_HELP })
    .option('concurrency', { type: 'number', default: 1024, describe: 'files in flight at once' })
    .option('channels', { type: 'number', default: 8, describe: 'SFTP channels per connection' })
    .option('wait', { type: 'number', default: 0, describe: 'seconds to wait when another run holds the target lock' })
    .option('break-lock', { type: 'boolean', default: false, describe: 'remove a lock left by a run that is gone' })
    .option('checksum', { alias: 'c', type: 'boolean', default: false, describe: 'compare files of equal size and mtime by content (reads them on both sides)' }) as unknown as Argv<SyncArgs>;
}

/**
 * push/pull with plain options, parsed by node:util: loading yargs costs a tenth of a second, which on a no-op run
 * is a tenth of the whole. Help, mistakes and anything unusual return null and go through yargs.
 */
function parseSyncFast(argv: string[]): { direction: 'push' | 'pull'; args: SyncArgs } | null {
  const direction = argv[0];
  if (direction !== 'push' && direction !== 'pull') return null;
  // node 20's parseArgs knows no --no-x; this is the one negated option.
  const rest = argv.slice(1);
  const noGitignore = rest.includes('--no-gitignore');
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: rest.filter((a) => a !== '--no-gitignore'),
      allowPositionals: true,
      strict: true,
      options: {
        delete: { type: 'boolean' },
        'dry-run': { type: 'boolean', short: 'n' },
        exclude: { type: 'string', multiple: true },
        include: { type: 'string', multiple: true },
        gitignore: { type: 'boolean' },
        verbose: { type: 'boolean', short: 'v' },
        force: { type: 'boolean' },
        concurrency: { type: 'string' },
        channels: { type: 'string' },
        wait: { type: 'string' },
        checksum: { type: 'boolean', short: 'c' },
        ...SHARED_FAST_OPTIONS,
      },
    });
  } catch {
    return null;
  }
  const v = parsed.values as Record<string, string | boolean | string[] | undefined>;
  const num = (k: string, d: number) => (v[k] === undefined ? d : Number(v[k]));
  const [local, remote, ...extra] = parsed.positionals;
  const args: SyncArgs = {
    local,
    remote,
    delete: v.delete === true,
    'dry-run': v['dry-run'] === true,
    exclude: (v.exclude as string[] | undefined) ?? [],
    include: (v.include as string[] | undefined) ?? [],
    gitignore: !noGitignore,
    verbose: v.verbose === true,
    force: v.force === true,
    concurrency: num('concurrency', 1024),
    channels: num('channels', 8),
    wait: num('wait', 0),
    checksum: v.checksum === true,
    ...sharedFastArgs(v),
  };
  if (!local || !remote || extra.length || ![args.concurrency, args.channels, args.wait].every(Number.isFinite)) return null;
  return { direction, args };
}

async function runSyncCommand(direction: 'push' | 'pull', a: SyncArgs): Promise<number> {
  parseTarget(a.remote); // malformed targets fail before anything connects
  const verbosity: Verbosity = a.quiet ? 'quiet' : a.verbose ? 'verbose' : 'normal';
  // --progress: the progress line even into a file or pipe (as rsync prints it there too).
  const tty = (Boolean(process.stderr.isTTY) || compat?.progress === true) && !a.json;
  const renderer = new Renderer({ json: a.json, verbosity, dryRun: a['dry-run'], tty });
  const interactive = isInteractive();
  let authPrompt: SyncOptions['authPrompt'];
  if (interactive) {
    const auth = await import('../ssh/auth.js');
    authPrompt = auth.ttyPassphrasePrompt();
  }
  const opts: SyncOptions = {
    delete: a.delete,
    force: a.force,
    dryRun: a['dry-run'],
    exclude: a.exclude,
    include: a.include,
    rules: compat && compat.rules.length > 0 ? compat.rules : undefined,
    gitignore: a.gitignore,
    ...connectionArgs(a),
    concurrency: Math.max(1, a.concurrency),
    wait: a.wait,
    breakLock: a['break-lock'],
    checksum: a.checksum,
    interactive,
    hostKeyPrompt: interactive ? ttyHostKeyPrompt : undefined,
    authPrompt,
    signal: (runAbort = new AbortController()).signal,
    onEvent: renderer.onEvent,
    onTrace: process.env.WSYNC_DEBUG ? (what, path) => process.stderr.write(`trace: ${what}${path ? ` ${path}` : ''}\n`) : undefined,
  };
  const { push, pull } = await import('../api.js');
  const result = direction === 'push' ? await push(a.local, a.remote, opts) : await pull(a.local, a.remote, opts);
  renderer.summary(result);
  if (compat?.stats && !a.json) renderer.stats(result);
  if (process.env.WSYNC_DEBUG) process.stderr.write(`timings (ms since start): ${JSON.stringify(result.timings)}\n`);
  return result.ok ? 0 : EXIT_CODES.partial;
}

function reportError(err: unknown, json: boolean): number {
  const code = exitCodeFor(err);
  if (json) {
    const e = err instanceof WsyncError ? { code: err.code, message: err.message, hint: err.hint } : { code: 'E_INTERNAL', message: errorMessage(err) };
    process.stdout.write(JSON.stringify({ type: 'error', ...e, exitCode: code }) + '\n');
  }
  if (err instanceof WsyncError) {
    process.stderr.write(`wsync: ${err.message}\n`);
    if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
  } else {
    process.stderr.write(`wsync: internal error: ${errorMessage(err)}\n`);
    if (process.env.WSYNC_DEBUG) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
  }
  return code;
}

/**
 * Ctrl-C or SIGTERM: undo what must not outlive the run (lock files on the server), then exit 130. A second signal
 * exits at once.
 */
function exitOnSignals(): void {
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    // A watch stops on the first: its batch finished, its manifest written, its lock released.
    const stop = gracefulStop;
    gracefulStop = undefined;
    if (stop) return stop();
    interrupted = true;
    // On a terminal the status or progress line (and the ^C echoed on it) is cleared, not left above the message.
    const clear = process.stderr.isTTY ? '\r\x1b[K' : '\n';
    // A push or pull stops itself: the files in flight finished and recorded, its lock removed, exit 130 from main.
    // If that takes longer than a few seconds, the locks are removed from here and the process exits.
    const run = runAbort;
    if (run && !run.signal.aborted) {
      process.stderr.write(`${clear}wsync: interrupted; finishing the files in flight and removing the lock (Ctrl-C again quits at once)\n`);
      run.abort();
      setTimeout(() => void import('../util/interrupt.js').then((m) => m.runInterruptTasks(3000)).finally(() => process.exit(130)), RUN_STOP_MS).unref();
      return;
    }
    process.stderr.write(`${clear}wsync: interrupted; removing its locks\n`);
    void import('../util/interrupt.js')
      .then((m) => m.runInterruptTasks(3000))
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** What the first Ctrl-C does instead of exiting (a watch); the next one exits. */
let gracefulStop: (() => void) | undefined;
/** The push or pull in progress, stopped by the first Ctrl-C (SyncOptions.signal). */
let runAbort: AbortController | undefined;
/** How long a stopped push or pull gets to finish what is in flight (the session's own grace is 5 s). */
const RUN_STOP_MS = 4000;

/** Runs the CLI; resolves with the exit code (the bin script exits with it). */
/** What push/pull's rsync-style options asked for beyond wsync's own (see rsync-compat.ts). */
let compat: Normalized | undefined;

export async function main(argv: string[]): Promise<number> {
  exitOnSignals();
  if (argv[0] === 'push' || argv[0] === 'pull') {
    try {
      compat = normalizeSyncArgs(argv.slice(1));
    } catch (err) {
      return reportError(err, argv.includes('--json'));
    }
    argv = [argv[0], ...compat.argv];
  }
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    const { WSYNC_VERSION } = await import('../version.js');
    process.stdout.write(`wsync ${WSYNC_VERSION}\n`);
    return 0;
  }
  let exitCode = 0;
  const jsonWanted = argv.includes('--json');
  const sync = parseSyncFast(argv);
  const fast = sync ? { run: () => runSyncCommand(sync.direction, sync.args) } : parseGitFast(argv);
  if (fast) {
    try {
      return await fast.run();
    } catch (err) {
      return reportError(err, jsonWanted);
    }
  }
  const { default: yargs } = await import('yargs');
  const parser = yargs(argv)
    .scriptName('wsync')
    .usage('$0 <command> [options]\n\nSync a directory to or from a host over SFTP; nothing but sshd needed there.')
    .command('push <local> <remote>', 'make the remote directory match the local one', syncOptions, async (a) => {
      exitCode = await runSyncCommand('push', a as unknown as SyncArgs);
    })
    .command('pull <local> <remote>', 'make the local directory match the remote one', syncOptions, async (a) => {
      exitCode = await runSyncCommand('pull', a as unknown as SyncArgs);
    })
    .command('sync <local> <remote>', "two-way: bring each side's changes to the other (a file changed on both sides keeps both)", syncOptions, async (a) => {
      const { runTwoWayCommand } = await import('./sync.js');
      exitCode = await runTwoWayCommand(a as unknown as SyncArgs, (runAbort = new AbortController()).signal);
    })
    .command('status <local> <remote>', 'what push, pull and sync would each do now (changes nothing, takes no lock)', syncOptions, async (a) => {
      const { runStatusCommand } = await import('./sync.js');
      exitCode = await runStatusCommand(a as unknown as SyncArgs);
    })
    .command('watch <local> <remote>', 'push, then push every change as it is saved, until Ctrl-C (--two-way: sync both ways)', (y) => syncOptions(y).option('two-way', { type: 'boolean', default: false, describe: "sync both ways: local saves and the remote's changes (looked for every 2 s or so), with sync's rules" }), async (a) => {
      const { runWatchCommand } = await import('./watch.js');
      exitCode = await runWatchCommand(a as unknown as SyncArgs, (fn) => (gracefulStop = fn));
    })
    .command('git', 'push a branch to, or fetch one from, a repository on the remote (no git needed there)', gitCommand((c) => (exitCode = c)))
    .command('doctor <remote>', 'what the SFTP server at a target is and does where servers differ (tried out under .wsync/, then removed)', (y) =>
      y
        .positional('remote', { type: 'string', describe: 'target: host:path, user@host:path or ssh://user@host:port/path', demandOption: true })
        .option('json', { type: 'boolean', default: false, describe: 'print one JSON object' })
        .option('ssh-config', { alias: 'F', type: 'string', describe: 'ssh_config file to use instead of ~/.ssh/config' })
        .option('identity', { alias: 'i', type: 'string', describe: 'private key to try first' })
        .option('accept-new', { type: 'boolean', default: false, describe: 'record an unknown host key in known_hosts (a changed key is still refused)' })
        .option('channels', { type: 'number', default: 8, describe: 'SFTP channels per connection' }), async (a) => {
      const { runDoctorCommand } = await import('./doctor.js');
      exitCode = await runDoctorCommand(a as unknown as import('./doctor.js').DoctorArgs);
    })
    .completion('completion', 'print a shell completion script (bash/zsh): wsync completion >> ~/.bashrc')
    .demandCommand(1, 'name a command: push, pull, sync, status, watch, git or doctor')
    .strict()
    .epilog(EPILOG)
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      throw new WsyncError('E_USAGE', msg ?? 'invalid arguments', { hint: 'see wsync --help' });
    });
  try {
    await parser.parseAsync();
  } catch (err) {
    return reportError(err, jsonWanted);
  }
  return exitCode;
}

import type { Argv } from 'yargs';
import { parseArgs } from 'node:util';
import { EXIT_CODES } from '../errors.js';
import { parseTarget } from '../target.js';
import type { GitConnectOptions } from '../git/push.js';
import { connectionArgs, isInteractive, ttyHostKeyPrompt } from './prompt.js';
import { onInterrupt } from '../util/interrupt.js';

interface GitArgs {
  remote: string;
  branch?: string;
  repo?: string;
  'remote-name'?: string;
  force: boolean;
  ff: boolean;
  json: boolean;
  quiet: boolean;
  'ssh-config'?: string;
  identity?: string;
  'accept-new': boolean;
  compress?: boolean;
  channels: number;
  'break-lock': boolean;
}

function common(y: Argv): Argv {
  return y
    .positional('remote', { type: 'string', describe: 'the remote work tree: host:path, user@host:path, ssh://user@host:port/path or a local path', demandOption: true })
    .positional('branch', { type: 'string', describe: 'branch (default: the current one)' })
    .option('repo', { type: 'string', describe: 'local repository (default: the one containing the current directory)' })
    .option('remote-name', { type: 'string', describe: 'name under refs/remotes/ for this target (default: the host alias)' })
    .option('json', { type: 'boolean', default: false, describe: 'print one JSON object with the result' })
    .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'print only errors' })
    .option('ssh-config', { alias: 'F', type: 'string', describe: 'ssh_config file to use instead of ~/.ssh/config' })
    .option('identity', { alias: 'i', type: 'string', describe: 'private key to try first' })
    .option('accept-new', { type: 'boolean', default: false, describe: 'record an unknown host key in known_hosts (a changed key is still refused)' })
    .option('compress', { alias: 'z', type: 'boolean', describe: COMPRESS_HELP })
    .option('channels', { type: 'number', default: 8, describe: 'SFTP channels per connection' })
    .option('break-lock', { type: 'boolean', default: false, describe: 'remove git lock files older than a minute (left by a crash) instead of failing' });
}

/** `hold`: runs a prompt with the status line put away. */
async function connectOptions(a: GitArgs, hold: <T>(ask: () => Promise<T>) => Promise<T>): Promise<GitConnectOptions> {
  parseTarget(a.remote); // malformed targets fail before anything connects
  const interactive = isInteractive();
  const auth = interactive ? (await import('../ssh/auth.js')).ttyPassphrasePrompt() : undefined;
  return {
    ...connectionArgs(a),
    interactive,
    hostKeyPrompt: interactive ? { confirmUnknown: (...q) => hold(() => ttyHostKeyPrompt.confirmUnknown(...q)) } : undefined,
    authPrompt: auth ? { passphrase: (...q) => hold(() => auth.passphrase(...q)) } : undefined,
  };
}

const short = (oid: string | null) => (oid ? oid.slice(0, 7) : '');

/** What a push or fetch is doing after the step named ends (the keys of its timings, in the order they usually end). */
const PUSH_STEPS: Record<string, string> = {
  connect: 'reading the remote repository',
  refs: 'counting objects',
  plan: 'sending objects',
  locked: 'sending objects, reading trees',
  trees: 'sending objects, listing the remote work tree',
  listed: 'sending objects, checking the remote work tree',
  checked: 'sending objects, updating the remote work tree',
  objects: 'updating the remote work tree',
  worktree: 'updating refs',
  update: 'updating refs',
};
const FETCH_STEPS: Record<string, string> = {
  connect: 'listing remote objects',
  list: 'reading new objects',
  walk: 'writing objects',
  write: 'updating refs',
};

/**
 * One status line on a terminal's stderr while a git command works (`wsync: sending objects… 4s`), redrawn as steps
 * end and every half second, erased before the result prints: a long push is never silent. Drawn only once
 * connected: before that a ProxyCommand's ssh, or wsync itself, may be asking something on the same terminal
 * (`hold` keeps it away from wsync's own questions all the same). Nothing off a terminal, with -q or --json.
 */
interface StepLine {
  onPhase?: (done: string) => void;
  stop: () => void;
  hold: <T>(ask: () => Promise<T>) => Promise<T>;
}

function stepLine(steps: Record<string, string>, a: GitArgs): StepLine {
  if (!process.stderr.isTTY || a.quiet || a.json) return { stop: () => undefined, hold: (ask) => ask() };
  const t0 = Date.now();
  let what: string | undefined;
  let held = 0;
  let shown = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const order = Object.keys(steps);
  let rank = -1;
  const draw = () => {
    if (held || what === undefined) return;
    const text = `wsync: ${what}… ${Math.floor((Date.now() - t0) / 1000)}s`;
    // Longer than the terminal is wide it would wrap, and \r would no longer return to its start.
    process.stderr.write(`\r\x1b[K${text.slice(0, Math.max(10, (process.stderr.columns || 80) - 1))}`);
    shown = true;
  };
  const stop = () => {
    if (timer) clearInterval(timer);
    timer = undefined;
    what = undefined;
    if (shown) process.stderr.write('\r\x1b[K');
    shown = false;
  };
  const forget = onInterrupt(async () => stop());
  return {
    hold: async (ask) => {
      if (held++ === 0 && shown) process.stderr.write('\r\x1b[K');
      try {
        return await ask();
      } finally {
        held--;
      }
    },
    onPhase: (done) => {
      // Steps that run side by side may end in either order: the line only moves forward.
      const r = order.indexOf(done);
      if (r <= rank) return;
      rank = r;
      const next = steps[done];
      if (next === what) return;
      what = next;
      timer ??= setInterval(draw, 500);
      timer.unref();
      draw();
    },
    stop: () => {
      forget();
      stop();
    },
  };
}

/** Runs `work` with the status line up, and takes it down however `work` ends. */
async function withStepLine<T>(steps: Record<string, string>, a: GitArgs, work: (line: StepLine) => Promise<T>): Promise<T> {
  const line = stepLine(steps, a);
  try {
    return await work(line);
  } finally {
    line.stop();
  }
}

async function runPush(a: GitArgs): Promise<number> {
  const { gitPush } = await import('../git/push.js');
  const r = await withStepLine(PUSH_STEPS, a, async (line) =>
    gitPush(a.remote, { ...(await connectOptions(a, line.hold)), repo: a.repo, branch: a.branch, force: a.force, remoteName: a['remote-name'], breakLock: a['break-lock'], onPhase: line.onPhase }),
  );
  if (a.json) {
    process.stdout.write(JSON.stringify({ type: 'summary', ...r }) + '\n');
    return 0;
  }
  if (a.quiet) return 0;
  const out: string[] = [`To ${r.target}`];
  const spec = `${r.branch} -> ${r.branch}`;
  if (r.status === 'up-to-date') out.push(` = [up to date]      ${spec}`, 'Everything up-to-date');
  else if (r.status === 'created') out.push(` * [new branch]      ${spec}`);
  else if (r.status === 'forced') out.push(` + ${short(r.oldOid)}...${short(r.newOid)} ${spec} (forced update)`);
  else out.push(`   ${short(r.oldOid)}..${short(r.newOid)}  ${spec}`);
  if (r.objects) out.push(`${r.commits} commit(s), ${r.objects} object(s), ${r.bytes} bytes ${r.packed ? 'in one pack' : 'as loose objects'}`);
  if (r.worktree) out.push(`remote work tree updated: ${r.worktree.written} path(s) written, ${r.worktree.removed} removed`);
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

async function runFetch(a: GitArgs): Promise<number> {
  const { gitFetch } = await import('../git/fetch.js');
  const r = await withStepLine(FETCH_STEPS, a, async (line) =>
    gitFetch(a.remote, { ...(await connectOptions(a, line.hold)), repo: a.repo, branch: a.branch, ff: a.ff, remoteName: a['remote-name'], breakLock: a['break-lock'], onPhase: line.onPhase }),
  );
  const code = r.ff === 'diverged' ? EXIT_CODES.partial : 0;
  if (a.json) {
    process.stdout.write(JSON.stringify({ type: 'summary', ...r }) + '\n');
    return code;
  }
  const tracking = r.trackingRef.slice('refs/remotes/'.length);
  if (!a.quiet) {
    const out: string[] = [];
    if (r.oldOid !== r.newOid) {
      out.push(`From ${r.target}`);
      out.push(r.oldOid ? `   ${short(r.oldOid)}..${short(r.newOid)}  ${r.branch} -> ${tracking}` : ` * [new branch]      ${r.branch} -> ${tracking}`);
    }
    for (const c of r.commits) out.push(`${short(c.oid)} ${c.subject}`);
    if (r.ff === 'fast-forward' || r.ff === 'created') {
      out.push(`${r.ff === 'created' ? 'created' : 'fast-forwarded'} ${r.branch} to ${short(r.newOid)}${r.worktree ? ` (${r.worktree.written} path(s) written, ${r.worktree.removed} removed)` : ''}`);
    } else if (r.ff === 'ahead') out.push(`${r.branch} already contains ${tracking}`);
    if (out.length) process.stdout.write(out.join('\n') + '\n');
  }
  if (r.ff === 'diverged') {
    process.stderr.write(`wsync: ${r.branch} and ${tracking} have diverged; not fast-forwarded\nhint: merge or rebase: git merge ${tracking}\n`);
  }
  return code;
}

export const COMPRESS_HELP =
  'compress both directions; default: compress on a WAN link (the server answers 20 ms or more after dialling), what is sent and, on a push, the replies; --no-compress: never';

/** Options every command shares (output and SSH), for node:util's parseArgs. */
export const SHARED_FAST_OPTIONS = {
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  'ssh-config': { type: 'string', short: 'F' },
  identity: { type: 'string', short: 'i' },
  'accept-new': { type: 'boolean' },
  compress: { type: 'boolean', short: 'z' },
  'no-compress': { type: 'boolean' },
  'break-lock': { type: 'boolean' },
} as const;

/** The shared options' values, in the shape yargs gives them. */
export function sharedFastArgs(v: Record<string, unknown>) {
  return {
    json: v.json === true,
    quiet: v.quiet === true,
    'ssh-config': v['ssh-config'] as string | undefined,
    identity: v.identity as string | undefined,
    'accept-new': v['accept-new'] === true,
    // undefined = auto: compress what we send when the link turns out to be a WAN link.
    compress: v['no-compress'] === true ? false : v.compress === true ? true : undefined,
    'break-lock': v['break-lock'] === true,
  };
}

/**
 * `wsync git push|fetch` with plain options, parsed by node:util instead of yargs: yargs and its text-layout
 * dependencies take a tenth of a second to load, as much as two round trips of the push itself. Anything else
 * (help, a mistake, an option spelled the yargs way) returns null and goes through yargs, which explains it.
 */
export function parseGitFast(argv: string[]): { run: () => Promise<number> } | null {
  const cmd = argv[1];
  if (argv[0] !== 'git' || (cmd !== 'push' && cmd !== 'fetch')) return null;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv.slice(2),
      allowPositionals: true,
      strict: true,
      options: {
        repo: { type: 'string' },
        'remote-name': { type: 'string' },
        force: { type: 'boolean' },
        ff: { type: 'boolean' },
        channels: { type: 'string' },
        ...SHARED_FAST_OPTIONS,
      },
    });
  } catch {
    return null;
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const [remote, branch, ...extra] = parsed.positionals;
  const channels = v.channels === undefined ? 8 : Number(v.channels);
  if (!remote || extra.length || !Number.isFinite(channels) || (cmd === 'push' && v.ff !== undefined) || (cmd === 'fetch' && v.force !== undefined)) return null;
  const a: GitArgs = {
    remote,
    branch,
    repo: v.repo as string | undefined,
    'remote-name': v['remote-name'] as string | undefined,
    force: v.force === true,
    ff: v.ff === true,
    channels,
    ...sharedFastArgs(v),
  };
  return { run: () => (cmd === 'push' ? runPush(a) : runFetch(a)) };
}

/** `wsync git push|fetch`; `setExit` receives the exit code of the subcommand that ran. */
export function gitCommand(setExit: (code: number) => void) {
  return (y: Argv) =>
    y
      .command(
        'push <remote> [branch]',
        'send a branch to the repository in the remote work tree (created if missing); a checked-out branch updates the work tree',
        (yy) => common(yy).option('force', { type: 'boolean', default: false, describe: 'allow a non-fast-forward update (drops the remote commits)' }),
        async (a) => setExit(await runPush(a as unknown as GitArgs)),
      )
      .command(
        'fetch <remote> [branch]',
        'bring a remote branch into refs/remotes/<name>/<branch> and list its new commits',
        (yy) => common(yy).option('ff', { type: 'boolean', default: false, describe: 'also fast-forward the local branch (and its work tree) when nothing is lost' }),
        async (a) => setExit(await runFetch(a as unknown as GitArgs)),
      )
      .demandCommand(1, 'name a git command: push or fetch');
}

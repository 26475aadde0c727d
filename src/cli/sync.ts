import type { StatusSection, SyncOptions, SyncResult, TwoWayResult } from '../api.js';
import type { ItemEvent, SyncEvent, SyncStats } from '../transfer/engine.js';
import { describeSyncConflict } from '../transfer/twoway.js';
import { EXIT_CODES } from '../errors.js';
import { parseTarget } from '../target.js';
import { describeConflict } from './conflicts.js';
import { connectionArgs, isInteractive, ttyHostKeyPrompt } from './prompt.js';
import type { SyncArgs } from './main.js';

/** The filters and the connection's options, as sync and status take them. */
async function commonOptions(a: SyncArgs): Promise<SyncOptions> {
  const interactive = isInteractive();
  return {
    exclude: a.exclude,
    include: a.include,
    gitignore: a.gitignore,
    ...connectionArgs(a),
    interactive,
    hostKeyPrompt: interactive ? ttyHostKeyPrompt : undefined,
    authPrompt: interactive ? (await import('../ssh/auth.js')).ttyPassphrasePrompt() : undefined,
  };
}

/**
 * `wsync sync <local> <target>`: two-way, one shot. Each change is listed with the side it went to (`>` to the
 * remote, `<` to the local side) under -v and --dry-run; conflicts always, on stderr. Exit 0 when both sides hold
 * the same tree, 3 when a conflict or a failure left a path different.
 */
export async function runTwoWayCommand(a: SyncArgs, signal: AbortSignal): Promise<number> {
  parseTarget(a.remote);
  const out = process.stdout;
  const err = process.stderr;
  const quiet = a.quiet;
  const listed = a.verbose || a['dry-run'];
  const onEvent = (ev: SyncEvent) => {
    if (a.json) {
      if (ev.type !== 'progress') out.write(JSON.stringify(ev.type === 'item' && ev.conflict ? { ...ev, reason: describeConflict(ev.conflict) } : ev) + '\n');
      return;
    }
    if (ev.type === 'progress') return;
    if (ev.type === 'notice' || ev.type === 'connection') {
      if (!quiet || ev.message.startsWith('conflict:')) err.write(ev.message.startsWith('conflict:') ? `${ev.message}\n` : `wsync: ${ev.message}\n`);
      return;
    }
    if (ev.action === '!' || ev.action === 'x') {
      err.write(`${ev.action === '!' ? 'conflict' : 'failed'}: ${ev.path}: ${ev.conflict ? describeConflict(ev.conflict) : ev.reason ?? ''}\n`);
      return;
    }
    if (listed) {
      const suffix = ev.kind === 'dir' ? '/' : ev.kind === 'symlink' ? ' -> (link)' : '';
      const from = ev.renamedFrom ? ` (the remote's ${ev.renamedFrom}, kept)` : '';
      out.write(`${ev.to === 'local' ? '<' : '>'} ${ev.action} ${ev.path}${suffix}${from}\n`);
    }
  };
  const { sync } = await import('../api.js');
  const r = await sync(a.local, a.remote, {
    ...(await commonOptions(a)),
    force: a.force,
    dryRun: a['dry-run'],
    concurrency: Math.max(1, a.concurrency),
    wait: a.wait,
    breakLock: a['break-lock'],
    signal,
    onEvent,
    onTrace: process.env.WSYNC_DEBUG ? (what, path) => err.write(`trace: ${what}${path ? ` ${path}` : ''}\n`) : undefined,
  });
  summary(r, a.json, quiet);
  return r.ok ? 0 : EXIT_CODES.partial;
}

function summary(r: TwoWayResult, json: boolean, quiet: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify({ type: 'summary', ...r }) + '\n');
    return;
  }
  if (quiet && r.ok) return;
  const side = (s: SyncStats) => {
    const parts = [`${s.filesSent} file(s)`];
    if (s.symlinksSent) parts.push(`${s.symlinksSent} link(s)`);
    if (s.dirsCreated) parts.push(`${s.dirsCreated} dir(s)`);
    if (s.attributesUpdated) parts.push(`${s.attributesUpdated} attribute update(s)`);
    parts.push(`${s.deleted} deleted`);
    return parts.join(', ');
  };
  const would = r.dryRun ? 'would send' : 'sent';
  const back = r.dryRun ? 'would receive' : 'received';
  let line = `${would} ${side(r.toRemote)}; ${back} ${side(r.toLocal)}`;
  if (r.conflicts.length) line += `; ${r.conflicts.length} conflict(s)`;
  if (r.problems.length) line += `; ${r.problems.length} problem(s)`;
  line += ` in ${(r.durationMs / 1000).toFixed(1)}s`;
  (r.ok ? process.stdout : process.stderr).write(line + '\n');
  if (r.firstContact && !r.dryRun && !quiet) process.stderr.write('wsync: first sync of this directory with this target: nothing was deleted; from now on deletions on either side are synced too\n');
  for (const p of r.problems) process.stderr.write(`problem: ${p.path || '.'}: ${p.message}\n`);
}

/**
 * `wsync status <local> <target>`: what push, pull and sync would each do now (their dry runs: no lock taken,
 * nothing changed), one section each; `--json`: one object. Exit 0 whatever they would do.
 */
export async function runStatusCommand(a: SyncArgs): Promise<number> {
  parseTarget(a.remote);
  const { status } = await import('../api.js');
  const r = await status(a.local, a.remote, {
    ...(await commonOptions(a)),
    onEvent: (ev) => {
      // Conflicts are listed in the sync section.
      if (!a.json && !a.quiet && (ev.type === 'notice' || ev.type === 'connection') && !ev.message.startsWith('conflict:')) process.stderr.write(`wsync: ${ev.message}\n`);
    },
  });
  if (a.json) {
    process.stdout.write(JSON.stringify({ type: 'status', ...r }) + '\n');
    return 0;
  }
  const out = process.stdout;
  const line = (ev: ItemEvent, arrow = '') =>
    `  ${arrow}${ev.action} ${ev.path}${ev.kind === 'dir' ? '/' : ev.kind === 'symlink' ? ' -> (link)' : ''}${ev.conflict ? `: ${describeConflict(ev.conflict)}` : ''}\n`;
  const oneWay = (name: string, sec: StatusSection<SyncResult>) => {
    if (sec.refused) {
      out.write(`${name}: would refuse: ${sec.refused.message}\n`);
      return;
    }
    const conflicts = sec.result?.conflicts.length ?? 0;
    const changes = sec.items.filter((i) => i.action !== '!').length;
    out.write(`${name}: ${changes === 0 && conflicts === 0 ? 'nothing to do' : `${changes} change(s)${conflicts ? `, ${conflicts} path(s) it would leave alone` : ''}`}\n`);
    for (const ev of sec.items) out.write(line(ev));
  };
  oneWay('push (with --delete)', r.push);
  oneWay('pull (with --delete)', r.pull);
  const s = r.sync;
  if (s.refused || !s.result) out.write(`sync: would refuse: ${s.refused?.message ?? ''}\n`);
  else {
    const conflicts = s.result.conflicts.length;
    out.write(`sync: ${s.items.length === 0 && conflicts === 0 ? 'nothing to do' : `${s.items.filter((i) => i.action !== '!').length} change(s) (> to the remote, < to here)${conflicts ? `, ${conflicts} conflict(s)` : ''}`}${s.result.firstContact ? ' (first sync: nothing would be deleted)' : ''}\n`);
    for (const ev of s.items) out.write(line(ev, ev.to === 'local' ? '< ' : '> '));
    for (const c of s.result.conflicts) out.write(`  ! ${describeSyncConflict(c).replace(/^conflict: /, '')}\n`);
  }
  return 0;
}

/** `wsync watch <local-dir> <target>`: the page of the CLI around session/watch.ts. */
import { WsyncError } from '../errors.js';
import { parseTarget } from '../target.js';
import type { SessionOptions } from '../session/session.js';
import type { WatchEvent } from '../session/watch.js';
import { formatBytes, Renderer } from './render.js';
import { connectionArgs, isInteractive, ttyHostKeyPrompt } from './prompt.js';
import type { SyncArgs } from './main.js';

/** push's options; --dry-run is refused, --concurrency and --checksum have no use here. --two-way: sync, not push. */
export type WatchArgs = Omit<SyncArgs, 'concurrency' | 'checksum'> & { 'two-way'?: boolean };

function clock(): string {
  return new Date().toTimeString().slice(0, 8);
}

/**
 * Runs until Ctrl-C (`stop` is how the caller's first signal reaches it: the batch in flight is finished, the
 * manifest written and the lock released, then exit 0) or an error no retry mends.
 */
export async function runWatchCommand(a: WatchArgs, stop: (onStop: () => void) => void): Promise<number> {
  parseTarget(a.remote);
  if (a['dry-run']) throw new WsyncError('E_USAGE', 'watch has no dry run', { hint: 'wsync push --dry-run shows what a push would do' });
  const json = a.json;
  const tty = Boolean(process.stderr.isTTY) && !json;
  const renderer = new Renderer({ json, verbosity: a.quiet ? 'quiet' : a.verbose ? 'verbose' : 'normal', dryRun: false, tty: false });
  const interactive = isInteractive();
  let statusShown = false;
  const status = (line: string) => {
    if (!tty || a.quiet) return;
    process.stderr.write(`\r\x1b[K${line}`);
    statusShown = true;
  };
  const say = (line: string, to: NodeJS.WritableStream = process.stderr) => {
    if (statusShown) process.stderr.write('\r\x1b[K');
    statusShown = false;
    to.write(`${line}\n`);
  };
  const onWatch = (ev: WatchEvent) => {
    if (ev.type === 'sync') {
      const r = ev.result;
      if (json) {
        process.stdout.write(JSON.stringify({ type: 'sync', paths: ev.paths, polled: ev.polled, latencyMs: ev.latencyMs, ok: r.ok, toRemote: r.toRemote, toLocal: r.toLocal, conflicts: r.conflicts, problems: r.problems }) + '\n');
        return;
      }
      const moved = (x: typeof r.toRemote) => x.filesSent + x.deleted + x.attributesUpdated + x.symlinksSent + x.dirsCreated;
      const did = moved(r.toRemote) + moved(r.toLocal) + r.problems.length;
      if (did === 0 || (a.quiet && r.ok)) return;
      const side = (x: typeof r.toRemote) => `${x.filesSent} file(s)${x.deleted ? `, ${x.deleted} deleted` : ''}`;
      for (const p of r.problems) say(`problem: ${p.path || '.'}: ${p.message}`);
      say(`${clock()} sync: sent ${side(r.toRemote)}, received ${side(r.toLocal)}${r.conflicts.length ? `, ${r.conflicts.length} conflict(s)` : ''} in ${ev.latencyMs} ms`, r.ok ? process.stdout : process.stderr);
      return;
    }
    if (json) {
      const out = ev.type === 'batch' ? { type: 'batch', full: ev.full, paths: ev.paths, latencyMs: ev.latencyMs, ok: ev.result.ok, stats: ev.result.stats, problems: ev.result.problems } : ev.type === 'error' ? { type: 'error', code: ev.error.code, message: ev.error.message, hint: ev.error.hint } : ev;
      process.stdout.write(JSON.stringify(out) + '\n');
      return;
    }
    if (ev.type === 'state') {
      if (ev.state === 'offline' && !a.quiet) say(`${clock()} offline: ${ev.message}`);
      else status(`${ev.state}: ${ev.message}`);
      return;
    }
    if (ev.type === 'error') {
      say(`wsync: ${ev.error.message}${ev.error.hint ? `\nhint: ${ev.error.hint}` : ''}`);
      return;
    }
    const s = ev.result.stats;
    const did = s.filesSent + s.deleted + s.attributesUpdated + s.symlinksSent + s.dirsCreated + s.conflicts + ev.result.problems.length;
    if ((did === 0 && !ev.full) || (a.quiet && ev.result.ok)) return;
    const parts = [`${s.filesSent} file(s) sent (${formatBytes(s.bytesSent)})`];
    if (s.deleted) parts.push(`${s.deleted} deleted`);
    if (s.attributesUpdated) parts.push(`${s.attributesUpdated} attribute update(s)`);
    if (s.conflicts) parts.push(`${s.conflicts} conflict(s) left alone`);
    for (const p of ev.result.problems) say(`problem: ${p.path || '.'}: ${p.message}`);
    say(`${clock()} ${ev.full ? 'full compare' : `${ev.paths} changed path(s)`}: ${parts.join(', ')} in ${ev.latencyMs} ms`, ev.result.ok ? process.stdout : process.stderr);
  };
  const opts: SessionOptions = {
    ...connectionArgs(a),
    compressReplies: true,
    prewarm: true,
    interactive,
    hostKeyPrompt: interactive ? ttyHostKeyPrompt : undefined,
    authPrompt: interactive ? (await import('../ssh/auth.js')).ttyPassphrasePrompt() : undefined,
    onEvent: (ev) => (json ? renderer.onEvent(ev) : ev.state === 'reconnecting' ? status(ev.message) : !a.quiet && say(`${clock()} ${ev.message}`)),
  };
  const { openSession } = await import('../session/session.js');
  const { watchPush } = await import('../session/watch.js');
  const stopping = new AbortController();
  const session = await openSession(a.local, a.remote, opts);
  stop(() => {
    say('wsync: stopping: finishing the batch in flight, writing the manifest, releasing the lock (Ctrl-C again to quit at once)');
    stopping.abort();
    // Offline: not waiting for the reconnects of a batch that cannot go anywhere (close() tries a few seconds).
    if (!session.connected) void session.close();
  });
  try {
    await watchPush(session, {
      twoWay: a['two-way'],
      delete: a.delete,
      force: a.force,
      filter: { gitignore: a.gitignore, excludes: a.exclude, includes: a.include },
      wait: a.wait,
      breakLock: a['break-lock'],
      signal: stopping.signal,
      onWatch,
      onEvent: renderer.onEvent,
    });
  } finally {
    await session.close();
    if (statusShown) process.stderr.write('\r\x1b[K');
  }
  return 0;
}

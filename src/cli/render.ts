import type { SyncEvent, SyncResult } from '../transfer/engine.js';
import { isSkippedNotice } from '../scan/walk.js';
import { conflictJson, describeConflict } from './conflicts.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--';
  if (s < 60) return `${Math.round(s)}s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

/**
 * Turns engine events into terminal output: itemized lines (rsync-like markers), a one-line progress display on
 * a TTY, or JSON lines. The engine never prints; this is the only consumer that writes.
 */
export class Renderer {
  private progressShown = false;
  private started = Date.now();
  /** Notices already printed: the summary does not repeat them. */
  private shown = new Set<string>();
  /** Special files left out, by kind: counted in one line of the summary unless -v named each. */
  private specials = new Map<string, number>();
  /** Per-path failures already printed as they happened: the summary lists only the others. */
  private failedShown = new Set<string>();

  constructor(
    private readonly opts: { json: boolean; verbosity: Verbosity; dryRun: boolean; tty: boolean },
    private readonly out: NodeJS.WritableStream = process.stdout,
    private readonly err: NodeJS.WritableStream = process.stderr,
  ) {}

  private clearProgress(): void {
    if (this.progressShown) {
      this.err.write('\r\x1b[K');
      this.progressShown = false;
    }
  }

  onEvent = (ev: SyncEvent): void => {
    if (this.opts.json) {
      // A conflict's words go beside its data (`reason`, as for a failure).
      const shown = ev.type === 'item' && ev.conflict ? { ...ev, conflict: conflictJson(ev.conflict), reason: describeConflict(ev.conflict) } : ev;
      if (ev.type !== 'progress') this.out.write(JSON.stringify(shown) + '\n');
      return;
    }
    if (ev.type === 'progress') {
      if (!this.opts.tty || this.opts.verbosity === 'quiet') return;
      const secs = (Date.now() - this.started) / 1000;
      const rate = secs > 0 ? ev.bytes / secs : 0;
      // The first seconds (SSH set-up, listings) say nothing about the rate: no ETA until there is one to trust.
      const eta = rate > 0 && secs >= 2 ? (ev.bytesTotal - ev.bytes) / rate : NaN;
      this.err.write(`\r\x1b[K${ev.files}/${ev.filesTotal} files  ${formatBytes(ev.bytes)}/${formatBytes(ev.bytesTotal)}  ${formatBytes(rate)}/s  ETA ${formatDuration(eta)}`);
      this.progressShown = true;
      return;
    }
    if (ev.type === 'notice') {
      if (isSkippedNotice(ev)) {
        // Notice-level: each one with -v, else a count in the summary.
        if (this.opts.verbosity === 'verbose') {
          this.clearProgress();
          this.err.write(`${ev.message}\n`);
        } else this.specials.set(ev.skipped.kind, (this.specials.get(ev.skipped.kind) ?? 0) + 1);
        return;
      }
      this.clearProgress();
      if (this.opts.verbosity !== 'quiet') {
        this.err.write(`wsync: ${ev.message}\n`);
        this.shown.add(ev.message);
      }
      return;
    }
    if (ev.type === 'connection') {
      this.clearProgress();
      if (this.opts.verbosity !== 'quiet') this.err.write(`wsync: ${ev.message}\n`);
      return;
    }
    if (ev.action === '!' || ev.action === 'x') {
      this.clearProgress();
      if (ev.action === 'x') this.failedShown.add(`${ev.path}\0${ev.reason ?? ''}`);
      const why = ev.conflict ? describeConflict(ev.conflict) : ev.reason ?? '';
      this.err.write(`${ev.action === '!' ? 'conflict' : 'failed'}: ${ev.path}: ${why}\n`);
      return;
    }
    if (this.opts.dryRun || this.opts.verbosity === 'verbose') {
      this.clearProgress();
      const suffix = ev.kind === 'dir' ? '/' : ev.kind === 'symlink' ? ' -> (link)' : '';
      this.out.write(`${ev.action} ${ev.path}${suffix}\n`);
    }
  };

  /** --stats: rsync's statistics, in its words where they mean the same. */
  stats(r: SyncResult): void {
    const s = r.stats;
    const lines = [
      `Number of files: ${s.filesScanned}`,
      `Number of regular files transferred: ${s.filesSent}${s.filesDelta ? ` (${s.filesDelta} as deltas)` : ''}`,
      `Number of created directories: ${s.dirsCreated}`,
      `Number of symlinks transferred: ${s.symlinksSent}`,
      `Number of attribute updates: ${s.attributesUpdated}`,
      `Number of deleted files: ${s.deleted}`,
      `Number of conflicts: ${s.conflicts}`,
      `Number of failed paths: ${r.problems.length}`,
      `Total transferred file size: ${s.bytesSent} bytes`,
      `Matched data (reused on the destination): ${s.bytesReused} bytes`,
      `Total time: ${(r.durationMs / 1000).toFixed(3)} seconds`,
    ];
    this.out.write('\n' + lines.join('\n') + '\n');
  }

  summary(r: SyncResult): void {
    this.clearProgress();
    const s = r.stats;
    if (this.opts.json) {
      this.out.write(JSON.stringify({ type: 'summary', ...r, conflicts: r.conflicts.map(conflictJson) }) + '\n');
      return;
    }
    if (this.opts.verbosity === 'quiet' && r.ok) return;
    if (this.specials.size && this.opts.verbosity !== 'quiet') {
      const n = [...this.specials.values()].reduce((a, b) => a + b, 0);
      this.err.write(`wsync: ${n} special file(s) skipped (${[...this.specials.keys()].sort().join(', ')}); -v lists them\n`);
    }
    const verb = r.dryRun ? (r.direction === 'push' ? 'would send' : 'would receive') : r.direction === 'push' ? 'pushed' : 'pulled';
    const parts = [`${verb} ${s.filesSent} file(s), ${formatBytes(s.bytesSent)}`];
    if (s.symlinksSent) parts.push(`${s.symlinksSent} symlink(s)`);
    if (s.dirsCreated) parts.push(`${s.dirsCreated} dir(s) created`);
    if (s.attributesUpdated) parts.push(`${s.attributesUpdated} attribute update(s)`);
    parts.push(`${s.deleted} ${r.dryRun ? 'to delete' : 'deleted'}`);
    if (s.conflicts) parts.push(`${s.conflicts} conflict(s)`);
    if (r.problems.length) parts.push(`${r.problems.length} problem(s)`);
    const line = `${parts.join(', ')} in ${(r.durationMs / 1000).toFixed(1)}s`;
    (r.ok ? this.out : this.err).write(line + '\n');
    // What the ignore files left out is said, so that a gitignored build output that never arrives is no mystery.
    if (s.ignored && this.opts.verbosity !== 'quiet') {
      const whose = r.direction === 'pull' ? "the remote's " : '';
      this.err.write(`wsync: ${s.ignored} path(s) left out by ${whose}.gitignore/.wsyncignore files (--no-gitignore sends what .gitignore leaves out; --include GLOB sends chosen ones)\n`);
    }
    // Also a notice of the engine's, printed as it happened unless -q.
    if (r.deletesSkipped && !this.shown.has(r.deletesSkipped)) this.err.write(`wsync: ${r.deletesSkipped}\n`);
    for (const p of r.problems) if (!this.failedShown.has(`${p.path}\0${p.message}`)) this.err.write(`problem: ${p.path || '.'}: ${p.message}\n`);
    if (s.conflicts) this.err.write('wsync: conflicting paths were left alone; re-run with --force to replace them (old copies go to .wsync/trash/)\n');
  }
}

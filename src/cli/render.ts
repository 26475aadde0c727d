import type { SyncEvent, SyncResult } from '../transfer/engine.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
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
      if (ev.type !== 'progress') this.out.write(JSON.stringify(ev) + '\n');
      return;
    }
    if (ev.type === 'progress') {
      if (!this.opts.tty || this.opts.verbosity === 'quiet') return;
      const secs = (Date.now() - this.started) / 1000;
      const rate = secs > 0 ? ev.bytes / secs : 0;
      const eta = rate > 0 ? (ev.bytesTotal - ev.bytes) / rate : NaN;
      this.err.write(`\r\x1b[K${ev.files}/${ev.filesTotal} files  ${formatBytes(ev.bytes)}/${formatBytes(ev.bytesTotal)}  ${formatBytes(rate)}/s  ETA ${formatDuration(eta)}`);
      this.progressShown = true;
      return;
    }
    if (ev.type === 'notice') {
      this.clearProgress();
      if (this.opts.verbosity !== 'quiet') this.err.write(`wsync: ${ev.message}\n`);
      return;
    }
    if (ev.action === '!' || ev.action === 'x') {
      this.clearProgress();
      this.err.write(`${ev.action === '!' ? 'conflict' : 'failed'}: ${ev.path}: ${ev.reason ?? ''}\n`);
      return;
    }
    if (this.opts.dryRun || this.opts.verbosity === 'verbose') {
      this.clearProgress();
      const suffix = ev.kind === 'dir' ? '/' : ev.kind === 'symlink' ? ' -> (link)' : '';
      this.out.write(`${ev.action} ${ev.path}${suffix}\n`);
    }
  };

  summary(r: SyncResult): void {
    this.clearProgress();
    const s = r.stats;
    if (this.opts.json) {
      this.out.write(JSON.stringify({ type: 'summary', ...r }) + '\n');
      return;
    }
    if (this.opts.verbosity === 'quiet' && r.ok) return;
    const verb = r.dryRun ? 'would send' : r.direction === 'push' ? 'pushed' : 'pulled';
    const parts = [`${verb} ${s.filesSent} file(s), ${formatBytes(s.bytesSent)}`];
    if (s.symlinksSent) parts.push(`${s.symlinksSent} symlink(s)`);
    if (s.dirsCreated) parts.push(`${s.dirsCreated} dir(s) created`);
    if (s.attributesUpdated) parts.push(`${s.attributesUpdated} attribute update(s)`);
    parts.push(`${s.deleted} ${r.dryRun ? 'to delete' : 'deleted'}`);
    if (s.conflicts) parts.push(`${s.conflicts} conflict(s)`);
    if (r.problems.length) parts.push(`${r.problems.length} problem(s)`);
    const line = `${parts.join(', ')} in ${(r.durationMs / 1000).toFixed(1)}s`;
    (r.ok ? this.out : this.err).write(line + '\n');
    if (r.deletesSkipped) this.err.write(`wsync: ${r.deletesSkipped}\n`);
    for (const p of r.problems) this.err.write(`problem: ${p.path || '.'}: ${p.message}\n`);
    if (s.conflicts) this.err.write('wsync: conflicting paths were left alone; re-run with --force to replace them (old copies go to .wsync/trash/)\n');
  }
}

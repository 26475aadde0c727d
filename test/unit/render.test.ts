import { describe, it, expect } from 'vitest';
import { Writable } from 'node:stream';
import { Renderer, formatBytes } from '../../src/cli/render.js';
import type { SyncResult } from '../../src/transfer/engine.js';

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  const stream = new Writable({ write: (c, _e, cb) => ((buf += c.toString()), cb()) });
  return { stream, text: () => buf };
}

const result = (over: Partial<SyncResult> = {}): SyncResult => ({
  direction: 'push', dryRun: false, ok: true, conflicts: [], problems: [], durationMs: 1234, timings: {},
  stats: { filesSent: 2, bytesSent: 2048, filesDelta: 0, bytesReused: 0, dirsCreated: 1, symlinksSent: 0, attributesUpdated: 0, deleted: 0, conflicts: 0, failed: 0, filesScanned: 3 },
  ...over,
});

describe('Renderer', () => {
  it('shows a progress line with files, bytes, rate and ETA on a TTY, and clears it before other output', () => {
    const out = sink();
    const err = sink();
    const r = new Renderer({ json: false, verbosity: 'normal', dryRun: false, tty: true }, out.stream, err.stream);
    r.onEvent({ type: 'progress', files: 1, filesTotal: 4, bytes: 1024 * 1024, bytesTotal: 4 * 1024 * 1024 });
    expect(err.text()).toMatch(/\r\x1b\[K1\/4 files {2}1\.0 MiB\/4\.0 MiB {2}.*\/s {2}ETA /);
    r.onEvent({ type: 'item', action: '!', path: 'a', kind: 'file', conflict: { path: 'a', kind: 'changed', op: 'replace', side: 'remote' } });
    expect(err.text()).toMatch(/\r\x1b\[Kconflict: a: changed on the remote side since the last sync\n$/);
    r.summary(result());
    expect(out.text()).toMatch(/^pushed 2 file\(s\), 2\.0 KiB, 1 dir\(s\) created, 0 deleted in 1\.2s\n$/);
  });

  it('prints no progress without a TTY, and only JSON lines with --json', () => {
    const err = sink();
    const out = sink();
    new Renderer({ json: false, verbosity: 'normal', dryRun: false, tty: false }, out.stream, err.stream).onEvent({ type: 'progress', files: 1, filesTotal: 2, bytes: 1, bytesTotal: 2 });
    expect(err.text() + out.text()).toBe('');
    const j = new Renderer({ json: true, verbosity: 'normal', dryRun: false, tty: true }, out.stream, err.stream);
    j.onEvent({ type: 'progress', files: 1, filesTotal: 2, bytes: 1, bytesTotal: 2 });
    j.onEvent({ type: 'item', action: '+', path: 'x', kind: 'file', bytes: 3 });
    j.summary(result());
    const lines = out.text().trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.type)).toEqual(['item', 'summary']);
    expect(lines[1].stats.bytesSent).toBe(2048);
    expect(err.text()).toBe('');
  });

  it('says "N deletion(s) skipped" once: as the engine\'s notice, or in the summary when the notice was not shown', () => {
    const msg = '2 deletion(s) skipped because of the errors above';
    const failed = result({ ok: false, deletesSkipped: msg, problems: [{ path: 'a', code: 'E_REMOTE_IO', message: 'cannot write a: Failure' }] });
    const count = (text: string) => text.split(msg).length - 1;
    for (const verbosity of ['normal', 'verbose'] as const) {
      const out = sink();
      const err = sink();
      const r = new Renderer({ json: false, verbosity, dryRun: false, tty: false }, out.stream, err.stream);
      r.onEvent({ type: 'notice', message: msg });
      r.summary(failed);
      expect(count(err.text() + out.text()), verbosity).toBe(1);
      expect(err.text()).toContain(`wsync: ${msg}\n`);
    }
    // -q shows no notices; a run that failed still says why its deletions were held back.
    const out = sink();
    const err = sink();
    const q = new Renderer({ json: false, verbosity: 'quiet', dryRun: false, tty: false }, out.stream, err.stream);
    q.onEvent({ type: 'notice', message: msg });
    q.summary(failed);
    expect(count(err.text() + out.text())).toBe(1);
  });

  it('prints a per-file failure once (as it happens, not again in the summary); other problems in the summary', () => {
    const out = sink();
    const err = sink();
    const r = new Renderer({ json: false, verbosity: 'normal', dryRun: false, tty: false }, out.stream, err.stream);
    r.onEvent({ type: 'item', action: 'x', path: 'a', kind: 'file', reason: 'cannot write a: Failure' });
    r.summary(result({ ok: false, problems: [{ path: 'a', code: 'E_REMOTE_IO', message: 'cannot write a: Failure' }, { path: 'd', code: 'E_REMOTE_IO', message: 'cannot list d' }] }));
    expect(err.text().split('cannot write a: Failure').length - 1).toBe(1);
    expect(err.text()).toContain('problem: d: cannot list d\n');
  });

  it('progress shows whole bytes per second and no ETA in the first seconds; a pull\'s dry run says "would receive"', () => {
    const out = sink();
    const err = sink();
    const r = new Renderer({ json: false, verbosity: 'normal', dryRun: true, tty: true }, out.stream, err.stream);
    r.onEvent({ type: 'progress', files: 1, filesTotal: 3, bytes: 100, bytesTotal: 10_000_000 });
    expect(err.text()).not.toMatch(/\d\.\d{3,}/);
    expect(err.text()).toMatch(/ETA --$/);
    r.summary(result({ direction: 'pull', dryRun: true }));
    expect(out.text()).toMatch(/^would receive 2 file\(s\)/);
    expect(formatBytes(149.2537313432836)).toBe('149 B');
  });

  it('special files: one line each with -v, one count line by default, nothing with -q, the notice itself with --json', () => {
    const notices = [
      { type: 'notice' as const, message: 'skipped: p: not a regular file, directory or symlink (fifo)', skipped: { path: 'p', kind: 'fifo' as const, side: 'local' as const } },
      { type: 'notice' as const, message: 'skipped: d/s: not a regular file, directory or symlink (socket)', skipped: { path: 'd/s', kind: 'socket' as const, side: 'local' as const } },
      { type: 'notice' as const, message: 'skipped: q: not a regular file, directory or symlink (fifo)', skipped: { path: 'q', kind: 'fifo' as const, side: 'local' as const } },
    ];
    const run = (opts: { json?: boolean; verbosity: 'quiet' | 'normal' | 'verbose' }) => {
      const out = sink();
      const err = sink();
      const r = new Renderer({ json: opts.json ?? false, verbosity: opts.verbosity, dryRun: false, tty: false }, out.stream, err.stream);
      for (const n of notices) r.onEvent(n);
      r.summary(result());
      return { out: out.text(), err: err.text() };
    };
    const v = run({ verbosity: 'verbose' });
    expect(v.err).toBe(notices.map((n) => n.message + '\n').join(''));
    expect(run({ verbosity: 'normal' }).err).toBe('wsync: 3 special file(s) skipped (fifo, socket); -v lists them\n');
    expect(run({ verbosity: 'quiet' })).toEqual({ out: '', err: '' });
    const j = run({ json: true, verbosity: 'normal' });
    expect(j.err).toBe('');
    expect(j.out.trim().split('\n').map((l) => JSON.parse(l)).slice(0, 3)).toEqual(notices);
  });

  it('formats sizes', () => {
    expect([formatBytes(0), formatBytes(1023), formatBytes(1536), formatBytes(5 * 1024 ** 3)]).toEqual(['0 B', '1023 B', '1.5 KiB', '5.0 GiB']);
  });

  it('--json: a conflict is its data, with its words beside it as `reason`, in the item and in the summary', () => {
    const out = sink();
    const r = new Renderer({ json: true, verbosity: 'normal', dryRun: false, tty: false }, out.stream, sink().stream);
    const c = { path: 'd', kind: 'dir-holds-changes' as const, op: 'replace' as const, side: 'local' as const, count: 2, example: 'd/x' };
    r.onEvent({ type: 'item', action: '!', path: 'd', kind: 'dir', conflict: c });
    r.summary({ ...result(), ok: false, conflicts: [c] });
    const [item, summary] = out.text().trim().split('\n').map((l) => JSON.parse(l));
    const words = 'would replace a directory holding 2 path(s) changed on the local side (e.g. d/x)';
    expect(item).toMatchObject({ type: 'item', action: '!', path: 'd', reason: words, conflict: { ...c, reason: words } });
    expect(summary.conflicts).toEqual([{ ...c, reason: words }]);
  });
});

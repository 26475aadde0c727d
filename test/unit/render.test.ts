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
  stats: { filesSent: 2, bytesSent: 2048, dirsCreated: 1, symlinksSent: 0, attributesUpdated: 0, deleted: 0, conflicts: 0, failed: 0, filesScanned: 3 },
  ...over,
});

describe('Renderer', () => {
  it('shows a progress line with files, bytes, rate and ETA on a TTY, and clears it before other output', () => {
    const out = sink();
    const err = sink();
    const r = new Renderer({ json: false, verbosity: 'normal', dryRun: false, tty: true }, out.stream, err.stream);
    r.onEvent({ type: 'progress', files: 1, filesTotal: 4, bytes: 1024 * 1024, bytesTotal: 4 * 1024 * 1024 });
    expect(err.text()).toMatch(/\r\x1b\[K1\/4 files {2}1\.0 MiB\/4\.0 MiB {2}.*\/s {2}ETA /);
    r.onEvent({ type: 'item', action: '!', path: 'a', kind: 'file', reason: 'changed on the remote side' });
    expect(err.text()).toMatch(/\r\x1b\[Kconflict: a: changed on the remote side\n$/);
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

  it('formats sizes', () => {
    expect([formatBytes(0), formatBytes(1023), formatBytes(1536), formatBytes(5 * 1024 ** 3)]).toEqual(['0 B', '1023 B', '1.5 KiB', '5.0 GiB']);
  });
});

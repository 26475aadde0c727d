/**
 * rsync habits on wsync's command line (issue 11): every rsync option a user may type is accepted with rsync's
 * meaning or refused with what to do instead; never "Not enough non-option arguments". Local targets: the options
 * are the CLI's, the same for SFTP.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../support/cli.js';
import { makeTree, snapshot, tempDir } from '../support/trees.js';

type Row = { args: string[]; refused?: RegExp; check?: (dst: string, out: { stdout: string; stderr: string }) => void };

describe('rsync options on push and pull', () => {
  const work = tempDir('wsync-rsyncflags-');
  const src = join(work, 'src');
  makeTree(src, { 'a.txt': 'a\n', 'notes.md': '# n\n', 'drafts/d.md': 'draft\n', 'conf/x.yaml': 'x: 1\n', 'bin/tool': { content: '#!/bin/sh\n', mode: 0o755 }, 'logs/app.log': 'log\n' });
  writeFileSync(join(work, 'excl.txt'), '# comment\n\n*.log\n; also a comment\n');
  writeFileSync(join(work, 'incl.txt'), 'keep.log\n');

  const rows: Row[] = [
    { args: ['-a'] },
    { args: ['-r'] },
    { args: ['-t'] },
    { args: ['-avz'], check: (_d, o) => expect(o.stdout).toMatch(/^\+ a\.txt$/m) },
    { args: ['-avh'] },
    { args: ['-v'], check: (_d, o) => expect(o.stdout).toMatch(/^\+ notes\.md$/m) },
    { args: ['-z'] },
    { args: ['--archive', '--recursive', '--times'] },
    { args: ['--progress'], check: (_d, o) => expect(o.stderr).toMatch(/files .*\/s/) },
    { args: ['--stats'], check: (_d, o) => expect(o.stdout).toMatch(/Number of regular files transferred: 6\nNumber of created directories: 4/) },
    { args: ['--itemize-changes'], check: (_d, o) => expect(o.stdout).toMatch(/^\+ conf\/x\.yaml$/m) },
    { args: ['-c'] },
    { args: ['--checksum'] },
    { args: ['--exclude-from', join(work, 'excl.txt')], check: (d) => expect(existsSync(join(d, 'logs/app.log'))).toBe(false) },
    { args: [`--exclude-from=${join(work, 'excl.txt')}`, '--exclude', 'drafts/'], check: (d) => expect(existsSync(join(d, 'drafts'))).toBe(false) },
    { args: ['--include-from', join(work, 'incl.txt'), '--exclude', '*.md'], check: (d) => expect(existsSync(join(d, 'notes.md'))).toBe(false) },
    { args: ['-P'], refused: /wsync does not support -P: it means --partial --progress/ },
    { args: ['-avP'], refused: /wsync does not support -P/ },
    { args: ['--partial'], refused: /wsync does not support --partial: an interrupted run keeps every file it finished/ },
    { args: ['--bwlimit', '1000'], refused: /wsync does not support --bwlimit/ },
    { args: ['--bwlimit=1000'], refused: /wsync does not support --bwlimit/ },
    { args: ['--filter', '- *.log'], refused: /wsync does not support --filter: give --exclude and --include in order/ },
    { args: ['--delete-excluded'], refused: /wsync does not support --delete-excluded: excluded paths are never deleted/ },
    { args: ['-m'], refused: /wsync does not support -m/ },
    { args: ['--prune-empty-dirs'], refused: /wsync does not support --prune-empty-dirs/ },
    { args: ['-e', 'ssh -p 2222'], refused: /wsync does not support -e: wsync speaks SSH itself/ },
    { args: ['-u'], refused: /wsync does not support -u/ },
    { args: ['--inplace'], refused: /wsync does not support --inplace/ },
    { args: ['-H'], refused: /wsync does not support -H/ },
    { args: ['--no-such-option', 'x'], refused: /unknown option --no-such-option/ },
    { args: ['-avk'], refused: /unknown option -k \(in -avk\)/ },
  ];

  for (const [n, row] of rows.entries()) {
    it(`${row.args.join(' ')}: ${row.refused ? 'refused with what to do' : "accepted with rsync's meaning"}`, async () => {
      const dst = join(work, `dst-${n}`);
      rmSync(dst, { recursive: true, force: true });
      const r = await runCli(['push', ...row.args, src, dst], { env: { XDG_CACHE_HOME: join(work, 'cache') } });
      if (row.refused) {
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(row.refused);
        expect(r.stderr).not.toMatch(/Not enough non-option arguments/);
        expect(existsSync(dst)).toBe(false);
        return;
      }
      expect(r.code, r.stderr).toBe(0);
      row.check?.(dst, r);
      if (!row.check) expect(snapshot(dst)).toEqual(snapshot(src));
    });
  }

  it('filter rules go in order, first match wins: "only *.md *.yaml *.json *.txt, but not drafts/"', async () => {
    const dst = join(work, 'recipe');
    const args = ['--exclude', 'drafts/', '--include', '*/', '--include', '*.md', '--include', '*.yaml', '--include', '*.json', '--include', '*.txt', '--exclude', '*'];
    const r = await runCli(['push', ...args, src, dst], { env: { XDG_CACHE_HOME: join(work, 'cache') } });
    expect(r.code, r.stderr).toBe(0);
    const files = Object.entries(snapshot(dst)).filter(([, e]) => e.type === 'file').map(([p]) => p).sort();
    expect(files).toEqual(['a.txt', 'conf/x.yaml', 'notes.md']);
    expect(readFileSync(join(dst, 'notes.md'), 'utf8')).toBe('# n\n');
  });

  it('-i stays --identity (the ssh habit); --itemize-changes is rsync\'s -i', async () => {
    const r = await runCli(['push', '-i', join(work, 'no-such-key'), src, 'nohost.invalid:x']);
    expect(r.stderr).not.toMatch(/unknown option/);
    expect(r.code).not.toBe(0);
  });
});

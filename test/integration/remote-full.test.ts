import { describe, it, expect, afterAll } from 'vitest';
import { join } from 'node:path';
import { mkdirSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { useServer } from '../support/server.js';
import { runCli } from '../support/cli.js';
import { makeTree, type Spec } from '../support/trees.js';
import { isTempName } from '../../src/util/paths.js';

/**
 * A remote filesystem that fills up during a push: a 2 MiB tmpfs mounted inside the remote tree (this needs root,
 * as the tests have here and in CI). The server answers a bare "Failure" to each write; wsync must say why.
 */
describe('a full disk on the server', () => {
  const server = useServer('wsync-full-');
  let mounted: string | undefined;
  // Registered after useServer's: vitest runs afterAll hooks in reverse, so this unmounts before the removal.
  afterAll(() => {
    if (mounted) execFileSync('umount', [mounted]);
  });

  const mountSmallTmpfs = (dir: string) => {
    mkdirSync(dir, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'pipe' });
    } catch (err) {
      const detail = String((err as { stderr?: Buffer }).stderr ?? err).trim();
      throw new Error(`this test must mount a 2 MiB tmpfs at ${dir} (it runs as root in CI, with CAP_SYS_ADMIN); mount failed: ${detail}`);
    }
    mounted = dir;
  };

  it('says "no space left on the server" with the free bytes, not "Failure", and exits with a failure code', async () => {
    const local = join(server.work, 'local');
    const remote = join(server.work, 'remote');
    // Small files are fine; the 5 MiB under big/ go to the tmpfs.
    const spec: Spec = { 'a.txt': 'a', 'd/b.txt': 'b' };
    for (let i = 0; i < 20; i++) spec[`big/f${String(i).padStart(2, '0')}.bin`] = randomBytes(256 * 1024);
    makeTree(local, spec);
    mountSmallTmpfs(join(remote, 'big'));

    const r = await runCli(['push', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect([2, 3], r.stderr).toContain(r.code);
    expect(r.stderr).toMatch(/no space left on the server \(.*\/big: \d+ bytes free\)/);
    expect(r.stderr).not.toMatch(/: Failure$/m);
    // Every file that did not fit says so.
    const failedLines = r.stderr.split('\n').filter((l) => /^(failed|problem): big\//.test(l));
    expect(failedLines.length).toBeGreaterThan(0);
    for (const l of failedLines) expect(l).toMatch(/no space left on the server/);
    // The rest arrived, and no temp was left on the full disk.
    expect(readdirSync(remote).sort()).toEqual(expect.arrayContaining(['a.txt', 'big', 'd']));
    expect(readdirSync(join(remote, 'big')).filter(isTempName)).toEqual([]);

    // JSON carries the same message and code for each.
    const j = await runCli(['push', '--json', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect([2, 3]).toContain(j.code);
    const summary = JSON.parse(j.stdout.trim().split('\n').at(-1)!);
    expect(summary.problems.length).toBeGreaterThan(0);
    for (const p of summary.problems) {
      expect(p.code).toBe('E_REMOTE_IO');
      expect(p.message).toMatch(/no space left on the server/);
    }
  });
});

/**
 * What `npx wsync` would run: the package as `npm pack` makes it, installed into an empty directory from the
 * tarball (its dependencies from the registry), then its `wsync` command run against a real sshd.
 */
import { describe, it, expect } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useServer } from '../support/server.js';
import { makeTree, snapshot } from '../support/trees.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('the packed package, installed from its tarball', () => {
  const server = useServer('wsync-install-');

  it('installs into an empty directory and its wsync command works', () => {
    const dir = join(server.work, 'pack');
    const inst = join(server.work, 'inst');
    mkdirSync(dir);
    mkdirSync(inst);
    // dist/ is already built by `npm test`; --ignore-scripts skips building it a second time.
    execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    expect(tgz).toBeDefined();
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--silent', join(dir, tgz!)], { cwd: inst, stdio: ['ignore', 'ignore', 'inherit'] });
    const bin = join(inst, 'node_modules', '.bin', 'wsync');
    const run = (args: string[]) => spawnSync(bin, args, { encoding: 'utf8', env: { ...process.env, SSH_AUTH_SOCK: '' } });
    const v = run(['--version']);
    expect(v.status, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/^wsync \d+\.\d+\.\d+\n$/);
    expect(run(['--help']).stdout).toMatch(/push <local> <remote>/);
    // Only what the package needs: no test files, no sources.
    const files = execFileSync('find', [join(inst, 'node_modules', 'wsync'), '-type', 'f'], { encoding: 'utf8' });
    expect(files).not.toMatch(/\.test\.js|\/src\/|\/test\//);
    const local = join(server.work, 'tree');
    makeTree(local, { 'a.txt': 'a\n', 'd/b.txt': 'b\n' });
    const remote = join(server.srv.remoteRoot, 'installed');
    const p = run(['push', local, `${server.srv.alias}:${remote}`, '-F', server.srv.sshConfig]);
    expect(p.status, p.stderr).toBe(0);
    expect(snapshot(remote)).toEqual(snapshot(local));
  }, 240_000);
});

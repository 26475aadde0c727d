/** The real git CLI as the judge of what wsync writes. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const ENV = {
  GIT_AUTHOR_NAME: 'Tess Ter',
  GIT_AUTHOR_EMAIL: 'tess@example.com',
  GIT_COMMITTER_NAME: 'Tess Ter',
  GIT_COMMITTER_EMAIL: 'tess@example.com',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
};

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'init.defaultBranch=main', '-c', 'gc.auto=0', ...args], { cwd, env: { ...process.env, ...ENV }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs git and returns its exit code and output instead of throwing. */
export function gitTry(cwd: string, ...args: string[]): { code: number; out: string } {
  try {
    return { code: 0, out: git(cwd, ...args) };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { code: e.status ?? 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

export function initRepo(dir: string): string {
  mkdirSync(dir, { recursive: true });
  git(dir, 'init', '-q');
  return dir;
}

export type FileSpec = string | Buffer | { content: string | Buffer; mode?: number } | { link: string } | null;

/** Writes (or with null, deletes) files, then commits everything. */
export function commit(dir: string, files: Record<string, FileSpec>, message: string): string {
  for (const [p, spec] of Object.entries(files)) {
    const abs = join(dir, p);
    if (spec === null) {
      // git rm also removes the directories it empties, as a checkout would.
      git(dir, 'rm', '-r', '-q', '--ignore-unmatch', '--', p);
      execFileSync('rm', ['-rf', abs]);
      continue;
    }
    mkdirSync(dirname(abs), { recursive: true });
    execFileSync('rm', ['-rf', abs]);
    if (typeof spec === 'string' || Buffer.isBuffer(spec)) writeFileSync(abs, spec);
    else if ('link' in spec) execFileSync('ln', ['-s', spec.link, abs]);
    else writeFileSync(abs, spec.content, { mode: spec.mode ?? 0o644 });
  }
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '--allow-empty', '-m', message);
  return git(dir, 'rev-parse', 'HEAD').trim();
}

/** Content hash of every path under `dir` (type, mode, bytes or link target), skipping paths `skip` accepts. */
export function snapshotTree(dir: string, skip: (rel: string) => boolean = () => false): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (skip(r)) continue;
      const abs = join(dir, r);
      const st = lstatSync(abs);
      if (st.isDirectory()) {
        out.set(r, `dir ${st.mode & 0o777}`);
        visit(r);
      } else if (st.isSymbolicLink()) out.set(r, `link ${readlinkSync(abs)}`);
      else out.set(r, `file ${st.mode & 0o777} ${st.mtimeMs} ${createHash('sha256').update(readFileSync(abs)).digest('hex')}`);
    }
  };
  visit('');
  return out;
}

/** The checks every push must pass on the receiving repository. */
export function expectHealthy(dir: string): { status: string; fsck: string } {
  const fsck = git(dir, 'fsck', '--full', '--strict', '--no-progress');
  const status = git(dir, 'status', '--porcelain', '--untracked-files=all');
  return { status, fsck };
}

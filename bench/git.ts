/**
 * `npm run bench:git`: `wsync git push/fetch` vs real `git push/fetch` over ssh, through the same emulated WAN link
 * and against the same real sshd as bench/run.ts (see bench/README.md, section "git").
 *
 * One deterministic repository (seeded content, fixed commit dates, so every run has the same object ids) is
 * copied twice: one copy for git, one for wsync, each with its own remote path. Cases, in order, each starting from
 * the state the previous one left: (g0) initial push of the whole history into a bare repository (separate remote
 * paths: objects and the ref only, no work tree), (g1) initial push of the whole history into the checked-out
 * remote, (g1z) the same with wsync -z (wsync only, another separate path), (g2) push of 10 new local commits,
 * (g3) no-op push, (g4) fetch of 10 commits made on the remote by git, (g5) fetch of 10 more after a remote
 * `git gc`. Wall time is spawn → exit; wire bytes are the proxy's counters; every run is verified with git itself.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { prng } from './tree.js';
import {
  REPO, openBenchRun, reportResults, runMain, type Cell, benchEnv, numSetting, firstUsefulLine, runMeasured, shortPath, fmtBytes, timeCell, bytesCell,
  ratioCell, sshVersion, gitRev, machineFacts, privateHomeEnv, versionOf,
} from './harness.js';

type Tool = 'git' | 'wsync';
const TOOLS: Tool[] = ['git', 'wsync'];
type CaseId = 'g0' | 'g1' | 'g1z' | 'g2' | 'g3' | 'g4' | 'g5';
type Kind = 'push' | 'fetch';

interface Settings {
  rttMs: number;
  rateMbit: number;
  /** Files in the first commit. */
  files: number;
  /** Commits in the history pushed by (g1), the first one included. */
  commits: number;
  /** Commits per incremental case (g2, g4, g5). */
  newCommits: number;
  seed: number;
  timeoutS: number;
  wsyncArgs: string[];
  wsyncBin: string;
  keep: boolean;
}

interface GitCell extends Cell {
  /** TCP connections the run opened through the proxy. */
  connections?: number;
  /** wsync's own phase timings (ms since its start of work, from --json), and the rest of its summary. */
  timings?: Record<string, number>;
  summary?: Record<string, unknown>;
}

/** --remote-name of the cases on the main remotes (g1–g5): their pushes speculate on refs/remotes/bench/main. */
const REMOTE_NAME = 'bench';
const BRANCH = 'main';

/**
 * Flags, else environment. Link settings (RTT, rate, seed, keep, wsync entry point) use the same names as run.ts, so
 * one `WSYNC_BENCH_RTT_MS=…` or `npm run bench -- --rtt-ms …` sets them for both benchmarks; the git-only ones read
 * WSYNC_BENCH_GIT_<NAME>. `npm run bench` passes its flags to run.js and then to this script with
 * --after-dir-bench: run.ts's own flags (--files, --big-mb, --tools, --timeout-*, --wsync-args) are then accepted
 * and ignored here.
 */
function settings(): Settings {
  const { values } = parseArgs({
    options: {
      'rtt-ms': { type: 'string' },
      'rate-mbit': { type: 'string' },
      files: { type: 'string' },
      commits: { type: 'string' },
      'new-commits': { type: 'string' },
      seed: { type: 'string' },
      timeout: { type: 'string' },
      'wsync-args': { type: 'string' },
      'wsync-bin': { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      'after-dir-bench': { type: 'boolean' },
      // run.ts's, ignored (only meaningful with --after-dir-bench)
      'big-mb': { type: 'string' },
      tools: { type: 'string' },
      'timeout-initial': { type: 'string' },
      'timeout-repush': { type: 'string' },
    },
  });
  if (values.help) {
    console.log(
      [
        'usage: npm run bench:git -- [options]',
        '  --rtt-ms N            round-trip time added by the proxy (default 50; env WSYNC_BENCH_RTT_MS)',
        '  --rate-mbit N         bandwidth per direction, 0 = unlimited (default 100; env WSYNC_BENCH_RATE_MBIT)',
        '  --files N             files in the first commit (default 400; env WSYNC_BENCH_GIT_FILES)',
        '  --commits N           commits in the initial history (default 150; env WSYNC_BENCH_GIT_COMMITS)',
        '  --new-commits N       commits per incremental case g2/g4/g5 (default 10; env WSYNC_BENCH_GIT_NEW_COMMITS)',
        '  --seed N              repository seed (default 1; env WSYNC_BENCH_SEED)',
        '  --timeout S           per-run limit (default 120; env WSYNC_BENCH_GIT_TIMEOUT)',
        '  --wsync-args="..."    extra arguments for every wsync git command (default -q; --json is always added;',
        '                        env WSYNC_BENCH_GIT_WSYNC_ARGS)',
        '  --wsync-bin PATH      wsync entry point run with node (default bin/wsync.js; env WSYNC_BENCH_WSYNC_BIN)',
        '  --keep                keep the repositories and tool logs in the temp work dir (env WSYNC_BENCH_KEEP=1)',
      ].join('\n'),
    );
    process.exit(0);
  }
  const own = !values['after-dir-bench'];
  const gitFlag = (v: string | undefined) => (own ? v : undefined);
  return {
    rttMs: numSetting(values['rtt-ms'], 'RTT_MS', 50),
    rateMbit: numSetting(values['rate-mbit'], 'RATE_MBIT', 100),
    files: Math.max(10, Math.round(numSetting(gitFlag(values.files), 'GIT_FILES', 400))),
    commits: Math.max(1, Math.round(numSetting(values.commits, 'GIT_COMMITS', 150))),
    newCommits: Math.max(1, Math.round(numSetting(values['new-commits'], 'GIT_NEW_COMMITS', 10))),
    seed: Math.round(numSetting(values.seed, 'SEED', 1)),
    timeoutS: numSetting(values.timeout, 'GIT_TIMEOUT', 120),
    wsyncArgs: (gitFlag(values['wsync-args']) ?? benchEnv('GIT_WSYNC_ARGS') ?? '-q').split(/\s+/).filter(Boolean),
    wsyncBin: resolve(REPO, values['wsync-bin'] ?? benchEnv('WSYNC_BIN') ?? 'bin/wsync.js'),
    keep: values.keep ?? benchEnv('KEEP') === '1',
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The synthetic repository: an in-memory model of the tree, and commit plans applied identically to several dirs.

interface Entry {
  kind: 'file' | 'exec' | 'link';
  /** File content, or the link target. */
  data: string;
}

interface CommitPlan {
  /** Global commit number: fixes the commit's date. */
  n: number;
  message: string;
  author: { name: string; email: string };
  deletes: string[];
  writes: Array<[string, Entry]>;
}

const SYL = ['ba', 'ce', 'di', 'fo', 'gu', 'ha', 'je', 'ki', 'lo', 'mu', 'na', 're', 'si', 'to', 'vu', 'xa', 'ze', 'pri', 'str', 'con', 'act', 'ion', 'get', 'set', 'map', 'dex', 'ter', 'val', 'ent', 'ory', 'sync', 'node', 'path', 'read', 'buf'];
const TOPS: Array<{ name: string; exts: string[] }> = [
  { name: 'src', exts: ['ts', 'ts', 'tsx', 'js'] },
  { name: 'lib', exts: ['c', 'h', 'c'] },
  { name: 'services', exts: ['go', 'py', 'yaml'] },
  { name: 'test', exts: ['ts', 'py', 'json'] },
  { name: 'docs', exts: ['md', 'md', 'txt'] },
];
/** Epoch of commit 0; commit n is dated EPOCH + n × STEP, so every run writes the same object ids. */
const EPOCH = 1_700_000_000;
const STEP = 3_541;
const LOCAL_AUTHOR = { name: 'Bench Dev', email: 'dev@bench.example' };
const REMOTE_AUTHOR = { name: 'Remote Dev', email: 'remote@bench.example' };

class RepoModel {
  readonly files = new Map<string, Entry>();
  private readonly r: () => number;
  private readonly vocab: string[];
  private readonly dirs: string[] = [];
  /** Never deleted or renamed: the exec script and the symlink's target. */
  private readonly pinned = new Set<string>();

  constructor(seed: number) {
    this.r = prng(seed ^ 0x6172);
    this.vocab = Array.from({ length: 300 }, () => this.word());
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }

  private word(): string {
    let w = '';
    for (let i = 1 + Math.floor(this.r() * 3); i > 0; i--) w += this.pick(SYL);
    return w;
  }

  private id(): string {
    return this.pick(this.vocab);
  }

  private line(depth: number): string {
    const ind = '  '.repeat(depth);
    const k = this.r();
    if (k < 0.15) return `${ind}// ${this.id()} ${this.id()} ${this.id()} ${this.id()}`;
    if (k < 0.2) return '';
    if (k < 0.6) return `${ind}const ${this.id()}${Math.floor(this.r() * 100)} = ${this.id()}.${this.id()}(${this.id()}, '${this.id()}');`;
    return `${ind}${this.id()}.${this.id()} = ${this.id()}[${Math.floor(this.r() * 64)}] + ${Math.floor(this.r() * 100000)};`;
  }

  /** Code-like text of about `size` bytes. */
  private text(size: number, prose: boolean): string {
    const out: string[] = [];
    let len = 0;
    let depth = 0;
    if (!prose) out.push('/*\n * Copyright (c) 2019-2024 The Example Authors.\n * SPDX-License-Identifier: Apache-2.0\n */');
    while (len < size) {
      let l: string;
      if (prose) {
        const ws = Array.from({ length: 5 + Math.floor(this.r() * 12) }, () => this.id());
        l = this.r() < 0.08 ? `\n## ${ws.slice(0, 3).join(' ')}\n` : ws.join(' ') + '.';
      } else {
        const k = this.r();
        if (k < 0.1 && depth < 4) {
          l = `${'  '.repeat(depth)}${this.pick(['if', 'for', 'while', 'function'])} (${this.id()}.${this.id()}(${this.id()})) {`;
          depth++;
        } else if (k < 0.2 && depth > 0) {
          depth--;
          l = `${'  '.repeat(depth)}}`;
        } else l = this.line(depth);
      }
      out.push(l);
      len += l.length + 1;
    }
    while (depth-- > 0) out.push(`${'  '.repeat(depth)}}`);
    return out.join('\n') + '\n';
  }

  private newFileContent(path: string): string {
    // log-uniform 1–8 KB: "a few KB" per file
    const size = Math.round(1000 * Math.pow(8, this.r()));
    return this.text(size, /\.(md|txt)$/.test(path));
  }

  private newPath(): string {
    const dir = this.pick(this.dirs);
    const top = TOPS.find((t) => dir === t.name || dir.startsWith(t.name + '/'))!;
    for (;;) {
      const p = `${dir}/${this.word()}${this.r() < 0.3 ? '-' + this.word() : ''}.${this.pick(top.exts)}`;
      if (!this.files.has(p)) return p;
    }
  }

  /** The first commit: `fileCount` files in nested directories, one executable script, one symlink. */
  initial(fileCount: number): CommitPlan {
    for (const t of TOPS) this.dirs.push(t.name);
    const wantDirs = Math.max(TOPS.length, Math.round(fileCount / 10));
    while (this.dirs.length < wantDirs) {
      const parent = this.pick(this.dirs);
      if (parent.split('/').length >= 4) continue;
      const d = `${parent}/${this.word()}`;
      if (!this.dirs.includes(d)) this.dirs.push(d);
    }
    const writes: Array<[string, Entry]> = [];
    const add = (p: string, e: Entry) => {
      this.files.set(p, e);
      writes.push([p, e]);
    };
    add('scripts/build.sh', { kind: 'exec', data: `#!/bin/sh\nset -eu\n# build ${this.word()}\n${this.text(800, false).replace(/^/gm, '# ')}` });
    add('CHANGELOG.md', { kind: 'file', data: `# Changelog\n\n${this.text(2000, true)}` });
    add('docs/CHANGES.md', { kind: 'link', data: '../CHANGELOG.md' });
    for (const p of ['scripts/build.sh', 'CHANGELOG.md', 'docs/CHANGES.md']) this.pinned.add(p);
    while (this.files.size < fileCount) {
      const p = this.newPath();
      add(p, { kind: 'file', data: this.newFileContent(p) });
    }
    return { n: 0, message: 'initial import', author: LOCAL_AUTHOR, deletes: [], writes };
  }

  /** A small line-level edit: insert, replace or delete 1–3 lines, or append a few. */
  private edit(data: string): string {
    const lines = data.split('\n');
    const at = Math.floor(this.r() * Math.max(1, lines.length - 1));
    const k = this.r();
    const count = 1 + Math.floor(this.r() * 3);
    const fresh = () => this.line(1 + Math.floor(this.r() * 2));
    if (k < 0.35) lines.splice(at, 0, ...Array.from({ length: count }, fresh));
    else if (k < 0.7) lines.splice(at, count, ...Array.from({ length: count }, fresh));
    else if (k < 0.85 && lines.length > 10) lines.splice(at, count);
    else lines.splice(lines.length - 1, 0, ...Array.from({ length: count }, fresh));
    return lines.join('\n');
  }

  /** The next commit: 1–4 file changes, mostly small edits, sometimes an add, delete or rename. */
  next(n: number, author: CommitPlan['author']): CommitPlan {
    const changes = 1 + Math.floor(this.r() * 4);
    const writes = new Map<string, Entry>();
    const deletes = new Set<string>();
    const verbs: string[] = [];
    const movable = () => [...this.files.keys()].filter((p) => !this.pinned.has(p) && !writes.has(p) && !deletes.has(p));
    for (let i = 0; i < changes; i++) {
      const k = this.r();
      if (k < 0.07) {
        const p = this.newPath();
        const e: Entry = { kind: 'file', data: this.newFileContent(p) };
        this.files.set(p, e);
        writes.set(p, e);
        deletes.delete(p);
        verbs.push(`add ${p.split('/').pop()}`);
      } else if (k < 0.11) {
        const p = this.pick(movable());
        this.files.delete(p);
        deletes.add(p);
        verbs.push(`remove ${p.split('/').pop()}`);
      } else if (k < 0.16) {
        const from = this.pick(movable());
        const to = this.newPath();
        const e = this.files.get(from)!;
        // Half the renames also change a line, as a refactoring would.
        const moved: Entry = this.r() < 0.5 ? e : { kind: e.kind, data: this.edit(e.data) };
        this.files.delete(from);
        deletes.add(from);
        this.files.set(to, moved);
        writes.set(to, moved);
        deletes.delete(to);
        verbs.push(`move ${from.split('/').pop()} to ${to.slice(0, to.lastIndexOf('/'))}`);
      } else {
        const p = k < 0.19 ? 'scripts/build.sh' : k < 0.22 ? 'CHANGELOG.md' : this.pick(movable());
        const e = this.files.get(p)!;
        const changed: Entry = { kind: e.kind, data: p === 'CHANGELOG.md' ? e.data.replace('\n\n', `\n\n- ${this.id()} ${this.id()} (#${n})\n`) : this.edit(e.data) };
        this.files.set(p, changed);
        writes.set(p, changed);
        deletes.delete(p);
        verbs.push(`${this.pick(['fix', 'tweak', 'update', 'refactor', 'clean up'])} ${p.split('/').pop()}`);
      }
    }
    return { n, message: `${verbs.join(', ')}\n\nchange ${n} (${this.id()} ${this.id()})\n`, author, deletes: [...deletes], writes: [...writes] };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// git as a helper (setup and verification), never measured.

const GIT_ENV = { GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0' };

function git(cwd: string, args: string[], env: NodeJS.ProcessEnv = {}): string {
  return execFileSync('git', ['-c', 'init.defaultBranch=main', '-c', 'gc.auto=0', '-c', 'maintenance.auto=false', '-c', 'core.autocrlf=false', ...args], {
    cwd,
    env: { ...process.env, ...GIT_ENV, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 << 20,
  });
}

function gitTry(cwd: string, args: string[]): { ok: boolean; out: string } {
  try {
    return { ok: true, out: git(cwd, args) };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    return { ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message };
  }
}

function removeWithEmptyParents(root: string, rel: string): void {
  rmSync(join(root, rel), { force: true });
  for (let d = dirname(rel); d !== '.'; d = dirname(d)) {
    const abs = join(root, d);
    if (!existsSync(abs) || readdirSync(abs).length) break;
    rmdirSync(abs);
  }
}

/** Applies `plan` to the work tree at `dir` and commits it there with the plan's fixed identity and date. */
function applyCommit(dir: string, plan: CommitPlan, all = false): string {
  for (const p of plan.deletes) removeWithEmptyParents(dir, p);
  for (const [p, e] of plan.writes) {
    const abs = join(dir, p);
    mkdirSync(dirname(abs), { recursive: true });
    rmSync(abs, { force: true });
    if (e.kind === 'link') symlinkSync(e.data, abs);
    else {
      writeFileSync(abs, e.data);
      chmodSync(abs, e.kind === 'exec' ? 0o755 : 0o644);
    }
  }
  const date = `@${EPOCH + plan.n * STEP} +0000`;
  const who = ['-c', `user.name=${plan.author.name}`, '-c', `user.email=${plan.author.email}`];
  const paths = [...plan.deletes, ...plan.writes.map(([p]) => p)];
  git(dir, all ? ['add', '-A'] : ['add', '-A', '--', ...paths]);
  git(dir, [...who, 'commit', '-q', '--no-verify', '-m', plan.message], { GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date });
  return git(dir, ['rev-parse', 'HEAD']).trim();
}

/** Checks every push must pass: the remote is healthy, its work tree clean, its HEAD the pushed commit. */
function verifyPush(remote: string, local: string): string | null {
  const fsck = gitTry(remote, ['fsck', '--full', '--strict', '--no-dangling', '--no-progress']);
  if (!fsck.ok) return `remote fsck: ${firstUsefulLine(fsck.out)}`;
  const status = gitTry(remote, ['status', '--porcelain', '--untracked-files=all']);
  if (!status.ok) return `remote status: ${firstUsefulLine(status.out)}`;
  if (status.out.trim()) {
    const lines = status.out.trim().split('\n');
    return `remote work tree not clean (${lines.length} path(s), e.g. ${lines.slice(0, 3).join('; ')})`;
  }
  const want = git(local, ['rev-parse', `refs/heads/${BRANCH}`]).trim();
  const head = gitTry(remote, ['rev-parse', 'HEAD']);
  if (!head.ok || head.out.trim() !== want) return `remote HEAD ${head.out.trim().slice(0, 12)} ≠ local ${BRANCH} ${want.slice(0, 12)}`;
  return verifyWorktreeContent(remote);
}

/**
 * Checks a push into a bare repository (g0) must pass: the remote is healthy, still bare, its branch the pushed commit,
 * and nothing of the tree was written next to the git files.
 */
function verifyBarePush(remote: string, local: string): string | null {
  const fsck = gitTry(remote, ['fsck', '--full', '--strict', '--no-dangling', '--no-progress']);
  if (!fsck.ok) return `remote fsck: ${firstUsefulLine(fsck.out)}`;
  const bare = gitTry(remote, ['rev-parse', '--is-bare-repository']);
  if (!bare.ok || bare.out.trim() !== 'true') return `remote is no longer a bare repository (${firstUsefulLine(bare.out)})`;
  const want = git(local, ['rev-parse', `refs/heads/${BRANCH}`]).trim();
  const got = gitTry(remote, ['rev-parse', '--verify', '-q', `refs/heads/${BRANCH}`]);
  if (!got.ok || got.out.trim() !== want) return `remote ${BRANCH} ${got.out.trim().slice(0, 12) || 'missing'} ≠ local ${BRANCH} ${want.slice(0, 12)}`;
  const tops = git(local, ['ls-tree', '-z', '--name-only', `refs/heads/${BRANCH}`]).split('\0').filter(Boolean);
  const written = tops.filter((name) => existsSync(join(remote, name)));
  if (written.length) return `work tree paths written into the bare repository: ${written.slice(0, 3).join(', ')}`;
  return null;
}

/**
 * Every path of HEAD's tree, hashed from the disk: `git status` trusts the index's stat data (and wsync's
 * repositories use checkStat=minimal), so a file with the right size and mtime but wrong bytes would pass it.
 */
function verifyWorktreeContent(dir: string): string | null {
  const bad: string[] = [];
  const entries = git(dir, ['ls-tree', '-r', '-z', '--full-tree', 'HEAD']).split('\0').filter(Boolean);
  for (const line of entries) {
    const m = /^(\d+) (\w+) ([0-9a-f]{40})\t(.*)$/s.exec(line);
    if (!m) return `cannot parse ls-tree line ${JSON.stringify(line)}`;
    const [, mode, type, oid, path] = m;
    if (type !== 'blob') continue;
    const abs = join(dir, path!);
    let st;
    try {
      st = lstatSync(abs);
    } catch {
      bad.push(`missing ${path}`);
      continue;
    }
    const link = mode === '120000';
    if (link !== st.isSymbolicLink() || (!link && !st.isFile())) {
      bad.push(`wrong type ${path}`);
      continue;
    }
    if (!link && (mode === '100755') !== ((st.mode & 0o100) !== 0)) bad.push(`wrong mode ${path}`);
    const body = link ? Buffer.from(readlinkSync(abs)) : readFileSync(abs);
    const h = createHash('sha1').update(`blob ${body.length}\0`).update(body).digest('hex');
    if (h !== oid) bad.push(`wrong content ${path}`);
  }
  return bad.length ? `remote work tree ≠ HEAD in ${bad.length} path(s), e.g. ${bad.slice(0, 3).join('; ')}` : null;
}

/** Checks every fetch must pass: the local repository is healthy and `ref` is the remote's branch tip. */
function verifyFetch(local: string, ref: string, remote: string): string | null {
  const fsck = gitTry(local, ['fsck', '--full', '--strict', '--no-dangling', '--no-progress']);
  if (!fsck.ok) return `local fsck: ${firstUsefulLine(fsck.out)}`;
  const want = git(remote, ['rev-parse', `refs/heads/${BRANCH}`]).trim();
  const got = gitTry(local, ['rev-parse', '--verify', '-q', ref]);
  if (!got.ok || got.out.trim() !== want) return `${ref} ${got.out.trim().slice(0, 12) || 'missing'} ≠ remote ${BRANCH} ${want.slice(0, 12)}`;
  const status = gitTry(local, ['status', '--porcelain', '--untracked-files=all']);
  if (!status.ok || status.out.trim()) return `local work tree changed by fetch: ${firstUsefulLine(status.out)}`;
  return null;
}

function countObjects(dir: string): { count: number; sizePack: number } {
  const out = git(dir, ['count-objects', '-v']);
  const get = (k: string) => Number(out.match(new RegExp(`^${k}: (\\d+)$`, 'm'))?.[1] ?? 0);
  return { count: get('count') + get('in-pack'), sizePack: get('size-pack') * 1024 };
}

// ---------------------------------------------------------------------------------------------------------------

interface BenchCase {
  id: CaseId;
  kind: Kind;
  label: (s: Settings) => string;
  /**
   * Which remote the case uses: the main ones (default; g1 creates/fills them and g2–g5 build on that), fresh bare
   * repositories (g0), or a fresh path for wsync with -z (g1z). The last two are independent of the main cases.
   */
  remote?: 'bare' | 'z';
  /** Tools that run the case (default: both). */
  only?: Tool;
  /** git's cell the ratios compare with when git does not run the case itself. */
  vs?: CaseId;
}

const CASES: BenchCase[] = [
  { id: 'g0', kind: 'push', remote: 'bare', label: (s) => `(g0) initial push into a bare repository, ${s.commits} commits` },
  { id: 'g1', kind: 'push', label: (s) => `(g1) initial push, ${s.commits} commits` },
  { id: 'g1z', kind: 'push', remote: 'z', only: 'wsync', vs: 'g1', label: () => '(g1z) = g1 with wsync -z (ratios vs git\'s g1)' },
  { id: 'g2', kind: 'push', label: (s) => `(g2) push of ${s.newCommits} new commits` },
  { id: 'g3', kind: 'push', label: () => '(g3) no-op push' },
  { id: 'g4', kind: 'fetch', label: (s) => `(g4) fetch of ${s.newCommits} remote commits` },
  { id: 'g5', kind: 'fetch', label: (s) => `(g5) fetch of ${s.newCommits} more after remote gc` },
];

function ratio(w: number | undefined, g: number | undefined): number | undefined {
  return w !== undefined && g !== undefined && g > 0 ? w / g : undefined;
}

async function main(): Promise<void> {
  const s = settings();
  const started = new Date();
  const { work, logs, startLink, cleanup } = openBenchRun(['ssh', 'git'], 'wsync-bench-git-', s.keep);

  try {
    // The repository first: it is CPU work, done before anything is timed.
    const tg = performance.now();
    const model = new RepoModel(s.seed);
    const base = join(work, 'base');
    mkdirSync(base);
    git(base, ['init', '-q', '-b', BRANCH]);
    applyCommit(base, model.initial(s.files), true);
    let n = 1;
    for (; n < s.commits; n++) applyCommit(base, model.next(n, LOCAL_AUTHOR));
    git(base, ['gc', '-q']);
    const baseTip = git(base, ['rev-parse', 'HEAD']).trim();
    const baseObjects = countObjects(base);
    const trackedFiles = git(base, ['ls-files']).split('\n').filter(Boolean).length;
    console.log(
      `repository: ${s.commits} commits, ${trackedFiles} files at the tip, ${baseObjects.count} objects, pack ${fmtBytes(baseObjects.sizePack)} ` +
        `(seed ${s.seed}, tip ${baseTip.slice(0, 12)}), generated in ${((performance.now() - tg) / 1000).toFixed(1)} s`,
    );
    // Plans for the later cases, made now so both copies get exactly the same commits.
    const plan = (author: CommitPlan['author']) => Array.from({ length: s.newCommits }, () => model.next(n++, author));
    const localPlan = plan(LOCAL_AUTHOR);
    const remotePlan = plan(REMOTE_AUTHOR);
    const remoteGcPlan = plan(REMOTE_AUTHOR);

    const locals = new Map<Tool, string>();
    for (const tool of TOOLS) {
      const dir = join(work, `local-${tool}`);
      execFileSync('cp', ['-a', base, dir]);
      locals.set(tool, dir);
    }

    const { srv, proxy, cfg, link, probe } = await startLink(s.rttMs, s.rateMbit);

    const remotes = new Map<Tool, string>([
      ['git', join(srv.remoteRoot, 'git')],
      ['wsync', join(srv.remoteRoot, 'wsync')],
    ]);
    // git needs a repository to push into; updateInstead makes it update the checked-out work tree as wsync does.
    const gitRemote = remotes.get('git')!;
    mkdirSync(gitRemote);
    git(gitRemote, ['init', '-q', '-b', BRANCH]);
    git(gitRemote, ['config', 'receive.denyCurrentBranch', 'updateInstead']);
    // wsync's remote path does not exist: its first push creates the repository.
    // (g0): fresh bare repositories for both; wsync finds the bare repository at the target root and writes only
    // objects and the ref. (g1z): a fresh path for wsync -z.
    const bareRemotes = new Map<Tool, string>([
      ['git', join(srv.remoteRoot, 'git-bare')],
      ['wsync', join(srv.remoteRoot, 'wsync-bare')],
    ]);
    for (const dir of bareRemotes.values()) {
      mkdirSync(dir);
      git(dir, ['init', '-q', '--bare', '-b', BRANCH]);
    }
    const zRemote = join(srv.remoteRoot, 'wsync-z');
    const remoteFor = (tool: Tool, c: BenchCase) => (c.remote === 'bare' ? bareRemotes.get(tool)! : c.remote === 'z' ? zRemote : remotes.get(tool)!);
    const remoteNameFor = (c: BenchCase) => (c.remote === 'bare' ? 'bench0' : c.remote === 'z' ? 'bench1z' : REMOTE_NAME);

    const envs: Record<Tool, NodeJS.ProcessEnv> = {
      git: privateHomeEnv(join(work, 'home-git'), { ...GIT_ENV, GIT_SSH_COMMAND: `ssh -F ${cfg}` }),
      wsync: privateHomeEnv(join(work, 'home-wsync'), GIT_ENV),
    };
    const commandFor = (tool: Tool, c: BenchCase): [string, string[], string] => {
      const url = `${srv!.alias}:${remoteFor(tool, c)}`;
      const local = locals.get(tool)!;
      if (tool === 'git') return ['git', [c.kind, url, BRANCH], local];
      const extra = c.remote === 'z' && !s.wsyncArgs.some((a) => a === '-z' || a === '--compress') ? ['-z'] : [];
      return [
        process.execPath,
        [s.wsyncBin, 'git', c.kind, url, BRANCH, '-F', cfg, '--repo', local, '--remote-name', remoteNameFor(c), '--json', ...s.wsyncArgs, ...extra],
        REPO,
      ];
    };
    const fetchedRef = (tool: Tool) => (tool === 'git' ? 'FETCH_HEAD' : `refs/remotes/${REMOTE_NAME}/${BRANCH}`);

    const results = new Map<Tool, Map<CaseId, GitCell>>(TOOLS.map((t) => [t, new Map()]));
    const setupProblems = new Map<Tool, string>();
    const notes: string[] = [];

    const runCase = async (tool: Tool, c: BenchCase): Promise<void> => {
      if (c.only && c.only !== tool) return;
      const cells = results.get(tool)!;
      const label = c.label(s);
      process.stdout.write(`${tool.padEnd(5)} ${label} … `);
      const g1 = cells.get('g1');
      // g2–g5 build on g1's remote; g0 and g1z have remotes of their own.
      if (c.id !== 'g1' && c.remote === undefined && g1?.status !== 'ok') {
        cells.set(c.id, { status: 'skipped', note: `skipped (g1 ${g1?.status ?? 'missing'})` });
        console.log(timeCell(cells.get(c.id)));
        return;
      }
      if (setupProblems.has(tool)) {
        cells.set(c.id, { status: 'fail', note: `setup: ${setupProblems.get(tool)}` });
        console.log(timeCell(cells.get(c.id)));
        return;
      }
      if (tool === 'wsync' && !existsSync(s.wsyncBin)) {
        cells.set(c.id, { status: 'fail', note: `${shortPath(s.wsyncBin)} does not exist` });
        console.log(timeCell(cells.get(c.id)));
        return;
      }
      const [cmd, args, cwd] = commandFor(tool, c);
      const conns = proxy!.connections();
      const o = await runMeasured(proxy!, cmd, args, { timeoutS: s.timeoutS, env: envs[tool], log: join(logs, `${tool}-${c.id}.log`), cwd });
      const measured: GitCell = { status: 'ok', secs: o.secs, up: o.up, down: o.down, connections: proxy!.connections() - conns };
      if (tool === 'wsync') {
        const line = o.stdout.trim().split('\n').pop() ?? '';
        try {
          const j = JSON.parse(line) as Record<string, unknown>;
          if (j.type === 'summary') {
            measured.timings = j.timings as Record<string, number>;
            const { timings: _t, commits, ...rest } = j;
            measured.summary = { ...rest, commits: Array.isArray(commits) ? commits.length : commits };
          }
        } catch {
          // not JSON: an error, handled below
        }
      }
      let cell: GitCell;
      if (o.timedOut) cell = { ...measured, status: 'timeout', secs: s.timeoutS };
      else if (o.code !== 0) {
        const why = firstUsefulLine(o.stderr) || firstUsefulLine(o.stdout) || `exit ${o.code ?? o.signal}`;
        cell = { ...measured, status: 'fail', note: why, detail: (o.stderr || o.stdout).trim().split('\n').slice(0, 25).join('\n') };
      } else {
        const remote = remoteFor(tool, c);
        const problem =
          c.kind === 'fetch'
            ? verifyFetch(locals.get(tool)!, fetchedRef(tool), remote)
            : c.remote === 'bare'
              ? verifyBarePush(remote, locals.get(tool)!)
              : verifyPush(remote, locals.get(tool)!);
        cell = problem ? { ...measured, status: 'mismatch', note: problem } : measured;
      }
      cells.set(c.id, cell);
      console.log(`${timeCell(cell)}  ${bytesCell(cell)}${cell.connections !== undefined ? `  ${cell.connections} conn` : ''}`);
    };

    /** Makes the same commits in every tool's work tree `dirs`; they must get the same ids everywhere. */
    const commitEverywhere = (what: string, dirs: Map<Tool, string>, plans: CommitPlan[], after?: (dir: string) => void) => {
      const tips = new Map<Tool, string>();
      for (const tool of TOOLS) {
        if (setupProblems.has(tool) || results.get(tool)!.get('g1')?.status !== 'ok') continue;
        const dir = dirs.get(tool)!;
        try {
          let tip = '';
          for (const p of plans) tip = applyCommit(dir, p);
          after?.(dir);
          tips.set(tool, tip);
        } catch (e) {
          const err = e as { stderr?: string; message: string };
          setupProblems.set(tool, `${what}: ${firstUsefulLine(err.stderr ?? '') || err.message}`);
        }
      }
      const distinct = new Set(tips.values());
      if (distinct.size > 1) {
        const shown = [...tips].map(([t, tip]) => `${t} ${tip.slice(0, 12)}`).join(', ');
        notes.push(`${what}: the same commits got different ids (${shown}); the repositories had diverged before.`);
        // git's side is the reference: the same plan on the same parent must give the same ids.
        setupProblems.set('wsync', `${what}: commit ids differ from git's (${shown})`);
      }
    };

    for (const c of CASES) {
      if (c.id === 'g2') commitEverywhere(`${s.newCommits} local commits`, locals, localPlan);
      if (c.id === 'g4') commitEverywhere(`${s.newCommits} commits on the remote`, remotes, remotePlan);
      if (c.id === 'g5') commitEverywhere(`${s.newCommits} more commits on the remote + git gc`, remotes, remoteGcPlan, (dir) => git(dir, ['gc', '-q']));
      for (const tool of TOOLS) await runCase(tool, c);
    }

    // ---- report ----
    const get = (t: Tool, c: CaseId) => results.get(t)?.get(c);
    const wire = (c: GitCell | undefined) => (c?.status === 'ok' ? c.up! + c.down! : undefined);
    const bytesRatioCell = (w: GitCell | undefined, g: GitCell | undefined) => {
      const r = ratio(wire(w), wire(g));
      return r === undefined ? 'n/a' : `${r.toFixed(2)}×`;
    };
    const header = '| case | git s | wsync s | wsync/git time | git wire bytes | wsync wire bytes | wsync/git bytes |';
    const rows = [header, '|---|---:|---:|---:|---:|---:|---:|'];
    for (const c of CASES) {
      const g = c.only === 'wsync' ? undefined : get('git', c.id);
      const gr = c.vs ? get('git', c.vs) : g;
      const w = c.only === 'git' ? undefined : get('wsync', c.id);
      rows.push(`| ${c.label(s)} | ${timeCell(g)} | ${timeCell(w)} | ${ratioCell(w, gr)} | ${bytesCell(g)} | ${bytesCell(w)} | ${bytesRatioCell(w, gr)} |`);
    }
    const table = rows.join('\n');

    // wsync's own phases: ms since gitPush/gitFetch started (after node start-up and module loading).
    const phaseRows: string[] = [];
    for (const c of CASES) {
      const w = get('wsync', c.id);
      if (!w?.timings) continue;
      // Phases may overlap (wsync plans while it connects), so these are gaps between consecutive marks.
      let prev = 0;
      const steps = Object.entries(w.timings).sort((a, b) => a[1] - b[1]).map(([k, v]) => {
        const d = v - prev;
        prev = v;
        return `${k} ${d}`;
      });
      const startup = w.secs! * 1000 - prev;
      phaseRows.push(`| ${c.label(s)} | ${w.secs!.toFixed(2)} | ${Math.round(startup)} | ${steps.join(', ')} | ${w.connections ?? '—'} |`);
    }
    const phases = phaseRows.length
      ? ['| case | wsync s | outside marks ms | marks, ms after the previous one | TCP conns |', '|---|---:|---:|---|---:|', ...phaseRows].join('\n')
      : '';

    const verdict = (ok: boolean | undefined) => (ok === undefined ? 'n/a' : ok ? 'met' : '**not met**');
    const targets: string[] = [];
    {
      const timeRatio = (w: GitCell | undefined, g: GitCell | undefined) =>
        w?.status === 'ok' && g?.status === 'ok' ? `${(w.secs! / g.secs!).toFixed(2)}×` : 'n/a';
      const bytesTarget = (what: string, w: GitCell | undefined, g: GitCell | undefined, extra = '') => {
        const br = ratio(wire(w), wire(g));
        return (
          `- ${what} wire bytes ≤ 1.2× git's: ${verdict(br === undefined ? undefined : br <= 1.2)} ` +
          `(${br === undefined ? 'no result' : `${fmtBytes(wire(w)!)} vs ${fmtBytes(wire(g)!)} = ${br.toFixed(2)}×`}); time ratio ${timeRatio(w, g)}${extra}`
        );
      };
      targets.push(bytesTarget('(g0) objects only, into a bare repository:', get('wsync', 'g0'), get('git', 'g0')));
      const g1z = ratio(wire(get('wsync', 'g1z')), wire(get('git', 'g1')));
      targets.push(
        bytesTarget(
          '(g1) objects + work tree:',
          get('wsync', 'g1'),
          get('git', 'g1'),
          `; with -z (g1z): ${g1z === undefined ? 'no result' : `${g1z.toFixed(2)}×`} (the work tree is copied out of the pushed pack on the server; see bench/README.md)`,
        ),
      );
      const g2w = get('wsync', 'g2');
      const g2g = get('git', 'g2');
      const tr2 = g2w?.status === 'ok' && g2g?.status === 'ok' ? g2w.secs! / g2g.secs! : undefined;
      targets.push(
        `- (g2) time ≤ 1.5× git's: ${verdict(tr2 === undefined ? undefined : tr2 <= 1.5)} (${tr2 === undefined ? 'no result' : `${g2w!.secs!.toFixed(2)} s vs ${g2g!.secs!.toFixed(2)} s = ${tr2.toFixed(2)}×`})`,
      );
    }

    const failures: string[] = [];
    for (const [tool, cells] of results) {
      for (const c of CASES) {
        const cell = cells.get(c.id);
        if (cell?.status === 'fail') failures.push(`${tool} ${c.label(s)}: ${cell.note}${cell.detail ? `\n\n\`\`\`\n${cell.detail}\n\`\`\`` : ''}`);
        if (cell?.status === 'mismatch') failures.push(`${tool} ${c.label(s)}: MISMATCH ${cell.note}`);
      }
    }

    const facts = [
      `- date: ${started.toISOString()}`,
      `- machine: ${machineFacts()}`,
      `- node ${process.version}; ${versionOf('git', ['--version'])} (client and server side); ${sshVersion()} (client and sshd, same host)`,
      `- wsync: ${gitRev(dirname(dirname(s.wsyncBin)))}${s.wsyncBin === resolve(REPO, 'bin/wsync.js') ? '' : ` (${s.wsyncBin})`}`,
      `- link: ${link}; user-space proxy in the harness process`,
      `- repository: seed ${s.seed}; ${s.commits} commits (the first adds ${s.files} files in nested dirs incl. one executable script and one symlink, ` +
        `then 1–4 line-level edits, adds, deletes or renames each), ${trackedFiles} files at the tip, ${baseObjects.count} objects, ` +
        `\`git gc\` pack ${fmtBytes(baseObjects.sizePack)}; tip ${baseTip.slice(0, 12)}`,
      `- incremental cases: ${s.newCommits} commits each (g2 made locally with git, g4/g5 made in each remote's work tree with git; identical ids on both sides)`,
      `- ssh connect + auth + exec \`true\` through the proxy: ${probe.secs.toFixed(2)} s`,
      `- limit: ${s.timeoutS} s per run`,
    ];
    const commands = [
      `- git: \`GIT_SSH_COMMAND="ssh -F <cfg>" git push|fetch wsync-bench:<remote> ${BRANCH}\` in the local repository; the remote was made with ` +
        '`git init` + `receive.denyCurrentBranch updateInstead` (g0: its own remote, made with `git init --bare`)',
      `- wsync: \`node ${shortPath(s.wsyncBin)} git push|fetch wsync-bench:<remote> ${BRANCH} -F <cfg> --repo <local> --remote-name ${REMOTE_NAME} --json${s.wsyncArgs.length ? ' ' + s.wsyncArgs.join(' ') : ''}\`; ` +
        'the remote path does not exist before (g1); (g0) its own remote made with `git init --bare`, `--remote-name bench0`; ' +
        '(g1z) its own remote path that does not exist before, `--remote-name bench1z` and `-z`',
    ];
    const md = [
      '# wsync git benchmark: latest run',
      '',
      table,
      '',
      'Seconds are wall time from spawn to exit. Wire bytes are TCP payload counted by the proxy (↑ to the server, ↓ back).',
      'Pushes are verified on the remote with `git fsck --full --strict`, `git status --porcelain --untracked-files=all` (must be empty),',
      '`git rev-parse HEAD` (must be the local branch) and every file of HEAD\'s tree hashed from the remote\'s disk (type, exec bit, blob id);',
      '(g0) into a bare repository with `git fsck --full --strict`, `git rev-parse refs/heads/main` (must be the local branch), still bare, no tree path written;',
      'fetches with a local `git fsck --full --strict`, a clean local `git status`, and the fetched ref (git: FETCH_HEAD, wsync:',
      "refs/remotes/bench/main) equal to the remote's branch. A failed check shows MISMATCH.",
      '',
      '## Targets',
      '',
      ...targets,
      ...(phases ? ['', "## wsync's phases", '', "From wsync's `--json` summary (`timings`: ms since its git command started, at the end of each phase; phases can overlap, so each number is the gap after the previous mark). \"Outside marks\" is the rest of the wall time: node start-up, module loading, exit.", '', phases] : []),
      '',
      '## Setup',
      '',
      ...facts,
      '',
      '## Commands',
      '',
      ...commands,
      ...(notes.length ? ['', '## Notes', '', ...notes.map((x) => `- ${x}`)] : []),
      ...(failures.length ? ['', '## Failures', '', ...failures] : []),
      '',
    ].join('\n');

    reportResults({
      name: 'git-latest',
      table,
      targets,
      extra: phases || undefined,
      notes,
      failures,
      md,
      started,
      settings: s,
      facts: {
        repository: { commits: s.commits, files: trackedFiles, objects: baseObjects.count, packBytes: baseObjects.sizePack, tip: baseTip },
        probeSecs: probe.secs,
      },
      results,
      work,
      logs,
    });
  } finally {
    await cleanup();
  }
}

runMain(main);

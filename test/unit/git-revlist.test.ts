import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { LocalRepo } from '../../src/git/local.js';
import { objectsToSend, revList } from '../../src/git/objects-to-send.js';
import { tempDir } from '../support/trees.js';
import { commit, git, initRepo } from '../support/git.js';

/** `git rev-list tip ^have…` is the judge of which commits a push sends. */
describe('revList and objectsToSend against git rev-list', () => {
  let work: string;
  let repo: string;
  let local: LocalRepo;
  beforeAll(async () => {
    work = tempDir('wsync-revlist-');
    repo = initRepo(join(work, 'r'));
    // A history with branches merged back, a merge of a merge, and a side branch left open.
    commit(repo, { 'a.txt': '0' }, 'root');
    for (let i = 1; i <= 3; i++) {
      git(repo, 'checkout', '-q', '-b', `side${i}`);
      commit(repo, { [`s${i}.txt`]: `side ${i}` }, `side ${i} a`);
      commit(repo, { [`s${i}.txt`]: `side ${i} b`, 'dir/x.txt': `from side ${i}` }, `side ${i} b`);
      git(repo, 'checkout', '-q', 'main');
      commit(repo, { 'a.txt': `main ${i}` }, `main ${i}`);
      git(repo, 'merge', '-q', '--no-ff', '-m', `merge side ${i}`, `side${i}`);
    }
    git(repo, 'checkout', '-q', '-b', 'open');
    commit(repo, { 'open.txt': 'open' }, 'open work');
    git(repo, 'checkout', '-q', 'main');
    commit(repo, { 'a.txt': 'tip' }, 'tip');
    local = await LocalRepo.open(repo);
  });
  afterAll(async () => {
    await local?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const rev = (...args: string[]) => git(repo, 'rev-list', ...args).trim().split('\n').filter(Boolean).sort();

  it('gives exactly the commits of rev-list for several have sets, parents before children', async () => {
    const cases: Array<[string, string[]]> = [
      ['main', []],
      ['main', ['side1']],
      ['main', ['main~2']],
      ['main', ['side3', 'open']],
      ['open', ['main']],
      ['main', ['main']],
    ];
    for (const [tipRef, haveRefs] of cases) {
      const tip = git(repo, 'rev-parse', tipRef).trim();
      const haves = haveRefs.map((h) => git(repo, 'rev-parse', h).trim());
      const got = await revList(local, tip, haves);
      expect(got.map((c) => c.oid).sort(), `${tipRef} ^${haveRefs.join(' ^')}`).toEqual(rev(tipRef, ...haveRefs.map((h) => `^${h}`)));
      const pos = new Map(got.map((c, i) => [c.oid, i]));
      for (const c of got) for (const p of c.parents) if (pos.has(p)) expect(pos.get(p)!).toBeLessThan(pos.get(c.oid)!);
    }
  });

  it('sends every object rev-list --objects names that the haves lack, and each delta base first', async () => {
    const tip = git(repo, 'rev-parse', 'main').trim();
    const have = git(repo, 'rev-parse', 'side2').trim();
    const sent: string[] = [];
    const seen = new Set<string>();
    // Bases named before they were sent: the pack writer cannot use those, and none may be sent afterwards.
    const namedEarly = new Set<string>();
    await objectsToSend(local, await revList(local, tip, [have]), (o) => {
      expect(namedEarly.has(o.oid), `${o.oid} sent after an object that wanted it as its base`).toBe(false);
      if (o.deltaBase && !seen.has(o.deltaBase)) namedEarly.add(o.deltaBase);
      sent.push(o.oid);
      seen.add(o.oid);
    });
    const want = git(repo, 'rev-list', '--objects', 'main', `^${have}`).trim().split('\n').map((l) => l.split(' ')[0]);
    // Nothing missing; extras only where a path went back to content the remote already has.
    for (const oid of want) expect(sent, oid).toContain(oid);
    expect(new Set(sent).size).toBe(sent.length);
  });

  it('walks a long linear history (thousands of commits) exactly', async () => {
    const big = initRepo(join(work, 'big'));
    const n = 3000;
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      lines.push('commit refs/heads/main', `committer T <t@e> ${1_700_000_000 + i} +0000`, 'data 2', `c${i % 10}`);
      lines.push(`M 100644 inline f${i % 50}.txt`, `data ${String(i).length}`, String(i), '');
    }
    execFileSync('git', ['fast-import', '--quiet'], { cwd: big, input: lines.join('\n') + '\n' });
    const repo2 = await LocalRepo.open(big);
    try {
      const all = await revList(repo2, git(big, 'rev-parse', 'main').trim(), []);
      expect(all.length).toBe(n);
      const half = await revList(repo2, git(big, 'rev-parse', 'main').trim(), [git(big, 'rev-parse', `main~${n / 2}`).trim()]);
      expect(half.length).toBe(n / 2);
    } finally {
      await repo2.close();
    }
  });
});

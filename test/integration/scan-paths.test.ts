/**
 * The targeted scan (issue 12, for watch batches): given changed paths, it says what a full walk would say of
 * them and of what is below new directories, on the local filesystem and over SFTP to the real sshd, with ignore
 * rules kept across scans (an edited .gitignore takes effect, a deleted one stops applying).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, writeFileSync, rmSync, utimesSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { startSshd, type TestServer } from '../support/sshd.js';
import { makeTree, tempDir } from '../support/trees.js';
import { IgnoreRules } from '../../src/scan/ignore.js';
import { scanPaths, walk } from '../../src/scan/walk.js';
import { LocalTransport } from '../../src/transport/local/local.js';
import { openTarget } from '../../src/transport/open.js';
import type { Transport } from '../../src/transport/types.js';
import type { Tree } from '../../src/types.js';

const rules = () => new IgnoreRules({ gitignore: true, excludes: [], includes: [] });

/** What a full walk says of `paths` and of everything below those that are directories. */
function restrict(full: Tree, paths: string[]): Tree {
  const out: Tree = new Map();
  for (const [p, e] of full) if (paths.some((q) => p === q || p.startsWith(q + '/'))) out.set(p, e);
  return out;
}
/** Entries without the fields a second listing may see differently (atime-like noise is not in Entry). */
const plain = (t: Tree) => new Map([...t].map(([p, e]) => [p, { type: e.type, size: e.size, mtime: e.mtime, mode: e.mode, target: e.target }]));

describe('scanPaths: a targeted scan agrees with a full walk', () => {
  let srv: TestServer;
  const work = tempDir('wsync-scanpaths-');
  beforeAll(async () => {
    srv = await startSshd();
  });
  afterAll(async () => {
    await srv?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  for (const kind of ['local', 'sftp'] as const) {
    it(`${kind}: edits, deletes, new directories, ignored and temp paths, and .gitignore edits`, async () => {
      const root = join(kind === 'local' ? work : srv.remoteRoot, `tree-${kind}`);
      makeTree(root, {
        '.gitignore': 'build/\n',
        'src/a.ts': 'a\n',
        'src/b.ts': 'b\n',
        'src/deep/c.ts': 'c\n',
        'docs/.gitignore': '*.tmp.md\n',
        'docs/x.md': 'x\n',
        'build/out.js': 'built\n',
      });
      const t: Transport = kind === 'local' ? new LocalTransport(root) : await openTarget(`${srv.alias}:${root}`, { sshConfig: srv.sshConfig });
      try {
        const r = rules();
        await walk(t, { rules: r, concurrency: 16 });
        // Changes, as a watch would see them.
        writeFileSync(join(root, 'src/a.ts'), 'a, edited\n');
        utimesSync(join(root, 'src/a.ts'), 1_700_000_500, 1_700_000_500);
        rmSync(join(root, 'src/b.ts'));
        mkdirSync(join(root, 'src/new/inner'), { recursive: true });
        writeFileSync(join(root, 'src/new/n1.ts'), 'n1\n');
        writeFileSync(join(root, 'src/new/inner/n2.ts'), 'n2\n');
        writeFileSync(join(root, 'build/more.js'), 'ignored\n');
        writeFileSync(join(root, 'src/.a.ts.wsync-0123abcd.tmp'), 'a temp\n');
        writeFileSync(join(root, 'docs/y.tmp.md'), 'ignored by docs/.gitignore\n');
        const changed = ['src/a.ts', 'src/b.ts', 'src/new', 'src/new/n1.ts', 'build/more.js', 'src/.a.ts.wsync-0123abcd.tmp', 'docs/y.tmp.md'];
        const s1 = await scanPaths(t, changed, { rules: r, concurrency: 16 });
        const full1 = (await walk(t, { rules: rules(), concurrency: 16 })).tree;
        expect(plain(s1.tree)).toEqual(plain(restrict(full1, changed)));
        expect(s1.gone).toEqual(['src/b.ts']);
        expect(s1.excluded.sort()).toEqual(['build/more.js', 'docs/y.tmp.md', 'src/.a.ts.wsync-0123abcd.tmp']);
        expect([...s1.tree.keys()].sort()).toEqual(['src/a.ts', 'src/new', 'src/new/inner', 'src/new/inner/n2.ts', 'src/new/n1.ts']);

        // docs/.gitignore edited to let *.tmp.md through: the same rules object now includes it.
        writeFileSync(join(root, 'docs/.gitignore'), '# nothing ignored\n');
        const s2 = await scanPaths(t, ['docs/.gitignore', 'docs/y.tmp.md'], { rules: r, concurrency: 16 });
        expect([...s2.tree.keys()].sort()).toEqual(['docs/.gitignore', 'docs/y.tmp.md']);
        // The root .gitignore deleted: build/ is no longer ignored.
        rmSync(join(root, '.gitignore'));
        const s3 = await scanPaths(t, ['.gitignore', 'build'], { rules: r, concurrency: 16 });
        expect(s3.gone).toEqual(['.gitignore']);
        const full3 = (await walk(t, { rules: rules(), concurrency: 16 })).tree;
        expect(plain(s3.tree)).toEqual(plain(restrict(full3, ['build'])));
        expect([...s3.tree.keys()].sort()).toEqual(['build', 'build/more.js', 'build/out.js']);
        expect(s3.rulesChanged).toBe(true);
        expect(s1.rulesChanged).toBe(false);

        // Nothing is followed through a symlink (a full walk lists it as a leaf), nor below a file; a deleted
        // directory that the rules exclude as a directory is excluded, not gone (a --delete must not follow it).
        writeFileSync(join(root, '.gitignore'), 'cache/\n');
        mkdirSync(join(root, 'cache'));
        writeFileSync(join(root, 'cache/blob'), 'x\n');
        symlinkSync('src', join(root, 'via-link'));
        writeFileSync(join(root, 'plain'), 'a file\n');
        await scanPaths(t, ['.gitignore'], { rules: r, concurrency: 16 });
        rmSync(join(root, 'cache'), { recursive: true });
        const s4 = await scanPaths(t, ['via-link', 'via-link/a.ts', 'via-link/new', 'plain/x', 'cache'], { rules: r, concurrency: 16 });
        const full4 = (await walk(t, { rules: rules(), concurrency: 16 })).tree;
        expect([...s4.tree.keys()]).toEqual(['via-link']);
        expect(s4.tree.get('via-link')?.type).toBe('symlink');
        expect(plain(s4.tree)).toEqual(plain(restrict(full4, ['via-link'])));
        expect(s4.gone.sort()).toEqual(['plain/x', 'via-link/a.ts', 'via-link/new']);
        expect(s4.excluded).toEqual(['cache']);
        expect(s4.problems).toEqual([]);
      } finally {
        await t.close();
      }
    });
  }
});

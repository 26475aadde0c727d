/**
 * A push of given paths on a session (issue 12: what a watch batch will be): only those paths are looked at on
 * either side (no walk of the trees, no listing of the remote root), and the result is what a full push would have
 * made of them, recorded so that the next full push finds nothing to do. Against the real sshd.
 */
import { describe, it, expect } from 'vitest';
import { writeFileSync, rmSync, mkdirSync, renameSync, utimesSync, existsSync, readFileSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { makeTree, snapshot } from '../support/trees.js';
import { pull, push } from '../../src/api.js';
import { openSession, type Session } from '../../src/session/session.js';
import type { Transport } from '../../src/transport/types.js';

/** Counts the remote listings a session's runs make (a batch must make none but of the directories it was given). */
async function countListings(s: Session): Promise<string[]> {
  const t = (await s.remote()) as Transport & { readdir: Transport['readdir'] };
  const listed: string[] = [];
  const orig = t.readdir.bind(t);
  t.readdir = (rel) => {
    listed.push(rel);
    return orig(rel);
  };
  return listed;
}

const ignoreState = (rel: string) => rel === '.wsync' || rel.startsWith('.wsync/');

/** A tree made locally and pushed once over a new session: each test's own pair of directories. */
function pairs(server: ReturnType<typeof useServer>, prefix: string) {
  let n = 0;
  return async (spec: Parameters<typeof makeTree>[1]) => {
    const name = `${prefix}-${++n}`;
    const local = join(server.work, name);
    makeTree(local, spec);
    const remote = join(server.srv.remoteRoot, name);
    const s = await openSession(local, `${server.srv.alias}:${remote}`, { sshConfig: server.srv.sshConfig });
    const first = await push(s);
    expect(first.ok).toBe(true);
    return { local, src: local, remote, s, n };
  };
}

describe('push of given paths on a session', () => {
  const server = useServer('wsync-paths-');
  const setup = pairs(server, 'paths');

  it('sends edits, new nested directories, renames and deletes of the given paths only, and records them', async () => {
    const { src, remote, s } = await setup({ '.gitignore': 'dist/\n', 'a.txt': 'a\n', 'keep/b.txt': 'b\n', 'old/c.txt': 'c\n', 'gone.txt': 'bye\n' });
    try {
      writeFileSync(join(src, 'a.txt'), 'a, edited\n');
      utimesSync(join(src, 'a.txt'), 1_700_000_100, 1_700_000_100);
      mkdirSync(join(src, 'new/deeper'), { recursive: true });
      writeFileSync(join(src, 'new/deeper/n.txt'), 'new\n');
      renameSync(join(src, 'old'), join(src, 'moved'));
      rmSync(join(src, 'gone.txt'));
      mkdirSync(join(src, 'dist'));
      writeFileSync(join(src, 'dist/out.js'), 'built\n');
      // Not in the batch: left alone even though it changed.
      writeFileSync(join(src, 'keep/b.txt'), 'b, edited but not reported\n');
      utimesSync(join(src, 'keep/b.txt'), 1_700_000_200, 1_700_000_200);

      const listed = await countListings(s);
      const r = await push(s, { paths: ['a.txt', 'new/deeper/n.txt', 'old', 'moved', 'gone.txt', 'dist/out.js'], delete: true });
      expect(r.ok, JSON.stringify(r.problems)).toBe(true);
      // The one directory of the batch the remote has (what it holds goes with it) is the only one listed there.
      expect(listed.sort()).toEqual(['old']);
      expect(r.stats.filesSent).toBe(3); // a.txt, n.txt, moved/c.txt
      expect(r.stats.deleted).toBe(3); // gone.txt, old/c.txt, old
      expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('a, edited\n');
      expect(readFileSync(join(remote, 'new/deeper/n.txt'), 'utf8')).toBe('new\n');
      expect(readFileSync(join(remote, 'moved/c.txt'), 'utf8')).toBe('c\n');
      expect(existsSync(join(remote, 'old'))).toBe(false);
      expect(existsSync(join(remote, 'gone.txt'))).toBe(false);
      expect(existsSync(join(remote, 'dist'))).toBe(false);
      expect(readFileSync(join(remote, 'keep/b.txt'), 'utf8')).toBe('b\n');

      // The manifest holds what the batch did: a full push now sends only the change it was not told about.
      const full = await push(s, { delete: true });
      expect(full.ok).toBe(true);
      expect(full.stats.filesSent).toBe(1);
      expect(full.stats.deleted).toBe(0);
      expect(full.stats.conflicts).toBe(0);
      expect(snapshot(remote, { skip: ignoreState })).toEqual(snapshot(src, { skip: (rel) => rel === 'dist' || rel.startsWith('dist/') }));
    } finally {
      await s.close();
    }
  });

  it('keeps an outside edit on the remote as a conflict, and deletes nothing without --delete', async () => {
    const { src, remote, s } = await setup({ 'x.txt': 'x\n', 'y.txt': 'y\n' });
    try {
      writeFileSync(join(remote, 'x.txt'), 'edited on the remote\n');
      utimesSync(join(remote, 'x.txt'), 1_700_000_300, 1_700_000_300);
      writeFileSync(join(src, 'x.txt'), 'edited here too\n');
      utimesSync(join(src, 'x.txt'), 1_700_000_400, 1_700_000_400);
      rmSync(join(src, 'y.txt'));
      const r = await push(s, { paths: ['x.txt', 'y.txt'] });
      expect(r.ok).toBe(false);
      expect(r.conflicts.map((c) => [c.path, c.kind])).toEqual([['x.txt', 'changed']]);
      expect(readFileSync(join(remote, 'x.txt'), 'utf8')).toBe('edited on the remote\n');
      expect(existsSync(join(remote, 'y.txt'))).toBe(true);
      // Still recorded: a later --delete run removes it.
      const d = await push(s, { paths: ['y.txt'], delete: true });
      expect(d.stats.deleted).toBe(1);
      expect(existsSync(join(remote, 'y.txt'))).toBe(false);
    } finally {
      await s.close();
    }
  });

  it('never writes through a remote directory swapped for a symlink, and sends a same-second same-size edit', async () => {
    const { src, remote, s, n } = await setup({ 'a/x.txt': 'x\n', 'conf.txt': 'debug=TRUE\n' });
    const outside = join(server.srv.remoteRoot, `outside-${n}`);
    mkdirSync(outside);
    try {
      rmSync(join(remote, 'a'), { recursive: true });
      symlinkSync(outside, join(remote, 'a'));
      writeFileSync(join(src, 'a/new.txt'), 'new\n');
      // Same size, and the mtime put back: only the bytes tell (the batch says the path changed).
      const t = statSync(join(src, 'conf.txt')).mtime;
      writeFileSync(join(src, 'conf.txt'), 'debug=FALS\n');
      utimesSync(join(src, 'conf.txt'), t, t);
      const r = await push(s, { paths: ['a/new.txt', 'conf.txt'] });
      expect(r.conflicts.map((c) => [c.path, c.kind])).toEqual([['a', 'changed']]);
      expect(readdirSync(outside)).toEqual([]);
      expect(readFileSync(join(remote, 'conf.txt'), 'utf8')).toBe('debug=FALS\n');
    } finally {
      await s.close();
    }
  });

  it("each side's ignore files stay its own: a newly ignored file is neither deleted nor sent; a missing root is refused", async () => {
    const { src, remote, s } = await setup({ '.gitignore': 'dist/\n', 'config.local.json': '{}\n' });
    try {
      writeFileSync(join(src, '.gitignore'), 'dist/\nconfig.local.json\n.env\n');
      writeFileSync(join(src, '.env'), 'SECRET=1\n');
      const r = await push(s, { paths: ['.gitignore', 'config.local.json'], delete: true });
      expect(r.ok, JSON.stringify(r.conflicts)).toBe(true);
      expect(existsSync(join(remote, 'config.local.json'))).toBe(true);
      const r2 = await push(s, { paths: ['.env'] });
      expect(r2.stats.filesSent).toBe(0);
      expect(existsSync(join(remote, '.env'))).toBe(false);
      await expect(push(s, { paths: ['.env'], dryRun: true })).rejects.toMatchObject({ code: 'E_USAGE' });
      renameSync(src, `${src}-moved`);
      await expect(push(s, { paths: ['.gitignore', 'config.local.json'], delete: true })).rejects.toMatchObject({ code: 'E_LOCAL_MISSING' });
      expect(existsSync(join(remote, '.gitignore'))).toBe(true);
    } finally {
      await s.close();
    }
  });
});

describe('pull of given paths on a session', () => {
  const server = useServer('wsync-pullpaths-');
  const setup = pairs(server, 'pp');

  it('brings edits, new nested directories, renames and deletes of the given paths only, and records them', async () => {
    const { local, remote, s } = await setup({ 'a.txt': 'a\n', 'keep/b.txt': 'b\n', 'old/c.txt': 'c\n', 'gone.txt': 'bye\n' });
    try {
      // Another client's work on the target.
      writeFileSync(join(remote, 'a.txt'), 'a, edited there\n');
      utimesSync(join(remote, 'a.txt'), 1_700_000_100, 1_700_000_100);
      mkdirSync(join(remote, 'new/deeper'), { recursive: true });
      writeFileSync(join(remote, 'new/deeper/n.txt'), 'new\n');
      renameSync(join(remote, 'old'), join(remote, 'moved'));
      rmSync(join(remote, 'gone.txt'));
      // Not in the batch: left alone even though it changed.
      writeFileSync(join(remote, 'keep/b.txt'), 'b, edited there, not reported\n');
      utimesSync(join(remote, 'keep/b.txt'), 1_700_000_200, 1_700_000_200);

      const listed = await countListings(s);
      const r = await pull(s, { paths: ['a.txt', 'new/deeper/n.txt', 'old', 'moved', 'gone.txt'], delete: true });
      expect(r.ok, JSON.stringify([r.problems, r.conflicts])).toBe(true);
      expect(r.direction).toBe('pull');
      // Only the batch's directories the manifest does not know are listed there (walked whole): never the root.
      expect(listed.sort()).toEqual(['moved', 'new', 'new/deeper']);
      expect(r.stats.filesSent).toBe(3);
      expect(r.stats.deleted).toBe(3); // gone.txt, old/c.txt, old
      expect(readFileSync(join(local, 'a.txt'), 'utf8')).toBe('a, edited there\n');
      expect(statSync(join(local, 'a.txt')).mtimeMs).toBe(1_700_000_100_000);
      expect(readFileSync(join(local, 'new/deeper/n.txt'), 'utf8')).toBe('new\n');
      expect(readFileSync(join(local, 'moved/c.txt'), 'utf8')).toBe('c\n');
      expect(existsSync(join(local, 'old'))).toBe(false);
      expect(existsSync(join(local, 'gone.txt'))).toBe(false);
      expect(readFileSync(join(local, 'keep/b.txt'), 'utf8')).toBe('b\n');

      // Recorded: a full pull brings only the change it was not told about; a full push then has nothing to do.
      const full = await pull(s, { delete: true });
      expect(full.ok).toBe(true);
      expect(full.stats.filesSent).toBe(1);
      expect(full.stats.deleted + full.stats.conflicts).toBe(0);
      expect(snapshot(local)).toEqual(snapshot(remote, { skip: ignoreState }));
      const back = await push(s, { delete: true });
      expect(back.stats.filesSent + back.stats.deleted + back.stats.conflicts + back.stats.attributesUpdated).toBe(0);
    } finally {
      await s.close();
    }
  });

  it('keeps a local edit as a conflict (never overwritten), deletes nothing without --delete, and refuses a missing remote root', async () => {
    const { local, remote, s } = await setup({ 'x.txt': 'x\n', 'y.txt': 'y\n', 'z.txt': 'zz\n' });
    try {
      writeFileSync(join(remote, 'x.txt'), 'edited on the remote\n');
      utimesSync(join(remote, 'x.txt'), 1_700_000_300, 1_700_000_300);
      writeFileSync(join(local, 'x.txt'), 'edited here too\n');
      utimesSync(join(local, 'x.txt'), 1_700_000_400, 1_700_000_400);
      rmSync(join(remote, 'y.txt'));
      // Same size, mtime put back: only the bytes tell that the local copy was edited since the last sync.
      writeFileSync(join(remote, 'z.txt'), 'ZZ\n');
      utimesSync(join(remote, 'z.txt'), 1_700_000_500, 1_700_000_500);
      const t = statSync(join(local, 'z.txt')).mtime;
      writeFileSync(join(local, 'z.txt'), 'z!\n');
      utimesSync(join(local, 'z.txt'), t, t);
      const r = await pull(s, { paths: ['x.txt', 'y.txt', 'z.txt'] });
      expect(r.ok).toBe(false);
      expect(r.conflicts.map((c) => c.path).sort()).toEqual(['x.txt', 'z.txt']);
      expect(readFileSync(join(local, 'x.txt'), 'utf8')).toBe('edited here too\n');
      expect(readFileSync(join(local, 'z.txt'), 'utf8')).toBe('z!\n');
      expect(existsSync(join(local, 'y.txt'))).toBe(true);
      const d = await pull(s, { paths: ['y.txt'], delete: true });
      expect(d.stats.deleted).toBe(1);
      expect(existsSync(join(local, 'y.txt'))).toBe(false);
      renameSync(remote, `${remote}-moved`);
      await expect(pull(s, { paths: ['x.txt'] })).rejects.toMatchObject({ code: 'E_TARGET' });
      expect(existsSync(join(local, 'x.txt'))).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('a directory the remote replaced with a file, only a child reported: walked whole, a local edit below holds it back', async () => {
    const { local, remote, s } = await setup({ 'd/a.txt': 'a\n', 'd/b.txt': 'b\n', 'e/a.txt': 'a\n', 'e/b.txt': 'b\n' });
    try {
      for (const d of ['d', 'e']) {
        rmSync(join(remote, d), { recursive: true });
        writeFileSync(join(remote, d), `${d} is a file now\n`);
      }
      writeFileSync(join(local, 'd/b.txt'), 'b, edited here\n');
      utimesSync(join(local, 'd/b.txt'), 1_700_000_700, 1_700_000_700);
      const r = await pull(s, { paths: ['d/a.txt', 'e/a.txt'], delete: true });
      // d holds a local edit: nothing of it is touched (its clean sibling stays too); e is replaced whole.
      expect(r.conflicts.map((c) => [c.path, c.kind])).toEqual([['d', 'dir-holds-changes']]);
      expect(r.problems).toEqual([]);
      expect(readFileSync(join(local, 'd/a.txt'), 'utf8')).toBe('a\n');
      expect(readFileSync(join(local, 'd/b.txt'), 'utf8')).toBe('b, edited here\n');
      expect(readFileSync(join(local, 'e'), 'utf8')).toBe('e is a file now\n');
      await expect(pull(s, { paths: ['../outside.txt'] })).rejects.toMatchObject({ code: 'E_USAGE' });
      await expect(push(s, { paths: ['/etc/passwd'] })).rejects.toMatchObject({ code: 'E_USAGE' });
    } finally {
      await s.close();
    }
  });

  it('never writes through a local directory swapped for a symlink', async () => {
    const { local, remote, s, n } = await setup({ 'a/x.txt': 'x\n' });
    const outside = join(server.work, `outside-${n}`);
    mkdirSync(outside);
    try {
      rmSync(join(local, 'a'), { recursive: true });
      symlinkSync(outside, join(local, 'a'));
      writeFileSync(join(remote, 'a/new.txt'), 'new\n');
      writeFileSync(join(remote, 'a/x.txt'), 'x, edited there\n');
      utimesSync(join(remote, 'a/x.txt'), 1_700_000_600, 1_700_000_600);
      const r = await pull(s, { paths: ['a/new.txt', 'a/x.txt'] });
      expect(r.ok).toBe(false);
      expect(readdirSync(outside)).toEqual([]);
    } finally {
      await s.close();
    }
  });
});

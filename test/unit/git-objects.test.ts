import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { decodeLoose, encodeLoose, encodeTree, hashObject, isOid, parseCommit, parseTag, parseTree, ZERO_OID } from '../../src/git/objects.js';

const ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'Ann Author',
  GIT_AUTHOR_EMAIL: 'ann@example.com',
  GIT_AUTHOR_DATE: '1700000000 +0100',
  GIT_COMMITTER_NAME: 'Cid Committer',
  GIT_COMMITTER_EMAIL: 'cid@example.com',
  GIT_COMMITTER_DATE: '1700000100 -0230',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
};

let dir: string;
function git(args: string[], input?: string | Buffer): Buffer {
  return execFileSync('git', ['-c', 'user.name=T', '-c', 'user.email=t@example.com', '-c', 'init.defaultBranch=main', ...args], {
    cwd: dir,
    env: ENV,
    input,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}
const gitText = (args: string[], input?: string | Buffer): string => git(args, input).toString('utf8').trim();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'wsync-gitobj-'));
  git(['init', '-q']);
  writeFileSync(join(dir, 'a.txt'), 'hello\n');
  writeFileSync(join(dir, 'run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(dir, 'run.sh'), 0o755);
  symlinkSync('a.txt', join(dir, 'link'));
  mkdirSync(join(dir, 'sub'));
  writeFileSync(join(dir, 'sub', 'ünï.txt'), 'nested\n');
  git(['add', '-A']);
  git(['commit', '-q', '-m', 'first']);
  git(['checkout', '-q', '-b', 'side']);
  writeFileSync(join(dir, 'side.txt'), 'side\n');
  git(['add', '-A']);
  git(['commit', '-q', '-m', 'side work']);
  git(['checkout', '-q', 'main']);
  writeFileSync(join(dir, 'a.txt'), 'hello again\n');
  git(['commit', '-q', '-am', 'main work']);
  git(['merge', '-q', '--no-ff', '-m', 'Merge side\n\nwith a body line', 'side']);
  git(['tag', '-a', '-m', 'release', 'v1']);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('oids and hashing', () => {
  it('isOid accepts 40 lowercase hex only', () => {
    expect(isOid(ZERO_OID)).toBe(true);
    expect(isOid('a'.repeat(40))).toBe(true);
    expect(isOid('A'.repeat(40))).toBe(false);
    expect(isOid('a'.repeat(39))).toBe(false);
    expect(isOid('g'.repeat(40))).toBe(false);
  });

  it('hashObject matches git hash-object for every type', () => {
    const blob = Buffer.from([0, 1, 2, 255, 10, 13, 0]);
    expect(hashObject('blob', blob)).toBe(gitText(['hash-object', '--stdin', '-t', 'blob'], blob));
    expect(hashObject('blob', Buffer.alloc(0))).toBe('e69de29bb2d1d6434b8b29ae775ad8c2e48c5391'); // git's empty blob
    for (const [type, rev] of [['commit', 'HEAD'], ['tree', 'HEAD^{tree}'], ['tag', 'v1']] as const) {
      const body = git(['cat-file', type, rev]);
      const oid = gitText(['rev-parse', rev]);
      expect(hashObject(type, body)).toBe(oid);
      expect(gitText(['hash-object', '--stdin', '-t', type], body)).toBe(oid);
    }
  });
});

describe('loose objects', () => {
  it('decodes every loose object git wrote', () => {
    const objects = join(dir, '.git', 'objects');
    let n = 0;
    for (const d of readdirSync(objects).filter((x) => /^[0-9a-f]{2}$/.test(x))) {
      for (const f of readdirSync(join(objects, d))) {
        const oid = d + f;
        const obj = decodeLoose(readFileSync(join(objects, d, f)));
        expect(obj.type).toBe(gitText(['cat-file', '-t', oid]));
        expect(obj.body.equals(git(['cat-file', obj.type, oid]))).toBe(true);
        expect(hashObject(obj.type, obj.body)).toBe(oid);
        n++;
      }
    }
    expect(n).toBeGreaterThan(10);
  });

  it('writes loose objects git reads and fsck accepts', () => {
    const write = (type: 'blob' | 'tree' | 'commit', body: Buffer): string => {
      const oid = hashObject(type, body);
      mkdirSync(join(dir, '.git', 'objects', oid.slice(0, 2)), { recursive: true });
      writeFileSync(join(dir, '.git', 'objects', oid.slice(0, 2), oid.slice(2)), encodeLoose(type, body));
      return oid;
    };
    const blob = write('blob', Buffer.from('made by wsync\n'));
    const tree = write('tree', encodeTree([{ mode: '100644', name: 'w.txt', oid: blob }]));
    const head = gitText(['rev-parse', 'HEAD']);
    const commit = write(
      'commit',
      Buffer.from(`tree ${tree}\nparent ${head}\nauthor W <w@example.com> 1700000200 +0000\ncommitter W <w@example.com> 1700000200 +0000\n\nwsync commit\n`),
    );
    expect(gitText(['cat-file', '-p', blob])).toBe('made by wsync');
    expect(gitText(['cat-file', '-p', tree])).toBe(`100644 blob ${blob}\tw.txt`);
    expect(gitText(['log', '-1', '--format=%s %P', commit])).toBe(`wsync commit ${head}`);
    git(['update-ref', 'refs/heads/wsync', commit]);
    git(['fsck', '--strict', '--no-dangling']);
  });

  it('rejects malformed loose objects', () => {
    expect(() => decodeLoose(Buffer.from('not zlib'))).toThrow(/zlib/);
    expect(() => decodeLoose(deflateSync(Buffer.from('blob 5\0abc')))).toThrow(/5 bytes/);
    expect(() => decodeLoose(deflateSync(Buffer.from('blob 3\0abcd')))).toThrow(/3 bytes/);
    expect(() => decodeLoose(deflateSync(Buffer.from('bolb 3\0abc')))).toThrow(/bad header/);
    expect(() => decodeLoose(deflateSync(Buffer.from('blob 03\0abc')))).toThrow(/bad header/);
    expect(() => decodeLoose(deflateSync(Buffer.from('blob 3 abc')))).toThrow(/terminator/);
    expect(decodeLoose(deflateSync(Buffer.from('blob 0\0')))).toEqual({ type: 'blob', body: Buffer.alloc(0) });
  });
});

describe('trees', () => {
  it('parses a tree with exec, symlink, subdir, non-ASCII name and gitlink as ls-tree shows it', () => {
    const sub = gitText(['rev-parse', 'HEAD:sub']);
    const blob = gitText(['rev-parse', 'HEAD:a.txt']);
    const exec = gitText(['rev-parse', 'HEAD:run.sh']);
    const link = gitText(['rev-parse', 'HEAD:link']);
    const gitlink = gitText(['rev-parse', 'HEAD~1']);
    const mk = `100644 blob ${blob}\ta.txt\n120000 blob ${link}\tlink\n100755 blob ${exec}\trun.sh\n160000 commit ${gitlink}\tsm\n040000 tree ${sub}\tsub\n`;
    const tree = gitText(['mktree'], mk);
    const entries = parseTree(git(['cat-file', 'tree', tree]));
    expect(entries).toEqual([
      { mode: '100644', name: 'a.txt', oid: blob },
      { mode: '120000', name: 'link', oid: link },
      { mode: '100755', name: 'run.sh', oid: exec },
      { mode: '160000', name: 'sm', oid: gitlink },
      { mode: '40000', name: 'sub', oid: sub },
    ]);
    expect(parseTree(git(['cat-file', 'tree', sub]))).toEqual([{ mode: '100644', name: 'ünï.txt', oid: gitText(['rev-parse', 'HEAD:sub/ünï.txt']) }]);
    expect(encodeTree(entries).equals(git(['cat-file', 'tree', tree]))).toBe(true);
    expect(parseTree(Buffer.alloc(0))).toEqual([]);
  });

  it('rejects truncated or malformed trees', () => {
    const good = encodeTree([{ mode: '100644', name: 'x', oid: 'ab'.repeat(20) }]);
    expect(() => parseTree(good.subarray(0, good.length - 1))).toThrow(/truncated/);
    expect(() => parseTree(Buffer.from('100644x\0'))).toThrow(/mode/);
    expect(() => parseTree(Buffer.from('10a644 x\0' + 'a'.repeat(20)))).toThrow(/mode/);
  });
});

describe('commits and tags', () => {
  it('parses a merge commit', () => {
    const c = parseCommit(git(['cat-file', 'commit', 'HEAD']));
    expect(c.tree).toBe(gitText(['rev-parse', 'HEAD^{tree}']));
    expect(c.parents).toEqual([gitText(['rev-parse', 'HEAD^1']), gitText(['rev-parse', 'HEAD^2'])]);
    expect(c.author).toBe('Ann Author <ann@example.com> 1700000000 +0100');
    expect(c.committer).toBe('Cid Committer <cid@example.com> 1700000100 -0230');
    expect(c.committerTime).toBe(Number(gitText(['log', '-1', '--format=%ct'])));
    expect(c.message).toBe('Merge side\n\nwith a body line\n');
  });

  it('parses a root commit and skips signature continuation lines', () => {
    const root = parseCommit(git(['cat-file', 'commit', 'HEAD~1~1']));
    expect(root.parents).toEqual([]);
    expect(root.message).toBe('first\n');
    const tree = 'ab'.repeat(20);
    const signed = Buffer.from(
      `tree ${tree}\nauthor A <a@x> 1 +0000\ncommitter C <c@x> 1234567890 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n parent ${'cd'.repeat(20)}\n -----END PGP SIGNATURE-----\n\nsigned\n`,
    );
    expect(parseCommit(signed)).toEqual({ tree, parents: [], author: 'A <a@x> 1 +0000', committer: 'C <c@x> 1234567890 +0000', message: 'signed\n', committerTime: 1234567890 });
    expect(() => parseCommit(Buffer.from('author A <a@x> 1 +0000\n\nno tree\n'))).toThrow(/tree/);
  });

  it('parses an annotated tag', () => {
    expect(parseTag(git(['cat-file', 'tag', 'v1']))).toEqual({ object: gitText(['rev-parse', 'HEAD']), type: 'commit' });
    expect(() => parseTag(Buffer.from(`object ${'ab'.repeat(20)}\ntype thing\n\n`))).toThrow(/type/);
  });
});

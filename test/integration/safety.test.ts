/**
 * Safety under attack (issue 10): files rewritten while they are sent, remote edits made while a push runs, two
 * runs with --wait, a lock left empty by a killed run, --delete after a conflict. Real sshd, real CLI.
 */
import { describe, it, expect } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, writeFileSync, utimesSync, renameSync, readdirSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { useServer } from '../support/server.js';
import { runCli, WSYNC_BIN } from '../support/cli.js';
import { makeTree, snapshot, type Spec } from '../support/trees.js';
import { startProxy } from '../../bench/proxy.js';
import { writeProxyConfig } from '../../bench/harness.js';
import { readManifest } from '../../src/manifest/manifest.js';
import { LocalTransport } from '../../src/transport/local/local.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A child process that rewrites `file` in place, 1 MiB at a time, round after round, until killed. */
function rewriter(file: string, size: number) {
  const script = `
    const fs = require('fs');
    const fd = fs.openSync(${JSON.stringify(file)}, 'r+');
    const block = Buffer.alloc(1 << 20);
    for (let round = 1; ; round++) {
      block.fill(round & 0xff);
      for (let off = 0; off < ${size}; off += block.length) fs.writeSync(fd, block, 0, Math.min(block.length, ${size} - off), off);
    }`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  return { stop: () => new Promise<void>((r) => (child.exitCode !== null ? r() : (child.once('exit', () => r()), child.kill('SIGKILL')))) };
}

/** Regular files below root except wsync's own, path → content. */
function files(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const visit = (dir: string, rel: string) => {
    for (const name of readdirSync(dir)) {
      const r = rel ? `${rel}/${name}` : name;
      if (r === '.wsync') continue;
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) visit(p, r);
      else if (st.isFile()) out.set(r, readFileSync(p));
    }
  };
  visit(root, '');
  return out;
}

describe('safety under attack', () => {
  const server = useServer('wsync-safety-');
  const target = (dir: string) => `${server.srv.alias}:${dir}`;
  const cli = (args: string[], cfg = server.srv.sshConfig) => runCli([...args, '-F', cfg], { timeoutMs: 60_000 });

  it('a file rewritten in place during a whole-file upload is never committed torn (item 3)', async () => {
    const size = 64 * 2 ** 20;
    const local = join(server.work, 'torn-local');
    const remote = join(server.srv.remoteRoot, 'torn-remote');
    mkdirSync(local, { recursive: true });
    writeFileSync(join(local, 'big.bin'), Buffer.alloc(size, 0));
    writeFileSync(join(local, 'small.txt'), 'small\n');
    const w = rewriter(join(local, 'big.bin'), size);
    try {
      await new Promise((r) => setTimeout(r, 200));
      for (let attempt = 0; attempt < 3; attempt++) {
        const r = await cli(['push', '--json', local, target(remote)]);
        const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
        expect(r.code, r.stderr).toBe(3);
        expect(summary.problems.map((p: { path: string; code: string }) => [p.path, p.code])).toEqual([['big.bin', 'E_CHANGED_DURING_SYNC']]);
        // Never a mix at the final path, and the manifest never records one.
        expect(existsSync(join(remote, 'big.bin'))).toBe(false);
        expect(readFileSync(join(remote, 'small.txt'), 'utf8')).toBe('small\n');
        const m = await readManifest(new LocalTransport(remote));
        expect(m?.entries.has('big.bin')).toBe(false);
      }
    } finally {
      await w.stop();
    }
    // Once the writer stops, the file goes whole and exact.
    const r = await cli(['push', local, target(remote)]);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(readFileSync(join(remote, 'big.bin')))).toBe(sha(readFileSync(join(local, 'big.bin'))));
  }, 120_000);

  it('--checksum finds a remote edit that kept size and mtime, which the quick check cannot see', async () => {
    const local = join(server.work, 'ctime-local');
    const remote = join(server.srv.remoteRoot, 'ctime-remote');
    makeTree(local, { 'a.txt': 'aaaa\n' });
    const r0 = await cli(['push', local, target(remote)]);
    expect(r0.code, r0.stderr).toBe(0);
    // Same size, same mtime, new content on the server (SFTP has no ctime to betray it).
    writeFileSync(join(remote, 'a.txt'), 'bbbb\n');
    utimesSync(join(remote, 'a.txt'), 1_700_000_000, 1_700_000_000);
    const quick = await cli(['push', local, target(remote)]);
    expect(quick.code, quick.stderr).toBe(0); // the documented blind spot
    const r1 = await cli(['push', '--checksum', local, target(remote)]);
    expect(r1.code).toBe(3);
    expect(r1.stderr).toMatch(/conflict: a.txt/);
    expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('bbbb\n');
  });

  it('a local edit that kept size and mtime is found by its ctime: sent on push, a conflict on pull (no --checksum)', async () => {
    const local = join(server.work, 'ctime2-local');
    const remote = join(server.srv.remoteRoot, 'ctime2-remote');
    makeTree(local, { 'a.txt': 'aaaa\n', 'b.txt': 'bbbb\n' });
    expect((await cli(['push', local, target(remote)])).code).toBe(0);
    writeFileSync(join(local, 'a.txt'), 'AAAA\n');
    utimesSync(join(local, 'a.txt'), 1_700_000_000, 1_700_000_000);
    const r1 = await cli(['push', local, target(remote)]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('AAAA\n');
    // Pull: the local copy edited the same way, the remote one changed too: the local edit is kept, not overwritten.
    const back = join(server.work, 'ctime2-back');
    expect((await cli(['pull', back, target(remote)])).code).toBe(0);
    const mtime = Math.floor(lstatSync(join(back, 'b.txt')).mtimeMs / 1000);
    writeFileSync(join(back, 'b.txt'), 'mine\n');
    utimesSync(join(back, 'b.txt'), mtime, mtime);
    writeFileSync(join(remote, 'b.txt'), 'theirs\n');
    const r2 = await cli(['pull', back, target(remote)]);
    expect(r2.code).toBe(3);
    expect(r2.stderr).toMatch(/conflict: b.txt/);
    expect(readFileSync(join(back, 'b.txt'), 'utf8')).toBe('mine\n');
  });

  it('remote edits made at random moments during a push are never silently overwritten (item 5)', async () => {
    const n = 400;
    const local = join(server.work, 'race5-local');
    const remote = join(server.srv.remoteRoot, 'race5-remote');
    const spec: Spec = {};
    for (let i = 0; i < n; i++) spec[`d${i % 10}/f${i}.txt`] = `version 1 of ${i}\n`;
    makeTree(local, spec);
    const r0 = await cli(['push', local, target(remote)]);
    expect(r0.code, r0.stderr).toBe(0);
    // Version 2 locally (same size, a later mtime): every file is replaced by the next push.
    for (let i = 0; i < n; i++) {
      const p = join(local, `d${i % 10}/f${i}.txt`);
      writeFileSync(p, `version 2 of ${i}\n`);
      utimesSync(p, 1_700_000_100, 1_700_000_100);
    }
    // Through a 20 ms link, so that the push lasts long enough for the edits to land among its steps.
    const proxy = await startProxy({ targetPort: server.srv.port, delayMs: 10, rateBitsPerSec: 0 });
    const cfgDir = join(server.work, 'race5-cfg');
    mkdirSync(cfgDir, { recursive: true });
    const cfg = writeProxyConfig(server.srv, proxy.port, cfgDir);
    const edited = new Map<string, string>();
    const timers: NodeJS.Timeout[] = [];
    try {
      const running = cli(['push', '--json', local, target(remote)], cfg);
      // Edits spread over the push's first ~1.5 s: in place (truncate + write) or replaced by a rename.
      for (let k = 0; k < n; k += 2) {
        const i = (k * 7919) % n;
        const rel = `d${i % 10}/f${i}.txt`;
        timers.push(
          setTimeout(() => {
            const p = join(remote, rel);
            const text = `remote edit of ${i} at ${Date.now()}\n`;
            try {
              if (k % 4 === 0) writeFileSync(p, text);
              else {
                writeFileSync(p + '.edit', text);
                renameSync(p + '.edit', p);
              }
              edited.set(rel, text);
            } catch {
              // The directory was being replaced: not an edit that landed.
            }
          }, Math.floor(((k * 104729) % 1500) + 1)),
        );
      }
      const r = await running;
      expect([0, 3], r.stderr).toContain(r.code);
      const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; action?: string; path?: string });
      const conflicts = new Set(lines.filter((l) => l.type === 'item' && l.action === '!').map((l) => l.path!));
      const now = files(remote);
      const kept = new Map<string, string>();
      for (const [rel, buf] of now) kept.set(buf.toString('utf8'), rel);
      const lost: string[] = [];
      for (const [rel, text] of edited) {
        const at = kept.get(text);
        if (at === rel) continue; // the edit is still there (made after the rename, or the file was left alone)
        if (at !== undefined) {
          // Kept beside ours, and reported.
          expect(at).toMatch(new RegExp(`^${rel.replace(/\.txt$/, '')}\\.sync-conflict-\\d{8}-\\d{6}-remote\\.txt$`));
          expect(conflicts.has(rel), `${rel} kept as ${at} but not reported`).toBe(true);
          continue;
        }
        lost.push(rel);
      }
      // hardlink + rename + lstat go together: only an edit landing between two requests the server runs back to
      // back could be lost.
      expect(lost, `lost remote edits`).toEqual([]);
      expect(conflicts.size).toBeGreaterThan(0);
    } finally {
      for (const t of timers) clearTimeout(t);
      await proxy.close();
    }
  }, 120_000);

  it('an old version an interrupted replacement kept aside is removed when it is what wsync wrote, kept as a conflict copy when not', async () => {
    const local = join(server.work, 'aside-local');
    const remote = join(server.srv.remoteRoot, 'aside-remote');
    makeTree(local, { 'a.txt': 'version 1\n', 'b.txt': 'version 1\n' });
    expect((await cli(['push', local, target(remote)])).code).toBe(0);
    // What a run killed between the link and its check leaves: a second name for the old file.
    linkSync(join(remote, 'a.txt'), join(remote, '.a.txt.wsync-old-0123abcd'));
    writeFileSync(join(remote, '.b.txt.wsync-old-0123abcd'), 'someone else\n');
    const r = await cli(['push', '--json', local, target(remote)]);
    expect(r.code).toBe(3);
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(summary.conflicts.map((c: { path: string }) => c.path)).toEqual(['b.txt']);
    const names = readdirSync(remote).sort();
    expect(names.filter((n) => n.includes('wsync-old'))).toEqual([]);
    const copy = names.find((n) => /^b\.sync-conflict-\d{8}-\d{6}-remote\.txt$/.test(n));
    expect(copy).toBeDefined();
    expect(readFileSync(join(remote, copy!), 'utf8')).toBe('someone else\n');
    expect(readFileSync(join(remote, 'a.txt'), 'utf8')).toBe('version 1\n');
  });

  it('a file with a fractional mtime before 1970 is pushed, and the next run is a no-op', async () => {
    const local = join(server.work, 'old-mtime-local');
    const remote = join(server.srv.remoteRoot, 'old-mtime-remote');
    makeTree(local, { 'old.txt': 'old\n' });
    utimesSync(join(local, 'old.txt'), -1.5, -1.5);
    const r1 = await cli(['push', local, target(remote)]);
    expect(r1.code, r1.stderr).toBe(0);
    const r2 = await cli(['push', '--json', local, target(remote)]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(JSON.parse(r2.stdout.trim().split('\n').at(-1)!).stats.filesSent).toBe(0);
  });

  it('a local edit found by its ctime stays found after a run in which it was a conflict', async () => {
    const local = join(server.work, 'ctime3-local');
    const remote = join(server.srv.remoteRoot, 'ctime3-remote');
    makeTree(local, { 'x.txt': 'aaaa\n' });
    expect((await cli(['push', local, target(remote)])).code).toBe(0);
    writeFileSync(join(local, 'x.txt'), 'bbbb\n');
    utimesSync(join(local, 'x.txt'), 1_700_000_000, 1_700_000_000);
    writeFileSync(join(remote, 'x.txt'), 'cccc\n');
    const r1 = await cli(['push', local, target(remote)]);
    expect(r1.code).toBe(3);
    const r2 = await cli(['pull', local, target(remote)]);
    expect(r2.code).toBe(3);
    expect(r2.stderr).toMatch(/conflict: x.txt/);
    expect(readFileSync(join(local, 'x.txt'), 'utf8')).toBe('bbbb\n');
  });

  it('a pull of thousands of files in thousands of directories works under ulimit -n 1024', async () => {
    const src = join(server.srv.remoteRoot, 'many-dirs');
    const spec: Spec = {};
    for (let i = 0; i < 3600; i++) spec[`a${i % 60}/b${i}/f.txt`] = `${i}\n`;
    makeTree(src, spec);
    const local = join(server.work, 'many-dirs-local');
    const quote = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`;
    const cmd = `ulimit -n 1024 && exec ${quote(process.execPath)} ${quote(WSYNC_BIN)} pull ${quote(local)} ${quote(target(src))} -F ${quote(server.srv.sshConfig)}`;
    const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', env: { ...process.env, SSH_AUTH_SOCK: '' }, timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(Object.keys(snapshot(local)).filter((k) => k.endsWith('/f.txt')).length).toBe(3600);
  }, 150_000);

  it('two runs with --wait on one target never mix their manifests (item 6)', async () => {
    const a = join(server.work, 'wait-a');
    const b = join(server.work, 'wait-b');
    const specA: Spec = {};
    const specB: Spec = {};
    for (let i = 0; i < 300; i++) {
      specA[`a/${i % 7}/a${i}.txt`] = `a ${i}\n`;
      specB[`b/${i % 7}/b${i}.txt`] = `b ${i}\n`;
    }
    makeTree(a, specA);
    makeTree(b, specB);
    for (let trial = 0; trial < 8; trial++) {
      const remote = join(server.srv.remoteRoot, `wait-${trial}`);
      const [ra, rb] = await Promise.all([cli(['push', '--wait', '30', a, target(remote)]), cli(['push', '--wait', '30', b, target(remote)])]);
      expect(ra.code, ra.stderr).toBe(0);
      expect(rb.code, rb.stderr).toBe(0);
      const m = await readManifest(new LocalTransport(remote));
      const onDisk = files(remote);
      const inManifest = [...m!.entries].filter(([, e]) => e.type === 'file').map(([p]) => p).sort();
      expect(inManifest, `trial ${trial}`).toEqual([...onDisk.keys()].sort());
      expect(onDisk.size).toBe(600);
    }
  }, 120_000);

  it('an empty lock left by a run killed right after creating it does not block later runs (item 7)', async () => {
    const local = join(server.work, 'lock-local');
    const remote = join(server.srv.remoteRoot, 'lock-remote');
    makeTree(local, { 'x.txt': 'x\n' });
    const r0 = await cli(['push', local, target(remote)]);
    expect(r0.code, r0.stderr).toBe(0);
    writeFileSync(join(remote, '.wsync/lock'), '');
    writeFileSync(join(local, 'y.txt'), 'y\n');
    const t0 = Date.now();
    const r = await cli(['push', local, target(remote)]);
    expect(r.code, r.stderr).toBe(0);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(readFileSync(join(remote, 'y.txt'), 'utf8')).toBe('y\n');
    expect(existsSync(join(remote, '.wsync/lock'))).toBe(false);
  }, 60_000);

  it('a lock with content is still respected (item 7 does not weaken locking)', async () => {
    const local = join(server.work, 'lock2-local');
    const remote = join(server.srv.remoteRoot, 'lock2-remote');
    makeTree(local, { 'x.txt': 'x\n' });
    expect((await cli(['push', local, target(remote)])).code).toBe(0);
    writeFileSync(join(remote, '.wsync/lock'), JSON.stringify({ host: 'other-host', pid: 1, time: new Date().toISOString(), op: 'push' }) + '\n');
    const r = await cli(['push', local, target(remote)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is locked/);
    rmSync(join(remote, '.wsync/lock'));
  });

  it('a conflict leaves its own path alone and does not hold back --delete elsewhere', async () => {
    const local = join(server.work, 'del-local');
    const remote = join(server.srv.remoteRoot, 'del-remote');
    makeTree(local, { 'keep.txt': 'k\n', 'gone.txt': 'g\n', 'edited.txt': 'e\n' });
    expect((await cli(['push', local, target(remote)])).code).toBe(0);
    rmSync(join(local, 'gone.txt'));
    writeFileSync(join(local, 'edited.txt'), 'local edit\n');
    writeFileSync(join(remote, 'edited.txt'), 'remote edit\n');
    // A conflict leaves its own path alone; the deletion elsewhere goes through.
    const r = await cli(['push', '--delete', local, target(remote)]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/conflict: edited.txt/);
    expect(existsSync(join(remote, 'gone.txt'))).toBe(false);
    expect(readFileSync(join(remote, 'edited.txt'), 'utf8')).toBe('remote edit\n');

  });
});

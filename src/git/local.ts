/**
 * The local repository, with no git binary needed on this machine either: isomorphic-git finds it and reads its
 * refs, config and ancestry; objects come through our own idx and pack reader (isomorphic-git's is the fallback);
 * ref updates go through FileRepo on a LocalTransport, which gives them git's lock files and reflogs
 * (isomorphic-git's writeRef has neither).
 */
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import git from 'isomorphic-git';
import { WsyncError } from '../errors.js';
import { LocalTransport } from '../transport/local/local.js';
import { FileRepo } from './filerepo.js';
import { decodeLoose, hashObject, type GitObject, type ObjectType } from './objects.js';
import { PackIndex, PackReader, type RandomAccess } from './pack.js';
import { identityLine } from './refs.js';
import type { ObjectSource } from './tree.js';

interface LocalStore {
  packs: Array<{ idx: PackIndex; file: string; reader?: Promise<PackReader> }>;
  /** Open pack files, closed by LocalRepo.close(). */
  handles: Array<Promise<fsp.FileHandle>>;
  /** False when some objects may be where only isomorphic-git looks (alternates, an idx we cannot parse). */
  complete: boolean;
}

/** Random access to a local pack file, for the pack reader. */
async function openFile(file: string, handles: LocalStore['handles']): Promise<RandomAccess> {
  const opening = fsp.open(file, 'r');
  handles.push(opening);
  const fh = await opening;
  const { size } = await fh.stat();
  return {
    size,
    async read(pos, length) {
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, pos + got);
        if (bytesRead === 0) throw new Error(`${file}: ends before ${pos + length}`);
        got += bytesRead;
      }
      return buf;
    },
  };
}

export class LocalRepo implements ObjectSource {
  private readonly cache = {};
  private readonly known = new Set<string>();

  private constructor(
    /** Work tree root. */
    readonly dir: string,
    readonly gitdir: string,
    /** The same repository as plain files, for ref updates under lock and for the work tree. */
    readonly files: FileRepo,
    readonly transport: LocalTransport,
  ) {}

  static async open(start: string): Promise<LocalRepo> {
    let dir: string;
    try {
      dir = await git.findRoot({ fs, filepath: path.resolve(start) });
    } catch {
      throw new WsyncError('E_GIT_REPO', `${path.resolve(start)} is not inside a git repository`, { hint: 'run it in a repository, or name one with --repo DIR' });
    }
    const gitdir = path.join(dir, '.git');
    if (!fs.statSync(gitdir).isDirectory()) {
      throw new WsyncError('E_GIT_REPO', `${gitdir} is not a directory (a linked worktree or submodule is not supported)`);
    }
    const transport = new LocalTransport(dir);
    const files = await FileRepo.open(transport).catch((err) => {
      // The same refusals as for a remote repository, but this one is local: exit class 1, not 2.
      if (err instanceof WsyncError && err.code === 'E_GIT_UNSUPPORTED') throw new WsyncError('E_GIT_REPO', err.message, { hint: err.hint, cause: err });
      throw err;
    });
    if (!files) throw new WsyncError('E_GIT_REPO', `${dir} is not a git repository`);
    if (fs.existsSync(path.join(gitdir, 'shallow'))) {
      throw new WsyncError('E_GIT_REPO', `${dir} is a shallow clone; its oldest commits have no parents here to send`, { hint: 'git fetch --unshallow first' });
    }
    return new LocalRepo(dir, gitdir, files, transport);
  }

  async currentBranch(): Promise<string | null> {
    return (await git.currentBranch({ fs, dir: this.dir, fullname: false })) ?? null;
  }

  /** A full ref's value, or null. */
  async resolve(ref: string): Promise<string | null> {
    try {
      return await git.resolveRef({ fs, dir: this.dir, ref });
    } catch {
      return null;
    }
  }

  /**
   * Packed objects through our own idx and pack reader, loose ones from their file; isomorphic-git only for what
   * those cannot reach (a v1 idx, alternates). Its readObject lists objects/pack and tries the loose path on every
   * call, which made reading a few hundred trees take a quarter of a second.
   */
  async read(oid: string): Promise<GitObject> {
    const store = await this.store();
    const pack = store.packs.find((p) => p.idx.has(oid));
    if (pack) {
      pack.reader ??= openFile(pack.file, store.handles).then((ra) => new PackReader(ra, pack.idx, (base) => this.read(base).catch(() => null)));
      this.known.add(oid);
      return (await pack.reader).read(oid);
    }
    const loose = await fsp.readFile(path.join(this.gitdir, 'objects', oid.slice(0, 2), oid.slice(2))).catch(() => null);
    if (loose) {
      const obj = decodeLoose(loose);
      if (hashObject(obj.type, obj.body) !== oid) throw new WsyncError('E_GIT_REPO', `object ${oid} in ${this.dir} is corrupt`);
      this.known.add(oid);
      return obj;
    }
    let r: Awaited<ReturnType<typeof git.readObject>>;
    try {
      r = await git.readObject({ fs, dir: this.dir, oid, format: 'content', cache: this.cache });
    } catch (err) {
      throw new WsyncError('E_GIT_REPO', `object ${oid} cannot be read from ${this.dir}: ${(err as Error).message}`);
    }
    this.known.add(oid);
    return { type: r.type as ObjectType, body: Buffer.from(r.object as Uint8Array) };
  }

  async has(oid: string): Promise<boolean> {
    if (this.known.has(oid)) return true;
    const { packs, complete } = await this.store();
    if (packs.some((p) => p.idx.has(oid))) return true;
    if (fs.existsSync(path.join(this.gitdir, 'objects', oid.slice(0, 2), oid.slice(2)))) return true;
    if (complete) return false;
    // A pack whose idx our parser refused (v1), or alternates: isomorphic-git reads those.
    try {
      await git.readObject({ fs, dir: this.dir, oid, format: 'deflated', cache: this.cache });
      this.known.add(oid);
      return true;
    } catch {
      return false;
    }
  }

  private storeCache?: Promise<LocalStore>;

  private store(): Promise<LocalStore> {
    this.storeCache ??= this.loadStore();
    return this.storeCache;
  }

  private async loadStore(): Promise<LocalStore> {
    const dir = path.join(this.gitdir, 'objects', 'pack');
    const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => /^pack-[0-9a-f]{40}\.idx$/.test(n)) : [];
    const packs: LocalStore['packs'] = [];
    let complete = !fs.existsSync(path.join(this.gitdir, 'objects', 'info', 'alternates'));
    for (const n of names) {
      const file = path.join(dir, n.replace(/\.idx$/, '.pack'));
      if (!fs.existsSync(file)) continue;
      try {
        packs.push({ idx: PackIndex.parse(fs.readFileSync(path.join(dir, n))), file });
      } catch {
        complete = false;
      }
    }
    return { packs, complete, handles: [] };
  }

  /** Closes the pack files opened for reading. */
  async close(): Promise<void> {
    const store = this.storeCache;
    this.storeCache = undefined;
    const st = await store?.catch(() => undefined);
    await Promise.all((st?.handles ?? []).map((h) => h.then((fh) => fh.close()).catch(() => undefined)));
  }

  async isAncestor(ancestor: string, of: string): Promise<boolean> {
    if (ancestor === of) return true;
    return git.isDescendent({ fs, dir: this.dir, oid: of, ancestor, depth: -1, cache: this.cache });
  }

  /** The user's git identity for reflog lines, as git would pick it. */
  async identity(): Promise<string> {
    const name = (await git.getConfig({ fs, dir: this.dir, path: 'user.name' }).catch(() => undefined)) ?? process.env.GIT_COMMITTER_NAME ?? os.userInfo().username;
    const email = (await git.getConfig({ fs, dir: this.dir, path: 'user.email' }).catch(() => undefined)) ?? process.env.GIT_COMMITTER_EMAIL ?? `${os.userInfo().username}@${os.hostname()}`;
    return identityLine(String(name), String(email));
  }

  /** Called after objects were written behind isomorphic-git's back (its pack list is cached). */
  async forgetCache(): Promise<void> {
    await this.close();
    for (const k of Object.getOwnPropertySymbols(this.cache)) delete (this.cache as Record<symbol, unknown>)[k];
    for (const k of Object.keys(this.cache)) delete (this.cache as Record<string, unknown>)[k];
  }
}

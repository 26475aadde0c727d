/**
 * The local repository, read through isomorphic-git (packs, loose objects, refs, config) with one shared cache,
 * so no git binary is needed on this machine either. Ref updates go through FileRepo on a LocalTransport, which
 * gives them git's lock files and reflogs (isomorphic-git's writeRef has neither).
 */
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import git from 'isomorphic-git';
import { WsyncError } from '../errors.js';
import { LocalTransport } from '../transport/local/local.js';
import { FileRepo } from './filerepo.js';
import { type GitObject, type ObjectType } from './objects.js';
import { identityLine } from './refs.js';
import type { ObjectSource } from './tree.js';

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
    const files = await FileRepo.open(transport);
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

  async read(oid: string): Promise<GitObject> {
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
    const loose = path.join(this.gitdir, 'objects', oid.slice(0, 2), oid.slice(2));
    if (fs.existsSync(loose)) return true;
    try {
      await git.readObject({ fs, dir: this.dir, oid, format: 'deflated', cache: this.cache });
      this.known.add(oid);
      return true;
    } catch {
      return false;
    }
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
  forgetCache(): void {
    for (const k of Object.getOwnPropertySymbols(this.cache)) delete (this.cache as Record<symbol, unknown>)[k];
    for (const k of Object.keys(this.cache)) delete (this.cache as Record<string, unknown>)[k];
  }
}

import { WsyncError } from '../errors.js';
import { parseCommit, parseTag, parseTree, type GitObject } from './objects.js';

/** Where objects come from: the local repository (isomorphic-git) or the remote one (files over SFTP). */
export interface ObjectSource {
  read(oid: string): Promise<GitObject>;
}

export interface FlatEntry {
  /** 0o100644, 0o100755, 0o120000 or 0o160000. */
  mode: number;
  oid: string;
}

/** A commit's whole tree as path -> blob (or gitlink), the shape an index has. */
export type FlatTree = Map<string, FlatEntry>;

export const MODE_FILE = 0o100644;
export const MODE_EXEC = 0o100755;
export const MODE_LINK = 0o120000;
export const MODE_GITLINK = 0o160000;
export const MODE_TREE = 0o040000;

/** Normalises a tree entry mode the way git does when it reads old, sloppy trees (e.g. 100664). */
export function treeMode(mode: string): number {
  const m = parseInt(mode, 8);
  if ((m & 0o170000) === MODE_TREE) return MODE_TREE;
  if ((m & 0o170000) === MODE_LINK) return MODE_LINK;
  if ((m & 0o170000) === MODE_GITLINK) return MODE_GITLINK;
  return m & 0o100 ? MODE_EXEC : MODE_FILE;
}

export async function readTyped(src: ObjectSource, oid: string, type: GitObject['type']): Promise<Buffer> {
  const obj = await src.read(oid);
  if (obj.type !== type) throw new WsyncError('E_GIT_CORRUPT', `object ${oid} is a ${obj.type}, expected a ${type}`);
  return obj.body;
}

/** The commit an oid names, following annotated tags. */
export async function peelToCommit(src: ObjectSource, oid: string): Promise<string> {
  for (let i = 0; i < 10; i++) {
    const obj = await src.read(oid);
    if (obj.type === 'commit') return oid;
    if (obj.type !== 'tag') throw new WsyncError('E_GIT_REJECTED', `${oid} is a ${obj.type}, not a commit`);
    oid = parseTag(obj.body).object;
  }
  throw new WsyncError('E_GIT_CORRUPT', `tag chain too long at ${oid}`);
}

export async function commitTree(src: ObjectSource, commit: string): Promise<string> {
  return parseCommit(await readTyped(src, commit, 'commit')).tree;
}

/** Subtrees are read concurrently: over SFTP each read is a round trip. */
export async function flattenTree(src: ObjectSource, treeOid: string | null): Promise<FlatTree> {
  const out: FlatTree = new Map();
  if (!treeOid) return out;
  const visit = async (oid: string, prefix: string): Promise<void> => {
    const entries = parseTree(await readTyped(src, oid, 'tree'));
    await Promise.all(
      entries.map(async (e) => {
        const path = prefix + e.name;
        const mode = treeMode(e.mode);
        if (mode === MODE_TREE) return visit(e.oid, `${path}/`);
        out.set(path, { mode, oid: e.oid });
      }),
    );
  };
  await visit(treeOid, '');
  return out;
}

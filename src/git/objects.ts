/**
 * Git's object model as bytes: hashing, loose-object encoding, and the three structured bodies we need to walk
 * history (tree, commit, tag). Pure functions, no I/O: the callers read and write through SFTP or the local fs.
 */
import { createHash } from 'node:crypto';
import { deflateSync, inflateSync } from 'node:zlib';

export type ObjectType = 'commit' | 'tree' | 'blob' | 'tag';
export interface GitObject {
  type: ObjectType;
  body: Buffer;
}

export const ZERO_OID = '0'.repeat(40);

const OID_RE = /^[0-9a-f]{40}$/;
const TYPES: ReadonlySet<string> = new Set(['commit', 'tree', 'blob', 'tag']);

export function isOid(s: string): boolean {
  return OID_RE.test(s);
}

export function isObjectType(s: string): s is ObjectType {
  return TYPES.has(s);
}

export function objectHeader(type: ObjectType, size: number): Buffer {
  return Buffer.from(`${type} ${size}\0`, 'latin1');
}

export function hashObject(type: ObjectType, body: Buffer): string {
  return createHash('sha1').update(objectHeader(type, body.length)).update(body).digest('hex');
}

export function encodeLoose(type: ObjectType, body: Buffer): Buffer {
  return deflateSync(Buffer.concat([objectHeader(type, body.length), body]));
}

export function decodeLoose(data: Buffer): GitObject {
  let raw: Buffer;
  try {
    raw = inflateSync(data);
  } catch (err) {
    throw new Error(`loose object: not a zlib stream (${(err as Error).message})`, { cause: err });
  }
  // Headers are tiny; bounding the search keeps a corrupt multi-MB blob from being scanned end to end.
  const nul = raw.subarray(0, 64).indexOf(0);
  if (nul < 0) throw new Error('loose object: no header terminator');
  const header = raw.toString('latin1', 0, nul);
  const m = /^([a-z]+) (0|[1-9][0-9]*)$/.exec(header);
  if (!m || !isObjectType(m[1])) throw new Error(`loose object: bad header ${JSON.stringify(header)}`);
  const size = Number(m[2]);
  const body = raw.subarray(nul + 1);
  if (body.length !== size) throw new Error(`loose object: header says ${size} bytes, body has ${body.length}`);
  return { type: m[1], body };
}

export interface TreeEntry {
  mode: string;
  name: string;
  oid: string;
}

export function parseTree(body: Buffer): TreeEntry[] {
  const out: TreeEntry[] = [];
  let p = 0;
  while (p < body.length) {
    const sp = body.indexOf(0x20, p);
    if (sp < 0 || sp === p || sp - p > 7) throw new Error(`tree: bad mode at byte ${p}`);
    const mode = body.toString('latin1', p, sp);
    if (!/^[0-7]+$/.test(mode)) throw new Error(`tree: bad mode ${JSON.stringify(mode)}`);
    const nul = body.indexOf(0, sp + 1);
    if (nul < 0 || nul === sp + 1) throw new Error(`tree: bad name at byte ${sp + 1}`);
    if (nul + 21 > body.length) throw new Error('tree: truncated entry');
    out.push({ mode, name: body.toString('utf8', sp + 1, nul), oid: body.toString('hex', nul + 1, nul + 21) });
    p = nul + 21;
  }
  return out;
}

/** Raw bytes for a tree body; entries must already be in git's order (callers that build trees own the sort). */
export function encodeTree(entries: readonly TreeEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (!isOid(e.oid)) throw new Error(`tree: bad oid ${e.oid}`);
    parts.push(Buffer.from(`${e.mode} ${e.name}\0`, 'utf8'), Buffer.from(e.oid, 'hex'));
  }
  return Buffer.concat(parts);
}

export interface Commit {
  tree: string;
  parents: string[];
  author: string;
  committer: string;
  message: string;
  committerTime: number;
}

/** Header lines of a commit or tag up to the blank line; continuation lines (gpgsig, mergetag) are skipped. */
function headers(body: Buffer, what: string): { fields: Array<[string, string]>; message: string } {
  const end = body.indexOf('\n\n');
  const head = body.toString('utf8', 0, end < 0 ? body.length : end);
  const message = end < 0 ? '' : body.toString('utf8', end + 2);
  const fields: Array<[string, string]> = [];
  for (const line of head.split('\n')) {
    if (line === '' || line.startsWith(' ')) continue;
    const sp = line.indexOf(' ');
    if (sp <= 0) throw new Error(`${what}: bad header line ${JSON.stringify(line.slice(0, 80))}`);
    fields.push([line.slice(0, sp), line.slice(sp + 1)]);
  }
  return { fields, message };
}

export function parseCommit(body: Buffer): Commit {
  const { fields, message } = headers(body, 'commit');
  let tree: string | undefined;
  let author: string | undefined;
  let committer: string | undefined;
  const parents: string[] = [];
  for (const [k, v] of fields) {
    // Only the first occurrence of each counts, as in git: later duplicates are foreign extension data.
    if (k === 'tree' && tree === undefined) tree = v;
    else if (k === 'parent') parents.push(v);
    else if (k === 'author' && author === undefined) author = v;
    else if (k === 'committer' && committer === undefined) committer = v;
  }
  if (tree === undefined || !isOid(tree)) throw new Error('commit: missing or bad tree');
  for (const p of parents) if (!isOid(p)) throw new Error(`commit: bad parent ${JSON.stringify(p)}`);
  if (author === undefined) throw new Error('commit: missing author');
  if (committer === undefined) throw new Error('commit: missing committer');
  return { tree, parents, author, committer, message, committerTime: identTime(committer) };
}

/** Unix seconds of a "Name <email> 1700000000 +0100" ident; 0 when unparsable, as git treats broken dates. */
export function identTime(ident: string): number {
  const m = />\s*(\d+)(?:\s+[-+]\d{4})?\s*$/.exec(ident);
  return m ? Number(m[1]) : 0;
}

export function parseTag(body: Buffer): { object: string; type: ObjectType } {
  const { fields } = headers(body, 'tag');
  const object = fields.find(([k]) => k === 'object')?.[1];
  const type = fields.find(([k]) => k === 'type')?.[1];
  if (object === undefined || !isOid(object)) throw new Error('tag: missing or bad object');
  if (type === undefined || !isObjectType(type)) throw new Error(`tag: bad type ${JSON.stringify(type)}`);
  return { object, type };
}

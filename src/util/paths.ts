import path from 'node:path';

/**
 * Names a remote (or hostile) listing may hand us that must never become a local path component. Checked on
 * every name that comes from the other side, before it is joined to anything.
 */
export function isSafeName(name: string): boolean {
  if (name === '' || name === '.' || name === '..') return false;
  if (name.includes('/') || name.includes('\0')) return false;
  // On Windows a backslash or drive colon would let a name walk out of its directory.
  if (process.platform === 'win32' && (/[\\:]/.test(name))) return false;
  return true;
}

export function isSafeRelPath(rel: string): boolean {
  if (rel === '' || rel.startsWith('/')) return false;
  return rel.split('/').every(isSafeName);
}

export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

export function baseName(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? rel : rel.slice(i + 1);
}

export function joinRel(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** All proper ancestors, shallowest first: 'a/b/c' -> ['a', 'a/b']. */
export function ancestors(rel: string): string[] {
  const out: string[] = [];
  for (let i = rel.indexOf('/'); i >= 0; i = rel.indexOf('/', i + 1)) out.push(rel.slice(0, i));
  return out;
}

export function isUnder(rel: string, dir: string): boolean {
  return rel.startsWith(dir + '/');
}

/** Sort so that a directory comes before everything inside it (plain code-unit order does that for '/'). */
export function comparePaths(a: string, b: string): number {
  // Component order without splitting: '/' ranks below every other character.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    if (ca === 47) return -1;
    if (cb === 47) return 1;
    return ca - cb;
  }
  return a.length - b.length;
}

export function localJoin(root: string, rel: string): string {
  return rel === '' ? root : path.join(root, ...rel.split('/'));
}

export function remoteJoin(root: string, rel: string): string {
  if (rel === '') return root;
  return root.endsWith('/') ? root + rel : `${root}/${rel}`;
}

const TEMP_RE = /^\.(.+)\.wsync-[0-9a-f]{8}\.tmp$/;

/** Temp names are recognisable so that a later run can clear what an interrupted one left behind. */
export function tempNameFor(rel: string): string {
  const rand = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0');
  return joinRel(parentOf(rel), `.${baseName(rel)}.wsync-${rand}.tmp`);
}

export function isTempName(name: string): boolean {
  return TEMP_RE.test(name);
}

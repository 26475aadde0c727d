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

// `s`: a name may hold any character but / and NUL, a newline included.
const TEMP_RE = /^\.(.+)\.wsync-[0-9a-f]{8}\.tmp$/s;

/** Longest name (one path component, in bytes of UTF-8) that Linux, the BSDs and macOS filesystems accept. */
export const NAME_MAX = 255;

/** Bytes the temp form adds to a name: the leading dot and `.wsync-xxxxxxxx.tmp`. */
const TEMP_EXTRA = 1 + '.wsync-'.length + 8 + '.tmp'.length;

/** The longest prefix of `s` that is at most `max` bytes of UTF-8, cut between characters (never inside one). */
export function utf8Prefix(s: string, max: number): string {
  const buf = Buffer.from(s, 'utf8');
  if (buf.length <= max) return s;
  let end = max;
  // Back off over continuation bytes (10xxxxxx) to the start of the character the cut would split.
  while (end > 0 && (buf[end] & 0xc0) === 0x80) end--;
  return buf.subarray(0, end).toString('utf8');
}

/**
 * Temp names are recognisable so that a later run can clear what an interrupted one left behind. The form is
 * `.<name>.wsync-xxxxxxxx.tmp`, in the target's own directory (so that the final rename stays in one directory).
 * A name too long for that (over 235 bytes) would give a temp no filesystem accepts; it gets
 * `.<prefix>~.wsync-xxxxxxxx.tmp` instead, with as much of the name as fits: still matched by isTempName, and the
 * random part keeps two long names with one prefix apart.
 */
export function tempNameFor(rel: string): string {
  const rand = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0');
  let name = baseName(rel);
  if (Buffer.byteLength(name, 'utf8') + TEMP_EXTRA > NAME_MAX) name = utf8Prefix(name, NAME_MAX - TEMP_EXTRA - 1) + '~';
  return joinRel(parentOf(rel), `.${name}.wsync-${rand}.tmp`);
}

/**
 * Where a file being replaced is kept for the moment of the replacement (a hard link; see the transports'
 * replaceChecked): `.<name>.wsync-old-xxxxxxxx`, or `.<prefix>.wsync-oldcut-xxxxxxxx` when the name is too long to
 * fit whole. Never taken for a temp: if a run dies before it has looked at it, it may hold someone's edit, and
 * the next run decides (resolveAsides) instead of removing it unseen.
 */
export function asideNameFor(rel: string): string {
  const rand = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0');
  const name = baseName(rel);
  const whole = `.${name}.wsync-old-${rand}`;
  if (Buffer.byteLength(whole, 'utf8') <= NAME_MAX) return joinRel(parentOf(rel), whole);
  const extra = Buffer.byteLength(`..wsync-oldcut-${rand}`, 'utf8');
  return joinRel(parentOf(rel), `.${utf8Prefix(name, NAME_MAX - extra)}.wsync-oldcut-${rand}`);
}

const ASIDE_RE = /^\.(.+)\.wsync-old(cut)?-[0-9a-f]{8}$/s;

const PARTIAL_RE = /^\.(.+)\.wsync-part-[0-9a-f]{16}$/s;

/**
 * What an interrupted upload of a big file leaves for the next run to go on from: `.<name>.wsync-part-<key>`, where
 * the key names the source version being sent (a changed source gets another name, and its old partial is removed).
 * Never taken for a temp (a run would remove it), never synced.
 */
export function partialNameFor(rel: string, key: string): string {
  const k = key.slice(0, 16);
  let name = baseName(rel);
  const extra = Buffer.byteLength(`..wsync-part-${k}`, 'utf8');
  if (Buffer.byteLength(name, 'utf8') + extra > NAME_MAX) name = utf8Prefix(name, NAME_MAX - extra - 1) + '~';
  return joinRel(parentOf(rel), `.${name}.wsync-part-${k}`);
}

export function isPartialName(name: string): boolean {
  return PARTIAL_RE.test(name);
}

export function isAsideName(name: string): boolean {
  return ASIDE_RE.test(name);
}

/** The name an aside was made for (undefined when it was cut short), and the name it shows otherwise. */
export function asideOf(name: string): { original?: string; shown: string } {
  const m = ASIDE_RE.exec(name);
  if (!m) return { shown: name };
  return m[2] ? { shown: m[1] } : { original: m[1], shown: m[1] };
}

export function isTempName(name: string): boolean {
  return TEMP_RE.test(name);
}

/** The longest component of a relative path, in bytes of UTF-8 (to compare with NAME_MAX). */
export function longestNameBytes(rel: string): number {
  let n = 0;
  for (const c of rel.split('/')) n = Math.max(n, Buffer.byteLength(c, 'utf8'));
  return n;
}

/**
 * What to say when a filesystem answers ENAMETOOLONG for these paths: which name (one component over NAME_MAX
 * bytes), or else the whole path (over PATH_MAX).
 */
export function tooLongText(paths: ReadonlyArray<string | undefined>, side = ''): string {
  const given = paths.filter((p): p is string => typeof p === 'string');
  const name = Math.max(0, ...given.map(longestNameBytes));
  if (name > NAME_MAX) return `name too long${side} (${name} bytes; the limit is ${NAME_MAX})`;
  return `path too long${side} (${Math.max(0, ...given.map((p) => Buffer.byteLength(p, 'utf8')))} bytes)`;
}

/**
 * On a server whose READLINK joins relative targets onto the link's directory (ProFTPD): `known` (what wsync wrote
 * there) if it is what the server answered `asRead` for, else undefined (the link's own target cannot be told).
 */
export function recoverLinkTarget(linkDir: string, asRead: string, known: string | undefined): string | undefined {
  if (known === undefined) return undefined;
  if (known === asRead) return known;
  // The server answers a normalised path: no `.` or `..` steps, no doubled or trailing slash (`sub/` → `/…/sub`).
  const norm = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);
  const resolved = known.startsWith('/') ? path.posix.normalize(known) : path.posix.join(linkDir, known);
  return norm(resolved) === norm(asRead) ? known : undefined;
}

/**
 * Pure helpers for git's plain-file formats that wsync reads and writes on a server with no git: ref names,
 * loose ref files, packed-refs, config, and reflog lines.
 */
import { isOid } from './objects.js';

/** git check-ref-format rules for a branch name (the part after refs/heads/). */
export function isValidBranchName(name: string): boolean {
  if (!name || name.startsWith('-') || name === '@' || name.endsWith('/') || name.endsWith('.')) return false;
  if (name.includes('..') || name.includes('@{') || name.includes('//')) return false;
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(name)) return false;
  return name.split('/').every((c) => c.length > 0 && !c.startsWith('.') && !c.endsWith('.lock'));
}

/** Content of a loose ref or HEAD: an oid, or a symbolic ref. */
export type RefContent = { oid: string; symref?: undefined } | { symref: string; oid?: undefined };

export function parseRefFile(data: Buffer): RefContent | null {
  const s = data.toString('utf8').trim();
  if (s.startsWith('ref:')) return { symref: s.slice(4).trim() };
  if (isOid(s)) return { oid: s };
  return null;
}

export interface PackedRefs {
  refs: Map<string, string>;
  /** Annotated tag ref -> the commit it peels to (the `^` lines). */
  peeled: Map<string, string>;
}

export function parsePackedRefs(data: Buffer | null): PackedRefs {
  const refs = new Map<string, string>();
  const peeled = new Map<string, string>();
  if (!data) return { refs, peeled };
  let last: string | undefined;
  for (const line of data.toString('utf8').split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    if (line.startsWith('^')) {
      if (last && isOid(line.slice(1).trim())) peeled.set(last, line.slice(1).trim());
      continue;
    }
    const sp = line.indexOf(' ');
    const oid = line.slice(0, sp);
    const name = line.slice(sp + 1).trim();
    if (sp === 40 && isOid(oid) && name.startsWith('refs/')) {
      refs.set(name, oid);
      last = name;
    }
  }
  return { refs, peeled };
}

/** Git config as section.subsection.key (section and key lower-cased, as git compares them) -> last value. */
export function parseGitConfig(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\s+/, '');
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]/.exec(line);
    if (sec) {
      section = sec[1].toLowerCase() + (sec[2] !== undefined ? `.${sec[2].replace(/\\(.)/g, '$1')}` : '');
      continue;
    }
    const kv = /^([A-Za-z][A-Za-z0-9-]*)\s*(?:=\s*(.*))?$/.exec(line);
    if (!kv || !section) continue;
    let value = kv[2] === undefined ? 'true' : kv[2].replace(/\s+[#;].*$/, '').trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    out.set(`${section}.${kv[1].toLowerCase()}`, value);
  }
  return out;
}

export function configBool(v: string | undefined, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  return /^(true|yes|on|1)$/i.test(v);
}

/** A `user.name <email> seconds ±hhmm` identity as git writes it in reflogs and commits. */
export function identityLine(name: string, email: string, when: Date = new Date()): string {
  const offsetMin = -when.getTimezoneOffset();
  const sign = offsetMin >= 0 ? '+' : '-';
  const abs = Math.abs(offsetMin);
  const tz = `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}${String(abs % 60).padStart(2, '0')}`;
  const clean = (s: string) => s.replace(/[<>\n]/g, '').trim();
  return `${clean(name)} <${clean(email)}> ${Math.floor(when.getTime() / 1000)} ${tz}`;
}

export function reflogLine(oldOid: string, newOid: string, identity: string, message: string): Buffer {
  return Buffer.from(`${oldOid} ${newOid} ${identity}\t${message.replace(/\n/g, ' ')}\n`);
}

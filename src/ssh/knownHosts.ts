/**
 * OpenSSH-compatible known_hosts checking (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"), modelled on OpenSSH 9.2's
 * hostfile.c / sshconnect.c and verified against ssh, ssh-keygen and ssh-keyscan in the tests next to this file.
 *
 * ssh2 accepts every host key unless told otherwise, so this module is the only thing standing between wsync and
 * a man in the middle. When in doubt it fails closed.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, open, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { WsyncError, errorMessage } from '../errors.js';
import { matchPattern } from './match.js';

/** The name OpenSSH files a host under (misc.c put_host_port). Port 0 means "no port", as in OpenSSH. */
export function knownHostName(host: string, port: number): string {
  return port === 22 || port === 0 ? host : `[${host}]:${port}`;
}

function readSshString(buf: Buffer, offset: number): { value: Buffer; next: number } | undefined {
  if (offset + 4 > buf.length) return undefined;
  const len = buf.readUInt32BE(offset);
  const start = offset + 4;
  if (len > buf.length - start) return undefined;
  return { value: buf.subarray(start, start + len), next: start + len };
}

function blobType(blob: Buffer): string | undefined {
  const s = readSshString(blob, 0);
  if (!s || s.value.length === 0 || s.value.length > 128) return undefined;
  const t = s.value.toString('latin1');
  return /^[\x21-\x7e]+$/.test(t) ? t : undefined;
}

/** The key type named inside an SSH wire-format public key, e.g. 'ssh-ed25519'. */
export function keyTypeOf(wireKey: Buffer): string {
  const t = blobType(wireKey);
  if (t === undefined) throw new WsyncError('E_KNOWN_HOSTS', 'malformed host key: no key type in the SSH wire encoding');
  return t;
}

/** Same text as `ssh-keygen -l` prints in its default (SHA256) mode. */
export function fingerprintOf(wireKey: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(wireKey).digest('base64').replace(/=+$/, '');
}

export type HostKeyVerdict =
  | { status: 'ok' }
  | { status: 'unknown'; knownTypes: string[] }
  | { status: 'changed'; file: string; line: number; knownFingerprint: string }
  | { status: 'revoked'; file: string; line: number };

type Marker = 'none' | 'revoked' | 'cert-authority';

interface Entry {
  file: string;
  line: number;
  marker: Marker;
  /** The host pattern field exactly as written (plain pattern list or one |1|salt|hash). */
  hosts: string;
  type: string;
  key: Buffer;
}

// hostfile.c check_markers(): the marker ends at the first space on the line, or the first tab when there is no
// space at all; exactly one marker; anything else makes the line invalid.
function splitMarker(s: string): { marker: Marker; rest: string } | undefined {
  let marker: Marker = 'none';
  let cp = s;
  while (cp.startsWith('@')) {
    if (marker !== 'none') return undefined;
    let sp = cp.indexOf(' ');
    if (sp < 0) sp = cp.indexOf('\t');
    if (sp < 0 || sp <= 1 || sp >= 32) return undefined;
    const word = cp.slice(0, sp);
    if (word === '@cert-authority') marker = 'cert-authority';
    else if (word === '@revoked') marker = 'revoked';
    else return undefined;
    cp = cp.slice(sp).replace(/^[ \t]+/, '');
  }
  return { marker, rest: cp };
}

// sshkey_type_from_name() accepts signature algorithm names for RSA keys too.
function plainKeyType(name: string): string {
  return name === 'rsa-sha2-256' || name === 'rsa-sha2-512' ? 'ssh-rsa' : name;
}

function parseLine(raw: string, file: string, line: number): Entry | undefined {
  const text = raw.replace(/\r$/, '').replace(/^[ \t]+/, '');
  if (text === '' || text.startsWith('#')) return undefined;
  const m = splitMarker(text);
  if (!m) return undefined;
  const hostEnd = m.rest.search(/[ \t]/);
  if (hostEnd <= 0) return undefined;
  const hosts = m.rest.slice(0, hostEnd);
  const fields = m.rest.slice(hostEnd).replace(/^[ \t]+/, '');
  if (fields === '' || fields.startsWith('#')) return undefined;
  const [typeName, b64] = fields.split(/[ \t]+/, 2);
  if (!typeName || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return undefined;
  const key = Buffer.from(b64, 'base64');
  const type = blobType(key);
  // sshkey_read() refuses a blob whose embedded type disagrees with the type written on the line.
  if (type === undefined || plainKeyType(typeName) !== type) return undefined;
  return { file, line, marker: m.marker, hosts, type, key };
}

// match.c match_hostname(): case-insensitive comma-separated list; a matching negated entry rejects the line
// whatever else matches. Sub-patterns of 1023+ characters make the whole list fail, as in OpenSSH.
function matchHostList(host: string, list: string): boolean {
  const h = host.toLowerCase();
  let positive = false;
  for (const item of list.split(',')) {
    const negated = item.startsWith('!');
    const pat = (negated ? item.slice(1) : item).toLowerCase();
    if (pat.length >= 1023) return false;
    if (matchPattern(h, pat)) {
      if (negated) return false;
      positive = true;
    }
  }
  return positive;
}

const HASH_MAGIC = '|1|';

function hashedName(name: string, salt: Buffer): string {
  const mac = createHmac('sha1', salt).update(name).digest();
  return `${HASH_MAGIC}${salt.toString('base64')}|${mac.toString('base64')}`;
}

// hostfile.c match_maybe_hashed(): the whole field is one hashed name; a malformed hash never matches.
function matchHosts(name: string, hosts: string): boolean {
  if (!hosts.startsWith('|')) return matchHostList(name, hosts);
  if (!hosts.startsWith(HASH_MAGIC)) return false;
  const sep = hosts.indexOf('|', HASH_MAGIC.length);
  if (sep < 0) return false;
  const saltB64 = hosts.slice(HASH_MAGIC.length, sep);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(saltB64)) return false;
  const salt = Buffer.from(saltB64, 'base64');
  if (salt.length !== 20) return false;
  const want = Buffer.from(hashedName(name, salt));
  const have = Buffer.from(hosts);
  return want.length === have.length && timingSafeEqual(want, have);
}

interface LoadedFile {
  file: string;
  entries: Entry[];
}

async function loadFiles(files: string[]): Promise<LoadedFile[]> {
  const out: LoadedFile[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      // OpenSSH skips files it cannot open; a known_hosts we cannot read might be the one that says "changed".
      throw new WsyncError('E_KNOWN_HOSTS', `cannot read known_hosts file ${file}: ${errorMessage(err)}`, {
        cause: err,
        hint: 'fix the permissions of that file, or point UserKnownHostsFile/GlobalKnownHostsFile elsewhere',
      });
    }
    const entries: Entry[] = [];
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const e = parseLine(lines[i], file, i + 1);
      if (e) entries.push(e);
    }
    out.push({ file, entries });
  }
  return out;
}

function entriesFor(loaded: LoadedFile[], name: string): Entry[] {
  const out: Entry[] = [];
  for (const f of loaded) for (const e of f.entries) if (matchHosts(name, e.hosts)) out.push(e);
  return out;
}

function uniqueTypes(entries: Entry[]): string[] {
  const seen: string[] = [];
  for (const e of entries) if (e.marker === 'none' && !seen.includes(e.type)) seen.push(e.type);
  return seen;
}

// hostfile.c check_hostkeys_by_key_or_type() for a plain (non-certificate) key: any listed key that differs makes
// the host "changed", whatever its type, unless one of them is identical. The offending entry reported is the
// last non-matching one, as ssh prints it. A matching @revoked line overrides everything.
function evaluate(entries: Entry[], key: Buffer): HostKeyVerdict {
  for (const e of entries) {
    if (e.marker === 'revoked' && e.key.equals(key)) return { status: 'revoked', file: e.file, line: e.line };
  }
  let changed: Entry | undefined;
  for (const e of entries) {
    if (e.marker !== 'none') continue;
    if (e.key.equals(key)) return { status: 'ok' };
    changed = e;
  }
  if (changed) {
    return { status: 'changed', file: changed.file, line: changed.line, knownFingerprint: fingerprintOf(changed.key) };
  }
  return { status: 'unknown', knownTypes: [] };
}

/**
 * Looks `wireKey` up for `host`:`port` in `files` (user files first, then global ones, like ssh).
 *
 * With HostKeyAlias, pass the alias with port 22: OpenSSH files aliases without a port.
 *
 * Differences from a naive "per key type" check, all as OpenSSH 9.2 behaves (see the tests):
 * - any key listed for the name that differs from the offered one yields 'changed', even of another type; callers
 *   avoid that by ordering ssh2's serverHostKey algorithms with serverHostKeyAlgorithmsFor();
 * - for a non-22 port with nothing listed under `[host]:port`, an identical key listed under the bare host is
 *   accepted ("checking without port identifier"); a different key there leaves the host 'unknown' and its types
 *   are reported in knownTypes. A @revoked match there is reported as 'revoked' (OpenSSH would merely fall through
 *   to "unknown" and might prompt; refusing is the safer reading).
 * - `@cert-authority` lines are ignored: ssh2 never negotiates certificate host keys.
 */
export async function checkHostKey(files: string[], host: string, port: number, wireKey: Buffer): Promise<HostKeyVerdict> {
  keyTypeOf(wireKey);
  const loaded = await loadFiles(files);
  const verdict = evaluate(entriesFor(loaded, knownHostName(host, port)), wireKey);
  if (verdict.status !== 'unknown' || port === 22 || port === 0) return verdict;
  const bare = entriesFor(loaded, host);
  const fallback = evaluate(bare, wireKey);
  if (fallback.status === 'ok' || fallback.status === 'revoked') return fallback;
  return { status: 'unknown', knownTypes: uniqueTypes(bare) };
}

/** Key types listed for exactly this name (no bare-host fallback, as in sshconnect2.c order_hostkeyalgs()). */
export async function knownKeyTypes(files: string[], host: string, port: number): Promise<string[]> {
  return uniqueTypes(entriesFor(await loadFiles(files), knownHostName(host, port)));
}

const FALLBACK_HOST_KEY_ALGORITHMS = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];

// Read from ssh2 itself so the list never names an algorithm this ssh2 build cannot negotiate (ed25519 depends on
// the platform's crypto); the private path is stable across ssh2 1.x, the fallback covers a layout change.
function ssh2DefaultHostKeyAlgorithms(): string[] {
  try {
    const constants = createRequire(import.meta.url)('ssh2/lib/protocol/constants.js') as { DEFAULT_SERVER_HOST_KEY?: unknown };
    const list = constants.DEFAULT_SERVER_HOST_KEY;
    if (Array.isArray(list) && list.length > 0 && list.every((a) => typeof a === 'string')) return [...list];
  } catch {
    // fall through
  }
  return [...FALLBACK_HOST_KEY_ALGORITHMS];
}

/**
 * ssh2 `algorithms.serverHostKey` preferring what known_hosts already lists for the host, so a host known only by
 * its ECDSA key is asked for that key rather than reported as changed when ed25519 would be negotiated.
 */
export function serverHostKeyAlgorithmsFor(knownTypes: string[]): string[] | undefined {
  if (knownTypes.length === 0) return undefined;
  const defaults = ssh2DefaultHostKeyAlgorithms();
  const known = new Set(knownTypes.map(plainKeyType));
  const first = defaults.filter((alg) => known.has(plainKeyType(alg)));
  if (first.length === 0) return undefined;
  return [...first, ...defaults.filter((alg) => !first.includes(alg))];
}

/**
 * Appends `host`/`port` with `wireKey` the way ssh records a newly accepted key (one name per line, hashed when
 * HashKnownHosts is on). Creates the file (0600) and missing parent directories (0700).
 */
export async function appendKnownHost(file: string, host: string, port: number, wireKey: Buffer, opts: { hash: boolean }): Promise<void> {
  // sshconnect.c refuses to record names that would read back as patterns, markers or hashes.
  if (host === '' || /[@?*#[\]|'"\\,\s!]/.test(host)) {
    throw new WsyncError('E_KNOWN_HOSTS', `refusing to record host key for invalid host name '${host}'`);
  }
  const type = keyTypeOf(wireKey);
  const name = knownHostName(host, port);
  const field = opts.hash ? hashedName(name, randomBytes(20)) : name;
  const entry = `${field} ${type} ${wireKey.toString('base64')}\n`;
  try {
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const fh = await open(file, 'a+', 0o600);
    try {
      const { size } = await fh.stat();
      let prefix = '';
      if (size > 0) {
        const last = Buffer.alloc(1);
        await fh.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
      await fh.appendFile(prefix + entry);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new WsyncError('E_KNOWN_HOSTS', `cannot record the host key in ${file}: ${errorMessage(err)}`, { cause: err });
  }
}

/** @internal Exposed for tests: the known_hosts lines (file, line number) whose host field matches `name`. */
export async function matchingLines(files: string[], name: string): Promise<Array<{ file: string; line: number; marker: Marker }>> {
  return entriesFor(await loadFiles(files), name).map((e) => ({ file: e.file, line: e.line, marker: e.marker }));
}

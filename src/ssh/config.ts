/**
 * Resolves an ssh host alias the way OpenSSH does. `ssh -G` is the authority when an ssh binary exists (Include,
 * Match, canonicalisation, defaults, all exactly as the user's own ssh sees them); otherwise the `ssh-config`
 * package evaluates the files and this module adds what it lacks: Include, `~`/`%`/`${}` expansion, defaults.
 * Behaviour follows OpenSSH 9.2 (Debian 12), checked field by field against `ssh -G` in config.test.ts.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, readFile, readdir, stat } from 'node:fs/promises';
import { constants as fsConstants, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import SSHConfig, { LineType, type Directive, type Line, type Section } from 'ssh-config';
import { WsyncError, errorMessage } from '../errors.js';
import { matchPattern } from './match.js';

export interface ResolvedHost {
  alias: string;
  hostname: string;
  port: number;
  user: string;
  /** Absolute, with `~`, `${VAR}` and `%` tokens expanded, config order; OpenSSH's defaults when none configured. */
  identityFiles: string[];
  identitiesOnly: boolean;
  /** Expanded. undefined = use $SSH_AUTH_SOCK (or the Windows OpenSSH pipe); 'none' = no agent. */
  identityAgent?: string;
  /** Raw ProxyJump value ('none' -> undefined). */
  proxyJump?: string;
  /** Raw ProxyCommand, tokens unexpanded ('none' -> undefined). */
  proxyCommand?: string;
  userKnownHostsFiles: string[];
  globalKnownHostsFiles: string[];
  hostKeyAlias?: string;
  strictHostKeyChecking: 'yes' | 'no' | 'ask' | 'accept-new';
  hashKnownHosts: boolean;
  /** Seconds; undefined = none configured. */
  connectTimeout?: number;
  /** Seconds; undefined = disabled (OpenSSH's 0). BatchMode makes OpenSSH default it to 300. */
  serverAliveInterval?: number;
  serverAliveCountMax?: number;
  batchMode: boolean;
  compression: boolean;
  passwordAuthentication: boolean;
}

export interface ResolveOptions {
  /** Like `ssh -F`: only this file is read (no system-wide file); 'none' reads no file at all. */
  configFile?: string;
  /** Like `ssh -l`: wins over User in the config and is visible to `Match user`. */
  user?: string;
  /** Like `ssh -p`: wins over Port in the config. */
  port?: number;
  /** Default: true when `ssh` is on PATH. */
  useSshBinary?: boolean;
}

const IS_WINDOWS = process.platform === 'win32';

function configError(message: string, cause?: unknown, hint?: string): WsyncError {
  return new WsyncError('E_SSH_CONFIG', message, { cause, hint });
}

// ---------------------------------------------------------------------------------------------------------------
// Local facts and ssh binary discovery

interface Local {
  home: string;
  user: string;
  uid: string;
  hostname: string;
}

function localInfo(): Local {
  let info: os.UserInfo<string> | undefined;
  try {
    info = os.userInfo();
  } catch {
    info = undefined;
  }
  // ssh uses the passwd entry (pw_dir), not $HOME, for `~`, %d and ~/.ssh/config.
  return {
    home: info?.homedir || os.homedir(),
    user: info?.username || process.env.USER || process.env.USERNAME || '',
    uid: String(info?.uid ?? -1),
    hostname: os.hostname(),
  };
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    const st = await stat(file);
    if (!st.isFile()) return false;
    if (!IS_WINDOWS) await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function findOnPath(command: string): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? process.env.Path ?? '').split(path.delimiter).filter(Boolean);
  const exts = IS_WINDOWS ? (process.env.PATHEXT ?? '.EXE;.CMD;.BAT;.COM').split(';').filter(Boolean) : [''];
  for (const dir of dirs) {
    for (const ext of exts) {
      const candidate = path.join(dir, command + ext);
      if (await isExecutable(candidate)) return candidate;
    }
  }
  return undefined;
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: timeoutMs, maxBuffer: 4 << 20, windowsHide: true, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') return reject(err);
      if (err && (err as { killed?: boolean }).killed) return reject(new Error(`${file} timed out after ${timeoutMs} ms`));
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

let sshVersionCache: Promise<[number, number] | undefined> | undefined;

// Only %C depends on the ssh version (9.6 added the ProxyJump host to its hash); asked lazily for that one token.
function sshVersion(): Promise<[number, number] | undefined> {
  sshVersionCache ??= (async () => {
    const ssh = await findOnPath('ssh');
    if (!ssh) return undefined;
    try {
      const { stdout, stderr } = await run(ssh, ['-V'], 5000);
      const m = /OpenSSH[A-Za-z_]*_(\d+)\.(\d+)/.exec(stderr + stdout);
      return m ? [Number(m[1]), Number(m[2])] : undefined;
    } catch {
      return undefined;
    }
  })();
  return sshVersionCache;
}

// ---------------------------------------------------------------------------------------------------------------
// Expansion: tilde_expand_filename() then vdollar_percent_expand() (one pass: ${VAR} values are not re-expanded).

const passwdHomes = new Map<string, string | undefined>();

function homeOf(user: string, local: Local): string {
  if (user === '' || user === local.user) return local.home;
  if (!passwdHomes.has(user)) {
    let home: string | undefined;
    if (!IS_WINDOWS) {
      try {
        for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
          const f = line.split(':');
          if (f[0] === user && f.length >= 6) home = f[5];
        }
      } catch {
        home = undefined;
      }
    }
    passwdHomes.set(user, home);
  }
  const home = passwdHomes.get(user);
  if (home === undefined) throw configError(`cannot expand ~${user}: no such user`);
  return home;
}

function tildeExpand(value: string, local: Local): string {
  if (!value.startsWith('~')) return value;
  const slash = IS_WINDOWS ? value.search(/[\\/]/) : value.indexOf('/');
  const user = slash < 0 ? value.slice(1) : value.slice(1, slash);
  const rest = slash < 0 ? '' : value.slice(slash + 1);
  const home = homeOf(user, local).replace(/[\\/]+$/, '');
  return rest === '' ? home : `${home}${IS_WINDOWS ? path.sep : '/'}${rest}`;
}

function percentDollarExpand(value: string, tokens: Record<string, string>, what: string): string {
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '$' && value[i + 1] === '{') {
      const end = value.indexOf('}', i + 2);
      if (end < 0) throw configError(`${what}: environment variable in '${value}' is missing its closing '}'`);
      const name = value.slice(i + 2, end);
      if (name === '') throw configError(`${what}: empty environment variable name in '${value}'`);
      const v = process.env[name];
      if (v === undefined) throw configError(`${what}: environment variable \${${name}} has no value`);
      out += v;
      i = end;
      continue;
    }
    if (c !== '%') {
      out += c;
      continue;
    }
    const t = value[++i];
    if (t === '%') out += '%';
    else if (t === undefined) throw configError(`${what}: '${value}' ends with a lone '%'`);
    else if (Object.hasOwn(tokens, t)) out += tokens[t];
    else throw configError(`${what}: unknown token %${t} in '${value}'`);
  }
  return out;
}

function percentExpandHostName(value: string, alias: string): string {
  return value.replace(/%(.?)/g, (_m, t: string) => {
    if (t === '%') return '%';
    if (t === 'h') return alias;
    throw configError(`HostName: only %h and %% are allowed, got '${value}'`);
  });
}

interface TokenInputs {
  alias: string;
  hostname: string;
  port: number;
  user: string;
  hostKeyAlias?: string;
  proxyJump?: string;
}

// The host part of the last ProxyJump hop (readconf.c parse_jump() keeps that one as jump_host).
function jumpHost(proxyJump: string | undefined): string {
  if (!proxyJump) return '';
  let hop = proxyJump.slice(proxyJump.lastIndexOf(',') + 1).trim();
  hop = hop.replace(/^ssh:\/\//, '');
  hop = hop.slice(hop.lastIndexOf('@') + 1);
  const bracket = /^\[([^\]]*)\]/.exec(hop);
  if (bracket) return bracket[1];
  return hop.replace(/:\d*$/, '').replace(/\/$/, '');
}

async function tokensFor(inp: TokenInputs, local: Local, needHash: boolean): Promise<Record<string, string>> {
  const jump = jumpHost(inp.proxyJump);
  const tokens: Record<string, string> = {
    d: local.home,
    h: inp.hostname,
    i: local.uid,
    j: jump,
    k: inp.hostKeyAlias ?? inp.alias,
    L: local.hostname.split('.')[0],
    l: local.hostname,
    n: inp.alias,
    p: String(inp.port),
    r: inp.user,
    u: local.user,
  };
  if (needHash) {
    const v = await sshVersion();
    const withJump = v === undefined || v[0] > 9 || (v[0] === 9 && v[1] >= 6);
    const h = createHash('sha1').update(local.hostname).update(inp.hostname).update(String(inp.port)).update(inp.user);
    if (withJump) h.update(jump);
    tokens.C = h.digest('hex');
  }
  return tokens;
}

function needsHash(values: Array<string | undefined>): boolean {
  return values.some((v) => v !== undefined && /%C/.test(v.replace(/%%/g, '')));
}

// ---------------------------------------------------------------------------------------------------------------
// Value parsing shared by both paths

function yesNo(value: string | undefined, fallback: boolean, key: string): boolean {
  if (value === undefined) return fallback;
  const v = value.toLowerCase();
  if (v === 'yes' || v === 'true') return true;
  if (v === 'no' || v === 'false') return false;
  throw configError(`${key}: expected yes or no, got '${value}'`);
}

function strictness(value: string | undefined): ResolvedHost['strictHostKeyChecking'] {
  const v = (value ?? 'ask').toLowerCase();
  if (v === 'yes' || v === 'true') return 'yes';
  if (v === 'no' || v === 'off' || v === 'false') return 'no';
  if (v === 'ask' || v === 'accept-new') return v;
  throw configError(`StrictHostKeyChecking: unsupported value '${value}'`);
}

// misc.c convtime(): "90", "1m30s", "2h" ...
function seconds(value: string | undefined, key: string): number | undefined {
  if (value === undefined || value.toLowerCase() === 'none') return undefined;
  const re = /(\d+)([sSmMhHdDwW]?)/y;
  const mult: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  let total = 0;
  let pos = 0;
  while (pos < value.length) {
    re.lastIndex = pos;
    const m = re.exec(value);
    if (!m) throw configError(`${key}: invalid time '${value}'`);
    total += Number(m[1]) * mult[m[2].toLowerCase()];
    pos = re.lastIndex;
  }
  if (value.length === 0 || !Number.isSafeInteger(total)) throw configError(`${key}: invalid time '${value}'`);
  return total;
}

function portNumber(value: string | number | undefined, key: string): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw configError(`${key}: invalid port '${value}'`);
  return n;
}

function integer(value: string | undefined, key: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw configError(`${key}: expected a number, got '${value}'`);
  return Number(value);
}

/** Settings as OpenSSH holds them before the expansions ssh.c performs after reading the config. */
type RawSettings = Omit<ResolvedHost, 'alias'>;

// ssh.c: IdentityAgent "none" disables the agent, "SSH_AUTH_SOCK" means the environment, "$VAR" names another
// variable (unset = no agent); anything else is a path.
function agentSpecial(value: string | undefined): { done: true; result: string | undefined } | { done: false } {
  if (value === undefined || value === 'SSH_AUTH_SOCK') return { done: true, result: undefined };
  if (value === 'none') return { done: true, result: 'none' };
  if (value.startsWith('$') && !value.startsWith('${')) {
    const env = process.env[value.slice(1)];
    return { done: true, result: env === undefined || env === '' ? 'none' : env };
  }
  return { done: false };
}

async function finish(
  alias: string,
  raw: RawSettings,
  local: Local,
  already: { identityAgent: boolean; userKnownHostsFiles: boolean },
): Promise<ResolvedHost> {
  const agent = agentSpecial(raw.identityAgent);
  const toExpand = [...raw.identityFiles, agent.done ? undefined : raw.identityAgent];
  if (!already.userKnownHostsFiles) toExpand.push(...raw.userKnownHostsFiles);
  const tokens = await tokensFor({ alias, ...raw }, local, needsHash(toExpand));
  const expand = (v: string, what: string) => percentDollarExpand(tildeExpand(v, local), tokens, what);

  const identityFiles: string[] = [];
  for (const f of raw.identityFiles) {
    const abs = path.resolve(expand(f, 'IdentityFile'));
    if (!identityFiles.includes(abs)) identityFiles.push(abs);
  }
  let identityAgent: string | undefined;
  if (agent.done) identityAgent = agent.result;
  else if (already.identityAgent) identityAgent = tildeExpand(raw.identityAgent!, local);
  else identityAgent = expand(raw.identityAgent!, 'IdentityAgent');

  const userKnownHostsFiles = already.userKnownHostsFiles
    ? raw.userKnownHostsFiles
    : raw.userKnownHostsFiles.map((f) => expand(f, 'UserKnownHostsFile'));

  const out: ResolvedHost = { alias, ...raw, identityFiles, identityAgent, userKnownHostsFiles };
  for (const k of Object.keys(out) as Array<keyof ResolvedHost>) if (out[k] === undefined) delete out[k];
  return out;
}

function fileList(values: string[] | undefined): string[] | undefined {
  if (values === undefined) return undefined;
  if (values.length === 1 && values[0].toLowerCase() === 'none') return [];
  return values;
}

function noneToUndefined(v: string | undefined): string | undefined {
  return v === undefined || v.toLowerCase() === 'none' ? undefined : v;
}

// ---------------------------------------------------------------------------------------------------------------
// Path 1: ssh -G

class NoDashG extends Error {}

async function resolveWithSsh(alias: string, opts: ResolveOptions, local: Local): Promise<ResolvedHost> {
  const ssh = (await findOnPath('ssh')) ?? 'ssh';
  const args = ['-G'];
  if (opts.configFile !== undefined) args.push('-F', opts.configFile);
  if (opts.user !== undefined) args.push('-l', opts.user);
  if (opts.port !== undefined) args.push('-p', String(opts.port));
  args.push('--', alias);
  let res: { code: number; stdout: string; stderr: string };
  try {
    res = await run(ssh, args, 15_000);
  } catch (err) {
    throw configError(`cannot run '${ssh} -G': ${errorMessage(err)}`, err, 'install the OpenSSH client, or let wsync read the config itself');
  }
  if (res.code !== 0 && /(illegal|unknown|invalid|unrecognized) option.*G|^usage: /im.test(res.stderr)) {
    throw new NoDashG(`'${ssh}' does not support -G: ${res.stderr.trim().split('\n')[0]}`);
  }
  if (res.code !== 0) {
    const why = res.stderr
      .split('\n')
      .filter((l) => l.trim() !== '' && !/^Pseudo-terminal will not be allocated/.test(l))
      .join('; ');
    throw configError(`ssh could not evaluate the configuration for '${alias}': ${why || `exit code ${res.code}`}`, undefined,
      opts.configFile ? `check ${opts.configFile}` : 'check ~/.ssh/config and /etc/ssh/ssh_config');
  }
  const values = new Map<string, string[]>();
  for (const line of res.stdout.split(/\r?\n/)) {
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1].toLowerCase();
    if (!values.has(key)) values.set(key, []);
    values.get(key)!.push(m[2]);
  }
  const one = (k: string) => values.get(k)?.[0];
  const words = (k: string) => {
    const v = one(k);
    return v === undefined ? undefined : v.split(/\s+/).filter(Boolean);
  };
  const batchMode = yesNo(one('batchmode'), false, 'BatchMode');
  const alive = integer(one('serveraliveinterval'), 'ServerAliveInterval');
  const raw: RawSettings = {
    hostname: one('hostname') ?? alias,
    port: portNumber(one('port'), 'Port') ?? 22,
    user: one('user') ?? local.user,
    identityFiles: values.get('identityfile') ?? [],
    identitiesOnly: yesNo(one('identitiesonly'), false, 'IdentitiesOnly'),
    identityAgent: one('identityagent'),
    proxyJump: noneToUndefined(one('proxyjump')),
    proxyCommand: noneToUndefined(one('proxycommand')),
    userKnownHostsFiles: fileList(words('userknownhostsfile')) ?? [],
    globalKnownHostsFiles: fileList(words('globalknownhostsfile')) ?? [],
    hostKeyAlias: one('hostkeyalias'),
    strictHostKeyChecking: strictness(one('stricthostkeychecking')),
    hashKnownHosts: yesNo(one('hashknownhosts'), false, 'HashKnownHosts'),
    connectTimeout: seconds(one('connecttimeout'), 'ConnectTimeout'),
    serverAliveInterval: alive ? alive : undefined,
    serverAliveCountMax: integer(one('serveralivecountmax'), 'ServerAliveCountMax'),
    batchMode,
    compression: yesNo(one('compression'), false, 'Compression'),
    passwordAuthentication: yesNo(one('passwordauthentication'), true, 'PasswordAuthentication'),
  };
  // ssh -G prints IdentityFile unexpanded (ssh.c expands it only when loading keys) but has already expanded
  // IdentityAgent and UserKnownHostsFile; expanding those twice would break on a literal '%' they now contain.
  return finish(alias, raw, local, { identityAgent: true, userKnownHostsFiles: true });
}

// ---------------------------------------------------------------------------------------------------------------
// Path 2: ssh-config package + Include + defaults

const MAX_INCLUDE_DEPTH = 16; // readconf.c READCONF_MAX_DEPTH

// OpenSSH 9.2's compiled-in defaults (readconf.c fill_default_options()) on a typical build.
const DEFAULT_IDENTITY_FILES = [
  '~/.ssh/id_rsa',
  '~/.ssh/id_ecdsa',
  '~/.ssh/id_ecdsa_sk',
  '~/.ssh/id_ed25519',
  '~/.ssh/id_ed25519_sk',
  '~/.ssh/id_xmss',
  '~/.ssh/id_dsa',
];

function systemSshDir(): string {
  return IS_WINDOWS ? path.join(process.env.ProgramData ?? 'C:\\ProgramData', 'ssh') : '/etc/ssh';
}

function defaultGlobalKnownHosts(): string[] {
  const dir = systemSshDir();
  return IS_WINDOWS
    ? [path.join(dir, 'ssh_known_hosts'), path.join(dir, 'ssh_known_hosts2')]
    : ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];
}

// OpenSSH's Host matching: whitespace-separated patterns, case-sensitive, a negated match disables the block.
function hostPatterns(line: Directive): string[] {
  return Array.isArray(line.value) ? line.value.map((v) => v.val) : line.value.split(/\s+/).filter(Boolean);
}

function hostBlockMatches(patterns: string[], alias: string): boolean {
  let active = false;
  for (const p of patterns) {
    const negated = p.startsWith('!');
    if (matchPattern(alias, negated ? p.slice(1) : p)) {
      if (negated) return false;
      active = true;
    }
  }
  return active;
}

function globSegmentRegExp(segment: string): RegExp {
  let re = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = segment.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = segment.slice(i + 1, end);
      if (body.startsWith('!')) body = '^' + body.slice(1);
      re += '[' + body.replace(/\\/g, '\\\\') + ']';
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, IS_WINDOWS ? 'i' : '');
}

// glob(3) as readconf.c uses it for Include: sorted, dotfiles only when the pattern starts with '.', and a pattern
// that matches nothing is not an error.
async function globPaths(pattern: string): Promise<string[]> {
  const parsed = path.parse(pattern);
  const root = parsed.root;
  const segments = pattern.slice(root.length).split(IS_WINDOWS ? /[\\/]+/ : /\/+/).filter(Boolean);
  let current = [root];
  for (const seg of segments) {
    const next: string[] = [];
    if (!/[*?[]/.test(seg)) {
      for (const dir of current) next.push(dir === '' ? seg : path.join(dir, seg));
    } else {
      const re = globSegmentRegExp(seg);
      for (const dir of current) {
        let names: string[];
        try {
          names = await readdir(dir === '' ? '.' : dir);
        } catch {
          continue;
        }
        for (const name of names.sort()) {
          if (name.startsWith('.') && !seg.startsWith('.')) continue;
          if (re.test(name)) next.push(dir === '' ? name : path.join(dir, name));
        }
      }
    }
    current = next;
  }
  const out: string[] = [];
  for (const p of current) {
    try {
      await stat(p);
      out.push(p);
    } catch {
      // glob(3) only returns existing paths
    }
  }
  return out.sort();
}

type ConfigKind = 'user' | 'system';

interface Flattener {
  alias: string;
  local: Local;
  seq: number;
}

function directive(param: string, value: string): Directive {
  return { type: LineType.DIRECTIVE, param, separator: ' ', value, before: '', after: '\n' };
}

function emptySectionLike(section: Section): Section {
  return { ...section, config: new SSHConfig() };
}

function hostStar(): Section {
  return { ...directive('Host', '*'), config: new SSHConfig() };
}

function isDirective(line: Line): line is Directive {
  return line.type === LineType.DIRECTIVE;
}

function isSection(line: Line): line is Section {
  return isDirective(line) && 'config' in line && /^(host|match)$/i.test(line.param);
}

function scalar(line: Directive): string {
  return Array.isArray(line.value) ? line.value.map((v) => v.val).join(' ') : line.value;
}

async function includeTargets(line: Directive, kind: ConfigKind, local: Local): Promise<string[]> {
  const args = Array.isArray(line.value) ? line.value.map((v) => v.val) : line.value.split(/\s+/).filter(Boolean);
  const out: string[] = [];
  for (const arg of args) {
    let p = arg;
    if (!p.startsWith('~') && !path.isAbsolute(p)) p = kind === 'user' ? `~/.ssh/${p}` : path.join(systemSshDir(), p);
    out.push(...(await globPaths(tildeExpand(p, local))));
  }
  return out;
}

/**
 * Rewrites one parsed file into a flat line list that ssh-config's compute() evaluates the way OpenSSH would:
 * - Include is inlined. Inside a Host block that does not match the alias, OpenSSH ignores the included file
 *   entirely; inside one that matches, the file's leading lines join that block, its own Host/Match blocks follow
 *   at top level, and the rest of the enclosing block is re-opened under the same header. Includes inside Match
 *   blocks are treated as if the Match were true (compute() decides Match later).
 * - Host patterns containing '?' are decided here, because ssh-config's glob reads '?' as "zero or one character".
 *   Decisions made here use the alias, so a `Match final` re-pass sees them as in the first pass.
 * - HostName gets its %h expanded, so `Match host` and the final pass see the real name.
 * - ProxyJump/ProxyCommand get sequence markers so the first active one of either can be identified.
 */
async function flattenFile(file: string, kind: ConfigKind, f: Flattener, depth: number, mustExist: boolean): Promise<Line[]> {
  if (depth > MAX_INCLUDE_DEPTH) throw configError(`${file}: Include nested more than ${MAX_INCLUDE_DEPTH} levels`);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (!mustExist && (err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw configError(`cannot read ssh config file ${file}: ${errorMessage(err)}`, err);
  }
  let parsed: SSHConfig;
  try {
    parsed = SSHConfig.parse(text);
  } catch (err) {
    throw configError(`cannot parse ssh config file ${file}: ${errorMessage(err)}`, err);
  }

  const out: Line[] = [];
  let open: Section | undefined;
  const place = (line: Line) => (open ? open.config.push(line) : out.push(line));

  const addDirective = async (line: Directive, enclosing: Section | undefined, enclosingActive: boolean) => {
    const param = line.param.toLowerCase();
    if (param === 'include') {
      if (!enclosingActive) return;
      for (const inc of await includeTargets(line, kind, f.local)) {
        const lines = await flattenFile(inc, kind, f, depth + 1, false);
        let i = 0;
        for (; i < lines.length && !isSection(lines[i]); i++) place(lines[i]);
        if (i === lines.length) continue;
        for (; i < lines.length; i++) out.push(lines[i]);
        // What follows the Include belongs to the enclosing block again, or to every host at top level.
        open = enclosing ? emptySectionLike(enclosing) : hostStar();
        out.push(open);
      }
      return;
    }
    let copy: Directive = { ...line };
    if (param === 'hostname') copy = { ...copy, param: 'HostName', value: percentExpandHostName(scalar(line), f.alias), quoted: false };
    else if (param === 'user') copy = { ...copy, param: 'User' };
    else if (param === 'proxyjump') place(directive('WsyncProxyJumpSeq', String(f.seq++)));
    else if (param === 'proxycommand') place(directive('WsyncProxyCommandSeq', String(f.seq++)));
    place(copy);
  };

  for (const line of parsed) {
    if (isSection(line)) {
      const section = emptySectionLike(line);
      let active = true;
      if (/^host$/i.test(line.param)) {
        const patterns = hostPatterns(line);
        active = hostBlockMatches(patterns, f.alias);
        if (patterns.some((p) => p.includes('?'))) section.value = active ? '*' : '!*';
      }
      out.push(section);
      open = section;
      for (const sub of line.config) {
        if (isDirective(sub)) await addDirective(sub, section, active);
      }
      continue;
    }
    if (isDirective(line)) await addDirective(line, undefined, true);
  }
  return out;
}

function str(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(' ') : v;
}

function list(v: string | string[] | undefined): string[] | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v : v.split(/\s+/).filter(Boolean);
}

async function resolveWithParser(alias: string, opts: ResolveOptions, local: Local): Promise<ResolvedHost> {
  const f: Flattener = { alias, local, seq: 0 };
  const cfg = new SSHConfig();
  if (opts.configFile !== undefined) {
    if (opts.configFile.toLowerCase() !== 'none') cfg.push(...(await flattenFile(opts.configFile, 'user', f, 0, true)));
  } else {
    cfg.push(...(await flattenFile(path.join(local.home, '.ssh', 'config'), 'user', f, 0, false)));
    cfg.push(...(await flattenFile(path.join(systemSshDir(), 'ssh_config'), 'system', f, 0, false)));
  }
  let r: Record<string, string | string[]>;
  try {
    r = cfg.compute(opts.user !== undefined ? { Host: alias, User: opts.user } : { Host: alias }, { ignoreCase: true, matchExec: false });
  } catch (err) {
    throw configError(`cannot evaluate ssh config for '${alias}': ${errorMessage(err)}`, err);
  }

  let hostname = str(r.hostname) ?? alias;
  if (net.isIP(hostname) === 0) hostname = hostname.toLowerCase();

  // First active ProxyJump/ProxyCommand decides, as ssh 9.2 behaves: a ProxyJump host shadows any later
  // ProxyCommand; a ProxyCommand (even "none") shadows any later ProxyJump; "ProxyJump none" only shadows later
  // ProxyJumps.
  const jumpSeq = str(r.wsyncproxyjumpseq);
  const cmdSeq = str(r.wsyncproxycommandseq);
  let proxyJump: string | undefined;
  let proxyCommand: string | undefined;
  const jumpFirst = jumpSeq !== undefined && (cmdSeq === undefined || Number(jumpSeq) < Number(cmdSeq));
  const jumpValue = str(r.proxyjump);
  const cmdValue = str(r.proxycommand);
  if (jumpFirst && jumpValue !== undefined && jumpValue.toLowerCase() !== 'none') proxyJump = jumpValue;
  else if (cmdValue !== undefined) proxyCommand = noneToUndefined(cmdValue);

  const configured = list(r.identityfile) ?? [];
  const identityFiles = configured.length > 0 ? [...new Set(configured)] : DEFAULT_IDENTITY_FILES;
  const batchMode = yesNo(str(r.batchmode), false, 'BatchMode');
  let alive = seconds(str(r.serveraliveinterval), 'ServerAliveInterval');
  if (alive === undefined && batchMode) alive = 300;
  const alias2 = str(r.hostkeyalias);

  const raw: RawSettings = {
    hostname,
    port: portNumber(opts.port, 'port') ?? portNumber(str(r.port), 'Port') ?? 22,
    user: opts.user ?? str(r.user) ?? local.user,
    identityFiles,
    identitiesOnly: yesNo(str(r.identitiesonly), false, 'IdentitiesOnly'),
    identityAgent: str(r.identityagent),
    proxyJump,
    proxyCommand,
    userKnownHostsFiles: fileList(list(r.userknownhostsfile)) ?? ['~/.ssh/known_hosts', '~/.ssh/known_hosts2'],
    globalKnownHostsFiles: fileList(list(r.globalknownhostsfile)) ?? defaultGlobalKnownHosts(),
    hostKeyAlias: alias2?.toLowerCase(),
    strictHostKeyChecking: strictness(str(r.stricthostkeychecking)),
    hashKnownHosts: yesNo(str(r.hashknownhosts), false, 'HashKnownHosts'),
    connectTimeout: seconds(str(r.connecttimeout), 'ConnectTimeout'),
    serverAliveInterval: alive ? alive : undefined,
    serverAliveCountMax: integer(str(r.serveralivecountmax), 'ServerAliveCountMax') ?? 3,
    batchMode,
    compression: yesNo(str(r.compression), false, 'Compression'),
    passwordAuthentication: yesNo(str(r.passwordauthentication), true, 'PasswordAuthentication'),
  };
  return finish(alias, raw, local, { identityAgent: false, userKnownHostsFiles: false });
}

// ---------------------------------------------------------------------------------------------------------------

/** Resolves `alias` (a Host alias or plain host name) to the settings ssh would use for it. */
export async function resolveHost(alias: string, opts: ResolveOptions = {}): Promise<ResolvedHost> {
  // ssh refuses these too; a leading '-' would otherwise be read as an option by `ssh -G`.
  if (alias === '' || alias.startsWith('-') || /[\s\x00-\x1f'"`\\]/.test(alias)) {
    throw new WsyncError('E_TARGET', `invalid host name '${alias}'`);
  }
  if (opts.port !== undefined) portNumber(opts.port, 'port');
  if (opts.user !== undefined && (opts.user === '' || /[\s\x00-\x1f]/.test(opts.user) || opts.user.startsWith('-'))) {
    throw new WsyncError('E_TARGET', `invalid user name '${opts.user}'`);
  }
  const local = localInfo();
  if (opts.useSshBinary === false) return resolveWithParser(alias, opts, local);
  if (opts.useSshBinary === undefined && (await findOnPath('ssh')) === undefined) return resolveWithParser(alias, opts, local);
  try {
    return await resolveWithSsh(alias, opts, local);
  } catch (err) {
    // An `ssh` that is not OpenSSH (or predates -G, 6.8) is no reason to fail when nobody asked for it.
    if (opts.useSshBinary === undefined && err instanceof NoDashG) return resolveWithParser(alias, opts, local);
    throw err instanceof NoDashG ? configError(err.message) : err;
  }
}

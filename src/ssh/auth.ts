/**
 * Public-key authentication for ssh2 that behaves like OpenSSH's pubkey_prepare(): configured identities held by
 * the agent first, then the agent's other keys (unless IdentitiesOnly), then key files the agent does not hold.
 * Each key is its own attempt, so a full agent cannot exhaust sshd's MaxAuthTries before the right key is offered,
 * which is what ssh2's own `agent:` option does. Passphrases are asked before connecting, so ssh2's readyTimeout
 * never runs while someone is typing.
 */
import { openSync, closeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import tty from 'node:tty';
import ssh2 from 'ssh2';
import type {
  AnyAuthMethod,
  AuthHandlerMiddleware,
  BaseAgent as BaseAgentType,
  IdentityCallback,
  ParsedKey,
  SignCallback,
  SigningRequestOptions,
} from 'ssh2';
import { WsyncError, errorMessage } from '../errors.js';
import type { ResolvedHost } from './config.js';

const { BaseAgent, createAgent, utils } = ssh2;

export interface AuthPrompt {
  /**
   * Asked once per encrypted key the agent does not hold; undefined (or an empty answer at the TTY) skips the key.
   * `retry` is true when the previous answer for this key was wrong (three answers at most, as ssh).
   */
  passphrase(keyPath: string, retry?: boolean): Promise<string | undefined>;
}

export interface AuthPlan {
  username: string;
  handler: AuthHandlerMiddleware;
  /** What was tried so far (and what could not be), for error messages. */
  describe(): string;
  /**
   * For an error ssh2 emitted while connecting: the WsyncError to report when it is an authentication failure
   * (E_PASSPHRASE when an encrypted key had to be skipped for want of a terminal, else E_AUTH), undefined otherwise.
   */
  failure(err: unknown): WsyncError | undefined;
}

export interface PrepareAuthOptions {
  /** `-i`: offered before every other identity. */
  identity?: string;
  prompt?: AuthPrompt;
  /** Someone can answer prompts. BatchMode in the ssh config turns prompting off as well. */
  interactive: boolean;
}

const AGENT_TIMEOUT_MS = 5000;
const PASSPHRASE_TRIES = 3; // ssh's NumberOfPasswordPrompts default

type Attempt =
  | { kind: 'agent'; key: ParsedKey; label: string }
  | { kind: 'file'; key: ParsedKey; label: string };

function fingerprint(key: ParsedKey): string {
  return 'SHA256:' + createHash('sha256').update(key.getPublicSSH()).digest('base64').replace(/=+$/, '');
}

function keyLabel(key: ParsedKey): string {
  return `${key.type} ${fingerprint(key)}`;
}

/** The agent to use, resolved as ssh.c does: IdentityAgent, then $SSH_AUTH_SOCK, then (Windows) the OpenSSH pipe. */
export function agentSocketFor(host: Pick<ResolvedHost, 'identityAgent'>, platform: NodeJS.Platform = process.platform): string | undefined {
  if (host.identityAgent === 'none') return undefined;
  if (host.identityAgent) return host.identityAgent;
  if (process.env.SSH_AUTH_SOCK) return process.env.SSH_AUTH_SOCK;
  if (platform === 'win32') return '\\\\.\\pipe\\openssh-ssh-agent';
  return undefined;
}

function toParsedKeys(entries: unknown[] | undefined): ParsedKey[] {
  const out: ParsedKey[] = [];
  for (const entry of entries ?? []) {
    const raw = entry && typeof entry === 'object' && 'pubKey' in entry ? (entry as { pubKey: ParsedKey | Buffer | string }).pubKey : entry;
    const key = utils.parseKey(raw as ParsedKey | Buffer | string);
    if (!(key instanceof Error)) out.push(key);
  }
  return out;
}

function agentIdentities(socket: string): Promise<ParsedKey[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${AGENT_TIMEOUT_MS} ms`)), AGENT_TIMEOUT_MS);
    try {
      createAgent(socket).getIdentities((err, keys) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(toParsedKeys(keys as unknown[] | undefined));
      });
    } catch (err) {
      clearTimeout(timer);
      reject(err);
    }
  });
}

/** Offers exactly one of the real agent's keys; ssh2 would otherwise walk through all of them in one method. */
class OneKeyAgent extends BaseAgent<ParsedKey> {
  constructor(
    private readonly inner: BaseAgentType,
    private readonly key: ParsedKey,
  ) {
    super();
  }
  getIdentities(cb: IdentityCallback<ParsedKey>): void {
    cb(null, [this.key]);
  }
  sign(pubKey: ParsedKey, data: Buffer, options: SigningRequestOptions | SignCallback, cb?: SignCallback): void {
    if (typeof options === 'function') (this.inner as BaseAgentType<ParsedKey>).sign(pubKey, data, options);
    else (this.inner as BaseAgentType<ParsedKey>).sign(pubKey, data, options ?? {}, cb);
  }
}

// The public half of an openssh-key-v1 file is stored unencrypted, so an encrypted key can be matched against the
// agent without its passphrase (PROTOCOL.key).
function opensshPublicBlob(text: string): Buffer | undefined {
  const m = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)-----END OPENSSH PRIVATE KEY-----/.exec(text);
  if (!m) return undefined;
  const buf = Buffer.from(m[1].replace(/\s+/g, ''), 'base64');
  const magic = Buffer.from('openssh-key-v1\0', 'latin1');
  if (buf.length < magic.length || !buf.subarray(0, magic.length).equals(magic)) return undefined;
  let off = magic.length;
  const str = (): Buffer | undefined => {
    if (off + 4 > buf.length) return undefined;
    const len = buf.readUInt32BE(off);
    if (off + 4 + len > buf.length) return undefined;
    const v = buf.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return v;
  };
  if (!str() || !str() || !str()) return undefined; // cipher, kdf, kdf options
  if (off + 4 > buf.length || buf.readUInt32BE(off) < 1) return undefined;
  off += 4;
  const pub = str();
  return pub && pub.length > 0 ? Buffer.from(pub) : undefined;
}

async function readOptional(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

interface Identity {
  path: string;
  /** Wire-format public key, when known without decrypting anything. */
  pub?: Buffer;
  /** File contents; undefined when the file does not exist (its .pub may, for a key living only in the agent). */
  data?: Buffer;
}

// ssh.c load_public_identity_files(): `<file>.pub` first, else the public half the key file itself reveals.
async function loadIdentity(file: string, notes: string[]): Promise<Identity> {
  const id: Identity = { path: file };
  try {
    id.data = await readOptional(file);
    const pubText = await readOptional(file + '.pub');
    if (pubText) {
      const k = utils.parseKey(pubText);
      if (!(k instanceof Error)) id.pub = k.getPublicSSH();
    }
    if (!id.pub && id.data) {
      id.pub = opensshPublicBlob(id.data.toString('utf8'));
      if (!id.pub) {
        const k = utils.parseKey(id.data);
        if (!(k instanceof Error)) id.pub = k.getPublicSSH();
      }
    }
  } catch (err) {
    notes.push(`${file}: unreadable (${errorMessage(err)})`);
  }
  return id;
}

function isEncryptedKeyError(err: Error): boolean {
  return /no passphrase given/i.test(err.message);
}

function isAuthFailure(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const level = (err as { level?: string }).level;
  return level === 'client-authentication' || /authentication methods failed|too many authentication failures/i.test(err.message);
}

/**
 * Reads identities and agent keys, asks for passphrases (before any connection exists) and returns an ssh2
 * authHandler that offers one key per attempt.
 */
export async function prepareAuth(host: ResolvedHost, opts: PrepareAuthOptions): Promise<AuthPlan> {
  const username = host.user;
  const canPrompt = opts.interactive && !host.batchMode && opts.prompt !== undefined;
  const notes: string[] = [];
  const needPassphrase: string[] = [];

  const paths: string[] = [];
  for (const p of [opts.identity, ...host.identityFiles]) if (p !== undefined && !paths.includes(p)) paths.push(p);
  const identities: Identity[] = [];
  for (const p of paths) identities.push(await loadIdentity(p, notes));

  const socket = agentSocketFor(host);
  let agentKeys: ParsedKey[] = [];
  if (socket) {
    try {
      agentKeys = await agentIdentities(socket);
    } catch (err) {
      notes.push(`agent ${socket} unavailable (${errorMessage(err)})`);
    }
  }

  const attempts: Attempt[] = [];
  const offered: Buffer[] = [];
  const isOffered = (pub: Buffer) => offered.some((b) => b.equals(pub));
  const agentKeyFor = (pub: Buffer | undefined) => (pub ? agentKeys.find((k) => k.getPublicSSH().equals(pub)) : undefined);

  const addAgent = (key: ParsedKey, label: string) => {
    const pub = key.getPublicSSH();
    if (isOffered(pub)) return;
    offered.push(pub);
    attempts.push({ kind: 'agent', key, label });
  };

  const addFile = async (id: Identity) => {
    if (id.pub && isOffered(id.pub)) return;
    if (!id.data) {
      // ssh does not complain about missing default identities either; name only those that were configured.
      if (id.pub) notes.push(`${id.path}: only the public key exists and the agent does not hold it`);
      return;
    }
    let key = utils.parseKey(id.data);
    if (key instanceof Error && isEncryptedKeyError(key)) {
      if (!canPrompt) {
        needPassphrase.push(id.path);
        return;
      }
      let retry = false;
      let answer: string | undefined;
      for (let i = 0; i < PASSPHRASE_TRIES; i++) {
        answer = await opts.prompt!.passphrase(id.path, retry);
        if (answer === undefined) break;
        key = utils.parseKey(id.data, answer);
        if (!(key instanceof Error)) break;
        retry = true;
      }
      if (answer === undefined) {
        notes.push(`${id.path}: skipped (no passphrase given)`);
        return;
      }
      if (key instanceof Error) {
        notes.push(`${id.path}: wrong passphrase`);
        return;
      }
    }
    if (key instanceof Error) {
      notes.push(`${id.path}: not a key ssh2 can use (${key.message})`);
      return;
    }
    if (!key.isPrivateKey()) {
      notes.push(`${id.path}: public key only and the agent does not hold it`);
      return;
    }
    const pub = key.getPublicSSH();
    if (isOffered(pub)) return;
    offered.push(pub);
    attempts.push({ kind: 'file', key, label: `key file ${id.path} (${keyLabel(key)})` });
  };

  // -i comes first whether or not the agent holds it.
  const [first, ...rest] = identities;
  const explicit = opts.identity !== undefined ? first : undefined;
  const configured = explicit ? rest : identities;
  if (explicit) {
    const ak = agentKeyFor(explicit.pub);
    if (ak) addAgent(ak, `agent key for ${explicit.path} (${keyLabel(ak)})`);
    else await addFile(explicit);
  }
  for (const id of configured) {
    const ak = agentKeyFor(id.pub);
    if (ak) addAgent(ak, `agent key for ${id.path} (${keyLabel(ak)})`);
  }
  if (!host.identitiesOnly) {
    for (const ak of agentKeys) addAgent(ak, `agent key ${ak.comment ? `'${ak.comment}' ` : ''}(${keyLabel(ak)})`);
  }
  for (const id of configured) if (!agentKeyFor(id.pub)) await addFile(id);

  const tried: string[] = [];
  let next = 0;

  const handler: AuthHandlerMiddleware = (methodsLeft, _partialSuccess, callback) => {
    // Unlike ssh, no "none" probe first: it costs a round trip on every connection and the first key usually works.
    if (Array.isArray(methodsLeft) && !methodsLeft.includes('publickey')) {
      callback(false as unknown as AnyAuthMethod);
      return;
    }
    const a = attempts[next++];
    if (!a) {
      callback(false as unknown as AnyAuthMethod);
      return;
    }
    tried.push(a.label);
    if (a.kind === 'file') callback({ type: 'publickey', username, key: a.key });
    else callback({ type: 'agent', username, agent: new OneKeyAgent(createAgent(socket!), a.key) });
  };

  const describe = (): string => {
    const parts: string[] = [];
    parts.push(tried.length ? `tried ${tried.join(', ')}` : 'no key was offered');
    if (needPassphrase.length) parts.push(`not usable without a passphrase: ${needPassphrase.join(', ')}`);
    if (notes.length) parts.push(notes.join('; '));
    if (!socket) parts.push('no ssh-agent');
    return parts.join('; ');
  };

  const failure = (err: unknown): WsyncError | undefined => {
    if (!isAuthFailure(err)) return undefined;
    const where = `${username}@${host.hostname}${host.port === 22 ? '' : `:${host.port}`}`;
    if (needPassphrase.length) {
      const list = needPassphrase.join(', ');
      return new WsyncError(
        'E_PASSPHRASE',
        `authentication to ${where} failed: ${needPassphrase.length === 1 ? 'the key' : 'the keys'} ${list} ${needPassphrase.length === 1 ? 'is' : 'are'} encrypted and there is no terminal to ask for the passphrase (${describe()})`,
        { cause: err, hint: `add the key to ssh-agent first (eval "$(ssh-agent)"; ssh-add ${needPassphrase[0]}) or run wsync from a terminal` },
      );
    }
    return new WsyncError('E_AUTH', `authentication to ${where} failed (${describe()})`, {
      cause: err,
      hint: "check the key (-i FILE or IdentityFile in ~/.ssh/config), that ssh-agent holds it (ssh-add -l), and the server's authorized_keys",
    });
  };

  return { username, handler, describe, failure };
}

// ---------------------------------------------------------------------------------------------------------------
// Hidden passphrase input

/** @internal Line editing for hidden input; exported for tests. */
export interface HiddenInputState {
  text: string;
  done: boolean;
  /** 'enter' = accepted, 'eof' = Ctrl-D on an empty line, 'interrupt' = Ctrl-C. */
  end?: 'enter' | 'eof' | 'interrupt';
}

/** @internal */
export function feedHiddenInput(state: HiddenInputState, chunk: string): HiddenInputState {
  let { text } = state;
  if (state.done) return state;
  for (const ch of chunk) {
    if (ch === '\r' || ch === '\n') return { text, done: true, end: 'enter' };
    if (ch === '\x03') return { text: '', done: true, end: 'interrupt' };
    if (ch === '\x04') {
      if (text === '') return { text, done: true, end: 'eof' };
      continue;
    }
    if (ch === '\x7f' || ch === '\b') text = Array.from(text).slice(0, -1).join('');
    else if (ch === '\x15') text = '';
    else if (ch >= ' ' || ch === '\t') text += ch;
  }
  return { text, done: false };
}

function openTerminal(): { input: tty.ReadStream; close: () => void } | undefined {
  if (process.platform !== 'win32') {
    try {
      const fd = openSync('/dev/tty', 'r');
      if (tty.isatty(fd)) {
        const input = new tty.ReadStream(fd);
        return { input, close: () => input.destroy() };
      }
      closeSync(fd);
    } catch {
      // no controlling terminal
    }
  }
  if (process.stdin.isTTY) {
    const input = process.stdin as tty.ReadStream;
    const wasRaw = input.isRaw;
    return {
      input,
      close: () => {
        input.setRawMode(wasRaw);
        input.pause();
      },
    };
  }
  return undefined;
}

function readHidden(prompt: string): Promise<string | undefined> {
  const term = openTerminal();
  if (!term) return Promise.resolve(undefined);
  const { input } = term;
  // Echo off before the prompt shows: whatever is typed after seeing it can never appear on the screen.
  input.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise((resolve) => {
    let state: HiddenInputState = { text: '', done: false };
    const onData = (chunk: string | Buffer) => {
      state = feedHiddenInput(state, typeof chunk === 'string' ? chunk : chunk.toString('utf8'));
      if (!state.done) return;
      input.removeListener('data', onData);
      input.setRawMode(false);
      term.close();
      process.stderr.write('\n');
      if (state.end === 'interrupt') {
        // Raw mode swallowed the signal the terminal would have sent; deliver it now that the terminal is restored.
        process.kill(process.pid, 'SIGINT');
        resolve(undefined);
        return;
      }
      resolve(state.end === 'enter' && state.text !== '' ? state.text : undefined);
    };
    input.setEncoding('utf8');
    input.on('data', onData);
    input.resume();
  });
}

/** Asks on the controlling terminal (or stdin when it is a TTY), echo off, prompt on stderr; no terminal = skip. */
export function ttyPassphrasePrompt(): AuthPrompt {
  return {
    passphrase: (keyPath, retry) =>
      readHidden(retry ? `Bad passphrase, try again for ${keyPath}: ` : `Enter passphrase for key '${keyPath}': `),
  };
}

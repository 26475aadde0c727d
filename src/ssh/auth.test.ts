import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { startSshd, keygen, type TestServer } from '../../test/support/sshd.js';
import { resolveHost, type ResolvedHost } from './config.js';
import { prepareAuth, agentSocketFor, feedHiddenInput, type AuthPlan, type AuthPrompt, type HiddenInputState } from './auth.js';
import { WsyncError } from '../errors.js';

const { Client } = ssh2;

type Outcome = { ok: true } | { ok: false; err: Error };

function connect(srv: TestServer, cfg: { authHandler?: AuthPlan['handler']; username: string; agent?: string }): Promise<Outcome> {
  return new Promise((resolve) => {
    const client = new Client();
    let settled = false;
    const done = (o: Outcome) => {
      if (settled) return;
      settled = true;
      client.end();
      resolve(o);
    };
    client.on('ready', () => done({ ok: true }));
    client.on('error', (err) => done({ ok: false, err }));
    client.on('close', () => done({ ok: false, err: new Error('closed before ready') }));
    client.connect({ host: srv.host, port: srv.port, username: cfg.username, authHandler: cfg.authHandler, agent: cfg.agent, readyTimeout: 20_000 });
  });
}

/** sshd (LogLevel VERBOSE) logs one line per rejected key. */
const failedPublickeys = (log: string) => log.split('\n').filter((l) => l.startsWith('Failed publickey')).length;

const never: AuthPrompt = {
  passphrase: () => {
    throw new Error('must not prompt');
  },
};

describe('prepareAuth against a real sshd (MaxAuthTries 6)', () => {
  let srv: TestServer;
  let dir: string;
  let base: ResolvedHost;
  let encrypted: string;
  let stranger: string;
  const passphrase = 'correct horse battery';

  beforeAll(async () => {
    srv = await startSshd({ extraConfig: 'MaxAuthTries 6' });
    dir = mkdtempSync(path.join(tmpdir(), 'wsync-auth-'));
    encrypted = path.join(dir, 'id_encrypted');
    keygen(encrypted, { passphrase });
    appendFileSync(path.join(srv.dir, 'authorized_keys'), readFileSync(encrypted + '.pub'));
    stranger = path.join(dir, 'id_stranger');
    keygen(stranger);
    base = { ...(await resolveHost(srv.alias, { configFile: srv.sshConfig })), identityAgent: 'none' };
  });
  afterAll(async () => {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('authenticates with the configured key file', async () => {
    expect(base.identityFiles).toEqual([srv.userKey]);
    const plan = await prepareAuth(base, { interactive: false });
    expect(plan.username).toBe(srv.user);
    expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
    expect(plan.describe()).toContain(`key file ${srv.userKey}`);
  });

  it('asks for the passphrase of an encrypted key before connecting, with retries', async () => {
    const calls: Array<[string, boolean | undefined]> = [];
    const prompt: AuthPrompt = {
      passphrase: async (keyPath, retry) => {
        calls.push([keyPath, retry]);
        return calls.length === 1 ? 'wrong' : passphrase;
      },
    };
    const plan = await prepareAuth({ ...base, identityFiles: [encrypted] }, { interactive: true, prompt });
    expect(calls).toEqual([
      [encrypted, false],
      [encrypted, true],
    ]);
    expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
  });

  it('skips a key whose passphrase prompt is declined', async () => {
    const plan = await prepareAuth({ ...base, identityFiles: [encrypted] }, { interactive: true, prompt: { passphrase: async () => undefined } });
    const r = await connect(srv, { username: plan.username, authHandler: plan.handler });
    expect(r.ok).toBe(false);
    expect(plan.failure(!r.ok && r.err)).toMatchObject({ code: 'E_AUTH' });
    expect(plan.describe()).toContain('no passphrase given');
  });

  it('without a terminal, an encrypted key is skipped and the failure says why (E_PASSPHRASE)', async () => {
    const plan = await prepareAuth({ ...base, identityFiles: [stranger, encrypted] }, { interactive: false, prompt: never });
    const r = await connect(srv, { username: plan.username, authHandler: plan.handler });
    expect(r.ok).toBe(false);
    const err = plan.failure(!r.ok && r.err);
    expect(err).toBeInstanceOf(WsyncError);
    expect(err!.code).toBe('E_PASSPHRASE');
    expect(err!.message).toContain(encrypted);
    expect(err!.hint).toMatch(/ssh-agent/);
    expect(err!.hint).toMatch(/ssh-add/);
    expect(plan.describe()).toContain(`key file ${stranger}`);
    // BatchMode in the config means the same even when a prompt is available.
    const batch = await prepareAuth({ ...base, batchMode: true, identityFiles: [encrypted] }, { interactive: true, prompt: never });
    expect(batch.describe()).toContain(`not usable without a passphrase: ${encrypted}`);
  });

  it('-i is offered first', async () => {
    const plan = await prepareAuth({ ...base, identityFiles: [stranger, srv.userKey] }, { interactive: false, identity: srv.userKey });
    expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
    expect(plan.describe()).toBe(`tried key file ${srv.userKey} (${(await keyDesc(srv.userKey))}); no ssh-agent`);
  });

  it('reports non-authentication errors as not its business', async () => {
    const plan = await prepareAuth(base, { interactive: false });
    const err = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(plan.failure(err)).toBeUndefined();
  });

  describe('with a real ssh-agent holding 8 unrelated keys and the right one', () => {
    let agent: ChildProcess;
    let sock: string;

    beforeAll(async () => {
      sock = path.join(dir, 'agent.sock');
      agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      const env = { ...process.env, SSH_AUTH_SOCK: sock };
      for (let i = 0; i < 8; i++) {
        const k = path.join(dir, `unrelated${i}`);
        keygen(k);
        execFileSync('ssh-add', ['-q', k], { env, stdio: 'ignore' });
      }
      execFileSync('ssh-add', ['-q', srv.userKey], { env, stdio: 'ignore' });
      // The encrypted key goes in through a decrypted copy, as `ssh-add` after typing the passphrase would.
      const decrypted = path.join(dir, 'decrypted');
      copyFileSync(encrypted, decrypted);
      execFileSync('ssh-keygen', ['-q', '-p', '-P', passphrase, '-N', '', '-f', decrypted], { stdio: 'ignore' });
      execFileSync('ssh-add', ['-q', decrypted], { env, stdio: 'ignore' });
      expect(execFileSync('ssh-add', ['-l'], { env, encoding: 'utf8' }).trim().split('\n')).toHaveLength(10);
    });
    afterAll(() => {
      agent?.kill();
    });

    it('ssh2 alone walks through the agent and hits MaxAuthTries (the problem being solved)', async () => {
      const before = srv.log().length;
      const r = await connect(srv, { username: srv.user, agent: sock });
      expect(failedPublickeys(srv.log().slice(before))).toBe(6);
      expect(r.ok).toBe(false);
      expect(!r.ok && r.err.message).toMatch(/too many authentication failures/i);
    });

    it('offers the agent key matching the IdentityFile first', async () => {
      const plan = await prepareAuth({ ...base, identitiesOnly: false, identityAgent: sock }, { interactive: false, prompt: never });
      const before = srv.log().length;
      expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
      expect(failedPublickeys(srv.log().slice(before))).toBe(0);
      expect(plan.describe()).toMatch(new RegExp(`^tried agent key for ${srv.userKey} \\(ssh-ed25519 SHA256:[^)]+\\)$`));
    });

    it('uses SSH_AUTH_SOCK when the config names no agent', async () => {
      const saved = process.env.SSH_AUTH_SOCK;
      process.env.SSH_AUTH_SOCK = sock;
      try {
        const host = { ...base };
        delete host.identityAgent;
        const plan = await prepareAuth(host, { interactive: false });
        expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
        expect(plan.describe()).toMatch(/^tried agent key for /);
      } finally {
        if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
        else process.env.SSH_AUTH_SOCK = saved;
      }
    });

    it('matches an IdentityFile that exists only as a .pub, or only as an encrypted key without .pub', async () => {
      const pubOnly = path.join(dir, 'pub-only');
      copyFileSync(srv.userKey + '.pub', pubOnly + '.pub');
      const encNoPub = path.join(dir, 'enc-no-pub');
      copyFileSync(encrypted, encNoPub);
      for (const file of [pubOnly, encNoPub]) {
        const plan = await prepareAuth({ ...base, identityFiles: [file], identityAgent: sock }, { interactive: false, prompt: never });
        expect(await connect(srv, { username: plan.username, authHandler: plan.handler }), file).toEqual({ ok: true });
        expect(plan.describe()).toMatch(new RegExp(`^tried agent key for ${file} `));
      }
    });

    it('an encrypted key held by the agent needs no terminal', async () => {
      const plan = await prepareAuth({ ...base, identityFiles: [encrypted], identityAgent: sock }, { interactive: false, prompt: never });
      expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
    });

    it('IdentitiesOnly keeps the other agent keys out', async () => {
      const plan = await prepareAuth({ ...base, identitiesOnly: true, identityFiles: [stranger], identityAgent: sock }, { interactive: false });
      const r = await connect(srv, { username: plan.username, authHandler: plan.handler });
      expect(r.ok).toBe(false);
      const err = plan.failure(!r.ok && r.err);
      expect(err?.code).toBe('E_AUTH');
      expect(plan.describe()).toMatch(new RegExp(`^tried key file ${stranger} \\([^)]*\\)$`));
    });

    it('an unreachable agent is noted, not fatal', async () => {
      const plan = await prepareAuth({ ...base, identityAgent: path.join(dir, 'no-such.sock') }, { interactive: false });
      expect(await connect(srv, { username: plan.username, authHandler: plan.handler })).toEqual({ ok: true });
      expect(plan.describe()).toContain('unavailable');
    });
  });
});

async function keyDesc(file: string): Promise<string> {
  const out = execFileSync('ssh-keygen', ['-l', '-f', file + '.pub'], { encoding: 'utf8' }).split(/\s+/);
  return `ssh-ed25519 ${out[1]}`;
}

describe('agentSocketFor', () => {
  it('follows IdentityAgent, then SSH_AUTH_SOCK', () => {
    const saved = process.env.SSH_AUTH_SOCK;
    try {
      process.env.SSH_AUTH_SOCK = '/env/sock';
      expect(agentSocketFor({ identityAgent: 'none' })).toBeUndefined();
      expect(agentSocketFor({ identityAgent: '/cfg/sock' })).toBe('/cfg/sock');
      expect(agentSocketFor({})).toBe('/env/sock');
      delete process.env.SSH_AUTH_SOCK;
      expect(agentSocketFor({}, 'linux')).toBeUndefined();
      // Windows: the pipe OpenSSH's agent service listens on (ssh2's agent code talks to a pipe like to a socket).
      expect(agentSocketFor({}, 'win32')).toBe('\\\\.\\pipe\\openssh-ssh-agent');
      process.env.SSH_AUTH_SOCK = '/env/sock';
      expect(agentSocketFor({}, 'win32')).toBe('/env/sock');
    } finally {
      if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
      else process.env.SSH_AUTH_SOCK = saved;
    }
  });
});

describe('hidden input line editing', () => {
  const feed = (...chunks: string[]) => chunks.reduce<HiddenInputState>((s, c) => feedHiddenInput(s, c), { text: '', done: false });
  it('handles enter, backspace, kill-line, EOF and interrupt', () => {
    expect(feed('sec', 'ret\r')).toEqual({ text: 'secret', done: true, end: 'enter' });
    expect(feed('abx\x7f', 'c\n')).toEqual({ text: 'abc', done: true, end: 'enter' });
    expect(feed('wrong\x15right\r')).toMatchObject({ text: 'right', end: 'enter' });
    expect(feed('pässwörd\b\r')).toMatchObject({ text: 'pässwör' });
    expect(feed('\x04')).toMatchObject({ done: true, end: 'eof' });
    expect(feed('ab\x04c\r')).toMatchObject({ text: 'abc', end: 'enter' });
    expect(feed('ab\x03')).toMatchObject({ text: '', done: true, end: 'interrupt' });
  });
});

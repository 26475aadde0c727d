import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { resolveHost, type ResolvedHost } from './config.js';
import { WsyncError } from '../errors.js';

const hasSsh = (() => {
  try {
    execFileSync('ssh', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const home = os.userInfo().homedir;
const me = os.userInfo().username;

let dir: string;
let cfg: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'wsync-sshcfg-'));
  mkdirSync(path.join(dir, 'conf.d'));
  process.env.WSYNC_TEST_KEYDIR = path.join(dir, 'envkeys');
  writeFileSync(
    path.join(dir, 'conf.d', '10-alpha.conf'),
    ['Host alpha', '  HostName alpha.example.net', '  Port 2022', '  User alice', 'Host *.example.org', '  StrictHostKeyChecking no', ''].join('\n'),
  );
  writeFileSync(path.join(dir, 'conf.d', '.hidden.conf'), 'Host alpha\n  Port 9999\n');
  writeFileSync(path.join(dir, 'conf.d', 'ignored.txt'), 'Host alpha\n  Port 9998\n');
  writeFileSync(
    path.join(dir, 'db-extra.conf'),
    ['User dbadmin', `IdentityFile ${dir}/keys/db_%h_%p`, 'Host db-special', '  ServerAliveInterval 30', ''].join('\n'),
  );
  writeFileSync(path.join(dir, 'never.conf'), 'Port 4444\nHost *\n  User never\n');
  cfg = path.join(dir, 'ssh_config');
  writeFileSync(
    cfg,
    [
      '# top-level settings apply to every host',
      `Include ${dir}/conf.d/*.conf`,
      'ServerAliveCountMax 5',
      '',
      'Host web? !webx',
      '  HostName %h.internal.example.com',
      '  User deploy',
      `  IdentityFile ${dir}/keys/id_%r_%h`,
      '  IdentityFile ~/.ssh/id_web',
      '  IdentityFile ${WSYNC_TEST_KEYDIR}/k_%L_%C',
      '  ProxyJump jumpuser@bastion.example.com:2222,inner',
      '  UserKnownHostsFile ~/.ssh/kh_%C %d/kh_%i_%l_%u',
      '',
      'Host db-*',
      '  HostName 10.1.2.3',
      '  Port 2200',
      '  IdentitiesOnly yes',
      `  Include ${dir}/db-extra.conf`,
      '  StrictHostKeyChecking accept-new',
      '',
      'Host nomatch-*',
      `  Include ${dir}/never.conf`,
      '',
      'Host Staging',
      '  HostName STAGING.Example.COM',
      '  ProxyCommand ssh -W %h:%p gateway',
      '  ProxyJump ignored-because-command-came-first',
      '  UserKnownHostsFile ~/.ssh/kh_%h_%p %d/kh2_%k',
      '  HostKeyAlias StagingAlias',
      '  IdentityAgent ~/agent-%u.sock',
      '',
      'Host agentless',
      '  IdentityAgent none',
      '  GlobalKnownHostsFile none',
      '  BatchMode yes',
      '',
      'Host envagent',
      '  IdentityAgent $WSYNC_TEST_KEYDIR',
      '  ProxyJump none',
      '  ProxyCommand nc %h %p',
      '',
      'Match user deploy originalhost web*',
      '  ServerAliveInterval 45',
      '',
      'Match localuser nobody-at-all',
      '  Port 1',
      '',
      'Match host *.internal.example.com',
      '  ConnectTimeout 1m30s',
      '  Compression yes',
      '',
      'Host *',
      '  IdentityFile %d/.ssh/wsync_%n_%p',
      '  HashKnownHosts no',
      '  PasswordAuthentication no',
      '',
    ].join('\n'),
  );
});

afterAll(() => {
  delete process.env.WSYNC_TEST_KEYDIR;
  rmSync(dir, { recursive: true, force: true });
});

const cases: Array<{ alias: string; user?: string; port?: number }> = [
  { alias: 'web1' },
  { alias: 'web' },
  { alias: 'webx' },
  { alias: 'web1', user: 'bob', port: 2022 },
  { alias: 'db-main' },
  { alias: 'db-special' },
  { alias: 'nomatch' },
  { alias: 'Staging' },
  { alias: 'staging' },
  { alias: 'alpha' },
  { alias: 'alpha', port: 23 },
  { alias: 'foo.example.org' },
  { alias: 'agentless' },
  { alias: 'envagent' },
  { alias: '10.9.8.7' },
  { alias: 'MixedCase.Host' },
];

describe('resolveHost: the ssh-config fallback agrees with ssh -G', () => {
  it.runIf(hasSsh).each(cases)('$alias user=$user port=$port', async (c) => {
    const viaSsh = await resolveHost(c.alias, { configFile: cfg, user: c.user, port: c.port, useSshBinary: true });
    const viaParser = await resolveHost(c.alias, { configFile: cfg, user: c.user, port: c.port, useSshBinary: false });
    expect(viaParser).toEqual(viaSsh);
  });

  it.runIf(hasSsh)('agrees for the default files (~/.ssh/config and the system-wide ssh_config)', async () => {
    const viaSsh = await resolveHost('plain-host', { useSshBinary: true });
    const viaParser = await resolveHost('plain-host', { useSshBinary: false });
    expect(viaParser).toEqual(viaSsh);
  });
});

describe('resolveHost: values', () => {
  // Checked on the fallback so the expectations hold on machines without ssh; the block above ties it to ssh -G.
  const resolve = (alias: string, extra: { user?: string; port?: number } = {}) =>
    resolveHost(alias, { configFile: cfg, useSshBinary: false, ...extra });

  it('applies Host blocks, wildcards, tokens and ProxyJump', async () => {
    const h = await resolve('web1');
    const hash = (jump: string) =>
      createHash('sha1').update(os.hostname()).update('web1.internal.example.com').update('22').update('deploy').update(jump).digest('hex');
    expect(h).toMatchObject<Partial<ResolvedHost>>({
      alias: 'web1',
      hostname: 'web1.internal.example.com',
      port: 22,
      user: 'deploy',
      identitiesOnly: false,
      proxyJump: 'jumpuser@bastion.example.com:2222,inner',
      connectTimeout: 90,
      compression: true,
      serverAliveInterval: 45,
      serverAliveCountMax: 5,
      passwordAuthentication: false,
      strictHostKeyChecking: 'ask',
    });
    expect([hash('inner'), hash('')].map((x) => `${home}/.ssh/kh_${x}`)).toContain(h.userKnownHostsFiles[0]);
    expect(h.userKnownHostsFiles[1]).toBe(`${home}/kh_${os.userInfo().uid}_${os.hostname()}_${me}`);
    expect(h.identityFiles.slice(0, 2)).toEqual([`${dir}/keys/id_deploy_web1.internal.example.com`, `${home}/.ssh/id_web`]);
    expect([hash('inner'), hash('')].map((x) => `${dir}/envkeys/k_${os.hostname().split('.')[0]}_${x}`)).toContain(h.identityFiles[2]);
    expect(h.identityFiles[3]).toBe(`${home}/.ssh/wsync_web1_22`);
    expect(h.proxyCommand).toBeUndefined();
  });

  it("reads '?' as exactly one character (ssh-config's own glob would accept 'web')", async () => {
    const h = await resolve('web');
    expect(h.hostname).toBe('web');
    expect(h.proxyJump).toBeUndefined();
  });

  it('lets -l and -p win over the config', async () => {
    const h = await resolve('alpha', { user: 'root2', port: 23 });
    expect(h).toMatchObject({ hostname: 'alpha.example.net', port: 23, user: 'root2' });
    expect((await resolve('alpha')).port).toBe(2022);
  });

  it('follows Include inside a Host block and re-opens the block after it', async () => {
    const h = await resolve('db-main');
    expect(h).toMatchObject({ hostname: '10.1.2.3', port: 2200, user: 'dbadmin', identitiesOnly: true, strictHostKeyChecking: 'accept-new' });
    expect(h.identityFiles[0]).toBe(`${dir}/keys/db_10.1.2.3_2200`);
    expect(h.serverAliveInterval).toBeUndefined();
    expect((await resolve('db-special')).serverAliveInterval).toBe(30);
  });

  it('ignores an Include inside a Host block that does not match', async () => {
    const h = await resolve('nomatch');
    expect(h.port).toBe(22);
    expect(h.user).toBe(me);
  });

  it('skips dotfiles in Include globs and uses first-wins across included files', async () => {
    expect((await resolve('alpha')).user).toBe('alice');
    expect((await resolve('foo.example.org')).strictHostKeyChecking).toBe('no');
  });

  it('handles ProxyCommand/ProxyJump precedence, HostKeyAlias, IdentityAgent and known_hosts tokens', async () => {
    const h = await resolve('Staging');
    expect(h).toMatchObject({
      hostname: 'staging.example.com',
      proxyCommand: 'ssh -W %h:%p gateway',
      hostKeyAlias: 'stagingalias',
      identityAgent: `${home}/agent-${me}.sock`,
      userKnownHostsFiles: [`${home}/.ssh/kh_staging.example.com_22`, `${home}/kh2_stagingalias`],
    });
    expect(h.proxyJump).toBeUndefined();
    // Host matching is case-sensitive in OpenSSH.
    expect((await resolve('staging')).proxyCommand).toBeUndefined();
    const a = await resolve('agentless');
    expect(a).toMatchObject({ identityAgent: 'none', globalKnownHostsFiles: [], batchMode: true, serverAliveInterval: 300 });
    const e = await resolve('envagent');
    expect(e).toMatchObject({ identityAgent: process.env.WSYNC_TEST_KEYDIR, proxyCommand: 'nc %h %p' });
  });

  it('fills OpenSSH defaults', async () => {
    const h = await resolveHost('MixedCase.Host', { configFile: path.join(dir, 'conf.d', 'ignored.txt'), useSshBinary: false });
    expect(h).toEqual({
      alias: 'MixedCase.Host',
      hostname: 'mixedcase.host',
      port: 22,
      user: me,
      identityFiles: ['id_rsa', 'id_ecdsa', 'id_ecdsa_sk', 'id_ed25519', 'id_ed25519_sk', 'id_xmss', 'id_dsa'].map((f) => `${home}/.ssh/${f}`),
      identitiesOnly: false,
      userKnownHostsFiles: [`${home}/.ssh/known_hosts`, `${home}/.ssh/known_hosts2`],
      globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
      strictHostKeyChecking: 'ask',
      hashKnownHosts: false,
      serverAliveCountMax: 3,
      batchMode: false,
      compression: false,
      passwordAuthentication: true,
    });
  });

  it('rejects aliases that ssh would take for options, and broken files', async () => {
    await expect(resolveHost('-oProxyCommand=touch /tmp/x', { useSshBinary: false })).rejects.toMatchObject({ code: 'E_TARGET' });
    for (const useSshBinary of hasSsh ? [true, false] : [false]) {
      const err = await resolveHost('x', { configFile: path.join(dir, 'missing'), useSshBinary }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WsyncError);
      expect((err as WsyncError).code).toBe('E_SSH_CONFIG');
    }
    const bad = path.join(dir, 'bad.conf');
    writeFileSync(bad, 'Host x\n  IdentityFile /k/%q\n');
    await expect(resolveHost('x', { configFile: bad, useSshBinary: false })).rejects.toMatchObject({ code: 'E_SSH_CONFIG' });
  });

  it('falls back to the parser when the ssh on PATH cannot do -G, unless ssh was asked for', async () => {
    const bin = path.join(dir, 'fake-bin');
    mkdirSync(bin);
    writeFileSync(path.join(bin, 'ssh'), '#!/bin/sh\necho "unknown option -- G" >&2\necho "usage: ssh [-46]" >&2\nexit 255\n', { mode: 0o755 });
    const saved = process.env.PATH;
    process.env.PATH = `${bin}${path.delimiter}${saved ?? ''}`;
    try {
      expect((await resolveHost('alpha', { configFile: cfg })).hostname).toBe('alpha.example.net');
      await expect(resolveHost('alpha', { configFile: cfg, useSshBinary: true })).rejects.toMatchObject({ code: 'E_SSH_CONFIG' });
    } finally {
      process.env.PATH = saved;
    }
  });
});

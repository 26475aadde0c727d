import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { startSshd, type TestServer } from '../support/sshd.js';

describe('test sshd harness', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startSshd();
  });
  afterAll(async () => srv?.stop());

  it('accepts the OpenSSH client with the test key and known_hosts', () => {
    const out = execFileSync('ssh', ['-F', srv.sshConfig, '-o', 'BatchMode=yes', srv.alias, 'echo', 'hello'], {
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('hello');
  });
});

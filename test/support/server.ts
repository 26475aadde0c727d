/** A real sshd and a scratch directory for one describe block: started before its tests, removed after. */
import { beforeAll, afterAll } from 'vitest';
import { rmSync } from 'node:fs';
import { startSshd, type TestServer } from './sshd.js';
import { tempDir } from './trees.js';

export function useServer(prefix: string): { readonly srv: TestServer; readonly work: string } {
  let srv: TestServer | undefined;
  let work: string | undefined;
  beforeAll(async () => {
    srv = await startSshd();
    work = tempDir(prefix);
  });
  afterAll(async () => {
    await srv?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });
  return {
    get srv() {
      if (!srv) throw new Error('sshd not started yet');
      return srv;
    },
    get work() {
      if (!work) throw new Error('work dir not made yet');
      return work;
    },
  };
}

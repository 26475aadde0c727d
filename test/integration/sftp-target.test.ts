import { defineSyncSuite } from './sync-suite.js';
import { startSshd } from '../support/sshd.js';

defineSyncSuite('SFTP to a real OpenSSH sshd', async () => {
  const srv = await startSshd();
  return {
    spec: (dir) => `${srv.alias}:${dir}`,
    options: { sshConfig: srv.sshConfig },
    stop: () => srv.stop(),
  };
});

defineSyncSuite('SFTP through ssh://user@host:port with one channel', async () => {
  const srv = await startSshd();
  return {
    spec: (dir) => `ssh://${srv.user}@127.0.0.1:${srv.port}${dir}`,
    options: { sshConfig: srv.sshConfig, identity: srv.userKey, channels: 1, concurrency: 8 },
    stop: () => srv.stop(),
  };
});

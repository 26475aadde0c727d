import { defineGitSuite } from './git-suite.js';
import { startSshd } from '../support/sshd.js';

defineGitSuite('SFTP to a real OpenSSH sshd', async () => {
  const srv = await startSshd();
  return {
    spec: (dir) => `${srv.alias}:${dir}`,
    options: { sshConfig: srv.sshConfig, remoteName: 'local' },
    stop: () => srv.stop(),
  };
});

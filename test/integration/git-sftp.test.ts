import { defineGitSuite } from './git-suite.js';
import { startSshd } from '../support/sshd.js';

defineGitSuite('SFTP to a real OpenSSH sshd', async () => {
  const srv = await startSshd();
  return {
    spec: (dir) => `${srv.alias}:${dir}`,
    options: { sshConfig: srv.sshConfig, remoteName: 'local' },
    copyData: true,
    stop: () => srv.stop(),
  };
});

// OpenSSH before 9.0 (Ubuntu 22.04 has 8.9) has no copy-data: a new work tree's files are uploaded instead.
defineGitSuite('SFTP to an sshd without copy-data', async () => {
  const srv = await startSshd({ sftpFlags: '-P copy-data' });
  return {
    spec: (dir) => `${srv.alias}:${dir}`,
    options: { sshConfig: srv.sshConfig, remoteName: 'local' },
    copyData: false,
    stop: () => srv.stop(),
  };
});

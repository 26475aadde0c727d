/**
 * What an SFTP server does where servers differ, found by trying it in a scratch directory: the table
 * `wsync doctor HOST:PATH` prints. The transport decides the same things by itself (SftpTransport.linkQuirks,
 * followsLinks); this asks every question at once, to show them.
 */
import type { SftpChannel } from './channel.js';
import { sftpCode } from './channel.js';

export interface ServerReport {
  /** The software part of the server's identification string. */
  software: string;
  /** SFTP extensions the server named, with their versions. */
  extensions: Record<string, string>;
  limits: { maxRead: number; maxWrite: number; maxOpenHandles: number; announced: boolean };
  /** SSH connections and SFTP channels the transport uses. */
  connections: number;
  channels: number;
  /** Each answer, or why it could not be had. */
  symlinkOrder: 'openssh' | 'rfc' | string;
  readlink: 'verbatim' | 'joined onto the link directory' | string;
  /** LSTAT and RENAME on a path that is a symlink to an existing file act on that file. */
  followsLinks: boolean | string;
  /** The status a no-replace rename answers when the name is taken (OpenSSH: 4, FAILURE). */
  renameExistsStatus: number | string;
  /** Opening an existing file in append mode. */
  appendExisting: 'allowed' | 'refused' | string;
}

const errText = (err: unknown) => (err as Error)?.message ?? String(err);
const isLink = (mode: number | undefined) => ((mode ?? 0) & 0o170000) === 0o120000;

/**
 * Probes `dir` (absolute, existing, empty, ours): every name made there is removed again.
 */
export async function probeServer(ch: SftpChannel, dir: string): Promise<Omit<ServerReport, 'connections' | 'channels'>> {
  const p = (name: string) => `${dir}/${name}`;
  const report: Omit<ServerReport, 'connections' | 'channels'> = {
    software: ch.serverSoftware ?? 'unknown',
    extensions: { ...ch.extensions },
    limits: { maxRead: ch.maxRead, maxWrite: ch.maxWrite, maxOpenHandles: ch.maxOpenHandles, announced: ch.has('limits@openssh.com') },
    symlinkOrder: 'unknown',
    readlink: 'unknown',
    followsLinks: 'unknown',
    renameExistsStatus: 'unknown',
    appendExisting: 'unknown',
  };
  const made: string[] = [];
  const touch = async (name: string, data = 'x') => {
    const h = await ch.open(p(name), 'w');
    made.push(name);
    await ch.write(h, Buffer.from(data), 0);
    await ch.close(h);
  };
  try {
    // SSH_FXP_SYMLINK's order: a link between two names here, both absolute, so that either order lands here.
    let swap: boolean | undefined;
    try {
      made.push('a', 'b');
      await ch.symlink(p('b'), p('a'));
      const [atA, atB] = await Promise.all([ch.lstat(p('a')).then((s) => isLink(s.mode), () => false), ch.lstat(p('b')).then((s) => isLink(s.mode), () => false)]);
      if (atA !== atB) swap = atB;
      report.symlinkOrder = swap === undefined ? 'no link was made' : isOpenSshOrder(ch.serverSoftware, swap) ? 'openssh (target first)' : 'rfc (link first)';
    } catch (err) {
      report.symlinkOrder = `refused: ${errText(err)}`;
    }
    // The other questions make links: only in the order found (another could make one outside this directory).
    if (swap === undefined) return report;
    // READLINK of a link with a relative target.
    try {
      made.push('c');
      await ch.symlink('rel-target', p('c'), swap);
      const back = await ch.readlink(p('c'));
      report.readlink = back === 'rel-target' ? 'verbatim' : back === p('rel-target') ? 'joined onto the link directory' : `rewritten (${back})`;
    } catch (err) {
      report.readlink = `failed: ${errText(err)}`;
    }
    // A link to an existing file: does LSTAT see the link, and does RENAME move the link or the file?
    try {
      await touch('f');
      made.push('l', 'm');
      await ch.symlink('f', p('l'), swap);
      const st = await ch.lstat(p('l'));
      await ch.renameNoReplace(p('l'), p('m'));
      const fileStill = await ch.lstat(p('f')).then(() => true, () => false);
      report.followsLinks = !isLink(st.mode) || !fileStill;
    } catch (err) {
      report.followsLinks = `failed: ${errText(err)}`;
    }
    // A no-replace rename onto a taken name.
    try {
      await touch('g');
      await touch('h');
      await ch.renameNoReplace(p('g'), p('h')).then(
        () => (report.renameExistsStatus = 'replaced the file (no way to refuse)'),
        (err) => (report.renameExistsStatus = sftpCode(err) ?? errText(err)),
      );
    } catch (err) {
      report.renameExistsStatus = `failed: ${errText(err)}`;
    }
    try {
      await touch('j');
      const h = await ch.open(p('j'), 'a').then(
        (handle) => handle,
        () => undefined,
      );
      report.appendExisting = h ? 'allowed' : 'refused';
      if (h) await ch.close(h);
    } catch (err) {
      report.appendExisting = `failed: ${errText(err)}`;
    }
  } finally {
    await Promise.all(made.map((n) => ch.unlink(p(n)).catch(() => undefined)));
  }
  return report;
}

/** The probe's order is OpenSSH's when ssh2 sends that one to this server (it names itself so) unswapped, or the RFC's swapped. */
function isOpenSshOrder(software: string | undefined, swap: boolean): boolean {
  const ssh2SendsOpenSsh = /^(OpenSSH|dropbear)/.test(software ?? '');
  return ssh2SendsOpenSsh !== swap;
}

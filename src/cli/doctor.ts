/**
 * `wsync doctor <target>`: what the server at a remote target is and does where SFTP servers differ (the quirk
 * table wsync goes by), tried out in a scratch directory under the target's `.wsync/` (removed again). Missing
 * extensions are listed with what they cost; wsync works without them, so the exit is 0 whenever the server answered.
 */
import type { ServerReport } from '../transport/sftp/quirks.js';
import { WsyncError } from '../errors.js';
import { parseTarget } from '../target.js';
import { connectionArgs, isInteractive, ttyHostKeyPrompt } from './prompt.js';

export interface DoctorArgs {
  remote: string;
  json: boolean;
  'ssh-config'?: string;
  identity?: string;
  'accept-new': boolean;
  compress?: boolean;
  channels: number;
}

/** What each extension gives wsync, and what happens without it. */
const EXTENSIONS: Array<[string, string, string]> = [
  ['posix-rename@openssh.com', 'files replace each other atomically', 'a file is replaced by rename, refused over an existing name: no in-place updates'],
  ['hardlink@openssh.com', 'a replaced file is checked with no window (a link aside)', 'a replaced file is checked one round trip before the rename'],
  ['fsync@openssh.com', 'each file is on disk before it is renamed in', 'a crash of the server can leave a file renamed in but not written'],
  ['copy-data', 'deltas are rebuilt on the server', 'an edited big file is sent whole'],
  ['statvfs@openssh.com', 'a full disk is named as such', 'a full disk shows as a bare failure'],
  ['limits@openssh.com', 'request sizes as the server allows', 'requests kept to 32 KiB'],
];

export async function runDoctorCommand(a: DoctorArgs): Promise<number> {
  const t = parseTarget(a.remote);
  if (t.kind === 'local') throw new WsyncError('E_USAGE', `${a.remote} is a local path: doctor looks at an SFTP server`, { hint: 'name a remote target: host:path' });
  const interactive = isInteractive();
  const { openTarget } = await import('../transport/open.js');
  const transport = await openTarget(t, {
    ...connectionArgs(a),
    interactive,
    hostKeyPrompt: interactive ? ttyHostKeyPrompt : undefined,
    authPrompt: interactive ? (await import('../ssh/auth.js')).ttyPassphrasePrompt() : undefined,
  });
  try {
    const r = await (transport as unknown as { serverReport(): Promise<ServerReport> }).serverReport();
    const missing = EXTENSIONS.filter(([ext]) => r.extensions[ext] === undefined);
    const unusual = r.followsLinks === true || r.readlink !== 'verbatim';
    if (a.json) {
      process.stdout.write(JSON.stringify({ type: 'doctor', target: transport.describe(), ...r, missing: missing.map(([ext, , cost]) => ({ extension: ext, cost })) }) + '\n');
    } else {
      const rows: Array<[string, string]> = [
        ['target', transport.describe()],
        ['server', r.software],
        ['connections', `${r.connections} (${r.channels} SFTP channels)`],
        ['request sizes', `reads ${r.limits.maxRead} B, writes ${r.limits.maxWrite} B, ${r.limits.maxOpenHandles} open files${r.limits.announced ? ' (announced)' : ' (assumed: no limits@openssh.com)'}`],
        ['extensions', Object.entries(r.extensions).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'],
        ['symlink order', String(r.symlinkOrder)],
        ['readlink', `${r.readlink}${r.readlink === 'verbatim' ? '' : ': targets are taken from what wsync wrote, other links are reported'}`],
        ['links followed', r.followsLinks === true ? 'yes: LSTAT and RENAME act on what a link points to; wsync makes links in place and removes them before replacing' : r.followsLinks === false ? 'no' : String(r.followsLinks)],
        ['name taken', typeof r.renameExistsStatus === 'number' ? `a no-replace rename answers status ${r.renameExistsStatus}` : String(r.renameExistsStatus)],
        ['append', `${r.appendExisting}${r.appendExisting === 'refused' ? ': appends are written at the end instead, one at a time' : ''}`],
      ];
      for (const [ext, gives, cost] of EXTENSIONS) rows.push([ext, r.extensions[ext] !== undefined ? `yes: ${gives}` : `no: ${cost}`]);
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
      if (unusual) process.stdout.write('\nThis server differs from OpenSSH where noted; wsync works around it.\n');
    }
    return 0;
  } finally {
    await transport.close();
  }
}

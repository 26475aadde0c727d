import { parseTarget, type Target } from '../target.js';
import type { SyncOptions } from '../api.js';
import { LocalTransport } from './local/local.js';
import { SftpTransport } from './sftp/sftp.js';
import type { Transport } from './types.js';

/** A transport for a target: the local filesystem, or SFTP over a new SSH connection (host keys checked). */
export async function openTarget(
  target: Target | string,
  o: Pick<SyncOptions, 'sshConfig' | 'identity' | 'acceptNew' | 'interactive' | 'hostKeyPrompt' | 'authPrompt' | 'channels' | 'compress' | 'useSshBinary'> & {
    onDialing?: () => void;
    /** What the server will send is mostly metadata (a push): worth compressing on a WAN link. */
    compressReplies?: boolean;
    /** zlib level for what we send when compressing. */
    compressLevel?: number;
    /** See ConnectOptions.keepaliveMs. */
    keepaliveMs?: number;
    deadAfterMs?: number;
  },
): Promise<Transport> {
  const t = typeof target === 'string' ? parseTarget(target) : target;
  if (t.kind === 'local') return new LocalTransport(t.path);
  // Loaded on demand: a local target needs none of the SSH code.
  const { connect } = await import('../ssh/connect.js');
  const session = await connect(t.host, {
    configFile: o.sshConfig,
    user: t.user,
    port: t.port,
    identity: o.identity,
    acceptNew: o.acceptNew,
    interactive: o.interactive ?? false,
    hostKeyPrompt: o.hostKeyPrompt,
    authPrompt: o.authPrompt,
    channels: o.channels,
    compress: o.compress === true ? 'on' : o.compress === false ? 'off' : 'auto',
    compressReplies: o.compressReplies,
    compressLevel: o.compressLevel,
    useSshBinary: o.useSshBinary,
    onDialing: o.onDialing,
    keepaliveMs: o.keepaliveMs,
    deadAfterMs: o.deadAfterMs,
  });
  try {
    const root = await SftpTransport.resolveRoot(session.channels[0], t.path);
    const label = `${session.host.user}@${session.host.alias}`;
    const sftp = new SftpTransport(session.channels, root, label, session.close);
    sftp.hooks = session.hooks;
    return sftp;
  } catch (err) {
    await session.close();
    throw err;
  }
}


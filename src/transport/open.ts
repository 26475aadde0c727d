import { parseTarget, type Target } from '../target.js';
import type { SyncOptions } from '../api.js';
import { LocalTransport } from './local/local.js';
import { SftpTransport } from './sftp/sftp.js';
import type { Transport } from './types.js';
import type { ConnectOptions } from '../ssh/connect.js';

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
  const connectOpts: ConnectOptions = {
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
  };
  const session = await connect(t.host, connectOpts);
  const sessions = [session];
  const closeAll = async () => {
    await Promise.all(sessions.map((s) => s.close()));
  };
  try {
    const rootP = SftpTransport.resolveRoot(session.channels[0], t.path);
    // Awaited after the extra connections: not an unhandled rejection meanwhile.
    rootP.catch(() => undefined);
    // A server that serves all channels of a connection in one process (ProFTPD's mod_sftp) is one CPU however
    // many channels there are: the channels are spread over several connections instead. Best effort: opened
    // without asking anything (a key that needs a passphrase typed again is not used), and any that fails is
    // simply not there.
    const perConnection = serialisesConnection(session.channels[0].serverSoftware) ? EXTRA_CONNECTION_CHANNELS : 0;
    const extra = perConnection ? Math.min(MAX_CONNECTIONS, Math.ceil(session.channels.length / perConnection)) - 1 : 0;
    const more = await Promise.allSettled(
      Array.from({ length: Math.max(0, extra) }, () =>
        connect(t.host, { ...connectOpts, channels: perConnection, interactive: false, hostKeyPrompt: undefined, authPrompt: undefined, onDialing: undefined }),
      ),
    );
    for (const m of more) if (m.status === 'fulfilled') sessions.push(m.value);
    const root = await rootP;
    const label = `${session.host.user}@${session.host.alias}`;
    // The first connection keeps only as many channels as the others; the rest of its channels are ended.
    const firstChannels = sessions.length > 1 ? session.channels.slice(0, perConnection) : session.channels;
    for (const ch of session.channels.slice(firstChannels.length)) ch.end();
    const sftp = new SftpTransport([...firstChannels, ...sessions.slice(1).flatMap((s) => s.channels)], root, label, closeAll);
    sftp.hooks = session.hooks;
    sftp.connections = sessions.length;
    return sftp;
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/** Servers known to serve every channel of a connection from one process (see openTarget). */
function serialisesConnection(software: string | undefined): boolean {
  return /^mod_sftp/i.test(software ?? '');
}
/** Channels per connection, and connections at most, where a server serialises a connection. */
const EXTRA_CONNECTION_CHANNELS = 2;
const MAX_CONNECTIONS = 4;


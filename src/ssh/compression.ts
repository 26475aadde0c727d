import type { Client, ConnectConfig } from 'ssh2';
import { hookGreeting, narrowCompressionOffer, outgoingDeflater, type HookReport, type OutgoingDeflater } from './ssh2-internals.js';

/**
 * `on` (-z, or `Compression yes` in ssh_config): both directions compressed. `off` (--no-compress): neither.
 * `auto` (default): compressed when the link looks like a WAN link, measured while connecting (see probeCompression).
 */
export type CompressMode = 'auto' | 'on' | 'off';

/**
 * What we send is compressed at zlib level 1: on the 2-core machine the benchmark runs on, ssh2's default level 6
 * made a push of source files CPU-bound at ~4 MB/s of input, while level 1 compresses such files ~2.1× at ~90 MB/s.
 * What the server sends is compressed at the server's own level (OpenSSH: 6).
 */
const SEND_LEVEL = 1;
/**
 * The server's version line arrives ~1.5 RTT after we start to dial (TCP handshake, then the server's first bytes).
 * On a LAN that is a few ms even with sshd forking a session process; from ~20 ms the link is a WAN link, where
 * bandwidth rather than CPU bounds a transfer and 2× fewer bytes is up to 2× faster.
 */
const WAN_GREETING_MS = 20;

const ZLIB_OFFER = ['zlib@openssh.com', 'zlib', 'none'];

export function compressionOffer(mode: CompressMode): Pick<ConnectConfig, 'algorithms'>['algorithms'] | undefined {
  // Auto starts from ssh2's default offer ('none' first: no compression); probeCompression rewrites it once the
  // server's greeting has timed the link, before it goes out.
  return mode === 'on' ? { compress: ZLIB_OFFER as never } : undefined;
}

export interface CompressionProbe {
  /** After 'ready': sets the level of what we send; returns what was decided (SshSession.compression). */
  settle(): CompressionDecision;
}

export interface CompressionDecision {
  /** zlib level chosen for what we send; undefined when the stream is not compressed. */
  level?: number;
  /** Time from dialling to the server's version line, the RTT estimate auto mode decides on. */
  greetingMs?: number;
  /** Live view of what the deflater did (present when it was found). */
  stats?: () => DeflateStats;
}

export interface DeflateStats {
  /** The level in use now: the adaptive policy drops to 0 while the data does not compress. */
  level: number;
  bytesIn: number;
  bytesOut: number;
}

/** Judged per window of this much input. */
const WINDOW = 256 << 10;
/** Input sent stored before level 1 is tried again: doubles while the tries fail, so a long stream of media costs
 * ~2 % of level 1's work, while in a mixed tree a few incompressible files cost little compression. */
const STORED_MIN = 1 << 20;
const STORED_MAX = 16 << 20;
/** Below 3 % saved (already-compressed data; mixed with text it saves more), level 1 buys too little. */
const WORTH_IT = 0.97;

/**
 * Level 1 while the data compresses, stored while it does not: a big media file or an archive would otherwise
 * cost a core at ~50 MB/s for nothing, and on a fast link be the bottleneck. Levels change only between packets,
 * where ssh2 has flushed the stream (Z_PARTIAL_FLUSH) and zlib can switch without emitting anything.
 */
function adaptLevel(z: OutgoingDeflater, start: number): (() => DeflateStats) | undefined {
  const st: DeflateStats = { level: start, bytesIn: 0, bytesOut: 0 };
  let winIn = 0;
  let winOut = 0;
  let storedRun = STORED_MIN;
  let probing = false;
  const watching = z.watch((bytesIn, n) => {
    st.bytesIn += bytesIn;
    st.bytesOut += n;
    winIn += bytesIn;
    winOut += n;
    if (start > 0 && winIn >= (st.level === 0 ? storedRun : WINDOW)) {
      let next = start;
      if (st.level !== 0 && winOut > winIn * WORTH_IT) {
        next = 0;
        storedRun = probing ? Math.min(STORED_MAX, storedRun * 2) : STORED_MIN;
      }
      probing = st.level === 0;
      if (next !== st.level) {
        z.setLevel(next);
        st.level = next;
      }
      winIn = 0;
      winOut = 0;
    }
  });
  return watching ? () => ({ ...st }) : undefined;
}

export interface ProbeOptions {
  /**
   * In auto mode on a WAN link, also have the server compress what it sends. Right for a push, where that is
   * listings and status replies (a no-op push reads ~200 bytes of listing per file); wrong for a pull over a fast
   * link, where the server's level 6 could be slower than the link, and we cannot change its level.
   */
  replies: boolean;
  /** zlib level for what we send when compressing (default 1); small transfers can afford a stronger one. */
  level?: number;
}

/**
 * Call right after `client.connect(cfg)` with the offer from `compressionOffer(mode)`. Auto mode times the server's
 * greeting and, before our key-exchange offer goes out (ssh2 sends it right after the greeting), narrows it: on a
 * WAN link what we send is compressed (and what the server sends, with `replies`), on a LAN nothing is. What we send
 * starts at level 1 and drops to stored while the data does not compress (adaptLevel).
 *
 * Through ssh2's internals (ssh2-internals.ts: the offer, the greeting, the deflater); where they are not the
 * expected shape, auto mode stays with ssh2's default offer (no compression), and -z compresses at ssh2's level.
 * `hooks` records which applied.
 */
export function probeCompression(client: Client, mode: CompressMode, dialStart: number, opts: ProbeOptions, hooks: HookReport = {}): CompressionProbe {
  let greetingMs: number | undefined;
  const wan = () => greetingMs !== undefined && greetingMs >= WAN_GREETING_MS;
  hooks.greeting = hookGreeting(client, () => {
    greetingMs ??= performance.now() - dialStart;
    // Only the delayed variant: nothing is compressed before authentication, when settle() picks the level.
    const z = ['zlib@openssh.com', 'none'];
    if (mode === 'auto' && wan()) hooks.compressionOffer = narrowCompressionOffer(client, z, opts.replies ? z : ['none']);
  });
  return {
    settle: () => {
      const z = outgoingDeflater(client);
      // Only where compression was asked for is a missing deflater a hook that failed.
      if (mode === 'on' || (mode === 'auto' && wan())) hooks.deflater = z !== undefined;
      if (!z || mode === 'off') return { greetingMs };
      const level = mode === 'on' || wan() ? (opts.level ?? SEND_LEVEL) : 0;
      // Nothing has been compressed yet (ssh2 creates the deflater on USERAUTH_SUCCESS, 'ready' follows at once),
      // so changing the parameters cannot split a block.
      z.setLevel(level);
      const stats = adaptLevel(z, level);
      hooks.deflaterWatch = stats !== undefined;
      return { level, greetingMs, stats };
    },
  };
}

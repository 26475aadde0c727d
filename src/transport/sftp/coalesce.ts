import type { SFTPWrapper } from 'ssh2';

interface ProtocolLike {
  channelData(chan: number, data: Buffer): void;
  channelClose(chan: number): void;
}

interface SftpInternals {
  _protocol?: ProtocolLike;
  outgoing?: { id: number; state: string; packetSize: number };
}

/**
 * Packs the SFTP requests issued together on a channel into as few SSH packets as the channel's
 * packet size allows. ssh2 sends every request as its own CHANNEL_DATA packet; a small file's open, write,
 * fsetstat, fsync, close and rename were six packets, each with ~40 bytes of SSH framing, its own random padding,
 * encryption call, compression flush and socket write. Those per-packet costs, not the bytes, were what kept a
 * many-small-files push CPU-bound. SFTP is a byte stream inside the channel, so where one request ends and the
 * next begins does not need to line up with packets.
 *
 * ssh2 has already charged each request to the channel's window when it hands it over, so holding it for a
 * microtask changes when bytes leave, not how many. Anything else ssh2 asks of the protocol for this channel
 * (close) first sends what is held, so nothing overtakes a request. Returns false (and changes nothing) when
 * ssh2's internals are not the expected shape.
 */
export function coalesceRequests(sftp: SFTPWrapper, isLost: () => boolean = () => false, onBroken: (err: unknown) => void = () => undefined): boolean {
  const s = sftp as unknown as SftpInternals;
  const proto = s._protocol;
  const out = s.outgoing;
  if (!proto || !out || typeof proto.channelData !== 'function' || typeof proto.channelClose !== 'function') return false;
  if (!(out.packetSize > 0)) return false;

  let held: Buffer[] = [];
  let heldBytes = 0;
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (held.length === 0) return;
    const data = held.length === 1 ? held[0] : Buffer.concat(held, heldBytes);
    held = [];
    heldBytes = 0;
    // A channel the server closed, or whose connection is gone, fails its pending requests (ssh2 and SftpChannel
    // do); sending into it would throw from this microtask, where nothing could catch it (ssh2's zlib stream is
    // destroyed with the socket: "Invalid Zlib instance").
    if (out.state !== 'open' || isLost()) return;
    try {
      proto.channelData(out.id, data);
    } catch (err) {
      onBroken(err);
    }
  };

  s._protocol = new Proxy(proto, {
    get(target, prop) {
      if (prop === 'channelData') {
        return (chan: number, data: Buffer): void => {
          if (chan !== out.id) {
            flush();
            target.channelData(chan, data);
            return;
          }
          if (heldBytes + data.length > out.packetSize) flush();
          if (data.length >= out.packetSize) {
            target.channelData(chan, data);
            return;
          }
          held.push(data);
          heldBytes += data.length;
          if (!scheduled) {
            scheduled = true;
            // As a microtask: behind the continuations already queued (answers that arrived together wake their
            // files together, and their next requests share packets), but before any synchronous work that follows
            // this turn, such as the local scan, could hold a request back.
            queueMicrotask(flush);
          }
        };
      }
      const v = Reflect.get(target, prop) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        flush();
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as ProtocolLike;
  return true;
}

/**
 * A user-space WAN emulator for the benchmark: a TCP proxy on 127.0.0.1 that adds one-way delay and a bandwidth
 * limit per direction and counts the bytes that cross it. netem needs root + kernel modules we do not have, and a
 * proxy has the advantage that its counters are an independent measure of what each tool put on the wire.
 *
 * Link model, per direction, shared by every connection through the proxy (one physical link, so a tool cannot
 * beat the rate by opening more TCP connections):
 *   - a serializer drains bytes at `rateBitsPerSec` in arrival order across all connections;
 *   - each byte then travels `delayMs` before it is handed to the destination socket.
 * So a byte leaves at  max(arrival, previous byte's serialization end) + size/rate + delay,  which is both
 * "no earlier than arrival + delay" and "no faster than rate", and order within a connection is preserved
 * because that time is monotonic.
 *
 * Bytes are counted when the proxy reads them from the sending socket: that is the payload each tool handed to
 * TCP, independent of when the emulated link delivers it. TCP/IP headers are not included.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface ProxyOptions {
  targetPort: number;
  targetHost?: string;
  /** One-way delay added in each direction; RTT = 2 × delayMs. */
  delayMs: number;
  /** Per-direction bandwidth; 0 or Infinity = unlimited. */
  rateBitsPerSec: number;
  /**
   * Emulate the TCP three-way handshake that loopback skips: the server sees the connection 1.5 RTT after the
   * client connects, and the client sees the server's first bytes no earlier than 2 RTT. Default true.
   */
  handshake?: boolean;
  /** Per connection and direction, stop reading from the sender above this many undelivered bytes. */
  queueLimitBytes?: number;
}

export interface Proxy {
  port: number;
  /** Client → server payload bytes since the last reset. */
  bytesUp(): number;
  /** Server → client payload bytes since the last reset. */
  bytesDown(): number;
  resetCounters(): void;
  /**
   * Milliseconds the client → server link took to serialize the bytes between two cumulative counts (since the
   * last reset): a transfer's steady rate, free of connection set-up and of whatever the tool does before its
   * first byte or after its last. Undefined when fewer than `toBytes` were sent.
   */
  upSpanMs(fromBytes: number, toBytes: number): number | undefined;
  /** Largest number of undelivered bytes any single lane held, for checking that backpressure works. */
  peakQueuedBytes(): number;
  /** Connections accepted since start. */
  connections(): number;
  /** Connections with at least one socket still open; 0 once a tool's bytes have all been delivered. */
  activeConnections(): number;
  close(): Promise<void>;
}

/** Serializer state of one direction of the emulated link; shared by all connections. */
class Link {
  private freeAt = 0;
  bytes = 0;
  /** [cumulative bytes admitted, time the link finishes serializing them], one pair per slice. */
  timeline: number[] = [];
  admitted = 0;

  reset(): void {
    this.bytes = 0;
    this.admitted = 0;
    this.timeline = [];
  }

  /** When the link had finished serializing `n` cumulative bytes. */
  doneAt(n: number): number | undefined {
    for (let i = 0; i < this.timeline.length; i += 2) if (this.timeline[i]! >= n) return this.timeline[i + 1];
    return undefined;
  }
  constructor(
    private readonly bytesPerMs: number,
    readonly delayMs: number,
  ) {}

  /** Reserves serialization time for `len` bytes arriving at `now`; returns when they may be delivered. */
  admit(now: number, len: number, notBefore: number): number {
    const start = Math.max(now, this.freeAt);
    this.freeAt = this.bytesPerMs > 0 ? start + len / this.bytesPerMs : start;
    this.admitted += len;
    this.timeline.push(this.admitted, this.freeAt);
    return Math.max(this.freeAt + this.delayMs, notBefore);
  }
}

interface Pending {
  buf: Buffer;
  dueAt: number;
}

// Slicing big reads keeps pacing smooth: a 64 KiB read is 5 ms at 100 Mbit/s and would otherwise leave in one burst.
const SLICE = 16 * 1024;

/** One direction of one connection: a FIFO between a source socket and a destination socket. */
class Lane {
  private readonly queue: Pending[] = [];
  private head = 0;
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  private srcEnded = false;
  private dstBlocked = false;
  private srcPaused = false;
  private finished = false;

  constructor(
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly link: Link,
    private readonly limit: number,
    /** Earliest delivery time of anything on this lane (handshake emulation). */
    private readonly openAt: number,
    private readonly onPeak: (queued: number) => void,
  ) {
    src.on('data', (chunk: Buffer) => this.onData(chunk));
    src.on('end', () => {
      this.srcEnded = true;
      this.pump();
    });
    dst.on('drain', () => {
      this.dstBlocked = false;
      this.pump();
    });
  }

  private onData(chunk: Buffer): void {
    const now = performance.now();
    this.link.bytes += chunk.length;
    for (let off = 0; off < chunk.length; off += SLICE) {
      const buf = chunk.subarray(off, Math.min(off + SLICE, chunk.length));
      this.queue.push({ buf, dueAt: this.link.admit(now, buf.length, this.openAt) });
    }
    this.queued += chunk.length;
    this.onPeak(this.queued);
    if (this.queued >= this.limit && !this.srcPaused) {
      this.srcPaused = true;
      this.src.pause();
    }
    this.pump();
  }

  private pump(): void {
    if (this.timer || this.finished || this.dst.destroyed) return;
    const now = performance.now();
    const batch: Buffer[] = [];
    let n = 0;
    while (this.head < this.queue.length && !this.dstBlocked) {
      const p = this.queue[this.head]!;
      // Timers can fire a fraction of a millisecond before the wall clock reaches dueAt; never deliver early.
      if (p.dueAt > now) break;
      batch.push(p.buf);
      n += p.buf.length;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (n > 0) {
      this.queued -= n;
      if (!this.dst.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch, n))) this.dstBlocked = true;
      if (this.srcPaused && this.queued < this.limit) {
        this.srcPaused = false;
        this.src.resume();
      }
    }
    if (this.head < this.queue.length) {
      if (!this.dstBlocked) {
        const wait = Math.max(1, Math.ceil(this.queue[this.head]!.dueAt - now));
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, wait);
      }
    } else if (this.srcEnded) {
      this.finished = true;
      this.dst.end();
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.finished = true;
  }
}

export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const delayMs = opts.delayMs;
  const rate = opts.rateBitsPerSec > 0 && Number.isFinite(opts.rateBitsPerSec) ? opts.rateBitsPerSec : 0;
  const bytesPerMs = rate / 8 / 1000;
  // The lane must hold at least what is "on the wire" (rate × delay) or the proxy itself would cap throughput
  // below the configured rate; twice that leaves room for a router-like queue.
  const bdp = bytesPerMs * delayMs;
  const limit = opts.queueLimitBytes ?? Math.max(1 << 20, Math.ceil(2 * bdp));
  const up = new Link(bytesPerMs, delayMs);
  const down = new Link(bytesPerMs, delayMs);
  const handshake = opts.handshake ?? true;
  const live = new Set<net.Socket>();
  const lanes = new Set<Lane>();
  let peak = 0;
  let accepted = 0;
  let active = 0;
  const notePeak = (q: number) => {
    if (q > peak) peak = q;
  };

  // allowHalfOpen: a FIN must not end the other direction before its delayed bytes have been delivered.
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    accepted++;
    active++;
    const t0 = performance.now();
    const upstream = net.connect({
      port: opts.targetPort,
      host: opts.targetHost ?? '127.0.0.1',
      allowHalfOpen: true,
      noDelay: true,
    });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    live.add(client);
    live.add(upstream);
    const upLane = new Lane(client, upstream, up, limit, handshake ? t0 + 3 * delayMs : 0, notePeak);
    const downLane = new Lane(upstream, client, down, limit, handshake ? t0 + 4 * delayMs : 0, notePeak);
    lanes.add(upLane);
    lanes.add(downLane);
    let closed = false;
    const teardown = () => {
      if (!closed) {
        closed = true;
        active--;
      }
      upLane.stop();
      downLane.stop();
      lanes.delete(upLane);
      lanes.delete(downLane);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', teardown);
    upstream.on('error', teardown);
    client.on('close', () => {
      live.delete(client);
      if (!live.has(upstream)) teardown();
    });
    upstream.on('close', () => {
      live.delete(upstream);
      if (!live.has(client)) teardown();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (!addr || typeof addr !== 'object') throw new Error('proxy: no listening address');

  return {
    port: addr.port,
    bytesUp: () => up.bytes,
    bytesDown: () => down.bytes,
    resetCounters: () => {
      up.reset();
      down.reset();
      peak = 0;
    },
    upSpanMs: (fromBytes, toBytes) => {
      const a = up.doneAt(fromBytes);
      const b = up.doneAt(toBytes);
      return a === undefined || b === undefined ? undefined : b - a;
    },
    peakQueuedBytes: () => peak,
    connections: () => accepted,
    activeConnections: () => active,
    close: () =>
      new Promise<void>((resolve) => {
        for (const l of lanes) l.stop();
        for (const s of live) s.destroy();
        server.close(() => resolve());
      }),
  };
}

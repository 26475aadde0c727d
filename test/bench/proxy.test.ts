/**
 * Self-check of the benchmark's WAN proxy: if it under-delays or over-delivers, every benchmark number is wrong.
 */
import { describe, it, expect, afterEach } from 'vitest';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { startProxy, type Proxy } from '../../bench/proxy.js';

// Node timers are scheduled in whole milliseconds and can fire up to ~1 ms before performance.now() says the
// delay has passed; each emulated hop is one timer.
const TIMER_SLACK_MS = 2;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function listen(handler: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
  const a = srv.address();
  if (!a || typeof a !== 'object') throw new Error('no address');
  return a.port;
}

async function proxyTo(port: number, delayMs: number, rateBitsPerSec: number): Promise<Proxy> {
  const p = await startProxy({ targetPort: port, delayMs, rateBitsPerSec });
  cleanups.push(() => p.close());
  return p;
}

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  s.setNoDelay(true);
  await new Promise<void>((r, j) => s.once('connect', () => r()).once('error', j));
  cleanups.push(() => void s.destroy());
  return s;
}

function roundTrip(s: net.Socket, msg: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let got = 0;
    const onData = (d: Buffer) => {
      got += d.length;
      if (got >= msg.length) {
        s.off('data', onData);
        resolve(performance.now() - t0);
      }
    };
    s.on('data', onData);
    s.write(msg);
  });
}

/** A server that hashes everything it receives and answers with one byte once `expect` bytes arrived. */
function sink(expectBytes: number, digests: string[]): (s: net.Socket) => void {
  return (s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d: Buffer) => {
      h.update(d);
      n += d.length;
      if (n === expectBytes) {
        digests.push(h.digest('hex'));
        s.write(Buffer.from([1]));
      }
    });
  };
}

function sendAndWaitAck(s: net.Socket, payload: Buffer): Promise<void> {
  return new Promise((resolve) => {
    s.once('data', () => resolve());
    s.write(payload);
  });
}

describe('bench proxy', () => {
  it('adds the configured delay each way to an echo', async () => {
    const delay = 25;
    const echo = await listen((s) => s.pipe(s));
    const proxy = await proxyTo(echo, delay, 0);
    const s = await connect(proxy.port);
    await roundTrip(s, Buffer.from('warm-up')); // pays the emulated TCP handshake
    proxy.resetCounters();
    const rtts: number[] = [];
    for (let i = 0; i < 5; i++) rtts.push(await roundTrip(s, Buffer.from(`ping ${i}`)));
    for (const rtt of rtts) {
      expect(rtt).toBeGreaterThanOrEqual(2 * delay - TIMER_SLACK_MS);
      expect(rtt).toBeLessThan(2 * delay + 40);
    }
    const sent = 5 * Buffer.byteLength('ping 0');
    expect(proxy.bytesUp()).toBe(sent);
    expect(proxy.bytesDown()).toBe(sent);
  });

  it('emulates the TCP handshake on the first exchange', async () => {
    const delay = 20;
    const echo = await listen((s) => s.pipe(s));
    const proxy = await proxyTo(echo, delay, 0);
    const s = await connect(proxy.port);
    // Connect is instant on loopback; a real client would already have spent 1 RTT, and its first echo costs 2 more.
    expect(await roundTrip(s, Buffer.from('hello'))).toBeGreaterThanOrEqual(4 * delay - 2 * TIMER_SLACK_MS);
  });

  it('limits 5 MB at 40 Mbit/s to >= 1 s, preserves the bytes and counts them exactly', async () => {
    const size = 5_000_000;
    const payload = randomBytes(size);
    const digests: string[] = [];
    const port = await listen(sink(size, digests));
    const proxy = await proxyTo(port, 5, 40e6);
    const s = await connect(proxy.port);
    const t0 = performance.now();
    await sendAndWaitAck(s, payload);
    const secs = (performance.now() - t0) / 1000;
    expect(secs).toBeGreaterThanOrEqual((size * 8) / 40e6);
    expect(secs).toBeLessThan(3);
    expect(digests).toEqual([createHash('sha256').update(payload).digest('hex')]);
    expect(proxy.bytesUp()).toBe(size);
    expect(proxy.bytesDown()).toBe(1);
    // Backpressure: the proxy stops reading instead of buffering the whole 5 MB.
    expect(proxy.peakQueuedBytes()).toBeLessThanOrEqual((1 << 20) + 64 * 1024);
  });

  it('shares the rate between parallel connections like one link', async () => {
    const size = 2_500_000;
    const digests: string[] = [];
    const port = await listen(sink(size, digests));
    const proxy = await proxyTo(port, 5, 40e6);
    const a = await connect(proxy.port);
    const b = await connect(proxy.port);
    const t0 = performance.now();
    await Promise.all([sendAndWaitAck(a, randomBytes(size)), sendAndWaitAck(b, randomBytes(size))]);
    const secs = (performance.now() - t0) / 1000;
    expect(secs).toBeGreaterThanOrEqual((2 * size * 8) / 40e6);
    expect(digests).toHaveLength(2);
    expect(proxy.bytesUp()).toBe(2 * size);
  });

  it('delivers data sent just before a half-close', async () => {
    const size = 300_000;
    const payload = randomBytes(size);
    const received = new Promise<Buffer>((resolve) => {
      void listen((s) => {
        const parts: Buffer[] = [];
        s.on('data', (d: Buffer) => parts.push(d));
        s.on('end', () => {
          s.end('bye');
          resolve(Buffer.concat(parts));
        });
      }).then(async (port) => {
        const proxy = await proxyTo(port, 10, 20e6);
        const c = await connect(proxy.port);
        c.end(payload);
      });
    });
    expect((await received).equals(payload)).toBe(true);
  });
});

import { describe, it, expect } from 'vitest';
import { CommitWindow, LinkMeter } from './window.js';

const flush = () => new Promise((r) => setImmediate(r));

describe('CommitWindow', () => {
  it('admits files in the order they ask while under the bound; the last one admitted may pass it', async () => {
    const meter = new LinkMeter();
    meter.sample(10);
    const w = new CommitWindow(meter);
    const admitted: string[] = [];
    const ask = (name: string, bytes: number) => w.enter(bytes).then((t) => (admitted.push(name), t));
    const a = ask('a', 600_000);
    const b = ask('b', 300_000);
    const big = ask('big', 50_000_000);
    const c = ask('c', 10);
    const d = ask('d', 10);
    await flush();
    // a and b leave room under the first 1 MiB, so the big one goes too (waiting for room would idle the link);
    // c and d wait behind it, in order.
    expect(admitted).toEqual(['a', 'b', 'big']);
    (await a).leave();
    (await b).leave();
    await flush();
    expect(admitted).toEqual(['a', 'b', 'big']);
    (await big).leave();
    await flush();
    expect(admitted).toEqual(['a', 'b', 'big', 'c', 'd']);
    (await c).leave();
    (await d).leave();
  });

  it('keeps the order of many thousands of waiting files', async () => {
    const meter = new LinkMeter();
    meter.sample(10);
    const w = new CommitWindow(meter);
    const order: number[] = [];
    const n = 20_000;
    const all = Array.from({ length: n }, (_, i) =>
      w.enter(400_000).then((t) => {
        order.push(i);
        return t;
      }),
    );
    // Each admitted file finishes as soon as it is admitted: the rest follow one by one, in the order they asked.
    for (const p of all) (await p).leave();
    expect(order).toEqual(Array.from({ length: n }, (_, i) => i));
  });

  it('grows while answers come back at the link delay and files wait, shrinks when requests queue', async () => {
    const meter = new LinkMeter();
    meter.sample(50);
    const w = new CommitWindow(meter);
    const start = w.limit;
    // A queue of files held back; answers as fast as the least delay.
    const tickets = await Promise.all([w.enter(500_000), w.enter(500_000), w.enter(500_000)]);
    const waiting = w.enter(500_000);
    for (const t of tickets) t.leave();
    expect(w.limit).toBeGreaterThan(start);
    (await waiting).leave();
    // Requests now take far longer than the link's own delay: the bound comes down, never below its floor.
    for (let i = 0; i < 200; i++) meter.sample(2000);
    for (let i = 0; i < 400; i++) (await w.enter(200_000)).leave();
    expect(w.limit).toBe(256 * 1024);
  });

  it('does not grow a bound that holds nothing back', async () => {
    const meter = new LinkMeter();
    meter.sample(1);
    const w = new CommitWindow(meter);
    const start = w.limit;
    for (let i = 0; i < 100; i++) (await w.enter(1000)).leave();
    expect(w.limit).toBe(start);
  });

  it('without a meter (a local target) bounds only by its maximum', async () => {
    const w = new CommitWindow();
    expect(w.limit).toBe(64 * 1024 * 1024);
  });
});

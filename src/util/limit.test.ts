import { describe, it, expect } from 'vitest';
import { Semaphore, mapLimit } from './limit.js';

describe('Semaphore.setCapacity', () => {
  it('lowering it keeps current holders and makes newcomers wait; raising it lets waiters in', async () => {
    const s = new Semaphore(4);
    for (let i = 0; i < 3; i++) await s.acquire();
    s.setCapacity(2);
    let got = false;
    const waiting = s.acquire().then(() => (got = true));
    await Promise.resolve();
    expect(got).toBe(false);
    s.release();
    await Promise.resolve();
    // 2 held, capacity 2: still full.
    expect(got).toBe(false);
    s.setCapacity(3);
    await waiting;
    expect(got).toBe(true);
    expect(s.inUse).toBe(3);
  });
});

describe('mapLimit', () => {
  it('starts no new item once one has failed (a lost link must not keep work going)', async () => {
    const started: number[] = [];
    const items = Array.from({ length: 100 }, (_, i) => i);
    await expect(
      mapLimit(items, 4, async (i) => {
        started.push(i);
        await new Promise((r) => setTimeout(r, 1));
        if (i === 5) throw new Error('lost');
        return i;
      }),
    ).rejects.toThrow('lost');
    // Let the workers still running finish their current items.
    await new Promise((r) => setTimeout(r, 20));
    expect(started.length).toBeLessThanOrEqual(9);
    expect(await mapLimit(items, 4, async (i) => i * 2)).toEqual(items.map((i) => i * 2));
  });
});

import { describe, it, expect } from 'vitest';
import { Semaphore } from './limit.js';

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

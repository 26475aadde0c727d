/** Counting semaphore: bounds files (or bytes) in flight so that ssh2's unbounded request queue stays bounded. */
export class Semaphore {
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  private available: number;
  constructor(private capacity: number) {
    this.available = capacity;
  }
  /** Changes the bound; holders above a lowered one keep what they have, newcomers wait until it is respected. */
  setCapacity(n: number): void {
    this.available += n - this.capacity;
    this.capacity = n;
    this.release(0);
  }
  get inUse(): number {
    return this.capacity - this.available;
  }
  async acquire(n = 1): Promise<void> {
    // A request larger than the whole capacity would wait forever; let it through alone instead.
    const need = Math.min(n, this.capacity);
    if (this.waiters.length === 0 && this.available >= need) {
      this.available -= need;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push({ n: need, resolve }));
  }
  release(n = 1): void {
    this.available += Math.min(n, this.capacity);
    while (this.waiters.length > 0 && this.available >= this.waiters[0].n) {
      const w = this.waiters.shift()!;
      this.available -= w.n;
      w.resolve();
    }
  }
  async with<T>(fn: () => Promise<T>, n = 1): Promise<T> {
    await this.acquire(n);
    try {
      return await fn();
    } finally {
      this.release(n);
    }
  }
}

/** Run fn over items with at most `concurrency` in flight; results keep input order. */
export async function mapLimit<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  // After a failure no new item starts (the caller has its answer; a lost link must not keep work going).
  let failed = false;
  const workers = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i], i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  });
  await Promise.all(workers);
  return out;
}

/**
 * How much of a run may be in flight at once, by bytes, so that a link cut at any moment loses little: a file is
 * lost to a cut unless its rename got through, and every byte queued ahead of that rename (in ssh2's buffers, the
 * sockets, the server's channel window) delays it. The bound follows the link: it grows while requests come back
 * about as fast as the link's least delay, and shrinks when they queue (TCP Vegas's idea, applied to files).
 */

/** Request latencies on one connection: the least seen (the path itself) and a moving average of recent ones. */
export class LinkMeter {
  private least = Infinity;
  private avg = 0;
  private samples = 0;

  /** One request's time from being handed to ssh2 to its answer, in milliseconds. */
  sample(ms: number): void {
    if (ms < this.least) this.least = ms;
    this.avg = this.samples++ === 0 ? ms : this.avg + (ms - this.avg) / 16;
  }

  /** The least latency seen (Infinity before any request). */
  get minRtt(): number {
    return this.least;
  }

  /** How much longer requests take now than the least: the time they spend queued. */
  get queueDelay(): number {
    return this.samples === 0 ? 0 : Math.max(0, this.avg - this.least);
  }
}

/** What a file costs the window beyond its bytes: its requests (open, close, rename) and their answers. */
const PER_FILE_COST = 1024;
const MIN_WINDOW = 256 * 1024;
const MAX_WINDOW = 64 * 1024 * 1024;
const START_WINDOW = 1024 * 1024;
/**
 * Queueing tolerated, in least latencies: a file takes three round trips or more from its open to its rename, so
 * the link is full only with about three latencies' worth of bytes in flight besides those being sent (measured on
 * the bench's 50 ms link: one latency's worth kept 4-6 MB in flight and made a 9,000-file push 15-20 % slower; three
 * kept 8-14 MB and matched the unbounded engine). At least MIN_QUEUE_MS (on loopback the delay is a fraction of it).
 */
const QUEUE_RTTS = 3;
const MIN_QUEUE_MS = 4;

export interface WindowTicket {
  /** The file is done (renamed into place or failed): its bytes leave the window. */
  leave(): void;
}

/**
 * Admits files in the order they ask while the bytes of the files admitted and not yet finished are under the
 * bound (the last one admitted may take them past it). Without a meter (a local target) the bound is only MAX_WINDOW.
 */
export class CommitWindow {
  private bound: number;
  private inFlight = 0;
  /** Files waiting, in order, from `head` on (a moving start: shift() on 100k waiting files would be quadratic). */
  private waiting: Array<{ cost: number; admit: () => void }> = [];
  private head = 0;

  constructor(private readonly meter?: LinkMeter) {
    this.bound = meter ? START_WINDOW : MAX_WINDOW;
  }

  get limit(): number {
    return this.bound;
  }

  async enter(bytes: number): Promise<WindowTicket> {
    const cost = bytes + PER_FILE_COST;
    if (this.waitingCount > 0 || !this.fits()) await new Promise<void>((admit) => this.waiting.push({ cost, admit }));
    else this.inFlight += cost;
    let left = false;
    return {
      leave: () => {
        if (left) return;
        left = true;
        this.inFlight -= cost;
        this.adapt(cost);
        this.admitWaiting();
      },
    };
  }

  /** Below the bound: the next file goes, whatever its size (waiting for room for a big one would idle the link). */
  private fits(): boolean {
    return this.inFlight < this.bound;
  }

  private get waitingCount(): number {
    return this.waiting.length - this.head;
  }

  private admitWaiting(): void {
    while (this.waitingCount > 0 && this.fits()) {
      const w = this.waiting[this.head++];
      this.inFlight += w.cost;
      w.admit();
    }
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
  }

  private adapt(cost: number): void {
    const m = this.meter;
    if (!m || !Number.isFinite(m.minRtt)) return;
    const tolerated = Math.max(QUEUE_RTTS * m.minRtt, MIN_QUEUE_MS);
    // Grown only while it holds files back: a bound that never binds says nothing about the link.
    if (m.queueDelay <= tolerated) {
      if (this.waitingCount > 0) this.bound = Math.min(MAX_WINDOW, this.bound + cost);
    } else if (m.queueDelay > 2 * tolerated) this.bound = Math.max(MIN_WINDOW, this.bound - cost);
  }
}

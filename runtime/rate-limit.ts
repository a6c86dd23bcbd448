// processing.maxRecordsPerSecond: a token bucket over the records a worker takes from its stream. It holds up to
// one second's worth, so a worker that was idle may take a second's records at once, and on average no more than
// the rate. It protects a slow sink, and it makes one worker's capacity known, which the autoscaler's tests use.
export class RateLimiter {
  private readonly perMs: number;
  private readonly capacity: number;
  private tokens: number;
  private last: number;

  constructor(perSecond: number, now: number) {
    if (!(perSecond > 0)) throw new Error(`a rate limit must be positive, not ${perSecond}`);
    this.perMs = perSecond / 1000;
    this.capacity = Math.max(1, perSecond);
    this.tokens = this.capacity;
    this.last = now;
  }

  /** Takes one record. Returns 0 while more may follow at once, else how many ms until the next may be taken. */
  take(now: number): number {
    this.refill(now);
    this.tokens -= 1;
    return this.tokens >= 1 ? 0 : Math.ceil((1 - this.tokens) / this.perMs);
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.capacity, this.tokens + (now - this.last) * this.perMs);
    this.last = now;
  }
}

// A work queue in the manner of client-go's: keys are deduplicated, one key is never processed twice at
// once, failures retry with capped exponential backoff, and a handler can ask to be called again later, or
// to be polled with backoff while it waits for something outside its hands (a pod stuck terminating).

export interface QueueOptions {
  /** how many keys may be processed at once */
  concurrency: number;
  baseBackoffMs: number;
  maxBackoffMs: number;
  /** the first poll of a key that waits for something, doubled at each poll that finds the same */
  baseWaitMs: number;
  maxWaitMs: number;
  setTimer?: (fn: () => void, ms: number) => NodeJS.Timeout;
  /** the least delay a failure asks for (an apiserver's Retry-After), if it asks */
  retryAfterMs?: (err: unknown) => number | undefined;
}

/**
 * What a handler asks for: `requeueAfterMs`, to be called again then; `waitingFor`, to be polled with capped
 * exponential backoff for as long as it waits for the same thing (a different thing is progress, and the
 * polls start over at the base).
 */
export type Handler = (key: string) => Promise<{ requeueAfterMs?: number; waitingFor?: string }>;

/** The delay before attempt n + 1 (n from 0): base * 2^n, capped. */
export function cappedBackoff(n: number, baseMs: number, maxMs: number): number {
  return Math.min(baseMs * 2 ** Math.min(n, 52), maxMs);
}

export class WorkQueue {
  private readonly pending: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  /** keys added again while they were being processed */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  /** what each waiting key waits for, and how many polls in a row found it so */
  private readonly waits = new Map<string, { what: string; polls: number }>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly opts: QueueOptions;
  private readonly handler: Handler;
  private readonly onError: (key: string, err: unknown, retryInMs: number) => void;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(handler: Handler, onError: (key: string, err: unknown, retryInMs: number) => void, opts: Partial<QueueOptions> = {}) {
    this.handler = handler;
    this.onError = onError;
    this.opts = { concurrency: 4, baseBackoffMs: 200, maxBackoffMs: 60_000, baseWaitMs: 1_000, maxWaitMs: 30_000, ...opts };
  }

  get depth(): number {
    return this.queued.size;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.pending.push(key);
    this.pump();
  }

  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    const existing = this.timers.get(key);
    if (existing) clearTimeout(existing);
    const timer = (this.opts.setTimer ?? setTimeout)(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    timer.unref?.();
    this.timers.set(key, timer);
  }

  backoffFor(key: string): number {
    return cappedBackoff(this.failures.get(key) ?? 0, this.opts.baseBackoffMs, this.opts.maxBackoffMs);
  }

  /** The delay before the next poll of a key that waits for `what`; counts the poll. */
  private waitFor(key: string, what: string): number {
    const prev = this.waits.get(key);
    const polls = prev?.what === what ? prev.polls + 1 : 0;
    this.waits.set(key, { what, polls });
    return cappedBackoff(polls, this.opts.baseWaitMs, this.opts.maxWaitMs);
  }

  private pump(): void {
    while (!this.stopped && this.active.size < this.opts.concurrency && this.pending.length > 0) {
      const key = this.pending.shift() as string;
      this.queued.delete(key);
      this.active.add(key);
      void this.process(key);
    }
    if (this.active.size === 0 && this.pending.length === 0) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async process(key: string): Promise<void> {
    try {
      const res = await this.handler(key);
      this.failures.delete(key);
      // A failure in between leaves the wait as it was: it is no progress.
      if (res.waitingFor !== undefined) this.addAfter(key, this.waitFor(key, res.waitingFor));
      else {
        this.waits.delete(key);
        if (res.requeueAfterMs !== undefined) this.addAfter(key, res.requeueAfterMs);
      }
    } catch (err) {
      const delay = Math.max(this.backoffFor(key), this.opts.retryAfterMs?.(err) ?? 0);
      this.failures.set(key, (this.failures.get(key) ?? 0) + 1);
      this.onError(key, err, delay);
      this.addAfter(key, delay);
    } finally {
      this.active.delete(key);
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
    }
  }

  /** Resolves when nothing is queued or running (timers may still be armed). */
  idle(): Promise<void> {
    if (this.active.size === 0 && this.pending.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.pending.length = 0;
    this.queued.clear();
  }
}

// The lag autoscaler's part that lives as long as the operator process: one lag reader for every pipeline (one
// Admin per cluster), and the last decision per pipeline. A reconcile prefers that decision to the status in
// an informer cache that has not yet seen the write, so that a reconcile hard on the heels of another never
// decides from stale state. The controller makes it, reconcile reaches it through the Context, and it is
// closed on shutdown.
import type { ScalingStatus } from "../api.ts";
import type { LagReading, LagTarget } from "./lag-reader.ts";

/** What the autoscaler needs of a lag reader (src/scaling/lag-reader.ts). */
export interface LagPoller {
  poll(key: string, target: LagTarget): Promise<LagReading>;
  forget(key: string): void;
  close(): Promise<void>;
}

export class Autoscaler {
  private readonly reader: LagPoller;
  private readonly decisions = new Map<string, { uid: string; status: ScalingStatus }>();

  constructor(reader: LagPoller) {
    this.reader = reader;
  }

  /** Reads pipeline `key` (namespace/name) now. */
  poll(key: string, target: LagTarget): Promise<LagReading> {
    return this.reader.poll(key, target);
  }

  /** The last decision this process recorded for the pipeline, if it is still the same object. */
  last(key: string, uid: string): ScalingStatus | undefined {
    const d = this.decisions.get(key);
    return d?.uid === uid ? d.status : undefined;
  }

  remember(key: string, uid: string, status: ScalingStatus): void {
    this.decisions.set(key, { uid, status });
  }

  /** Drops what is kept for a pipeline that is gone or no longer in lag mode. */
  forget(key: string): void {
    this.decisions.delete(key);
    this.reader.forget(key);
  }

  async close(): Promise<void> {
    this.decisions.clear();
    await this.reader.close();
  }
}

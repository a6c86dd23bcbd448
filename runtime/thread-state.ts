// The stream thread's state and the reasons its stream is held, as data (after Kafka Streams' StreamThread.State).
// The worker sets and clears each reason at one place, and one function says whether the stream reads; before,
// eight pause() calls and two copies of "is anything holding the stream" said it between them.

/** Where the thread is in its life; only the transitions below are allowed. */
export type ThreadPhase = "starting" | "running" | "stopping" | "failed";

/**
 * Why the stream is held while the thread runs. Each is set by one part of the worker and cleared by the same:
 * - assigning: a join gave a new assignment; the batch of the old one is being discarded and the positions read.
 * - rejoin: a rebalance refused a commit; nothing is read until the next join.
 * - throttled: processing.maxRecordsPerSecond holds the stream until the limiter lets the next record through.
 * - batchFull: maxInFlight records are waiting; the stream reads again once their flush has ended.
 */
export type HoldReason = "assigning" | "rejoin" | "throttled" | "batchFull";

const NEXT: Record<ThreadPhase, readonly ThreadPhase[]> = {
  starting: ["running", "stopping", "failed"],
  running: ["stopping", "failed"],
  // a stop whose last flush fails
  stopping: ["failed"],
  failed: [],
};

export class ThreadState {
  private current: ThreadPhase = "starting";
  private readonly holds = new Set<HoldReason>();

  get phase(): ThreadPhase {
    return this.current;
  }

  /** Moves to the next phase; a move the table does not allow is a bug in the worker, and throws. */
  to(next: ThreadPhase): void {
    if (next === this.current) return;
    if (!NEXT[this.current].includes(next)) throw new Error(`stream thread: no transition from ${this.current} to ${next}`);
    this.current = next;
  }

  hold(reason: HoldReason): void {
    this.holds.add(reason);
  }

  release(reason: HoldReason): void {
    this.holds.delete(reason);
  }

  held(reason: HoldReason): boolean {
    return this.holds.has(reason);
  }

  /** Whether the stream may deliver records now: running, and nothing holds it. */
  get reading(): boolean {
    return this.current === "running" && this.holds.size === 0;
  }

  /** Whether records delivered now belong to an assignment that is ending: they are read again after the join. */
  get betweenAssignments(): boolean {
    return this.holds.has("assigning") || this.holds.has("rejoin");
  }

  /** For logs and the lag line: the phase and what holds the stream. */
  describe(): { phase: ThreadPhase; holds: HoldReason[] } {
    return { phase: this.current, holds: [...this.holds].sort() };
  }
}

/** What the stream must do to match the thread's state: pause, resume, or nothing. */
export function streamAction(state: ThreadState, paused: boolean): "pause" | "resume" | "none" {
  if (state.reading) return paused ? "resume" : "none";
  return paused ? "none" : "pause";
}

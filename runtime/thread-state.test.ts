import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { streamAction, ThreadState } from "./thread-state.ts";

describe("the stream thread's state", () => {
  it("reads only while running with nothing holding it", () => {
    const s = new ThreadState();
    assert.equal(s.reading, false, "a starting thread reads nothing");
    s.to("running");
    assert.equal(s.reading, true);
    s.hold("throttled");
    s.hold("batchFull");
    assert.equal(s.reading, false);
    s.release("throttled");
    assert.equal(s.reading, false, "the full batch still holds it");
    s.release("batchFull");
    assert.equal(s.reading, true);
  });

  it("tells records of an ending assignment by its holds", () => {
    const s = new ThreadState();
    s.to("running");
    assert.equal(s.betweenAssignments, false);
    s.hold("rejoin");
    assert.equal(s.betweenAssignments, true);
    s.release("rejoin");
    s.hold("throttled");
    assert.equal(s.betweenAssignments, false, "the rate limit holds the stream, not the assignment");
    s.hold("assigning");
    assert.equal(s.betweenAssignments, true);
  });

  it("refuses transitions the table does not allow", () => {
    const s = new ThreadState();
    s.to("running");
    s.to("stopping");
    assert.throws(() => s.to("running"), /no transition from stopping to running/);
    s.to("failed");
    assert.throws(() => s.to("stopping"), /no transition from failed to stopping/);
    assert.equal(s.phase, "failed");
  });

  it("holds the stream once stopping or failed, whatever was released", () => {
    const s = new ThreadState();
    s.to("running");
    s.to("stopping");
    assert.equal(s.reading, false);
    const f = new ThreadState();
    f.to("failed");
    assert.equal(f.reading, false);
    assert.deepEqual(f.describe(), { phase: "failed", holds: [] });
  });

  it("pauses or resumes the stream only when it differs from the state", () => {
    const s = new ThreadState();
    s.to("running");
    assert.equal(streamAction(s, false), "none");
    assert.equal(streamAction(s, true), "resume");
    s.hold("assigning");
    assert.equal(streamAction(s, false), "pause", "a stream the library resumed is paused again");
    assert.equal(streamAction(s, true), "none");
    assert.deepEqual(s.describe(), { phase: "running", holds: ["assigning"] });
  });
});

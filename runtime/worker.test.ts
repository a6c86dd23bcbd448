import assert from "node:assert/strict";
import { test } from "node:test";
import type { Message } from "@platformatic/kafka";
import { followsOn, underGeneration } from "./worker.ts";

const member = (generationId: number, memberId = "w-0-a") => ({ groupId: "g", generationId, memberId });

test("offsets go under the assignment's generation, whatever generation the library stamped on the record", () => {
  const parsed = {
    topic: "t",
    partition: 3,
    offset: 41n,
    metadata: { consumer: { groupId: "g", generationId: 8, memberId: "w-0-a", coordinatorId: 1 }, other: "kept" },
  } as unknown as Message;
  const [out] = underGeneration([parsed], { ...member(7), coordinatorId: 1 });
  assert.deepEqual(out?.metadata, { consumer: { groupId: "g", generationId: 7, memberId: "w-0-a", coordinatorId: 1 }, other: "kept" });
  assert.equal(out?.offset, 41n);
  assert.equal(out?.partition, 3);
  assert.equal((parsed.metadata as { consumer: { generationId: number } }).consumer.generationId, 8, "the record itself is left as it was");
});

test("tasks stay open only across consecutive generations of the same member", () => {
  assert.equal(followsOn(member(4), member(5)), true);
  assert.equal(followsOn(undefined, member(1)), false, "no earlier assignment");
  assert.equal(followsOn(member(4), member(6)), false, "generation 5 passed without this member");
  assert.equal(followsOn(member(4), member(5, "w-0-b")), false, "dropped and joined again as a new member");
  assert.equal(followsOn(member(5), member(5)), false);
});

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ProtocolError, ResponseError } from "@platformatic/kafka";
import { recordRefusal } from "./refusals.ts";

/** A failed produce as the library throws it: its response, with an error per partition. */
function produceError(partitions: { topic: string; index: number; errorCode: number; errorMessage?: string; recordErrors?: string[] }[]) {
  const response = {
    responses: [...new Set(partitions.map((p) => p.topic))].map((name) => ({
      name,
      partitionResponses: partitions
        .filter((p) => p.topic === name)
        .map((p) => ({
          index: p.index,
          errorCode: p.errorCode,
          errorMessage: p.errorMessage ?? null,
          recordErrors: (p.recordErrors ?? []).map((m, i) => ({ batchIndex: i, batchIndexErrorMessage: m })),
        })),
    })),
  };
  const errors: Record<string, [number, string | null]> = {};
  partitions.forEach((p, i) => {
    errors[`/responses/0/partition_responses/${i}`] = [p.errorCode, p.errorMessage ?? null];
    (p.recordErrors ?? []).forEach((m, k) => {
      errors[`/responses/0/partition_responses/${i}/record_errors/${k}`] = [-1, m];
    });
  });
  // as the producer wraps a request's error: one aggregate around the response's
  return new AggregateError([new ResponseError(0, 11, errors, response)], "Producing messages failed.");
}

describe("refusals of records by the broker", () => {
  test("a too-large record and a compacted topic's keyless record are refusals, named by topic, partition and reason", () => {
    const r = recordRefusal(
      produceError([
        { topic: "out", index: 1, errorCode: 10 },
        {
          topic: "out2",
          index: 0,
          errorCode: 87,
          errorMessage: "One or more records have been rejected",
          recordErrors: ["Compacted topic cannot accept message without key"],
        },
      ]),
    );
    assert.ok(r);
    assert.deepEqual([...r.topics], ["out", "out2"]);
    assert.match(r.reason, /out\/1: MESSAGE_TOO_LARGE/);
    assert.match(r.reason, /out2\/0: INVALID_RECORD: One or more records have been rejected; Compacted topic cannot accept message without key/);
  });

  test("any other error, alone or beside a refusal, is not one: the caller handles it as before", () => {
    assert.equal(recordRefusal(produceError([{ topic: "out", index: 0, errorCode: 6 }])), undefined, "NOT_LEADER_OR_FOLLOWER");
    assert.equal(
      recordRefusal(
        produceError([
          { topic: "out", index: 0, errorCode: 10 },
          { topic: "out", index: 1, errorCode: 47 }, // INVALID_PRODUCER_EPOCH: fenced
        ]),
      ),
      undefined,
    );
    assert.equal(recordRefusal(new AggregateError([produceError([{ topic: "out", index: 0, errorCode: 10 }]), new ProtocolError(22)])), undefined);
    assert.equal(recordRefusal(new Error("connect ECONNREFUSED")), undefined);
    assert.equal(recordRefusal(undefined), undefined);
  });
});

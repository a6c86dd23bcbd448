import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Message } from "@platformatic/kafka";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { deadLetterOf, sourceOf } from "./dead-letters.ts";
import { formatLetter, type PipelineKafka, parseSince, replayIdentity } from "./dlq.ts";

const message = (headers: Record<string, string>, extra: Partial<Message<Buffer, Buffer, Buffer, Buffer>> = {}) =>
  ({
    topic: "dlq",
    partition: 1,
    offset: 41n,
    timestamp: 1_000n,
    key: Buffer.from("k1"),
    value: Buffer.from('{"id": 7'),
    headers: new Map(Object.entries(headers).map(([k, v]) => [Buffer.from(k), Buffer.from(v)])),
    ...extra,
  }) as unknown as Message<Buffer, Buffer, Buffer, Buffer>;

describe("conveyor dlq", () => {
  test("a dead letter's headers, read back", () => {
    const d = deadLetterOf(
      message({
        [DLQ_HEADERS.error]: "the value is not JSON",
        [DLQ_HEADERS.kind]: "parse",
        [DLQ_HEADERS.step]: "source",
        [DLQ_HEADERS.topic]: "orders",
        [DLQ_HEADERS.partition]: "3",
        [DLQ_HEADERS.offset]: "1200",
        [DLQ_HEADERS.time]: "1765000000000",
        trace: "t-1",
      }),
    );
    assert.deepEqual([d.kind, d.step, d.error, d.time, d.partition, d.offset], ["parse", "source", "the value is not JSON", 1_765_000_000_000, 1, 41n]);
    assert.equal(sourceOf(d), "orders/3@1200");
    assert.equal(
      formatLetter(d),
      [
        "2025-12-06T05:46:40.000Z  parse at step source, from orders/3@1200 (dlq 1@41)",
        "  error: the value is not JSON",
        '  key:   "k1"',
        '  value: "{\\"id\\": 7"',
      ].join("\n"),
    );
  });

  test("a dead letter from before conveyor.error.time is timed by its record; missing headers are ?", () => {
    const d = deadLetterOf(message({}));
    assert.equal(d.time, 1_000);
    assert.equal(sourceOf(d), "?/?@?");
    assert.equal(d.kind, "?");
  });

  test("--since takes a duration back from now, or a time", () => {
    const now = Date.parse("2026-12-06T03:00:00Z");
    assert.equal(parseSince("90s", now), now - 90_000);
    assert.equal(parseSince("2h", now), now - 7_200_000);
    assert.equal(parseSince("1d", now), now - 86_400_000);
    assert.equal(parseSince("2026-12-06T01:00:00Z", now), Date.parse("2026-12-06T01:00:00Z"));
    assert.throws(() => parseSince("yesterday", now), /--since yesterday: give a duration/);
  });

  test("a replay's group is the pipeline's and its options': the same command resumes, other filters start over", () => {
    const p = { topology: { applicationId: "team-a.orders" } } as PipelineKafka;
    const a = replayIdentity(p, { to: "source", kind: "eval" });
    assert.match(a, /^team-a\.orders\.conveyor-replay\.[0-9a-f]{12}$/);
    assert.equal(replayIdentity(p, { to: "source", kind: "eval" }), a);
    assert.notEqual(replayIdentity(p, { to: "source", kind: "parse" }), a);
    assert.notEqual(replayIdentity(p, { to: "orders-retry", kind: "eval" }), a);
    // "--since 2h" names the same replay an hour later: a rerun goes on where it stopped
    assert.equal(replayIdentity(p, { to: "source", since: 1, sinceText: "2h" }), replayIdentity(p, { to: "source", since: 2, sinceText: "2h" }));
  });
});

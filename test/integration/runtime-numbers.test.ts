// Data-safety defect 9 (numbers). `1e400` parsed as Infinity and a sum took it; the store codec wrote
// non-finite numbers as null, so after a reload the sum silently restarted; integer sums passed int64
// unchecked. Now a record whose number a window cannot hold goes to the DLQ (kind eval), the windows keep their
// values, and a restart from the changelog changes none.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { isAlive, signalGroup, waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, groupLag, header, produce, readToEnd } from "../support/kafka.ts";
import { compiled, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const HOUR = Date.parse("2023-03-01T10:00:00Z");

describe("defect 9: Infinity and int64 overflow in aggregates", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-numbers");

  test("1e400 and a sum past int64 go to the DLQ as eval; every sum exact, across a crash and a restore", async () => {
    const name = `numbers-${suffix}`;
    const [source, sink, late, dlq] = ["src", "out", "late", "dlq"].map((t) => `num-${t}-${suffix}`) as [string, string, string, string];
    const spec = userWindowSpec({
      bootstrap: env.bootstrap,
      source,
      sink,
      late,
      window: { tumbling: "1h" },
      emit: "onWindowClose",
      rest: { deadLetter: { topic: dlq }, processing: { guarantee: "exactlyOnce" } },
    });
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, late, dlq]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);
    let i = 0;
    // amounts as JSON text, so that 1e400 and int64's edge reach the runtime as written
    const rec = (user: string, amount: string) => ({ key: user, value: `{"user":"${user}","ts":${HOUR + i++},"amount":${amount}}` });
    await produce(env.bootstrap, source, [
      ...["1", "2", "3"].map((n) => rec("u-0", n)),
      rec("u-0", "1e400"),
      rec("u-0", "4"),
      // 2^62, exact as a double and as an int; twice is 2^63, one past int64
      rec("u-1", "4611686018427387904"),
      rec("u-1", "4611686018427387904"),
      rec("u-1", "1"),
      ...["0.5", "0.25"].map((n) => rec("u-2", n)),
    ]);
    const start = async () => {
      const w = await startRuntime({ dir, namespace: "it", name, spec, pod: "p-0", stateDir: join(dir, "p-0-state") });
      workers.push(w);
      return w;
    };
    const w1 = await start();
    const repartition = topology.internalTopics.find((t) => t.endsWith("-repartition")) as string;
    // both stages read and committed: the windows are in the changelog before the crash
    await waitFor(async () => (await groupLag(a, topology.applicationId, source)) === 0n && (await groupLag(a, topology.applicationId, repartition)) === 0n, {
      what: "the source and the repartition topic read and committed",
      timeoutMs: 60_000,
      process: w1.proc,
    });
    // A crash: the windows come back from the changelog, as the store codec wrote them.
    signalGroup(w1.proc.pid, "SIGKILL");
    await waitFor(() => !isAlive(w1.proc.pid), { what: "the worker gone", timeoutMs: 10_000 });
    const w2 = await start();
    await produce(env.bootstrap, source, [{ key: "zz", value: JSON.stringify({ user: "zz", ts: HOUR + 2 * 3_600_000, amount: 0 }) }]);
    await waitFor(async () => (await w2.metric("conveyor_runtime_records_out_total")) >= 3, {
      what: "the windows written",
      timeoutMs: 60_000,
      process: w2.proc,
    });
    assert.ok((await w2.metric("conveyor_runtime_restored_records_total")) > 0, "the windows came back from the changelog");

    const totals: Record<string, string> = {};
    for (const m of await readToEnd(env.bootstrap, sink)) {
      const text = m.value.toString();
      const key = /"key":"([^"]+)"/.exec(text)?.[1] ?? "";
      totals[key] = /"total":([^,}]+)/.exec(text)?.[1] ?? "";
    }
    assert.deepEqual(totals, { "u-0": "10", "u-1": "4611686018427387905", "u-2": "0.75" }, "each sum exact, digit for digit");
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.deepEqual(
      dead.map((d) => [header(d.headers, DLQ_HEADERS.kind), header(d.headers, DLQ_HEADERS.step), header(d.headers, DLQ_HEADERS.error)]),
      [
        ["eval", "agg", "aggregate total (sum): the record's value Infinity is not a finite number"],
        ["eval", "agg", "aggregate total (sum): the result 9223372036854775808 overflows int64"],
      ],
    );
  });
});

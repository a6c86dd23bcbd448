// Data-safety defect 3 (forged internal headers), as a producer we do not control would try it. keyBy used to
// copy every source header to the repartition record, and any record there carrying conveyor.marker was taken
// for a watermark marker; conveyor.event-time from outside overrode the computed event time. Five records of
// 2023 carrying conveyor.event-time: 0 came out as windows of 1970; five carrying conveyor.marker: 1 were
// counted nowhere; one carrying a marker's body for a partition that does not exist held every window open.
// Now conveyor.* headers are dropped where a record enters, and a marker is only what the runtime wrote.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DLQ_HEADERS } from "../../runtime/dead-letter.ts";
import { Producer } from "../../runtime/kafka/client.ts";
import { waitFor } from "../env/proc.ts";
import { createInternalTopics, createTopic, header, readToEnd } from "../support/kafka.ts";
import { compiled, passThroughSpec, runtimeSuite, startRuntime, userWindowSpec } from "../support/runtime.ts";

const T0 = Date.parse("2023-03-01T00:00:00Z");
const FLUSH_USER = "zz-flush";
const headerNames = (h: Map<Buffer, Buffer>) => [...h.keys()].map((k) => k.toString());

type Message = { topic: string; partition: number; key: Buffer; value: Buffer; headers?: Map<Buffer, Buffer> };
const headersOf = (pairs: [string, string][]) => new Map(pairs.map(([k, v]) => [Buffer.from(k), Buffer.from(v)]));

async function produceAll(bootstrap: string, messages: Message[]): Promise<void> {
  const producer = new Producer({ clientId: "headers-test", bootstrapBrokers: [bootstrap], idempotent: true, acks: -1 });
  try {
    for (let i = 0; i < messages.length; i += 500) await producer.send({ messages: messages.slice(i, i + 500) });
  } finally {
    await producer.close();
  }
}

describe("defect 3: forged conveyor.* headers", () => {
  const { env, suffix, dir, a, workers } = runtimeSuite("runtime-headers");

  test("forged event times, markers and a marker body for a partition that does not exist: every record in its own 2023 window", async () => {
    const name = `forged-${suffix}`;
    const [source, sink, late, dlq] = ["src", "out", "late", "dlq"].map((t) => `hdr-${t}-${suffix}`) as [string, string, string, string];
    const spec = userWindowSpec({
      bootstrap: env.bootstrap,
      source,
      sink,
      late,
      window: { tumbling: "1m" },
      emit: "onWindowClose",
      rest: { deadLetter: { topic: dlq } },
    });
    const topology = compiled(spec, { namespace: "it", name });
    for (const t of [source, sink, late, dlq]) await createTopic(a, t, 1);
    await createInternalTopics(a, topology, 1);

    const expected = new Map<string, number>();
    const messages: Message[] = [];
    const add = (user: string, ts: number, headers: [string, string][] = [], extra: Record<string, unknown> = {}) => {
      const key = `${user}|${Math.floor(ts / 60_000) * 60_000}`;
      if (user !== FLUSH_USER) expected.set(key, (expected.get(key) ?? 0) + 1);
      messages.push({
        topic: source,
        partition: 0,
        key: Buffer.from(user),
        value: Buffer.from(JSON.stringify({ user, ts, amount: 1, ...extra })),
        headers: headersOf([["traceparent", `00-${messages.length}`], ...headers]),
      });
    };
    for (let i = 0; i < 600; i++) {
      const ts = T0 + i * 1_000;
      if (i >= 100 && i < 105) add(`u-${i % 3}`, ts, [["conveyor.event-time", "0"]]);
      else if (i >= 200 && i < 205) add(`u-${i % 3}`, ts, [["conveyor.marker", "1"]]);
      // a marker's body, with the header, naming a source partition that does not exist and has no watermark:
      // taken for a marker, it would hold the task's watermark at -Infinity, and no window would ever close
      else if (i === 300) add("u-0", ts, [["conveyor.marker", "1"]], { topic: source, partition: 5, watermark: null, idle: false });
      else if (i === 400)
        add("u-1", ts, [
          ["Conveyor.Event-Time", "0"],
          ["conveyor.late.watermark", "9"],
        ]);
      else add(`u-${i % 3}`, ts);
    }
    // An hour on, still in 2023: every window of the data closes.
    add(FLUSH_USER, T0 + 600_000 + 3_600_000);
    await produceAll(env.bootstrap, messages);

    const w = await startRuntime({ dir, namespace: "it", name, spec });
    workers.push(w);
    await waitFor(async () => (await w.metric("conveyor_runtime_records_out_total")) >= expected.size, {
      what: `${expected.size} windows written`,
      timeoutMs: 90_000,
      process: w.proc,
    });
    const windows = new Map<string, number>();
    const out = await readToEnd(env.bootstrap, sink);
    for (const m of out) {
      const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number };
      if (v.key !== FLUSH_USER) windows.set(`${v.key}|${v.windowStart}`, v.n);
    }
    const lateOut = await readToEnd(env.bootstrap, late, { timeoutMs: 5_000 });
    const dead = await readToEnd(env.bootstrap, dlq, { timeoutMs: 5_000 });
    process.stdout.write(`# ${messages.length} in: ${windows.size} windows, ${lateOut.length} late, ${dead.length} dead letters\n`);
    assert.deepEqual(
      [...windows.keys()].filter((k) => Number(k.split("|")[1]) < T0),
      [],
      "no window before 2023: a forged conveyor.event-time sets nothing",
    );
    assert.equal(lateOut.length, 0, "nothing late");
    assert.equal(dead.length, 0, "nothing dead: every forged record is a good record");
    assert.deepEqual(Object.fromEntries([...windows].sort()), Object.fromEntries([...expected].sort()), "every record counted once, in its own window");
    for (const m of out)
      assert.deepEqual(
        headerNames(m.headers).filter((n) => n.toLowerCase().startsWith("conveyor.")),
        [],
        "no internal header reaches the sink",
      );
  });

  test("a pipeline without keyBy: the sink and the DLQ get the producer's own headers, never its conveyor.* ones", async () => {
    const name = `pass-${suffix}`;
    const [source, sink, dlq] = ["psrc", "pout", "pdlq"].map((t) => `hdr-${t}-${suffix}`) as [string, string, string];
    for (const t of [source, sink, dlq]) await createTopic(a, t, 1);
    const forged: [string, string][] = [
      ["conveyor.error.kind", "none"],
      ["conveyor.source.offset", "999"],
      ["conveyor.marker", "1"],
    ];
    const messages: Message[] = [];
    for (let i = 0; i < 20; i++) {
      messages.push({
        topic: source,
        partition: 0,
        key: Buffer.from(`k${i}`),
        // every fifth record is not JSON: a dead letter, whose conveyor.* headers must be the runtime's alone
        value: Buffer.from(i % 5 === 4 ? "{not json" : JSON.stringify({ i })),
        headers: headersOf([["traceparent", `00-${i}`], ...forged]),
      });
    }
    await produceAll(env.bootstrap, messages);
    const w = await startRuntime({
      dir,
      namespace: "it",
      name,
      spec: passThroughSpec({ bootstrap: env.bootstrap, source, sink, dlq, name: "keep", filter: "!('conveyor.marker' in headers)" }),
    });
    workers.push(w);
    await waitFor(async () => (await w.metric("conveyor_runtime_records_in_total")) === messages.length, {
      what: "every source record read",
      timeoutMs: 60_000,
      process: w.proc,
    });
    const out = await readToEnd(env.bootstrap, sink);
    const dead = await readToEnd(env.bootstrap, dlq);
    assert.equal(out.length, 16, "every good record passes: no expression sees the forged conveyor.marker");
    for (const m of out) assert.deepEqual(headerNames(m.headers), ["traceparent"], "the producer's own header, and only it");
    assert.equal(dead.length, 4);
    for (const d of dead) {
      assert.equal(header(d.headers, "traceparent")?.startsWith("00-"), true);
      assert.equal(header(d.headers, DLQ_HEADERS.kind), "parse", "the runtime's kind, not the forged one");
      assert.equal(header(d.headers, DLQ_HEADERS.offset), String(Number(header(d.headers, "traceparent")?.slice(3))), "the runtime's offset");
      assert.equal(header(d.headers, "conveyor.marker"), undefined, "no forged header rides along into the DLQ");
      assert.equal(headerNames(d.headers).filter((n) => n === DLQ_HEADERS.kind).length, 1);
    }
  });
});

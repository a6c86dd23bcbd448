// status.watermarks on the real bed: the operator reads a windowed pipeline's workers and reports each source
// partition's watermark (and idleness), each window task's, and the lowest, as the records' event times say;
// `kubectl get` shows the lowest. 3 source partitions: partition 0 runs ahead of partition 1, both keep getting
// records; partition 2 gets nothing and goes idle, so it holds no window back. More records on partition 1 move
// every task forward.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { type Admin } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { WATERMARK_INTERVAL_MS } from "../../src/watermark-status.ts";
import { stopProcess, tail, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, brokers, createTopic } from "../support/kafka.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, type OperatorProcess, startOperator } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

const HOUR = 3_600_000;
// An hour back, on the minute: event times in the past, as a broker wants them.
const T0 = Math.floor((Date.now() - HOUR) / 60_000) * 60_000;
const OUT_OF_ORDER_MS = 5_000;
const iso = (ms: number) => new Date(ms).toISOString();

describe("status.watermarks: the operator reports event-time progress", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  let k: Kube;
  let a: Admin;
  let ns: string;
  let op: OperatorProcess;
  let producer: Producer;
  const cleanups: (() => Promise<void>)[] = [];
  let keepBusy: NodeJS.Timeout | undefined;
  let busyError: unknown;
  const suffix = uniqueSuffix();
  const source = `wm-src-${suffix}`;

  const read = async () =>
    (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name: "progress" })) as StreamPipeline;
  /** Records of one partition whose event times run from `from` to `to`, a second apart. */
  const send = async (partition: number, from: number, to: number) => {
    const messages = [];
    for (let ts = from; ts <= to; ts += 1_000)
      messages.push({ topic: source, partition, key: Buffer.from(`u-${ts % 7}`), value: Buffer.from(JSON.stringify({ user: `u-${ts % 7}`, ts })) });
    await producer.send({ messages });
  };
  const withDiagnostics = (err: Error) =>
    new Error(`${err.message}\noperator log:\n${tail(op.proc.log)}\nstatus:\n${kubectl(["get", "sp", "progress", "-n", ns, "-o", "jsonpath={.status}"])}`);

  before(async () => {
    k = kube();
    a = admin(env.bootstrap);
    producer = new Producer({ clientId: "wm-test", bootstrapBrokers: brokers(env.bootstrap), acks: -1, idempotent: true });
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "watermarks");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", join(repoRoot, "crds")]);
    kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
    await createTopic(a, source, 3);
    op = await startOperator(ns);
  });
  after(async () => {
    clearInterval(keepBusy);
    // every step runs even when a finalizer does not finish (the failure is still reported): a leaked operator
    // would reconcile the next suites' pipelines, and an open client keeps this file's process alive
    await teardown(
      () => op && deletePipelines(k, ns, op.proc),
      () => op && stopProcess(op.proc.pid),
      () => producer?.close(),
      ...cleanups,
      () => a?.close(),
    );
  });

  test("per source partition, per task and the lowest, as the event times say; an idle partition holds nothing back", async () => {
    await send(0, T0, T0 + 100_000);
    await send(1, T0, T0 + 50_000);
    // Partitions 0 and 1 get a record every second at their highest event times: they stay busy (not idle), and
    // their watermarks stay where the backlog left them, also as read by a worker that takes a partition over
    // in a rebalance (a source watermark starts again from what its reader reads; the window tasks keep the
    // highest they heard). Partition 2 gets nothing.
    let p1Max = T0 + 50_000;
    keepBusy = setInterval(() => {
      Promise.all([send(0, T0 + 100_000, T0 + 100_000), send(1, p1Max, p1Max)]).catch((err: unknown) => {
        busyError = err;
      });
    }, 1_000);
    const manifest = {
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name: "progress", namespace: ns },
      spec: {
        kafka: { bootstrapServers: [env.bootstrap] },
        source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "5s", idleTimeout: "5s" } },
        steps: [
          { name: "by-user", keyBy: "value.user" },
          { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
        ],
        sink: { topic: `${source}-out` },
        replicas: 2,
      },
    };
    kubectl(["apply", "-f", "-"], JSON.stringify(manifest));
    // Partition 2 has no record: once idle it leaves the minimum, and every task stands at partition 1's.
    const p1 = T0 + 50_000 - OUT_OF_ORDER_MS;
    const expected = {
      low: iso(p1),
      sources: [
        { topic: source, partition: 0, watermark: iso(T0 + 100_000 - OUT_OF_ORDER_MS), idle: false },
        { topic: source, partition: 1, watermark: iso(p1), idle: false },
        { topic: source, partition: 2, idle: true },
      ],
      // every window task at the lowest of the partitions that are not idle
      tasks: [0, 1, 2].map((partition) => ({ partition, watermark: iso(p1) })),
    };
    let last: unknown;
    const first = await waitFor(
      async () => {
        const w = (await read()).status?.watermarks;
        last = w;
        return w && isDeepStrictEqual({ low: w.low, sources: w.sources, tasks: w.tasks }, expected) ? w : false;
      },
      {
        what: "status.watermarks: partition 0 ahead, partition 1 lowest, partition 2 idle",
        timeoutMs: 90_000 + WATERMARK_INTERVAL_MS,
        intervalMs: 500,
        process: op.proc,
      },
    ).catch((err: Error) => {
      throw withDiagnostics(new Error(`${err.message}; last seen ${JSON.stringify(last)}`));
    });
    assert.equal(first.unread, undefined);
    const header = kubectl(["get", "sp", "progress", "-n", ns]).split("\n");
    assert.match(header[0] ?? "", /\bWATERMARK\b/);
    assert.match(header[1] ?? "", new RegExp(iso(p1).replace(/\./g, "\\.")), "kubectl get shows the lowest watermark");

    // Partition 1 catches up past partition 0: now partition 0 holds every task.
    await send(1, T0 + 51_000, T0 + 200_000);
    p1Max = T0 + 200_000;
    const p0 = T0 + 100_000 - OUT_OF_ORDER_MS;
    const second = await waitFor(
      async () => {
        const w = (await read()).status?.watermarks;
        return w?.low === iso(p0) ? w : false;
      },
      { what: "status.watermarks at partition 0's watermark", timeoutMs: 30_000 + WATERMARK_INTERVAL_MS, intervalMs: 500, process: op.proc },
    ).catch((err: Error) => {
      throw withDiagnostics(err);
    });
    assert.equal(second.sources?.find((s) => s.partition === 1)?.watermark, iso(T0 + 200_000 - OUT_OF_ORDER_MS));
    assert.ok(Date.parse(second.observedTime) > Date.parse(first.observedTime));
    const managers = (await read()).metadata?.managedFields?.filter((f) => JSON.stringify(f.fieldsV1 ?? {}).includes("f:watermarks")).map((f) => f.manager);
    assert.deepEqual(managers, ["conveyor-operator-watermarks"], "only the watermark observer owns status.watermarks");
    clearInterval(keepBusy);
    assert.equal(busyError, undefined, "the records that keep partitions 0 and 1 busy were all written");
  });
});

// The runtime image on the bed, as a cluster would run it (CONVEYOR_PODS=image, npm test's mode): a windowed
// pipeline's worker runs the image's Node inside the image's root, read-only, as user 65532, with RocksDB's native
// binding loaded from the image, and the pipeline's windows reach the sink. (The operator image serves its webhook
// in helm.test.ts, which checks the same of the operator's pod.)
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import { DEBIAN, IMAGES, NODE_BINARY, USER, WORKDIR } from "../../scripts/images/spec.ts";
import { API_VERSION, KIND } from "../../src/api.ts";
import { stopProcess, waitFor } from "../env/proc.ts";
import { loadImageTable } from "../env/shim/images.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { containerView } from "../support/container.ts";
import { admin, brokers, createTopic, readToEnd } from "../support/kafka.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, type OperatorProcess, startOperator } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

const MINUTE = 60_000;
// Two hours back, on the minute: event times in the past, as a broker wants them.
const T0 = Math.floor((Date.now() - 2 * 3_600_000) / MINUTE) * MINUTE;

describe("the runtime image runs a windowed pipeline on the bed", {
  skip: bedEnv().state.pods !== "image" && "the bed runs the checkout (CONVEYOR_PODS=checkout)",
}, () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  let k: Kube;
  let a: Admin;
  let ns: string;
  let op: OperatorProcess;
  let producer: Producer;
  const cleanups: (() => Promise<void>)[] = [];
  const source = `img-src-${uniqueSuffix()}`;
  const sink = `${source}-out`;

  before(async () => {
    k = kube();
    a = admin(env.bootstrap);
    producer = new Producer({ clientId: "images-test", bootstrapBrokers: brokers(env.bootstrap), acks: -1, idempotent: true });
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "images");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", join(repoRoot, "crds")]);
    kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
    await createTopic(a, source, 1);
    await createTopic(a, sink, 1);
    op = await startOperator(ns);
  });
  after(async () => {
    await teardown(
      () => op && deletePipelines(k, ns, op.proc),
      () => op && stopProcess(op.proc.pid),
      () => producer?.close(),
      ...cleanups,
      () => a?.close(),
    );
  });

  test("its windows reach the sink, from Node in the image's read-only root, as 65532, with RocksDB's binding from the image", async () => {
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name: "per-minute", namespace: ns },
        spec: {
          kafka: { bootstrapServers: [env.bootstrap] },
          source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "1s" } },
          steps: [
            { name: "by-user", keyBy: "value.user" },
            { name: "count", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
          ],
          sink: { topic: sink },
          replicas: 1,
        },
      }),
    );
    // 3 users x 10 records in the first minute; one record two minutes on moves the watermark past its end
    const messages = [];
    for (let i = 0; i < 30; i++) {
      const user = `u${i % 3}`;
      messages.push({ topic: source, key: Buffer.from(user), value: Buffer.from(JSON.stringify({ user, ts: T0 + i * 1_000 })) });
    }
    messages.push({ topic: source, key: Buffer.from("u0"), value: Buffer.from(JSON.stringify({ user: "u0", ts: T0 + 2 * MINUTE + 5_000 })) });
    await producer.send({ messages });

    const counts = await waitFor(
      async () => {
        const out = await readToEnd(env.bootstrap, sink, { timeoutMs: 5_000 });
        const byUser = new Map<string, number>();
        for (const m of out) {
          const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number };
          if (v.windowStart === T0) byUser.set(v.key, v.n);
        }
        return byUser.size === 3 ? byUser : false;
      },
      { what: "the first minute's counts of 3 users in the sink", timeoutMs: 120_000, intervalMs: 1_000, process: op.proc },
    );
    assert.deepEqual(Object.fromEntries(counts), { u0: 10, u1: 10, u2: 10 });

    const pods = await k.core.listNamespacedPod({ namespace: ns, labelSelector: "conveyor.dev/pipeline=per-minute" });
    const pod = pods.items[0];
    assert.ok(pod, "the worker pod");
    const pid = Number(pod.status?.containerStatuses?.[0]?.containerID?.replace("shim://", ""));
    assert.ok(pid > 0, `the worker's process: ${pod.status?.containerStatuses?.[0]?.containerID}`);
    const view = containerView(pid);
    const spec = IMAGES.find((i) => i.target === "runtime");
    assert.ok(spec);
    const runtime = loadImageTable(join(env.state.dir, "images.json"))[spec.name];
    assert.ok(runtime?.rootfs, `the bed's image table has ${spec.name}`);
    assert.deepEqual([view.uid, view.gid], [USER.uid, USER.gid], "the image's user");
    assert.equal(view.root.fstype, "overlay", "a writable layer over the image, as a container runtime makes it");
    assert.equal(view.root.options.lowerdir, runtime.rootfs, "over the runtime image's unpacked root");
    assert.ok(view.root.readOnly, "the pod's readOnlyRootFilesystem holds: the root is mounted read-only");
    assert.equal(view.exe, NODE_BINARY, "the image's Node, not the node's");
    const binding = `${WORKDIR}/node_modules/@nxtedition/rocksdb/prebuilds/linux-x64/@nxtedition+rocksdb.node`;
    assert.ok(
      view.mapped.includes(binding),
      `RocksDB's binding is loaded from the image: ${view.mapped.filter((m) => m.includes("rocksdb")).join(", ") || "none"}`,
    );
    assert.ok(
      view.mapped.some((m) => /^\/(usr\/)?lib\/x86_64-linux-gnu\/libstdc\+\+\.so/.test(m)),
      `the image's libstdc++ (Debian ${DEBIAN.release}) is loaded: ${view.mapped.filter((m) => m.includes("libstdc")).join(", ")}`,
    );
    assert.deepEqual(runtime.command, spec.entrypoint);
  });
});

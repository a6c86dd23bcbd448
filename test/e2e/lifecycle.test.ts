// A pipeline's life outside Kubernetes: the operator creates its internal topics (sized by the source), and
// on delete its finalizer removes them and the consumer group when the retention policy says Delete. A change
// that the kept state cannot follow is refused until a reset token asks for the state to be discarded.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, type StreamPipelineSpec, VERSION } from "../../src/api.ts";
import { CLEANUP_FINALIZER } from "../../src/reconcile.ts";
import { stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic, endOffsets, produce } from "../support/kafka.ts";
import { eventReasons, type Kube, kube, statusCode, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, type OperatorProcess, startOperator } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

describe("pipeline lifecycle: internal topics and the finalizer", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  let k: Kube;
  let a: Admin;
  let ns: string;
  let op: OperatorProcess;
  const cleanups: (() => Promise<void>)[] = [];
  const source = `lifecycle-src-${uniqueSuffix()}`;

  before(async () => {
    k = kube();
    a = admin(env.bootstrap);
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "lifecycle");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    await createTopic(a, source, 4);
    op = await startOperator(ns);
  });
  after(async () => {
    // every step runs even when a finalizer does not finish (the failure is still reported): a leaked operator
    // would reconcile the next suites' pipelines, and an open client keeps this file's process alive
    await teardown(
      () => op && deletePipelines(k, ns, op.proc),
      () => op && stopProcess(op.proc.pid),
      ...cleanups,
      () => a?.close(),
    );
  });

  const spec = (over: Partial<StreamPipelineSpec> = {}): StreamPipelineSpec => ({
    kafka: { bootstrapServers: [env.bootstrap] },
    source: { topics: [source] },
    steps: [
      { name: "by-user", keyBy: "value.user" },
      { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
    ],
    sink: { topic: `${source}-out` },
    replicas: 0,
    ...over,
  });
  const apply = (name: string, s: StreamPipelineSpec) =>
    kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: ns }, spec: s }));
  const read = async (name: string) =>
    (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name })) as StreamPipeline;
  const topicsOf = (name: string) => [`${ns}_${name}_by-user-repartition`, `${ns}_${name}_per-minute-changelog`];
  const existing = async () => new Set(await a.listTopics());

  test("internal topics are created with the source's partition count before the workers exist", async () => {
    apply("stateful", spec());
    await waitFor(async () => (await read("stateful")).status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"), {
      what: "the pipeline to be reconciled",
      timeoutMs: 30_000,
      process: op.proc,
    });
    const p = await read("stateful");
    assert.ok(p.metadata?.finalizers?.includes(CLEANUP_FINALIZER), "whenDeleted: Delete puts the cleanup finalizer on");
    const md = await a.metadata({ topics: topicsOf("stateful"), forceUpdate: true });
    for (const t of topicsOf("stateful")) assert.equal(md.topics.get(t)?.partitionsCount, 4, `${t} should have the source's 4 partitions`);
    const sts = await k.apps.readNamespacedStatefulSet({ name: "stateful", namespace: ns });
    const retention = sts.spec?.persistentVolumeClaimRetentionPolicy;
    assert.equal(retention?.whenScaled, "Retain");
    assert.equal(retention?.whenDeleted, "Delete");
  });

  test("deleting the pipeline deletes its internal topics and its consumer group", async () => {
    const group = `${ns}.stateful`;
    await a.alterConsumerGroupOffsets({ groupId: group, topics: [{ name: source, partitionOffsets: [{ partition: 0, offset: 0n }] }] });
    assert.ok((await a.listGroups()).has(group), "the group exists before the delete");
    await k.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name: "stateful" });
    await waitFor(
      async () => {
        try {
          await read("stateful");
          return false;
        } catch (err) {
          if (statusCode(err) === 404) return true;
          throw err;
        }
      },
      { what: "the finalizer to let the pipeline go", timeoutMs: 60_000, process: op.proc },
    );
    const topics = await existing();
    for (const t of topicsOf("stateful")) assert.ok(!topics.has(t), `${t} is still on the broker`);
    assert.ok(!(await a.listGroups()).has(group), "the consumer group is still there");
    assert.ok(topics.has(source), "the source topic is the user's and stays");
    const reasons = await eventReasons(k, ns, "stateful");
    assert.ok(reasons.includes("InternalTopicsCreated") && reasons.includes("CleanedUp"), `events: ${reasons.join(", ")}`);
  });

  test("with whenDeleted: Retain there is no finalizer and the topics stay", async () => {
    apply("kept", spec({ state: { retention: { whenDeleted: "Retain" } } }));
    await waitFor(async () => (await existing()).has(topicsOf("kept")[1] as string), {
      what: "the kept pipeline's topics",
      timeoutMs: 30_000,
      process: op.proc,
    });
    assert.ok(!(await read("kept")).metadata?.finalizers?.includes(CLEANUP_FINALIZER));
    await k.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name: "kept" });
    const topics = await existing();
    for (const t of topicsOf("kept")) assert.ok(topics.has(t), `${t} should be retained`);
    await a.deleteTopics({ topics: topicsOf("kept") });
  });

  test("a state-incompatible change is refused with a condition and an event; a new resetToken discards the state", async () => {
    const name = "evolving";
    const condition = async (type: string) => (await read(name)).status?.conditions?.find((c) => c.type === type);
    apply(name, spec());
    const first = await waitFor(
      async () => {
        const x = await read(name);
        return x.status?.stateSchemas?.["per-minute"] && x.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? x : false;
      },
      { what: "the pipeline to accept its first state schema", timeoutMs: 30_000, process: op.proc },
    );
    const hash = first.status?.stateSchemas?.["per-minute"] as string;
    const changelog = topicsOf(name)[1] as string;
    // State the window step kept: what a reset must discard.
    await produce(env.bootstrap, changelog, [{ key: "k", value: "{}" }]);
    assert.equal(
      (await endOffsets(a, changelog)).reduce((x, y) => x + y, 0n),
      1n,
    );
    const configBefore = (await k.core.readNamespacedConfigMap({ name: `${name}-config`, namespace: ns })).data;

    const changed = spec({
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} }, total: { sum: "value.amount" } } },
      ],
    });
    apply(name, changed);
    const refused = await waitFor(
      async () => {
        const c = await condition("Degraded");
        return c?.reason === "IncompatibleStateChange" && c.observedGeneration === 2 ? c : false;
      },
      { what: "IncompatibleStateChange", timeoutMs: 30_000, process: op.proc },
    );
    assert.equal(refused.status, "True");
    assert.match(refused.message, /step "per-minute" changed its state schema .*spec\.state\.resetToken/);
    assert.equal((await condition("Ready"))?.status, "False");
    assert.deepEqual((await k.core.readNamespacedConfigMap({ name: `${name}-config`, namespace: ns })).data, configBefore, "the workers keep their topology");
    assert.equal((await read(name)).status?.stateSchemas?.["per-minute"], hash, "the accepted schema is unchanged");
    assert.equal(
      (await endOffsets(a, changelog)).reduce((x, y) => x + y, 0n),
      1n,
      "the state is untouched",
    );
    assert.ok((await eventReasons(k, ns, name)).includes("IncompatibleStateChange"));

    apply(name, { ...changed, state: { resetToken: "r1" } });
    const reset = await waitFor(
      async () => {
        const x = await read(name);
        const ready = x.status?.conditions?.find((c) => c.type === "Ready");
        return x.status?.stateResetToken === "r1" && ready?.status === "True" && ready.observedGeneration === 3 ? x : false;
      },
      { what: "the reset to be carried out", timeoutMs: 60_000, process: op.proc },
    );
    assert.notEqual(reset.status?.stateSchemas?.["per-minute"], hash, "the new schema is accepted");
    assert.equal((await condition("Degraded"))?.status, "False");
    const offsets = await endOffsets(a, changelog);
    assert.equal(offsets.length, 4, "the changelog is back with the key-group count");
    assert.equal(
      offsets.reduce((x, y) => x + y, 0n),
      0n,
      "the changelog was emptied",
    );
    assert.notDeepEqual((await k.core.readNamespacedConfigMap({ name: `${name}-config`, namespace: ns })).data, configBefore, "the new topology is applied");
    const reasons = await eventReasons(k, ns, name);
    assert.ok(reasons.includes("StateReset"), `events: ${reasons.join(", ")}`);

    // The same token again does not reset again: a further incompatible change is refused.
    apply(name, { ...spec(), state: { resetToken: "r1" } });
    await waitFor(async () => (await condition("Degraded"))?.reason === "IncompatibleStateChange" && (await condition("Degraded"))?.observedGeneration === 4, {
      what: "the used token not to count twice",
      timeoutMs: 30_000,
      process: op.proc,
    });
  });

  test("a missing source topic is reported in status", async () => {
    apply("orphan", spec({ source: { topics: [`missing-${uniqueSuffix()}`] } }));
    const p = await waitFor(
      async () => {
        const x = await read("orphan");
        return x.status?.conditions?.some((c) => c.type === "Degraded" && c.reason === "SourceTopicMissing") ? x : false;
      },
      { what: "SourceTopicMissing", timeoutMs: 30_000, process: op.proc },
    );
    assert.match(p.status?.conditions?.find((c) => c.type === "Degraded")?.message ?? "", /source topics do not exist: missing-/);
  });

  test("orders with step by-user and orders-by with step user get distinct topics; deleting one leaves the other's", async () => {
    const steps = (key: string) => [
      { name: key, keyBy: "value.user" },
      { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
    ];
    apply("orders", spec({ steps: steps("by-user") }));
    apply("orders-by", spec({ steps: steps("user") }));
    const recordedOf = (name: string) =>
      waitFor(async () => ((await read(name)).status?.internalTopics?.length === 2 ? (await read(name)).status?.internalTopics : undefined), {
        what: `${name} to record the two internal topics it created`,
        timeoutMs: 30_000,
        process: op.proc,
      });
    const orders = await recordedOf("orders");
    const ordersBy = await recordedOf("orders-by");
    assert.deepEqual(
      orders.map((t) => t.name),
      [`${ns}_orders_by-user-repartition`, `${ns}_orders_per-minute-changelog`],
    );
    assert.deepEqual(
      ordersBy.map((t) => t.name),
      [`${ns}_orders-by_user-repartition`, `${ns}_orders-by_per-minute-changelog`],
    );
    // State of the other pipeline: a changelog record that must outlive the first one's delete.
    const kept = ordersBy[1]?.name as string;
    await produce(env.bootstrap, kept, [{ key: "k", value: "{}" }]);
    await k.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name: "orders" });
    await waitFor(async () => !(await existing()).has(orders[0]?.name as string), { what: "orders' topics to go", timeoutMs: 60_000, process: op.proc });
    const topics = await existing();
    for (const t of ordersBy) assert.ok(topics.has(t.name), `${t.name} stays`);
    const md = await a.metadata({ topics: ordersBy.map((t) => t.name), forceUpdate: true });
    for (const t of ordersBy) assert.equal(md.topics.get(t.name)?.id, t.topicId, `${t.name} is the topic orders-by created`);
    assert.equal(
      (await endOffsets(a, kept)).reduce((x, y) => x + y, 0n),
      1n,
      "orders-by's state is intact",
    );
  });
});

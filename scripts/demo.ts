// npm run demo: the bed, the CRD and the operator, a sample pipeline from examples/, and records flowing
// through it, shown live. It leaves the bed up and says how to look around and how to stop it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { load } from "js-yaml";
import { type BedState, runningBed, startBed, writeBedState } from "../test/env/bed.ts";
import { freePort, startProcess, waitFor } from "../test/env/proc.ts";
import { ensureAll, repoRoot } from "../test/env/toolchain.ts";
import { admin, createTopic, endOffsets, groupLag, keyedRecords, produce } from "../test/support/kafka.ts";
import { kubectl as runKubectl } from "../test/support/kubectl.ts";

const NS = "demo";
const say = (s: string) => process.stdout.write(`${s}\n`);

const kubectl = (state: BedState, args: string[], input?: string) => runKubectl(state.kubeconfig, args, input);

async function main(): Promise<void> {
  const t0 = Date.now();
  let state = runningBed();
  if (state) say(`== reusing the running bed (${state.dir})`);
  else {
    say("== starting the test bed: Kafka, Kubernetes, the node shim (the first run builds them; later runs take seconds)");
    await ensureAll();
    state = await startBed();
  }

  say("== installing the StreamPipeline CRD");
  kubectl(state, ["apply", "--server-side", "-f", join(repoRoot, "crds")]);
  kubectl(state, ["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);

  if (!(state.extras ?? []).some((x) => x.name === "operator")) {
    say("== starting the operator (npm run operator) against the bed");
    const op = startProcess({
      name: "operator",
      cmd: process.execPath,
      args: [join(repoRoot, "src/main.ts")],
      log: join(state.dir, "operator.log"),
      cwd: repoRoot,
      env: { ...process.env, KUBECONFIG: state.kubeconfig, POD_IP: "127.0.0.1", CONVEYOR_HTTP_PORT: String(await freePort()) },
    });
    state.extras = [...(state.extras ?? []), op];
    writeBedState(state);
  }

  const manifest = load(readFileSync(join(repoRoot, "examples/copy-pipeline.yaml"), "utf8")) as {
    metadata: { namespace?: string; name: string };
    spec: { kafka: { bootstrapServers: string[] }; source: { topics: string[] }; sink: { topic: string } };
  };
  manifest.metadata.namespace = NS;
  manifest.spec.kafka.bootstrapServers = state.kafkaBootstrap.split(",");
  const source = manifest.spec.source.topics[0] ?? "payments";
  const sink = manifest.spec.sink.topic;
  const group = `${NS}.${manifest.metadata.name}`;

  const a = admin(state.kafkaBootstrap);
  try {
    const existing = await a.listTopics();
    for (const t of [source, sink]) if (!existing.includes(t)) await createTopic(a, t, 3);
    say(`== applying examples/copy-pipeline.yaml in namespace ${NS} (copies ${source} to ${sink} with 2 workers)`);
    kubectl(state, ["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } }));
    kubectl(state, ["apply", "-f", "-"], JSON.stringify(manifest));
    await waitFor(
      () => {
        const ready = kubectl(state, [
          "get",
          "streampipeline",
          manifest.metadata.name,
          "-n",
          NS,
          "-o",
          "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ]);
        return ready === "True";
      },
      { what: "the pipeline to be Ready", timeoutMs: 120_000, intervalMs: 500 },
    );
    say(kubectl(state, ["get", "streampipelines,statefulsets,pods,pvc", "-n", NS, "-o", "wide"]));

    const n = 20_000;
    say(`== producing ${n} records to ${source}; the workers copy them to ${sink}`);
    const before = (await endOffsets(a, sink)).reduce((s, e) => s + e, 0n);
    const producing = produce(state.kafkaBootstrap, source, keyedRecords(n, `demo-${Date.now()}`), 500);
    const deadline = Date.now() + 180_000;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`the records were not copied within 180 s; see the worker logs under ${join(state.dir, "shim/pods")}`);
      const copied = (await endOffsets(a, sink)).reduce((s, e) => s + e, 0n) - before;
      const lag = await groupLag(a, group, source);
      say(`   copied ${String(copied).padStart(6)} / ${n}   group ${group} lag ${lag}`);
      if (copied >= BigInt(n) && lag === 0n) break;
      await delay(1_000);
    }
    await producing;
  } finally {
    await a.close();
  }
  say(kubectl(state, ["get", "streampipelines", "-n", NS]));
  say(`== done in ${((Date.now() - t0) / 1000).toFixed(0)} s. The bed is still up. Look around with:`);
  say(`   export KUBECONFIG=${state.kubeconfig}`);
  say(`   kubectl get streampipelines -A; kubectl get pods -n ${NS} -o wide`);
  say(`   KAFKA_BOOTSTRAP=${state.kafkaBootstrap}; operator log: ${join(state.dir, "operator.log")}`);
  say("   stop everything with: npm run bed -- down");
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

// Two operator replicas: only the lease holder acts, and when it is killed (SIGKILL, no release) the other
// takes over and reconciles within 15 s.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { API_VERSION, KIND } from "../../src/api.ts";
import { freePort, isAlive, type Started, startProcess, stopProcess, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { type Kube, kube, statusCode, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { deletePipelines, startOperator } from "../support/operator.ts";
import { teardown } from "../support/suite.ts";

interface Replica {
  id: string;
  port: number;
  proc: Started;
}

async function metric(r: Replica, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${r.port}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) if (line.startsWith(name) && !line.startsWith("#")) total += Number(line.split(" ").at(-1));
  return total;
}

describe("two operator replicas", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  let k: Kube;
  let ns: string;
  const replicas: Replica[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  const source = `ha-in-${uniqueSuffix()}`;

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "ha");
    kubectl(["apply", "--server-side", "--force-conflicts", "-f", join(repoRoot, "crds")]);
    // The source the pipelines name: the operator checks it exists before it runs them.
    const a = admin(env.bootstrap);
    try {
      await createTopic(a, source, 1);
    } finally {
      await a.close();
    }
    kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
    for (const id of ["op-a", "op-b"]) {
      const op = await startOperator(ns, id);
      replicas.push({ id, port: op.port, proc: op.proc });
    }
  });
  after(async () => {
    const alive = replicas.find((r) => isAlive(r.proc.pid));
    // both replicas stop even when a finalizer does not finish: a leaked one would reconcile later suites' pipelines
    await teardown(() => alive && deletePipelines(k, ns, alive.proc), ...replicas.map((r) => () => stopProcess(r.proc.pid)), ...cleanups);
  });

  const apply = (name: string) =>
    kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name, namespace: ns },
        spec: { kafka: { bootstrapServers: [env.bootstrap] }, source: { topics: [source] }, sink: { topic: "ha-out" }, replicas: 0 },
      }),
    );
  const childExists = async (name: string) => {
    try {
      await k.apps.readNamespacedStatefulSet({ name, namespace: ns });
      return true;
    } catch (err) {
      if (statusCode(err) === 404) return false;
      throw err;
    }
  };
  const holder = async () => (await k.coord.readNamespacedLease({ name: "conveyor-operator", namespace: ns })).spec?.holderIdentity;

  test("only the lease holder reconciles; the other stands by", async () => {
    const leaderId = await waitFor(async () => (await holder()) || false, { what: "a replica to take the lease", timeoutMs: 30_000 });
    const leader = replicas.find((r) => r.id === leaderId);
    const standby = replicas.find((r) => r.id !== leaderId);
    assert.ok(leader && standby);
    apply("first");
    await waitFor(() => childExists("first"), { what: "the leader to create the first pipeline's StatefulSet", timeoutMs: 30_000, process: leader.proc });
    assert.equal(await metric(leader, "conveyor_leader"), 1);
    assert.ok((await metric(leader, "conveyor_reconcile_total")) >= 1);
    assert.equal(await metric(standby, "conveyor_leader"), 0);
    assert.equal(await metric(standby, "conveyor_reconcile_total"), 0, "the standby reconciled");
    const ready = await fetch(`http://127.0.0.1:${standby.port}/readyz`);
    assert.equal(ready.status, 200, "a standby replica is ready");
  });

  test("when the leader dies, the other takes over within 15 s", async () => {
    const leaderId = await holder();
    const leader = replicas.find((r) => r.id === leaderId);
    const standby = replicas.find((r) => r.id !== leaderId);
    assert.ok(leader && standby);
    process.kill(leader.proc.pid, "SIGKILL");
    const t0 = Date.now();
    await waitFor(() => !isAlive(leader.proc.pid), { what: "the leader to die", timeoutMs: 5_000 });
    apply("second");
    await waitFor(() => childExists("second"), { what: "the standby to take over and reconcile", timeoutMs: 20_000, process: standby.proc });
    const took = Date.now() - t0;
    assert.ok(took < 15_000, `takeover took ${took} ms`);
    assert.equal(await holder(), standby.id);
    assert.equal(await metric(standby, "conveyor_leader"), 1);
    process.stdout.write(`# takeover after SIGKILL of the leader: ${took} ms\n`);
  });
});

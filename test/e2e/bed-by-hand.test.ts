// The README's "The test bed by hand", typed as a newcomer would type it in the host's network namespace, on a
// second bed of its own: `bed up`, the operator on its default port inside the bed, the example 2-worker pipeline,
// records through it; `bed down` while the workers run (and a container that ignores SIGTERM, with a child that
// left its process group) leaves no process and no namespace; a new bed gives the same pods the same addresses;
// and a bed whose processes were SIGKILLed is cleaned up by the next `up`. The host's namespace never holds an
// address or route the bed added.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { readBedState } from "../env/bed.ts";
import { bedCgroupFor, cgroupPids } from "../env/cgroup.ts";
import { type BedNet, bedNamespaces, bedNetFor, type HostNetView, netView } from "../env/net.ts";
import { isAlive, signalGroup, tail, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";

const RECORDS = 500;
/** what `bed up` prints, each as NAME=value on a line of its own */
const PRINTED = ["KUBECONFIG", "KAFKA_BOOTSTRAP", "KAFKA_SASL_BOOTSTRAP", "KAFKA_MTLS_BOOTSTRAP", "BED_CA", "KAFKA_SASL_ADMIN"];

/** The host's namespace: scripts/test.ts runs the suites inside the shared bed's and names its own here. */
function hostNetns(): string {
  const ns = process.env.CONVEYOR_HOST_NETNS;
  if (!ns || !existsSync(ns)) throw new Error("CONVEYOR_HOST_NETNS is not set: run this suite through npm test, which names the host's network namespace");
  return ns;
}

interface ByHand {
  dir: string;
  net: BedNet;
  env: NodeJS.ProcessEnv;
  /** runs a command in the host's namespace, as typed in the user's shell; throws with its output when it fails */
  sh(argv: string[], input?: string): string;
}

function byHand(dir: string): ByHand {
  const env: NodeJS.ProcessEnv = { ...process.env, CONVEYOR_BED_DIR: dir };
  // The shell a newcomer has: none of the shared bed's variables.
  for (const k of [...PRINTED, "CONVEYOR_HOST_NETNS"]) delete env[k];
  return {
    dir,
    net: bedNetFor(dir),
    env,
    sh(argv, input) {
      const res = spawnSync("nsenter", [`--net=${hostNetns()}`, "--", ...argv], { cwd: repoRoot, env, input, encoding: "utf8", timeout: 300_000 });
      if (res.error || res.status !== 0) {
        throw new Error(`'${argv.join(" ")}' failed (${res.error?.message ?? `exit ${res.status}`}):\n${res.stdout}\n${res.stderr}`.slice(0, 4000));
      }
      return res.stdout;
    },
  };
}

/** `npm run bed -- up`; sets what it prints (KUBECONFIG=, KAFKA_BOOTSTRAP=, the secured listeners') in the user's environment. */
function bedUp(u: ByHand): { seconds: number } {
  const t0 = Date.now();
  const out = u.sh(["npm", "run", "-s", "bed", "--", "up"]);
  for (const k of PRINTED) {
    const v = out.match(new RegExp(`^${k}=(.+)$`, "m"))?.[1];
    assert.ok(v, `bed up printed ${k}= on a line of its own: ${out}`);
    u.env[k] = v;
  }
  return { seconds: (Date.now() - t0) / 1000 };
}

/** A SCRAM-SHA-512 login over TLS as the printed super user, at the printed SASL address, from the host's namespace. */
function saslLoginFromHost(u: ByHand): string {
  const js = [
    "const { Admin } = require('@platformatic/kafka'); const fs = require('node:fs');",
    "const [username, ...pw] = process.env.KAFKA_SASL_ADMIN.split(':');",
    "const a = new Admin({ clientId: 'by-hand', bootstrapBrokers: [process.env.KAFKA_SASL_BOOTSTRAP], retries: 0, tls: { ca: fs.readFileSync(process.env.BED_CA) },",
    "  sasl: { mechanism: 'SCRAM-SHA-512', username, password: pw.join(':') } });",
    "a.metadata({ topics: [] }).then((md) => { console.log('brokers', md.brokers.size); return a.close(); }, (e) => { console.error(e.message); process.exit(1); });",
  ].join("\n");
  return u.sh([process.execPath, "-e", js]).trim();
}

/** `npm run bed -- exec npm run operator`, left running in the background as in a second terminal. */
function operatorByHand(u: ByHand, log: string): ChildProcess {
  const fd = openSync(log, "a");
  const child = spawn("nsenter", [`--net=${hostNetns()}`, "--", "npm", "run", "bed", "--", "exec", "npm", "run", "operator"], {
    cwd: repoRoot,
    env: u.env,
    stdio: ["ignore", fd, fd],
    detached: true,
  });
  return child;
}

/** The example pipeline on its topics, RECORDS records in, and the same records out of the sink. */
async function recordsFlow(u: ByHand, tag: string): Promise<void> {
  for (const topic of ["payments", "payments-copy"]) u.sh(["npm", "run", "-s", "bed", "--", "kafka-topics", "--create", "--topic", topic, "--partitions", "2"]);
  u.sh(["kubectl", "apply", "--server-side", "-f", "crds/"]);
  u.sh(["kubectl", "wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
  u.sh(["kubectl", "apply", "-f", "examples/copy-pipeline.yaml"]);
  const t0 = Date.now();
  u.sh(["kubectl", "wait", "--for=condition=Ready", "streampipeline/copy", "--timeout=180s"]);
  process.stdout.write(`# ${tag}: both workers Ready ${((Date.now() - t0) / 1000).toFixed(1)} s after the apply\n`);
  const lines = Array.from({ length: RECORDS }, (_, i) => `${tag}-${i}`);
  u.sh(["npm", "run", "-s", "bed", "--", "kafka-console-producer", "--topic", "payments"], `${lines.join("\n")}\n`);
  const out = u.sh([
    "npm",
    "run",
    "-s",
    "bed",
    "--",
    "kafka-console-consumer",
    "--topic",
    "payments-copy",
    "--from-beginning",
    "--max-messages",
    String(RECORDS),
    "--timeout-ms",
    "120000",
  ]);
  assert.deepEqual(out.trim().split("\n").sort(), [...lines].sort(), "every record reached the sink once");
}

interface Worker {
  name: string;
  ip: string;
  ready: boolean;
  restarts: number;
}

function workers(u: ByHand): Worker[] {
  const list = JSON.parse(u.sh(["kubectl", "get", "pods", "-n", "default", "-l", "conveyor.dev/pipeline=copy", "-o", "json"])) as {
    items: {
      metadata: { name: string };
      status: { podIP?: string; conditions?: { type: string; status: string }[]; containerStatuses?: { restartCount: number }[] };
    }[];
  };
  return list.items
    .map((p) => ({
      name: p.metadata.name,
      ip: p.status.podIP ?? "",
      ready: p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
      restarts: p.status.containerStatuses?.[0]?.restartCount ?? -1,
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** A pod that ignores SIGTERM and has a child in a session of its own, out of reach of its process group. */
function unrulyPod(u: ByHand): void {
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "unruly", namespace: "default" },
    spec: {
      terminationGracePeriodSeconds: 2,
      containers: [{ name: "main", image: "bed/shell", args: ["trap '' TERM; setsid sleep 100000 & while :; do sleep 1; done"] }],
    },
  };
  u.sh(["kubectl", "apply", "-f", "-"], JSON.stringify(pod));
}

describe("the test bed by hand, from the host's network namespace", () => {
  const shared = bedEnv();
  const u = byHand(join(shared.state.dir, `by-hand-${uniqueSuffix()}`));
  let hostBefore: HostNetView;
  let operator: ChildProcess | undefined;
  const logs = join(u.dir, "..", `${u.dir.split("/").pop()}-logs`);

  before(() => {
    mkdirSync(logs, { recursive: true });
    hostBefore = netView(hostNetns());
  });
  after(() => {
    if (operator?.pid && isAlive(operator.pid)) signalGroup(operator.pid, "SIGKILL");
    // Whatever a failed test left: the bed's own down.
    if (readBedState(u.dir)) spawnSync("npm", ["run", "-s", "bed", "--", "down"], { cwd: repoRoot, env: u.env, stdio: "ignore", timeout: 120_000 });
  });

  const assertHostUntouched = (when: string) => {
    const now = netView(hostNetns());
    assert.deepEqual(now, hostBefore, `the host's addresses and routes ${when} are what they were before the bed`);
    const inPodRange = [...now.addresses, ...now.routes].filter((x) => x.includes("10.244."));
    assert.deepEqual(inPodRange, [], "the host holds nothing of the pod network");
  };

  const operatorUp = async () => {
    operator = operatorByHand(u, join(logs, "operator.log"));
    // The operator's own probe: inside the bed's namespace, on its default port.
    await waitFor(
      () => {
        const js = "fetch('http://127.0.0.1:8080/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))";
        return spawnSync("nsenter", [`--net=/run/netns/${u.net.netns}`, "--", process.execPath, "-e", js]).status === 0;
      },
      { what: "the operator (npm run bed -- exec npm run operator) to answer /readyz on 127.0.0.1:8080 in the bed", timeoutMs: 60_000, intervalMs: 500 },
    ).catch((err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\noperator log:\n${tail(join(logs, "operator.log"))}`);
    });
  };

  let firstIps: Worker[] = [];

  test("bed up, the operator on its default port, the example 2-worker pipeline: records flow; the host gets no address or route", async () => {
    const up = bedUp(u);
    process.stdout.write(`# bed up (warm) took ${up.seconds.toFixed(1)} s\n`);
    assert.equal(saslLoginFromHost(u), "brokers 1", "the printed SASL address, CA and super user work from the host's shell");
    assertHostUntouched("while the bed runs");
    assert.equal(u.sh(["kubectl", "get", "nodes", "-o", "name"]).trim(), "node/bed-node-1");
    await operatorUp();
    await recordsFlow(u, "first");
    const ws = workers(u);
    assert.deepEqual(
      ws.map((w) => [w.name, w.ready, w.restarts]),
      [
        ["copy-0", true, 0],
        ["copy-1", true, 0],
      ],
      "both workers Ready and never restarted (no port taken by the operator)",
    );
    firstIps = ws;
    assertHostUntouched("with the pipeline running");
  });

  test("bed down while the workers run, and a container ignores SIGTERM: no process of the bed is left, nor any namespace", async () => {
    unrulyPod(u);
    await waitFor(() => u.sh(["kubectl", "get", "pod", "unruly", "-n", "default", "-o", "jsonpath={.status.phase}"]) === "Running", {
      what: "the unruly pod to run",
      timeoutMs: 30_000,
    });
    const cgroup = bedCgroupFor(u.dir);
    // its setsid child too: two processes in the pod's cgroup
    await waitFor(() => cgroupPids(join(cgroup, "pods")).length >= 4, { what: "the workers' and the unruly pod's processes", timeoutMs: 10_000 });
    const pids = cgroupPids(cgroup);
    assert.ok(pids.length > 8, `the bed's cgroup holds its processes (${pids.length})`);
    const t0 = Date.now();
    u.sh(["npm", "run", "-s", "bed", "--", "down"]);
    process.stdout.write(`# bed down took ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    const alive = pids.filter(isAlive);
    assert.deepEqual(alive, [], "no process of the bed is alive after bed down");
    assert.equal(existsSync(cgroup), false, "the bed's cgroup is gone");
    assert.deepEqual(bedNamespaces(u.net), [], "the bed's network namespaces are gone");
    await waitFor(() => operator?.exitCode !== null, { what: "the operator run by hand to end with its bed", timeoutMs: 15_000 });
    assertHostUntouched("after bed down");
  });

  test("a new bed: the same pipeline gets the same pod names and addresses, and records flow", async () => {
    bedUp(u);
    assertHostUntouched("while the second bed runs");
    await operatorUp();
    await recordsFlow(u, "second");
    const ws = workers(u);
    assert.deepEqual(
      ws.map((w) => [w.name, w.ready]),
      firstIps.map((w) => [w.name, true]),
    );
    // Which worker the scheduler binds first, and so gets the first address, varies; the addresses, and the pod
    // namespaces named after them, are the first bed's again.
    assert.deepEqual(ws.map((w) => w.ip).sort(), firstIps.map((w) => w.ip).sort(), "the same pod addresses as the first bed's");
  });

  test("the next up after a SIGKILLed bed kills what it left and removes its namespaces", async () => {
    const state = readBedState(u.dir);
    assert.ok(state);
    const left = cgroupPids(join(bedCgroupFor(u.dir), "pods"));
    assert.ok(left.length >= 2, "the workers run");
    const oldPodNamespaces = bedNamespaces(u.net).filter((n) => n !== u.net.netns);
    assert.equal(oldPodNamespaces.length, 2);
    // The bed's own processes die at once; the pods' processes and namespaces stay behind.
    const own = [...state.kafka.pids.values(), ...state.controlPlane.pids.values(), state.shim.pid, ...state.net.forwarders.map((f) => f.pid)];
    for (const pid of own) process.kill(pid, "SIGKILL");
    await waitFor(() => own.every((p) => !isAlive(p)), { what: "the SIGKILLed bed processes to be gone", timeoutMs: 10_000 });
    assert.ok(left.some(isAlive), "pods outlive a SIGKILLed shim");
    bedUp(u);
    assert.deepEqual(left.filter(isAlive), [], "the new up killed the earlier bed's pods");
    const now = bedNamespaces(u.net);
    // The new bed's own namespace; no pod namespace yet, since nothing runs in it.
    assert.deepEqual(now, [u.net.netns]);
    assert.equal(u.sh(["kubectl", "get", "nodes", "-o", "name"]).trim(), "node/bed-node-1");
    u.sh(["npm", "run", "-s", "bed", "--", "down"]);
    assert.deepEqual(bedNamespaces(u.net), []);
    assertHostUntouched("after the last bed down");
  });
});

// The node shim: plays the kubelet for one or more Nodes and runs their pods as local processes.
// usage: node test/env/shim/main.ts --kubeconfig F --images F --work DIR [--nodes N] [--cpu 16] [--memory 24Gi]
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { CoordinationV1Api, CoreV1Api, KubeConfig, makeInformer, PatchStrategy, setHeaderOptions, type V1Node, type V1Pod } from "@kubernetes/client-node";
import { statusCode as code } from "../../../src/kube-errors.ts";
import { loadImageTable } from "./images.ts";
import { PodRunner, type ShimContext } from "./pod-runner.ts";

const { values } = parseArgs({
  options: {
    kubeconfig: { type: "string" },
    images: { type: "string" },
    work: { type: "string" },
    nodes: { type: "string", default: "1" },
    cpu: { type: "string", default: "16" },
    memory: { type: "string", default: "24Gi" },
    pods: { type: "string", default: "110" },
  },
});
if (!values.kubeconfig || !values.images || !values.work) {
  process.stderr.write("usage: main.ts --kubeconfig F --images F --work DIR [--nodes N]\n");
  process.exit(2);
}

const LEASE_RENEW_MS = 5_000;
const STATUS_HEARTBEAT_MS = 30_000;
const KUBELET_VERSION = "v1.36.3";

function log(msg: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), msg, ...fields })}\n`);
}

const kc = new KubeConfig();
kc.loadFromFile(values.kubeconfig);
const api = kc.makeApiClient(CoreV1Api);
const coord = kc.makeApiClient(CoordinationV1Api);
const cluster = kc.getCurrentCluster();
const server = new URL(cluster?.server ?? "https://127.0.0.1:6443");
mkdirSync(values.work, { recursive: true });

const ctx: ShimContext = {
  api,
  images: loadImageTable(values.images),
  workDir: values.work,
  apiserverHost: server.hostname,
  apiserverPort: Number(server.port || 443),
  log,
};
const nodeNames = Array.from({ length: Number(values.nodes) }, (_, i) => `bed-node-${i + 1}`);
const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

function nodeStatus(): V1Node["status"] {
  const now = new Date();
  const cond = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  const resources = { cpu: values.cpu ?? "16", memory: values.memory ?? "24Gi", pods: values.pods ?? "110", "ephemeral-storage": "100Gi" };
  return {
    capacity: resources,
    allocatable: resources,
    conditions: [
      cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "node shim: no memory pressure"),
      cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "node shim: no disk pressure"),
      cond("PIDPressure", "False", "KubeletHasSufficientPID", "node shim: enough PIDs"),
      cond("Ready", "True", "KubeletReady", "node shim is posting ready status"),
    ],
    addresses: [
      { type: "InternalIP", address: "127.0.0.1" },
      { type: "Hostname", address: "localhost" },
    ],
    nodeInfo: {
      architecture: "amd64",
      bootID: "",
      containerRuntimeVersion: "conveyor-shim://local-processes",
      kernelVersion: "",
      kubeProxyVersion: "",
      kubeletVersion: KUBELET_VERSION,
      machineID: "",
      operatingSystem: "linux",
      osImage: "conveyor test bed",
      systemUUID: "",
    },
  };
}

async function registerNode(name: string): Promise<void> {
  try {
    await api.createNode({
      body: {
        apiVersion: "v1",
        kind: "Node",
        metadata: { name, labels: { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" } },
      },
    });
  } catch (err) {
    if (code(err) !== 409) throw err;
  }
  await api.patchNodeStatus({ name, body: { status: nodeStatus() } }, merge);
}

function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

async function renewLease(name: string): Promise<void> {
  const namespace = "kube-node-lease";
  const spec = { holderIdentity: name, leaseDurationSeconds: 40, renewTime: microTime(new Date()) };
  try {
    await coord.patchNamespacedLease({ name, namespace, body: { spec } }, merge);
  } catch (err) {
    if (code(err) !== 404) throw err;
    const node = await api.readNode({ name });
    await coord.createNamespacedLease({
      namespace,
      body: {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name, namespace, ownerReferences: [{ apiVersion: "v1", kind: "Node", name, uid: node.metadata?.uid ?? "" }] },
        spec: { holderIdentity: name, leaseDurationSeconds: 40 },
      },
    });
    await coord.patchNamespacedLease({ name, namespace, body: { spec } }, merge);
  }
}

function every(ms: number, what: string, fn: () => Promise<void>): void {
  const tick = () => {
    fn()
      .catch((err: unknown) => log(`${what} failed; will retry`, { error: err instanceof Error ? err.message : String(err) }))
      .finally(() => setTimeout(tick, ms).unref());
  };
  setTimeout(tick, ms).unref();
}

// Pod IPs come from 10.244.0.0/16, never reused within one shim's life. Not loopback: the apiserver refuses
// loopback addresses in EndpointSlices, and without endpoints no Service (a webhook's, say) reaches a pod.
// A local route makes the whole range this host's own, as 127.0.0.0/8 is, so each pod binds its own address.
const POD_CIDR = "10.244.0.0/16";
const POD_IP = /^10\.244\.(\d+)\.(\d+)$/;
let nextIp = 1;
function allocateIp(): string {
  const n = nextIp++;
  return `10.244.${(n >> 8) & 255}.${n & 255}`;
}

/** The CNI's part: route the pod range to this host. Idempotent; left in place when the shim stops. */
function ensurePodRoute(): void {
  const res = spawnSync("ip", ["route", "replace", "local", POD_CIDR, "dev", "lo"], { encoding: "utf8" });
  if (res.error || res.status !== 0) {
    throw new Error(
      `the node shim needs a local route for pod addresses (ip route replace local ${POD_CIDR} dev lo, as root with CAP_NET_ADMIN): ${res.error?.message ?? res.stderr.trim()}`,
    );
  }
}

const runners = new Map<string, PodRunner>();
const finishing = new Set<string>();

async function finalDelete(pod: V1Pod): Promise<void> {
  const name = pod.metadata?.name ?? "";
  const namespace = pod.metadata?.namespace ?? "";
  try {
    // The grace period goes in the body: a DeleteOptions body overrides the query parameter.
    await api.deleteNamespacedPod({ name, namespace, body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata?.uid } } });
  } catch (err) {
    if (code(err) !== 404 && code(err) !== 409) throw err;
  }
}

function onPod(pod: V1Pod): void {
  const uid = pod.metadata?.uid;
  const nodeName = pod.spec?.nodeName;
  if (!uid || !nodeName || !nodeNames.includes(nodeName)) return;
  let runner = runners.get(uid);
  if (pod.metadata?.deletionTimestamp) {
    if (finishing.has(uid)) return;
    finishing.add(uid);
    const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
    void (async () => {
      if (runner) {
        runner.update(pod);
        await runner.terminate(grace);
        await runner.flushStatus();
      }
      for (let attempt = 0; ; attempt++) {
        try {
          await finalDelete(pod);
          break;
        } catch (err) {
          log("final delete failed; retrying", { pod: `${pod.metadata?.namespace}/${pod.metadata?.name}`, error: String(err) });
          await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** attempt, 5_000)));
        }
      }
      runners.delete(uid);
      finishing.delete(uid);
    })();
    return;
  }
  if (runner) {
    runner.update(pod);
    return;
  }
  const phase = pod.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return;
  runner = new PodRunner(ctx, pod, allocateIp());
  runners.set(uid, runner);
  log("pod assigned", { pod: runner.key, ip: runner.ip, node: nodeName });
  void runner.start().catch((err: unknown) => log("pod start failed", { pod: runner?.key, error: err instanceof Error ? err.message : String(err) }));
}

function onPodGone(pod: V1Pod): void {
  const uid = pod.metadata?.uid;
  if (!uid) return;
  const runner = runners.get(uid);
  if (runner && !finishing.has(uid)) {
    runner.kill();
    runners.delete(uid);
    log("pod removed from the API; processes killed", { pod: runner.key });
  }
}

async function main(): Promise<void> {
  ensurePodRoute();
  for (const n of nodeNames) {
    await registerNode(n);
    await renewLease(n);
  }
  for (const n of nodeNames) {
    every(LEASE_RENEW_MS, `lease renewal for ${n}`, () => renewLease(n));
    every(STATUS_HEARTBEAT_MS, `status heartbeat for ${n}`, async () => {
      await api.patchNodeStatus({ name: n, body: { status: nodeStatus() } }, merge);
    });
  }
  // Continue pod IP numbering above any address already handed out (a restarted shim).
  const existing = await api.listPodForAllNamespaces();
  for (const p of existing.items) {
    const m = p.status?.podIP?.match(POD_IP);
    if (m) nextIp = Math.max(nextIp, Number(m[1]) * 256 + Number(m[2]) + 1);
  }
  const informer = makeInformer<V1Pod>(kc, "/api/v1/pods", () => api.listPodForAllNamespaces());
  informer.on("add", onPod);
  informer.on("update", onPod);
  informer.on("delete", onPodGone);
  const restart = (err: unknown) => {
    log("pod watch failed; restarting it", { error: err instanceof Error ? err.message : String(err) });
    setTimeout(() => informer.start().catch(restart), 1_000);
  };
  informer.on("error", restart);
  await informer.start();
  log("node shim ready", { nodes: nodeNames });
  const stop = async () => {
    log("node shim stopping; killing its pods' processes");
    await informer.stop();
    await Promise.all([...runners.values()].map((r) => r.terminate(5)));
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.on("SIGINT", () => void stop());
}

main().catch((err: unknown) => {
  log("node shim failed", { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});

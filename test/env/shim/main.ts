// The node shim: plays the kubelet for one or more Nodes and runs their pods as local processes.
// It runs in the bed's network namespace, as a kubelet runs in its node's, and gives each pod a network namespace
// of its own on the bed's bridge, and a cgroup of its own below the bed's.
// usage: node test/env/shim/main.ts --kubeconfig F --images F --work DIR --netns NAME --cgroup DIR [--nodes N] [--cpu 16] [--memory 24Gi]
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { CoordinationV1Api, CoreV1Api, KubeConfig, makeInformer, PatchStrategy, setHeaderOptions, type V1Node, type V1Pod } from "@kubernetes/client-node";
import { statusCode as code } from "../../../src/kube-errors.ts";
import { ensureCgroup } from "../cgroup.ts";
import { BED_GATEWAY, bedNetFor, createPodNet, removePodNet } from "../net.ts";
import { loadImageTable } from "./images.ts";
import { PodRunner, type ShimContext } from "./pod-runner.ts";

const { values } = parseArgs({
  options: {
    kubeconfig: { type: "string" },
    images: { type: "string" },
    work: { type: "string" },
    /** the bed's directory, which names its network namespaces */
    bed: { type: "string" },
    cgroup: { type: "string" },
    nodes: { type: "string", default: "1" },
    cpu: { type: "string", default: "16" },
    memory: { type: "string", default: "24Gi" },
    pods: { type: "string", default: "110" },
  },
});
if (!values.kubeconfig || !values.images || !values.work || !values.bed || !values.cgroup) {
  process.stderr.write("usage: main.ts --kubeconfig F --images F --work DIR --bed DIR --cgroup DIR [--nodes N]\n");
  process.exit(2);
}
const net = bedNetFor(values.bed);
const podsCgroup = join(values.cgroup, "pods");

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
  // Pods reach the apiserver as a real pod reaches its `kubernetes` Service: at an address on the pod network.
  apiserverHost: BED_GATEWAY,
  apiserverPort: Number(server.port || 443),
  hostIP: BED_GATEWAY,
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
      { type: "InternalIP", address: BED_GATEWAY },
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

// Pod IPs come from 10.244.0.0/16 (the gateway holds .0.1), never reused within one shim's life. Not loopback:
// the apiserver refuses loopback addresses in EndpointSlices, and without endpoints no Service (a webhook's, say)
// reaches a pod. Each address lives on eth0 of the pod's own network namespace.
const POD_IP = /^10\.244\.(\d+)\.(\d+)$/;
let nextIp = 2;
function allocateIp(): { n: number; ip: string } {
  const n = nextIp++;
  return { n, ip: `10.244.${(n >> 8) & 255}.${n & 255}` };
}

const runners = new Map<string, PodRunner>();
const finishing = new Set<string>();
/** pods the API no longer has (a network setup retry must not bring one back) */
const gone = new Set<string>();

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
        await releasePod(runner);
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
  const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
  const { n, ip } = allocateIp();
  let netns: string;
  try {
    // The CNI's part: the pod's own namespace with its address, on the bridge.
    netns = createPodNet(net, n, ip);
  } catch (err) {
    log("pod network setup failed; retrying in 1 s", { pod: key, error: err instanceof Error ? err.message : String(err) });
    setTimeout(() => {
      if (!gone.has(uid)) onPod(pod);
    }, 1_000).unref();
    return;
  }
  runner = new PodRunner(ctx, pod, ip, { netns, cgroup: join(podsCgroup, uid) });
  runners.set(uid, runner);
  log("pod assigned", { pod: runner.key, ip: runner.ip, netns, node: nodeName });
  void runner.start().catch((err: unknown) => log("pod start failed", { pod: runner?.key, error: err instanceof Error ? err.message : String(err) }));
}

/** After a pod's processes are gone: its cgroups and its network namespace. */
async function releasePod(runner: PodRunner): Promise<void> {
  try {
    await runner.release();
    removePodNet(runner.place.netns);
  } catch (err) {
    log("could not release the pod's cgroup or network namespace; bed down removes them", { pod: runner.key, error: String(err) });
  }
}

function onPodGone(pod: V1Pod): void {
  const uid = pod.metadata?.uid;
  if (!uid) return;
  gone.add(uid);
  const runner = runners.get(uid);
  if (runner && !finishing.has(uid)) {
    runners.delete(uid);
    void runner.kill().then(
      () => releasePod(runner),
      (err: unknown) => log("could not kill the processes of a pod removed from the API", { pod: runner.key, error: String(err) }),
    );
    log("pod removed from the API; processes killed", { pod: runner.key });
  }
}

async function main(): Promise<void> {
  ensureCgroup(podsCgroup);
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
    await Promise.all([...runners.values()].map((r) => r.terminate(5).then(() => releasePod(r))));
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.on("SIGINT", () => void stop());
}

main().catch((err: unknown) => {
  log("node shim failed", { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});

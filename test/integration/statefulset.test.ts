// A StatefulSet on the bed: pods run as local processes on the shim node with their PVCs bound, state on a
// volume survives a pod's deletion, scale-down sends SIGTERM and keeps the PVC, and a crashed process restarts.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { PatchStrategy, setHeaderOptions, type V1Pod } from "@kubernetes/client-node";
import { SHELL_IMAGE } from "../env/pod-images.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";

// The container records each start on its volume, copies a marker it finds there (state from an earlier
// pod), and writes "term" on SIGTERM before it exits.
const SCRIPT = [
  'echo "start $HOSTNAME $POD_IP" >> /data/starts',
  'if [ -f /data/marker ]; then cp /data/marker /data/seen-after-restart; else echo "$HOSTNAME-$MARKER" > /data/marker; fi',
  "trap 'echo term >> /data/terms; exit 0' TERM",
  "while true; do sleep 0.1; done",
].join("\n");

function pidOf(pod: V1Pod): number {
  const id = pod.status?.containerStatuses?.[0]?.containerID ?? "";
  const m = id.match(/^shim:\/\/(\d+)$/);
  if (!m) throw new Error(`pod ${pod.metadata?.name} has no shim container id (${id})`);
  return Number(m[1]);
}

describe("a StatefulSet on the shim node", () => {
  let k: Kube;
  let ns: string;
  const cleanups: (() => Promise<void>)[] = [];
  const marker = `m${Date.now()}`;

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "sts-it");
  });
  after(async () => {
    for (const c of cleanups) await c();
  });

  const pod = (name: string) => k.core.readNamespacedPod({ name, namespace: ns });
  const running = async (name: string): Promise<V1Pod | false> => {
    const p = await pod(name);
    const ready = p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
    return p.status?.phase === "Running" && ready && !p.metadata?.deletionTimestamp ? p : false;
  };
  const volumeDir = async (claim: string): Promise<string> => {
    const pvc = await k.core.readNamespacedPersistentVolumeClaim({ name: claim, namespace: ns });
    const pv = await k.core.readPersistentVolume({ name: pvc.spec?.volumeName ?? "" });
    const path = pv.spec?.hostPath?.path;
    if (!path) throw new Error(`PV of ${claim} has no hostPath`);
    return path;
  };

  test("2 replicas run as local processes with both PVCs bound", async () => {
    await k.apps.createNamespacedStatefulSet({
      namespace: ns,
      body: {
        metadata: { name: "store" },
        spec: {
          replicas: 2,
          serviceName: "store",
          selector: { matchLabels: { app: "store" } },
          template: {
            metadata: { labels: { app: "store" } },
            spec: {
              terminationGracePeriodSeconds: 10,
              securityContext: { runAsUser: 65532, runAsGroup: 65532, runAsNonRoot: true, fsGroup: 65532 },
              containers: [
                {
                  name: "main",
                  image: `${SHELL_IMAGE}:1`,
                  args: [SCRIPT],
                  env: [{ name: "MARKER", value: marker }],
                  securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
                  volumeMounts: [{ name: "data", mountPath: "/data" }],
                },
              ],
            },
          },
          volumeClaimTemplates: [{ metadata: { name: "data" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } }],
        },
      },
    });
    for (const name of ["store-0", "store-1"]) {
      const p = await waitFor(() => running(name), { what: `${name} to run`, timeoutMs: 60_000 });
      assert.equal(p.spec?.nodeName, "bed-node-1");
      assert.match(p.status?.podIP ?? "", /^10\.244\.\d+\.\d+$/, "pod addresses come from the pod range, not loopback");
      const pid = pidOf(p);
      assert.ok(isAlive(pid), `process ${pid} of ${name} is not running`);
      // The shim runs it as the pod's user: the kernel says so. The shim reports the container running once it
      // has spawned the launcher, which sets up the mounts as root and then execs the program as the user in the
      // same process; a look in between sees root (it did once in CI), so the look waits for the exec.
      const uidOf = () => readFileSync(`/proc/${pid}/status`, "utf8").match(/^Uid:\s+(\d+)/m)?.[1];
      await waitFor(() => uidOf() === "65532", { what: `${name}'s process to run as uid 65532 (now ${uidOf()})`, timeoutMs: 10_000, intervalMs: 20 });
      assert.equal(uidOf(), "65532");
    }
    const ips = await Promise.all(["store-0", "store-1"].map(async (n) => (await pod(n)).status?.podIP));
    assert.notEqual(ips[0], ips[1], "each pod gets its own address");
    // A Service finds them: the EndpointSlice controller accepts the addresses (it refuses loopback ones).
    await k.core.createNamespacedService({ namespace: ns, body: { metadata: { name: "store" }, spec: { clusterIP: "None", selector: { app: "store" } } } });
    await waitFor(
      async () => {
        const slices = await k.discovery.listNamespacedEndpointSlice({ namespace: ns, labelSelector: "kubernetes.io/service-name=store" });
        const addresses = slices.items.flatMap((s) => (s.endpoints ?? []).flatMap((e) => e.addresses)).sort();
        return JSON.stringify(addresses) === JSON.stringify([...ips].sort());
      },
      { what: "the Service's EndpointSlice to list both pods", timeoutMs: 30_000 },
    );
    for (const claim of ["data-store-0", "data-store-1"]) {
      const pvc = await k.core.readNamespacedPersistentVolumeClaim({ name: claim, namespace: ns });
      assert.equal(pvc.status?.phase, "Bound", `${claim} is not Bound`);
    }
    const dir0 = await volumeDir("data-store-0");
    await waitFor(() => existsSync(join(dir0, "marker")), { what: "pod 0 to write its marker", timeoutMs: 10_000 });
    assert.equal(readFileSync(join(dir0, "marker"), "utf8").trim(), `store-0-${marker}`);
  });

  test("a file pod 0 wrote survives deleting pod 0, which comes back on the same PVC", async () => {
    const before = await pod("store-0");
    const oldPid = pidOf(before);
    await k.core.deleteNamespacedPod({ name: "store-0", namespace: ns });
    const after = await waitFor(
      async () => {
        const p = await running("store-0");
        return p && p.metadata?.uid !== before.metadata?.uid ? p : false;
      },
      { what: "store-0 to be recreated and run", timeoutMs: 60_000 },
    );
    assert.ok(!isAlive(oldPid), "the deleted pod's process is still running");
    const dir0 = await volumeDir("data-store-0");
    assert.equal(readFileSync(join(dir0, "terms"), "utf8").trim(), "term", "the deleted pod got SIGTERM");
    await waitFor(() => existsSync(join(dir0, "seen-after-restart")), { what: "the new pod 0 to find the marker", timeoutMs: 10_000 });
    assert.equal(readFileSync(join(dir0, "seen-after-restart"), "utf8").trim(), `store-0-${marker}`);
    assert.equal(readFileSync(join(dir0, "starts"), "utf8").trim().split("\n").length, 2);
    assert.notEqual(after.metadata?.uid, before.metadata?.uid);
  });

  test("scaling to 1 sends pod 1 SIGTERM and keeps its PVC", async () => {
    const p1 = await pod("store-1");
    const pid1 = pidOf(p1);
    const dir1 = await volumeDir("data-store-1");
    await k.apps.patchNamespacedStatefulSetScale(
      { name: "store", namespace: ns, body: { spec: { replicas: 1 } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
    await waitFor(
      async () => {
        const list = await k.core.listNamespacedPod({ namespace: ns });
        return !list.items.some((p) => p.metadata?.name === "store-1");
      },
      { what: "store-1 to be gone", timeoutMs: 60_000 },
    );
    assert.ok(!isAlive(pid1), "pod 1's process outlived its pod");
    assert.equal(readFileSync(join(dir1, "terms"), "utf8").trim(), "term", "pod 1 exited through its SIGTERM handler");
    const pvc = await k.core.readNamespacedPersistentVolumeClaim({ name: "data-store-1", namespace: ns });
    assert.equal(pvc.status?.phase, "Bound", "the PVC of the removed pod is kept");
  });

  test("a process that exits is restarted and its restartCount shows it", async () => {
    const p0 = await pod("store-0");
    const pid = pidOf(p0);
    const restarts = p0.status?.containerStatuses?.[0]?.restartCount ?? 0;
    process.kill(pid, "SIGKILL");
    const after = await waitFor(
      async () => {
        const p = await running("store-0");
        return p && (p.status?.containerStatuses?.[0]?.restartCount ?? 0) === restarts + 1 ? p : false;
      },
      { what: "store-0's container to restart", timeoutMs: 30_000 },
    );
    assert.notEqual(pidOf(after), pid);
    assert.equal(after.metadata?.uid, p0.metadata?.uid, "the same pod, restarted in place");
    assert.equal(after.status?.containerStatuses?.[0]?.lastState?.terminated?.exitCode, 137);
  });
});

// Each pod on the bed has a network namespace of its own, as on a real node: two pods take the same port side by
// side, and a probe reaches only its own pod, so a pod whose container is not running is never Ready however many
// other things listen on that port.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { V1Container, V1Pod } from "@kubernetes/client-node";
import { BED_GATEWAY } from "../env/net.ts";
import { SHELL_IMAGE } from "../env/pod-images.ts";
import { waitFor } from "../env/proc.ts";
import { bedEnv } from "../support/bed.ts";
import { type Kube, kube, testNamespace } from "../support/kube.ts";

/** A container that answers HTTP on :8080 (every address of its pod) with its pod's name. */
function nameServer(): V1Container {
  const js = "require('node:http').createServer((q, s) => s.end(process.env.HOSTNAME)).listen(8080)";
  return {
    name: "main",
    image: SHELL_IMAGE,
    args: [`exec '${process.execPath}' -e "${js}"`],
    ports: [{ name: "http", containerPort: 8080 }],
    readinessProbe: { httpGet: { path: "/", port: "http" }, periodSeconds: 1, failureThreshold: 1 },
  };
}

function isReady(p: V1Pod): boolean {
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

describe("pod network: a network namespace per pod", () => {
  let k: Kube;
  let ns: string;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "podnet");
  });
  after(async () => {
    for (const c of cleanups) await c();
  });

  const pod = (name: string) => k.core.readNamespacedPod({ name, namespace: ns });
  const create = (name: string, container: V1Container) =>
    k.core.createNamespacedPod({ namespace: ns, body: { metadata: { name }, spec: { terminationGracePeriodSeconds: 2, containers: [container] } } });

  test("two pods that both listen on port 8080 run side by side, each answering at its own address", async () => {
    await create("web-a", nameServer());
    await create("web-b", nameServer());
    const ready = await Promise.all(
      ["web-a", "web-b"].map((n) =>
        waitFor(
          async () => {
            const p = await pod(n);
            return isReady(p) ? p : false;
          },
          { what: `${n} to be Ready`, timeoutMs: 60_000 },
        ),
      ),
    );
    const ips = ready.map((p) => p.status?.podIP ?? "");
    assert.notEqual(ips[0], ips[1]);
    for (const [i, name] of ["web-a", "web-b"].entries()) {
      assert.match(ips[i] ?? "", /^10\.244\.\d+\.\d+$/);
      assert.equal(await (await fetch(`http://${ips[i]}:8080/`)).text(), name, `${ips[i]}:8080 answers for ${name}`);
    }
    for (const p of await Promise.all(["web-a", "web-b"].map(pod))) {
      assert.equal(p.status?.containerStatuses?.[0]?.restartCount, 0, `${p.metadata?.name} never restarted (no EADDRINUSE)`);
    }
  });

  test("a pod whose container is not running, or that listens elsewhere, is never Ready while the bed's own namespace listens on its probe's port", async () => {
    // Something answers 200 on every address of the bed's namespace (the node's), at the probes' port: on the
    // old bed, where every pod address was the host's own, it answered every pod's probe.
    let answered = 0;
    const decoy: Server = createServer((_q, s) => {
      answered++;
      s.end("ok");
    });
    await new Promise<void>((r) => decoy.listen(0, "0.0.0.0", r));
    cleanups.push(() => new Promise<void>((r) => decoy.close(() => r())));
    const port = (decoy.address() as AddressInfo).port;
    assert.equal(await (await fetch(`http://${BED_GATEWAY}:${port}/`)).text(), "ok", "the decoy answers at the node's address");
    answered = 0;

    const probe = { httpGet: { path: "/", port }, periodSeconds: 1, failureThreshold: 1 };
    // A container that exits at once and restarts with back-off, a running one that does not listen, and one whose
    // probe names the node's address instead of its own.
    await create("crasher", { name: "main", image: SHELL_IMAGE, args: ["exit 3"], readinessProbe: probe });
    await create("quiet", { name: "main", image: SHELL_IMAGE, args: ["exec sleep 600"], readinessProbe: probe });
    await create("elsewhere", {
      name: "main",
      image: SHELL_IMAGE,
      args: ["exec sleep 600"],
      readinessProbe: { ...probe, httpGet: { ...probe.httpGet, host: BED_GATEWAY } },
    });

    const everReady = new Set<string>();
    const startedAt = new Map<string, number>();
    // Until the crasher has restarted three times (1 + 2 + 4 s of back-off) and the others' probes have run for 8 s.
    await waitFor(
      async () => {
        const pods = await Promise.all(["crasher", "quiet", "elsewhere"].map(pod));
        for (const p of pods) {
          const name = p.metadata?.name ?? "";
          if (isReady(p)) everReady.add(name);
          if (p.status?.containerStatuses?.[0]?.state?.running && !startedAt.has(name)) startedAt.set(name, Date.now());
        }
        const crasher = pods[0]?.status?.containerStatuses?.[0]?.restartCount ?? 0;
        const probedFor = (n: string) => Date.now() - (startedAt.get(n) ?? Date.now());
        return crasher >= 3 && probedFor("quiet") > 8_000 && probedFor("elsewhere") > 8_000;
      },
      { what: "the crasher to restart 3 times and the other pods to be probed for 8 s", timeoutMs: 90_000, intervalMs: 100 },
    );
    assert.deepEqual([...everReady], [], "no pod was ever Ready");
    assert.equal(answered, 0, "no probe reached the bed's own namespace");
    const shimLog = readFileSync(bedEnv().state.shim.log, "utf8");
    assert.match(shimLog, new RegExp(`probe host is not the pod's address.*"pod":"${ns}/elsewhere"`));
  });
});

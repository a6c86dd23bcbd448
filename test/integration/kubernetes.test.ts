// The bed's control plane behaves like a real cluster: CRDs with a status subresource, watches, schema
// validation with field paths, and RBAC that refuses what a Role does not grant.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type KubernetesObject, PatchStrategy, setHeaderOptions, Watch } from "@kubernetes/client-node";
import { waitFor } from "../env/proc.ts";
import { type Kube, kube, kubeWithToken, statusCode, testNamespace } from "../support/kube.ts";

const group = "bedtest.conveyor.dev";
const plural = "widgets";

interface Widget extends KubernetesObject {
  spec: { size: number; color?: string };
  status?: { phase?: string };
}

describe("kubernetes on the bed", () => {
  let k: Kube;
  let ns: string;
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "k8s-it");
  });
  after(async () => {
    for (const c of cleanups) await c();
  });

  test("a CRD with a status subresource is established", async () => {
    await k.apiext
      .createCustomResourceDefinition({
        body: {
          metadata: { name: `${plural}.${group}` },
          spec: {
            group,
            scope: "Namespaced",
            names: { plural, singular: "widget", kind: "Widget" },
            versions: [
              {
                name: "v1",
                served: true,
                storage: true,
                subresources: { status: {} },
                schema: {
                  openAPIV3Schema: {
                    type: "object",
                    properties: {
                      spec: {
                        type: "object",
                        required: ["size"],
                        properties: { size: { type: "integer", minimum: 1, maximum: 10 }, color: { type: "string", _enum: ["red", "blue"] } },
                      },
                      status: { type: "object", properties: { phase: { type: "string" } } },
                    },
                  },
                },
              },
            ],
          },
        },
      })
      .catch((err: unknown) => {
        if (statusCode(err) !== 409) throw err;
      });
    await waitFor(
      async () => {
        const crd = await k.apiext.readCustomResourceDefinition({ name: `${plural}.${group}` });
        return crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
      },
      { what: "the Widget CRD to be Established", timeoutMs: 20_000 },
    );
    cleanups.push(async () => {
      await k.apiext.deleteCustomResourceDefinition({ name: `${plural}.${group}` });
    });
    // Established comes a moment before the new resource is served: wait until it lists.
    await waitFor(
      async () => {
        await k.custom.listNamespacedCustomObject({ group, version: "v1", namespace: ns, plural });
        return true;
      },
      { what: "the widgets resource to be served", timeoutMs: 20_000 },
    );
  });

  test("create, read, watch and update-status an object", async () => {
    const events: { type: string; phase?: string; rv?: string }[] = [];
    const watch = new Watch(k.kc);
    const req = await watch.watch(
      `/apis/${group}/v1/namespaces/${ns}/${plural}`,
      {},
      (type, obj: Widget) => events.push({ type, phase: obj.status?.phase, rv: obj.metadata?.resourceVersion }),
      (err) => {
        if (err && (err as Error).name !== "AbortError") events.push({ type: `ERROR ${String(err)}` });
      },
    );
    try {
      const created = (await k.custom.createNamespacedCustomObject({
        group,
        version: "v1",
        namespace: ns,
        plural,
        body: { apiVersion: `${group}/v1`, kind: "Widget", metadata: { name: "w1" }, spec: { size: 3, color: "red" }, status: { phase: "ignored" } },
      })) as Widget;
      assert.equal(created.status, undefined, "status is only written through the subresource");
      const read = (await k.custom.getNamespacedCustomObject({ group, version: "v1", namespace: ns, plural, name: "w1" })) as Widget;
      assert.equal(read.spec.size, 3);

      const updated = (await k.custom.patchNamespacedCustomObjectStatus(
        { group, version: "v1", namespace: ns, plural, name: "w1", body: { status: { phase: "Ready" } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      )) as Widget;
      assert.equal(updated.status?.phase, "Ready");
      assert.equal(updated.metadata?.generation, created.metadata?.generation, "a status update does not bump the generation");

      await waitFor(() => events.some((e) => e.type === "MODIFIED" && e.phase === "Ready"), {
        what: "the watch to see the status update",
        timeoutMs: 10_000,
      }).catch((err: Error) => {
        throw new Error(`${err.message}; events seen: ${JSON.stringify(events)}`);
      });
      assert.equal(events[0]?.type, "ADDED");
      assert.ok(!events.some((e) => e.type.startsWith("ERROR")), JSON.stringify(events));
    } finally {
      req.abort();
    }
  });

  test("an object the schema rejects gets a 422 that names the field", async () => {
    const err = await k.custom
      .createNamespacedCustomObject({
        group,
        version: "v1",
        namespace: ns,
        plural,
        body: { apiVersion: `${group}/v1`, kind: "Widget", metadata: { name: "too-big" }, spec: { size: 50, color: "green" } },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.ok(err, "the apiserver accepted an invalid object");
    assert.equal(statusCode(err), 422);
    const body = String((err as { body?: unknown }).body);
    assert.match(body, /spec\.size/);
    assert.match(body, /spec\.color/);
  });

  test("a ServiceAccount bound to a narrow Role gets 403 outside it", async () => {
    await k.core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: "reader" } } });
    await k.rbac.createNamespacedRole({
      namespace: ns,
      body: { metadata: { name: "configmap-reader" }, rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"] }] },
    });
    await k.rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: "reader" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "configmap-reader" },
        subjects: [{ kind: "ServiceAccount", name: "reader", namespace: ns }],
      },
    });
    const tr = await k.core.createNamespacedServiceAccountToken({ name: "reader", namespace: ns, body: { spec: { audiences: [], expirationSeconds: 600 } } });
    const sa = kubeWithToken(tr.status?.token ?? "");

    const allowed = await waitFor(
      async () => {
        await sa.core.listNamespacedConfigMap({ namespace: ns });
        return true;
      },
      { what: "the RoleBinding to take effect", timeoutMs: 10_000 },
    );
    assert.equal(allowed, true);
    const denied = async (what: string, call: () => Promise<unknown>) => {
      const code = await call().then(
        () => 200,
        (e: unknown) => statusCode(e),
      );
      assert.equal(code, 403, `${what} should be forbidden`);
    };
    await denied("listing secrets", () => sa.core.listNamespacedSecret({ namespace: ns }));
    await denied("creating a configmap", () => sa.core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: "x" } } }));
    await denied("listing configmaps in another namespace", () => sa.core.listNamespacedConfigMap({ namespace: "default" }));
  });
});

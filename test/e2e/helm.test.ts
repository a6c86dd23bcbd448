// The chart as a user installs it: `helm install` runs the operator as a pod on the shim node, under the
// chart's ServiceAccount and RBAC with no admin credentials, and it reconciles pipelines from there. In npm test's
// mode (CONVEYOR_PODS=image) that pod runs the operator image, and its webhook serves from there.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { NODE_BINARY } from "../../scripts/images/spec.ts";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { OPERATOR_IMAGE } from "../env/pod-images.ts";
import { waitFor } from "../env/proc.ts";
import { loadImageTable } from "../env/shim/images.ts";
import { helmPath, repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { containerView } from "../support/container.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { eventReasons, type Kube, kube, testNamespace } from "../support/kube.ts";
import { kubectl as runKubectl } from "../support/kubectl.ts";
import { teardown } from "../support/suite.ts";

describe("helm install of the chart on the bed", () => {
  const env = bedEnv();
  const kubectl = (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input);
  const helm = (args: string[]) => {
    const res = spawnSync(helmPath(), args, {
      encoding: "utf8",
      env: { ...process.env, KUBECONFIG: env.kubeconfig, HELM_CACHE_HOME: join(env.state.dir, "helm") },
    });
    if (res.error) throw new Error(`helm could not run: ${res.error.message}`);
    if (res.status !== 0) throw new Error(`helm ${args.join(" ")} failed: ${res.stderr}`);
    return res.stdout;
  };
  const suffix = uniqueSuffix();
  const release = `cv-${suffix}`.slice(0, 20);
  const operatorNs = `conveyor-${suffix}`;
  const sa = `system:serviceaccount:${operatorNs}:conveyor-operator`;
  let k: Kube;
  let a: Admin;
  let ns: string;
  const cleanups: (() => Promise<void>)[] = [];
  const source = `helm-src-${suffix}`;

  before(async () => {
    k = kube();
    a = admin(env.bootstrap);
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "helm");
    await createTopic(a, source, 3);
    await createTopic(a, `${source}-out`, 3);
    helm(["install", release, join(repoRoot, "charts/conveyor"), "-n", operatorNs, "--create-namespace", "--wait", "--timeout", "120s"]);
    // --wait covers the Deployment, not the Service: the webhook is reachable once its EndpointSlice lists the pod.
    await waitFor(
      () => {
        const slices = JSON.parse(
          kubectl(["get", "endpointslices", "-n", operatorNs, "-l", `kubernetes.io/service-name=${release}-operator-webhook`, "-o", "json"]),
        ) as { items: { endpoints?: { conditions?: { ready?: boolean } }[] }[] };
        return slices.items.some((s) => s.endpoints?.some((e) => e.conditions?.ready === true));
      },
      { what: "the webhook Service to have a ready endpoint", timeoutMs: 30_000 },
    );
  });
  after(async () => {
    // Pipelines go while the operator runs, so that its finalizer can clean up after them.
    await teardown(
      () => kubectl(["delete", "streampipelines", "--all", "-n", ns, "--wait=true", "--timeout=60s"]),
      () => helm(["uninstall", release, "-n", operatorNs, "--wait", "--timeout", "60s"]),
      () => kubectl(["delete", "namespace", operatorNs, "--wait=false"]),
      ...cleanups,
      () => a?.close(),
    );
  });

  const operatorPod = async () => {
    const pods = await k.core.listNamespacedPod({ namespace: operatorNs, labelSelector: "app.kubernetes.io/name=conveyor-operator" });
    assert.equal(pods.items.length, 1);
    return pods.items[0];
  };

  test("the operator runs as a pod under the chart's ServiceAccount, non-root, without admin credentials", async () => {
    const pod = await operatorPod();
    assert.equal(pod?.spec?.serviceAccountName, "conveyor-operator");
    assert.equal(pod?.status?.conditions?.find((c) => c.type === "Ready")?.status, "True");
    const pid = Number(pod?.status?.containerStatuses?.[0]?.containerID?.replace("shim://", ""));
    const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    assert.ok(!environ.some((e) => e.startsWith("KUBECONFIG=")), "the operator pod must use its ServiceAccount, not a kubeconfig");
    assert.ok(environ.includes(`POD_NAMESPACE=${operatorNs}`));
    assert.match(readFileSync(`/proc/${pid}/status`, "utf8"), /^Uid:\s+65532\s/m);
    if (env.state.pods === "image") {
      // the operator image itself: its Node in its root, read-only as the chart's securityContext asks
      const view = containerView(pid);
      assert.equal(view.exe, NODE_BINARY);
      assert.equal(view.root.options.lowerdir, loadImageTable(join(env.state.dir, "images.json"))[OPERATOR_IMAGE]?.rootfs);
      assert.ok(view.root.readOnly, "the operator's root is read-only");
    }
    const lease = await k.coord.readNamespacedLease({ name: "conveyor-operator", namespace: operatorNs });
    assert.equal(lease.spec?.holderIdentity, pod?.metadata?.name, "the pod holds the leader lease");
  });

  test("it reconciles pipelines from there: workers, internal topics, status", async () => {
    const apply = (name: string, spec: object) =>
      kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace: ns }, spec }));
    apply("copy", { kafka: { bootstrapServers: [env.bootstrap] }, source: { topics: [source] }, sink: { topic: `${source}-out` }, replicas: 1 });
    apply("stateful", {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: [source] },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "per-minute", window: { tumbling: "1m" }, aggregate: { n: { count: {} } } },
      ],
      sink: { topic: `${source}-agg` },
      replicas: 0,
    });
    for (const name of ["copy", "stateful"]) {
      await waitFor(
        async () => {
          const p = (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name })) as StreamPipeline;
          return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
        },
        { what: `pipeline ${name} to be Ready, reconciled by the in-cluster operator`, timeoutMs: 90_000 },
      );
    }
    const sts = await k.apps.readNamespacedStatefulSet({ name: "copy", namespace: ns });
    assert.equal(sts.metadata?.ownerReferences?.[0]?.kind, KIND);
    const topics = new Set(await a.listTopics());
    assert.ok(topics.has(`${ns}_stateful_by-user-repartition`), "the operator pod created the internal topics");
    assert.ok((await eventReasons(k, ns, "stateful")).includes("InternalTopicsCreated"), "the operator pod may record events");
  });

  test("its webhook refuses a broken expression at apply, reached through its Service", () => {
    const res = spawnSync("kubectl", ["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name: "broken", namespace: ns },
        spec: {
          kafka: { bootstrapServers: [env.bootstrap] },
          source: { topics: [source] },
          steps: [{ name: "only-big", filter: "value.amount >" }],
          sink: { topic: `${source}-out` },
        },
      }),
      encoding: "utf8",
      env: { ...process.env, KUBECONFIG: env.kubeconfig },
    });
    assert.notEqual(res.status, 0, "the apply must fail");
    assert.equal(res.stderr.trim(), 'The StreamPipeline "broken" is invalid: spec.steps[0].filter: step "only-big", line 1, column 15: Unexpected token: EOF');
  });

  test("the webhook's certificate is the operator's own, in a Secret the configuration owns", async () => {
    const cfg = await k.admission.readValidatingWebhookConfiguration({ name: `${release}-operator` });
    const secret = await k.core.readNamespacedSecret({ name: `${release}-operator-webhook-cert`, namespace: operatorNs });
    assert.equal(secret.metadata?.ownerReferences?.[0]?.uid, cfg.metadata?.uid, "uninstalling the configuration collects the Secret");
    const ca = Buffer.from(secret.data?.["ca.crt"] ?? "", "base64").toString("utf8");
    assert.match(ca, /BEGIN CERTIFICATE/);
    assert.equal(Buffer.from(cfg.webhooks?.[0]?.clientConfig.caBundle ?? "", "base64").toString("utf8"), ca);
  });

  test("its ServiceAccount may do what the operator needs, and no more", () => {
    const can = (verb: string, resource: string, namespace = ns) => {
      const res = spawnSync("kubectl", ["auth", "can-i", verb, resource, "-n", namespace, `--as=${sa}`], {
        encoding: "utf8",
        env: { ...process.env, KUBECONFIG: env.kubeconfig },
      });
      return res.stdout.trim() === "yes";
    };
    for (const [verb, resource] of [
      ["patch", "streampipelines.conveyor.dev"],
      ["patch", "streampipelines.conveyor.dev/status"],
      ["delete", "statefulsets.apps"],
      ["get", "secrets"],
      ["create", "events"],
      ["delete", "persistentvolumeclaims"],
    ] as const)
      assert.ok(can(verb, resource), `the operator needs to ${verb} ${resource}`);
    for (const [verb, resource] of [
      ["delete", "streampipelines.conveyor.dev"],
      ["list", "secrets"],
      ["create", "pods"],
      ["delete", "namespaces"],
      ["create", "clusterrolebindings.rbac.authorization.k8s.io"],
      ["update", "statefulsets.apps"],
      ["get", "configmaps"],
      ["create", "persistentvolumeclaims"],
    ] as const)
      assert.ok(!can(verb, resource), `the operator must not ${verb} ${resource}`);
    assert.ok(can("patch", "leases.coordination.k8s.io", operatorNs));
    assert.ok(can("create", "secrets", operatorNs), "it creates its webhook certificate's Secret");
    assert.ok(can("update", `secrets/${release}-operator-webhook-cert`, operatorNs));
    assert.ok(!can("update", "secrets/someone-elses", operatorNs), "it updates only its own certificate's Secret");
    assert.ok(can("patch", `validatingwebhookconfigurations.admissionregistration.k8s.io/${release}-operator`));
    assert.ok(!can("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/someone-elses"));
    assert.ok(!can("delete", `validatingwebhookconfigurations.admissionregistration.k8s.io/${release}-operator`));
    assert.ok(!can("patch", "leases.coordination.k8s.io", ns), "leases only in the operator's own namespace");
  });
});

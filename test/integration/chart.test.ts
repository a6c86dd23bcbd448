// The chart and the install bundle: helm lint and template pass, the chart's CRD is the CRD, the namespaced
// RBAC mode renders what it promises, the bundle is what the chart renders, and the bundle applies.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { load, loadAll } from "js-yaml";
import { BUNDLE_FILE, renderBundle } from "../../scripts/gen-bundle.ts";
import { helmPath, repoRoot } from "../env/toolchain.ts";
import { bedEnv } from "../support/bed.ts";
import { kubectl } from "../support/kubectl.ts";

const chart = join(repoRoot, "charts/conveyor");

function helm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const res = spawnSync(helmPath(), args, { encoding: "utf8" });
  if (res.error) throw new Error(`helm could not run: ${res.error.message}`);
  return res;
}

interface Doc {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: { template?: { spec?: { containers?: { env?: { name: string; value?: string }[] }[] } } };
  rules?: { resources: string[]; verbs: string[] }[];
}

describe("the Helm chart and the install bundle", () => {
  test("helm lint passes", () => {
    const res = helm(["lint", chart, "--strict"]);
    assert.equal(res.status, 0, res.stdout + res.stderr);
  });

  test("the chart's CRD is byte for byte the CRD in crds/", () => {
    const file = "streampipelines.conveyor.dev.yaml";
    assert.equal(readFileSync(join(chart, "crds", file), "utf8"), readFileSync(join(repoRoot, "crds", file), "utf8"));
  });

  test("the namespaced mode renders a Role per watched namespace and tells the operator which", () => {
    const res = helm(["template", "cv", chart, "-n", "ops", "--set", "rbac.scope=namespaced", "--set", "watchNamespaces={team-a,team-b}"]);
    assert.equal(res.status, 0, res.stderr);
    const docs = loadAll(res.stdout).filter(Boolean) as Doc[];
    // The one cluster-scoped right: its own webhook configuration, by name, to write the caBundle.
    const clusterRules = docs.filter((d) => d.kind === "ClusterRole").flatMap((d) => d.rules ?? []);
    assert.deepEqual(clusterRules, [
      { apiGroups: ["admissionregistration.k8s.io"], resources: ["validatingwebhookconfigurations"], resourceNames: ["cv-operator"], verbs: ["get", "patch"] },
    ]);
    const webhook = docs.find((d) => d.kind === "ValidatingWebhookConfiguration") as unknown as {
      webhooks: { namespaceSelector?: { matchExpressions?: { values: string[] }[] } }[];
    };
    assert.deepEqual(
      webhook.webhooks[0]?.namespaceSelector?.matchExpressions?.[0]?.values,
      ["team-a", "team-b"],
      "the webhook judges only the watched namespaces",
    );
    const roles = docs.filter((d) => d.kind === "Role" && d.rules?.some((r) => r.resources.includes("streampipelines")));
    assert.deepEqual(roles.map((r) => r.metadata.namespace).sort(), ["team-a", "team-b"]);
    const deployment = docs.find((d) => d.kind === "Deployment");
    const env = deployment?.spec?.template?.spec?.containers?.[0]?.env ?? [];
    assert.equal(env.find((e) => e.name === "CONVEYOR_WATCH_NAMESPACES")?.value, "team-a,team-b");
  });

  test("with cert-manager, a Certificate fills the Secret, the cainjector the caBundle, and the operator only reads it", () => {
    const res = helm(["template", "cv", chart, "-n", "ops", "--set", "webhook.certManager.enabled=true"]);
    assert.equal(res.status, 0, res.stderr);
    const docs = loadAll(res.stdout).filter(Boolean) as (Doc & {
      spec?: { secretName?: string; dnsNames?: string[] };
      metadata: { annotations?: Record<string, string> };
    })[];
    const cert = docs.find((d) => d.kind === "Certificate");
    assert.equal(cert?.spec?.secretName, "cv-operator-webhook-cert");
    assert.deepEqual(cert?.spec?.dnsNames, ["cv-operator-webhook.ops.svc", "cv-operator-webhook.ops.svc.cluster.local"]);
    assert.ok(
      docs.some((d) => d.kind === "Issuer"),
      "a self-signed Issuer when no issuerRef is given",
    );
    const cfg = docs.find((d) => d.kind === "ValidatingWebhookConfiguration");
    assert.equal(cfg?.metadata.annotations?.["cert-manager.io/inject-ca-from"], "ops/cv-operator-webhook-cert");
    const env = docs.find((d) => d.kind === "Deployment")?.spec?.template?.spec?.containers?.[0]?.env ?? [];
    assert.equal(env.find((e) => e.name === "CONVEYOR_WEBHOOK_CERT_MODE")?.value, "external");
    const certRules = docs.filter((d) => d.kind === "Role" && d.metadata.name === "cv-operator-webhook-cert").flatMap((d) => d.rules ?? []);
    assert.deepEqual(certRules, [{ apiGroups: [""], resources: ["secrets"], resourceNames: ["cv-operator-webhook-cert"], verbs: ["get"] }]);
    assert.ok(!docs.some((d) => d.kind === "ClusterRole" && d.metadata.name === "cv-operator-webhook-ca"), "no caBundle rights: the cainjector writes it");
  });

  test("monitoring: ServiceMonitor and PodMonitor as jobs conveyor-operator and conveyor-workers, the rules, the dashboard", () => {
    const res = helm([
      "template",
      "cv",
      chart,
      "-n",
      "ops",
      ...["serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboard"].flatMap((v) => ["--set", `${v}.enabled=true`]),
      "--set",
      "prometheusRule.labels.release=kps",
    ]);
    assert.equal(res.status, 0, res.stderr);
    const docs = loadAll(res.stdout).filter(Boolean) as (Doc & { metadata: { labels?: Record<string, string> }; data?: Record<string, string> } & Record<
        string,
        unknown
      >)[];
    const sm = docs.find((d) => d.kind === "ServiceMonitor") as
      | { spec: { endpoints: { honorLabels: boolean; relabelings: { replacement: string }[] }[] } }
      | undefined;
    assert.equal(sm?.spec.endpoints[0]?.honorLabels, true);
    assert.equal(sm?.spec.endpoints[0]?.relabelings[0]?.replacement, "conveyor-operator");
    const pm = docs.find((d) => d.kind === "PodMonitor") as
      | { spec: { namespaceSelector: { any?: boolean }; selector: { matchLabels: Record<string, string> } } }
      | undefined;
    assert.equal(pm?.spec.namespaceSelector.any, true);
    assert.deepEqual(pm?.spec.selector.matchLabels, { "app.kubernetes.io/name": "conveyor-runtime" });
    const rule = docs.find((d) => d.kind === "PrometheusRule") as
      | { metadata: { labels: Record<string, string> }; spec: { groups: { rules: { alert: string }[] }[] } }
      | undefined;
    assert.equal(rule?.metadata.labels.release, "kps");
    assert.deepEqual(
      rule?.spec.groups.flatMap((g) => g.rules.map((r) => r.alert)),
      ["ConveyorLagNotDraining", "ConveyorDeadLetters", "ConveyorWatermarkStalled", "ConveyorStateCapacityAtRisk", "ConveyorOperatorDown"],
    );
    const cm = docs.find((d) => d.kind === "ConfigMap" && d.metadata.labels?.grafana_dashboard === "1");
    const dashboard = JSON.parse(cm?.data?.["conveyor.json"] ?? "{}") as { uid?: string; panels?: unknown[] };
    assert.equal(dashboard.uid, "conveyor-pipelines");
    assert.equal(dashboard.panels?.length, 9);
  });

  test("the namespaced mode without namespaces is refused with a reason", () => {
    const res = helm(["template", "cv", chart, "--set", "rbac.scope=namespaced"]);
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /rbac.scope=namespaced needs watchNamespaces/);
  });

  test("deploy/install.yaml is what the chart renders (run `npm run gen:bundle` after a chart change)", () => {
    assert.equal(readFileSync(BUNDLE_FILE, "utf8"), renderBundle(helmPath()));
  });

  test("the bundle is valid for the apiserver (server-side dry run)", (t) => {
    const kc = bedEnv().kubeconfig;
    // A dry run creates nothing, so the namespaced objects need the namespace to exist already.
    kubectl(kc, ["create", "namespace", "conveyor-system"]);
    t.after(() => kubectl(kc, ["delete", "namespace", "conveyor-system", "--wait=false"]));
    const out = kubectl(kc, ["apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", BUNDLE_FILE]);
    for (const kind of [
      "namespace/conveyor-system",
      "customresourcedefinition.apiextensions.k8s.io/streampipelines.conveyor.dev",
      "deployment.apps/conveyor-operator",
    ]) {
      assert.match(out, new RegExp(kind.replaceAll(".", "\\.")), `dry run did not cover ${kind}`);
    }
    const crd = (loadAll(readFileSync(BUNDLE_FILE, "utf8")) as Doc[]).find((d) => d?.kind === "CustomResourceDefinition");
    assert.deepEqual(crd, load(readFileSync(join(repoRoot, "crds/streampipelines.conveyor.dev.yaml"), "utf8")));
  });
});

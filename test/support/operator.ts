// Starts the operator as a local process against the bed, as `npm run operator` does.
import { join } from "node:path";
import { GROUP, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { OPERATOR_NODE_FLAGS } from "../../src/node-flags.ts";
import { VALIDATE_PATH } from "../../src/webhook/admission.ts";
import { freePort, type Started, startProcess, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "./bed.ts";
import { type Kube, statusCode } from "./kube.ts";

export interface OperatorProcess {
  proc: Started;
  /** probes and metrics on 127.0.0.1 */
  port: number;
  id: string;
}

/** The webhook of a local operator: the apiserver calls it by URL, and only for one namespace. */
export interface LocalWebhook {
  /** the ValidatingWebhookConfiguration's name */
  config: string;
  port: number;
  secret: string;
  /** what startOperator needs to serve it */
  env: Record<string, string>;
}

/**
 * Registers a webhook for `namespace` that the apiserver calls at https://127.0.0.1:<port>, with no caBundle:
 * the operator started with `env` issues the certificate and writes the caBundle, as it does in a cluster.
 */
export async function registerLocalWebhook(k: Kube, namespace: string): Promise<LocalWebhook> {
  const port = await freePort();
  const config = `conveyor-test-${uniqueSuffix()}`;
  const secret = "conveyor-webhook-cert";
  await k.admission.createValidatingWebhookConfiguration({
    body: {
      metadata: { name: config },
      webhooks: [
        {
          name: "validate.streampipelines.conveyor.dev",
          admissionReviewVersions: ["v1"],
          sideEffects: "None",
          failurePolicy: "Fail",
          timeoutSeconds: 10,
          clientConfig: { url: `https://127.0.0.1:${port}${VALIDATE_PATH}` },
          rules: [{ apiGroups: [GROUP], apiVersions: [VERSION], operations: ["CREATE", "UPDATE"], resources: [PLURAL], scope: "Namespaced" }],
          matchConditions: [{ name: "spec-created-or-changed", expression: "request.operation == 'CREATE' || object.spec != oldObject.spec" }],
          namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": namespace } },
        },
      ],
    },
  });
  return {
    config,
    port,
    secret,
    env: {
      POD_NAMESPACE: namespace,
      CONVEYOR_WEBHOOK_PORT: String(port),
      CONVEYOR_WEBHOOK_HOSTS: "127.0.0.1",
      CONVEYOR_WEBHOOK_CONFIG: config,
      CONVEYOR_WEBHOOK_SECRET: secret,
    },
  };
}

/** Waits until the operator has written the caBundle and answers reviews. */
export async function webhookServing(k: Kube, hook: LocalWebhook, operator: Started): Promise<void> {
  await waitFor(
    async () => {
      const cfg = await k.admission.readValidatingWebhookConfiguration({ name: hook.config });
      return cfg.webhooks?.every((w) => (w.clientConfig.caBundle ?? "") !== "") === true;
    },
    { what: `the operator to write the caBundle of ${hook.config}`, timeoutMs: 30_000, process: operator },
  );
}

/** An operator whose leader lease lives in the suite's own namespace, so that suites never wait on each other. */
export async function startOperator(leaseNamespace: string, id = `op-${uniqueSuffix()}`, extraEnv: Record<string, string> = {}): Promise<OperatorProcess> {
  const env = bedEnv();
  const port = await freePort();
  const proc = startProcess({
    name: `operator ${id}`,
    cmd: process.execPath,
    args: [...OPERATOR_NODE_FLAGS, join(repoRoot, "src/main.ts")],
    log: join(env.state.dir, `operator-${id}.log`),
    cwd: repoRoot,
    env: {
      ...process.env,
      KUBECONFIG: env.kubeconfig,
      POD_NAME: id,
      POD_IP: "127.0.0.1",
      CONVEYOR_HTTP_PORT: String(port),
      CONVEYOR_LEASE_NAMESPACE: leaseNamespace,
      ...extraEnv,
    },
  });
  return { proc, port, id };
}

/** Deletes every pipeline of a namespace and waits until the operator's finalizer has let them go. */
export async function deletePipelines(k: Kube, namespace: string, operator: Started, timeoutMs = 60_000): Promise<void> {
  const list = (await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace })) as { items: StreamPipeline[] };
  for (const p of list.items) {
    if (p.metadata?.deletionTimestamp) continue; // already going: its finalizer may let it go before a delete lands
    try {
      await k.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name: p.metadata?.name ?? "" });
    } catch (err) {
      // gone between the list and the delete (a test's own delete finishing): that is the state we want
      if (statusCode(err) !== 404) throw err;
    }
  }
  await waitFor(
    async () =>
      ((await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace })) as { items: unknown[] }).items.length === 0,
    { what: `the pipelines of ${namespace} to be deleted (finalizers)`, timeoutMs, process: operator },
  );
}

/** What an operator's /metrics says of its API requests (conveyor_kube_requests_total by call), reconciles and skipped writes. */
export interface OperatorRequests {
  calls: Map<string, number>;
  reconciles: number;
  /** conveyor_kube_writes_skipped_total, all kinds */
  skipped: number;
}

/** A call that only reads: its name says so (list..., read...). Every other call writes. */
export function isReadCall(call: string): boolean {
  return /^(list|read|get)/.test(call);
}

export async function operatorRequests(port: number): Promise<OperatorRequests> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: OperatorRequests = { calls: new Map(), reconciles: 0, skipped: 0 };
  for (const line of text.split("\n")) {
    const call = /^conveyor_kube_requests_total\{call="([^"]+)"\} (\S+)$/.exec(line);
    if (call) out.calls.set(call[1] as string, Number(call[2]));
    const rec = /^conveyor_reconcile_total\{result="[^"]+"\} (\S+)$/.exec(line);
    if (rec) out.reconciles += Number(rec[1]);
    const skipped = /^conveyor_kube_writes_skipped_total\{kind="[^"]+"\} (\S+)$/.exec(line);
    if (skipped) out.skipped += Number(skipped[1]);
  }
  return out;
}

/** The writes between two readings, by call. */
export function writesBetween(a: OperatorRequests, b: OperatorRequests): Map<string, number> {
  const out = new Map<string, number>();
  for (const [call, v] of b.calls) {
    const d = v - (a.calls.get(call) ?? 0);
    if (d > 0 && !isReadCall(call)) out.set(call, d);
  }
  return out;
}

// The Conveyor operator: `npm run operator` runs it against $KUBECONFIG; in a cluster it uses its ServiceAccount.
// Environment: CONVEYOR_RUNTIME_IMAGE, CONVEYOR_ALLOWED_IMAGES (prefixes of other images pipelines may run,
// comma-separated; default: none), CONVEYOR_HTTP_PORT (probes and metrics, default 8080), CONVEYOR_LEADER_ELECTION
// (default true), CONVEYOR_LEASE_NAMESPACE and CONVEYOR_LEASE_NAME (default: the pod's namespace, conveyor-operator),
// CONVEYOR_WATCH_NAMESPACES (comma-separated; default: all namespaces), CONVEYOR_RECONCILE_CONCURRENCY (reconciles
// at once, default 8).
// The validating webhook runs when CONVEYOR_WEBHOOK_PORT is set: CONVEYOR_WEBHOOK_CERT_MODE (self, the default,
// or external for cert-manager), CONVEYOR_WEBHOOK_SECRET (default conveyor-webhook-cert, in the pod's namespace),
// CONVEYOR_WEBHOOK_SERVICE (the Service whose DNS names the certificate carries), CONVEYOR_WEBHOOK_HOSTS (more
// names or addresses, comma-separated) and CONVEYOR_WEBHOOK_CONFIG (the ValidatingWebhookConfiguration whose
// caBundle mode self keeps).
import { hostname } from "node:os";
import { AdmissionregistrationV1Api, CoordinationV1Api, CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { defaultOperatorConfig } from "./children.ts";
import { Controller } from "./controller.ts";
import { platformaticKafkaAdmin } from "./kafka-admin.ts";
import { pooledKubeConfig } from "./kube-pool.ts";
import { LeaderElector, LeadershipLostError } from "./leader-election.ts";
import { errorMessage, jsonLogger } from "./log.ts";
import { operatorMetrics, startOperatorServer } from "./metrics.ts";
import { serviceHosts } from "./webhook/certs.ts";
import { Webhook } from "./webhook/server.ts";

const env = process.env;
const podNamespace = env.POD_NAMESPACE ?? "default";
const list = (value: string | undefined) =>
  (value ?? "")
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "");
function positiveInteger(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(value)}`);
  return n;
}
const identity = env.POD_NAME ?? `${hostname()}-${process.pid}`;
const log = jsonLogger({ component: "operator", identity });
const kubeConfig = new KubeConfig();
kubeConfig.loadFromDefault();
// every client of the process (controller, informers, webhook, leader election) shares keep-alive connections
pooledKubeConfig(kubeConfig);
const metrics = operatorMetrics();
const kafka = platformaticKafkaAdmin();

const operatorConfig = {
  ...defaultOperatorConfig,
  runtimeImage: env.CONVEYOR_RUNTIME_IMAGE ?? defaultOperatorConfig.runtimeImage,
  allowedImages: list(env.CONVEYOR_ALLOWED_IMAGES),
};
const controllerOptions = {
  kubeConfig,
  config: operatorConfig,
  log,
  metrics,
  kafka,
  watchNamespaces: list(env.CONVEYOR_WATCH_NAMESPACES),
  ...(env.CONVEYOR_RECONCILE_CONCURRENCY ? { concurrency: positiveInteger("CONVEYOR_RECONCILE_CONCURRENCY", env.CONVEYOR_RECONCILE_CONCURRENCY) } : {}),
};
let controller = new Controller(controllerOptions);
const elector =
  env.CONVEYOR_LEADER_ELECTION === "false"
    ? undefined
    : new LeaderElector({
        api: kubeConfig.makeApiClient(CoordinationV1Api),
        namespace: env.CONVEYOR_LEASE_NAMESPACE ?? podNamespace,
        name: env.CONVEYOR_LEASE_NAME ?? "conveyor-operator",
        identity,
        log,
      });

const webhook =
  env.CONVEYOR_WEBHOOK_PORT === undefined
    ? undefined
    : new Webhook({
        host: env.POD_IP ?? "0.0.0.0",
        port: Number(env.CONVEYOR_WEBHOOK_PORT),
        certMode: env.CONVEYOR_WEBHOOK_CERT_MODE === "external" ? "external" : "self",
        secretName: env.CONVEYOR_WEBHOOK_SECRET ?? "conveyor-webhook-cert",
        namespace: podNamespace,
        hosts: [...(env.CONVEYOR_WEBHOOK_SERVICE ? serviceHosts(env.CONVEYOR_WEBHOOK_SERVICE, podNamespace) : []), ...list(env.CONVEYOR_WEBHOOK_HOSTS)],
        configName: env.CONVEYOR_WEBHOOK_CONFIG,
        core: kubeConfig.makeApiClient(CoreV1Api),
        admission: kubeConfig.makeApiClient(AdmissionregistrationV1Api),
        log: log.child({ component: "webhook" }),
        metrics,
        config: operatorConfig,
      });

let failed = false;
const fail = (msg: string, err?: unknown) => {
  failed = true;
  log.error(msg, err === undefined ? {} : { error: errorMessage(err) });
  process.exit(1);
};

/**
 * Leads while it holds the lease. A leader that cannot renew in time (say, the apiserver is down) stops
 * reconciling and campaigns again; if nobody took the lease meanwhile, it gets it back as soon as the apiserver
 * answers. controller-runtime's manager exits instead; this process stays (its webhook serves on), and fences
 * the term: at the loss, every Kubernetes request of the term's reconciles and watermark passes is aborted, none
 * starts after, nor any Kafka write, so a reconcile in flight ends at its next call without writing.
 */
async function lead(e: LeaderElector): Promise<never> {
  for (;;) {
    log.info("waiting for the leader lease");
    const term = new AbortController();
    let lost: () => void = () => {};
    const lostLease = new Promise<void>((resolve) => {
      lost = resolve;
    });
    await e.run(() => {
      term.abort(new LeadershipLostError());
      lost();
    });
    metrics.leader.set(1);
    // A stopped controller does not start again: each term gets a new one, fenced by the term's signal.
    controller = new Controller({ ...controllerOptions, leadership: term.signal });
    await controller.start();
    await lostLease;
    metrics.leader.set(0);
    log.warn("stepping down: leadership lost; stopping the controller and campaigning again");
    await controller.stop();
  }
}

async function main(): Promise<void> {
  await startOperatorServer(env.POD_IP ?? "0.0.0.0", Number(env.CONVEYOR_HTTP_PORT ?? 8080), metrics, {
    healthy: () => !failed,
    // A standby replica is ready: it serves its purpose by waiting for the lease, and it serves the webhook.
    ready: () => !failed && (webhook?.serving ?? true) && (elector ? !elector.isLeader || controller.synced : controller.synced),
  });
  webhook?.start().catch((err: unknown) => fail("the webhook failed to start", err));
  if (elector) await lead(elector);
  else await controller.start();
}

const shutdown = (signal: string) => {
  log.info("stopping", { signal });
  // A release that fails (say, RBAC already gone at uninstall) only means the lease expires by itself.
  const release = elector?.release().catch((err: unknown) => log.warn("could not release the lease; it expires on its own", { error: errorMessage(err) }));
  Promise.all([controller.stop(), release, webhook?.stop()])
    .then(() => kafka.close())
    .then(
      () => process.exit(0),
      (err: unknown) => fail("stop failed", err),
    );
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

main().catch((err: unknown) => fail("operator failed to start", err));

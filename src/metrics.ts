// The operator's metrics (prom-client) and its probe and metrics endpoints.
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export interface OperatorMetrics {
  registry: Registry;
  reconciles: Counter<"result">;
  reconcileErrors: Counter<"reason">;
  reconcileDuration: Histogram<"result">;
  queueDepth: Gauge;
  leader: Gauge;
  /** requests the operator makes to the apiserver outside its watches, by what they do */
  kubeRequests: Counter<"call">;
  /** admission reviews answered, by verdict (allowed, denied, error) */
  webhookReviews: Counter<"verdict">;
  webhookDuration: Histogram;
}

export function operatorMetrics(): OperatorMetrics {
  const registry = new Registry();
  return {
    registry,
    reconciles: new Counter({
      name: "conveyor_reconcile_total",
      help: "Reconciles by result (success, error).",
      labelNames: ["result"],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: "conveyor_reconcile_errors_total",
      help: "Failed reconciles by error class.",
      labelNames: ["reason"],
      registers: [registry],
    }),
    reconcileDuration: new Histogram({
      name: "conveyor_reconcile_duration_seconds",
      help: "Time one reconcile takes.",
      labelNames: ["result"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    queueDepth: new Gauge({ name: "conveyor_workqueue_depth", help: "Keys waiting in the work queue.", registers: [registry] }),
    leader: new Gauge({ name: "conveyor_leader", help: "1 while this replica holds the leader lease.", registers: [registry] }),
    kubeRequests: new Counter({
      name: "conveyor_kube_requests_total",
      help: "Requests to the apiserver outside its watches (reconciles, the webhook certificate), by call.",
      labelNames: ["call"],
      registers: [registry],
    }),
    webhookReviews: new Counter({
      name: "conveyor_webhook_reviews_total",
      help: "Admission reviews answered by the validating webhook, by verdict (allowed, denied, error).",
      labelNames: ["verdict"],
      registers: [registry],
    }),
    webhookDuration: new Histogram({
      name: "conveyor_webhook_review_duration_seconds",
      help: "Time the validating webhook takes to answer one review.",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
  };
}

export interface ProbeState {
  healthy(): boolean;
  ready(): boolean;
}

/** /healthz, /readyz and /metrics on one port. */
export function startOperatorServer(host: string, port: number, metrics: OperatorMetrics, probes: ProbeState): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/metrics") {
      metrics.registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
      return;
    }
    const ok = req.url === "/healthz" ? probes.healthy() : req.url === "/readyz" ? probes.ready() : undefined;
    if (ok === undefined) res.writeHead(404).end("not found\n");
    else res.writeHead(ok ? 200 : 503).end(ok ? "ok\n" : "not ready\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

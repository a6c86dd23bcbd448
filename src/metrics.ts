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
  /** applies and status applies a reconcile left out: the informer's copy was as wanted */
  writesSkipped: Counter<"kind">;
  /** lists the informers made: at start, and again only when a watch could not resume */
  informerLists: Counter<"resource">;
  informerErrors: Counter<"resource">;
  /** admission reviews answered, by verdict (allowed, denied, error) */
  webhookReviews: Counter<"verdict">;
  webhookDuration: Histogram;
  /** lag mode: the replicas the autoscaler decided on, per pipeline */
  scalingDesired: Gauge<PipelineLabel>;
  /** lag mode: the replicas the StatefulSet was set to when the autoscaler decided */
  scalingCurrent: Gauge<PipelineLabel>;
  /** lag mode: records the group is behind; no sample while the lag is unknown */
  scalingLag: Gauge<PipelineLabel>;
  scalingDecisions: Counter<PipelineLabel | "reason">;
}

export type PipelineLabel = "namespace" | "pipeline";
export type PipelineLabels = Record<PipelineLabel, string>;

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
    writesSkipped: new Counter({
      name: "conveyor_kube_writes_skipped_total",
      help: "Applies a reconcile left out because the informer's copy of the object (or status) already was as wanted, by kind.",
      labelNames: ["kind"],
      registers: [registry],
    }),
    informerLists: new Counter({
      name: "conveyor_informer_lists_total",
      help: "Full lists the informers made: one per resource at start, more only when a watch could not resume.",
      labelNames: ["resource"],
      registers: [registry],
    }),
    informerErrors: new Counter({
      name: "conveyor_informer_errors_total",
      help: "Lists and watches of the informers that failed and were started again with backoff, by resource.",
      labelNames: ["resource"],
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
    scalingDesired: new Gauge({
      name: "conveyor_scaling_desired_replicas",
      help: "Replicas the lag autoscaler decided on (scaling.mode lag).",
      labelNames: ["namespace", "pipeline"],
      registers: [registry],
    }),
    scalingCurrent: new Gauge({
      name: "conveyor_scaling_current_replicas",
      help: "Replicas the worker StatefulSet was set to when the lag autoscaler last decided.",
      labelNames: ["namespace", "pipeline"],
      registers: [registry],
    }),
    scalingLag: new Gauge({
      name: "conveyor_scaling_lag_records",
      help: "Records the workers' group is behind on its source and repartition topics; absent while unknown.",
      labelNames: ["namespace", "pipeline"],
      registers: [registry],
    }),
    scalingDecisions: new Counter({
      name: "conveyor_scaling_decisions_total",
      help: "Decisions of the lag autoscaler, by reason (ScaleUp, Steady, Stabilizing, HoldRebalance, UnknownLag, ...).",
      labelNames: ["namespace", "pipeline", "reason"],
      registers: [registry],
    }),
  };
}

/** One decision of the lag autoscaler. An unknown lag removes the lag sample: a 0 would read as "caught up". */
export function observeScaling(m: OperatorMetrics, labels: PipelineLabels, d: { desired: number; current: number; reason: string; lag?: number }): void {
  m.scalingDesired.set(labels, d.desired);
  m.scalingCurrent.set(labels, d.current);
  if (d.lag === undefined) m.scalingLag.remove(labels);
  else m.scalingLag.set(labels, d.lag);
  m.scalingDecisions.inc({ ...labels, reason: d.reason });
}

/** Drops a pipeline's scaling series, when it is deleted or leaves lag mode. */
export async function forgetScaling(m: OperatorMetrics, labels: PipelineLabels): Promise<void> {
  m.scalingDesired.remove(labels);
  m.scalingCurrent.remove(labels);
  m.scalingLag.remove(labels);
  for (const v of (await m.scalingDecisions.get()).values) {
    if (v.labels.namespace === labels.namespace && v.labels.pipeline === labels.pipeline)
      m.scalingDecisions.remove({ ...labels, reason: String(v.labels.reason) });
  }
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

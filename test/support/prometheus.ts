// A real Prometheus (built from Go modules into the bed's cache) for a suite: it scrapes the operator by a
// static target, as the chart's ServiceMonitor would, and the workers through Kubernetes service discovery with
// the relabelling of the chart's PodMonitor, and evaluates the chart's rules.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import { freePort, isAlive, type Started, startProcess, stopProcess, tail, waitFor } from "../env/proc.ts";
import { ensurePrometheus } from "../env/toolchain.ts";

export interface PrometheusProcess {
  proc: Started;
  url: string;
  /** the series an instant query returns */
  query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
  /** the alerts that are pending or firing */
  alerts(): Promise<{ labels: Record<string, string>; state: string }[]>;
  stop(): Promise<void>;
}

export async function startPrometheus(o: {
  dir: string;
  kubeconfig: string;
  namespace: string;
  operatorTarget: string;
  /** rule groups, as in a rules file */
  rules: unknown;
  intervalS?: number;
}): Promise<PrometheusProcess> {
  const { prometheus } = await ensurePrometheus();
  mkdirSync(o.dir, { recursive: true });
  const interval = `${o.intervalS ?? 2}s`;
  const rulesFile = join(o.dir, "rules.yaml");
  writeFileSync(rulesFile, yaml.dump(o.rules));
  const config = {
    global: { scrape_interval: interval, evaluation_interval: interval },
    rule_files: [rulesFile],
    scrape_configs: [
      // the ServiceMonitor's equivalent: the operator's /metrics, job conveyor-operator, its labels kept
      { job_name: "conveyor-operator", honor_labels: true, static_configs: [{ targets: [o.operatorTarget] }] },
      // the PodMonitor's equivalent: the workers' port named http, with namespace, pod and pipeline labels
      {
        job_name: "conveyor-workers",
        kubernetes_sd_configs: [{ role: "pod", kubeconfig_file: o.kubeconfig, namespaces: { names: [o.namespace] } }],
        relabel_configs: [
          { source_labels: ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], regex: "conveyor-runtime", action: "keep" },
          { source_labels: ["__meta_kubernetes_pod_container_port_name"], regex: "http", action: "keep" },
          { source_labels: ["__meta_kubernetes_namespace"], target_label: "namespace" },
          { source_labels: ["__meta_kubernetes_pod_name"], target_label: "pod" },
          { source_labels: ["__meta_kubernetes_pod_label_conveyor_dev_pipeline"], target_label: "pipeline" },
        ],
      },
    ],
  };
  const configFile = join(o.dir, "prometheus.yml");
  writeFileSync(configFile, yaml.dump(config));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = startProcess({
    name: "prometheus",
    cmd: prometheus,
    args: [`--config.file=${configFile}`, `--storage.tsdb.path=${join(o.dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`, "--log.level=warn"],
    log: join(o.dir, "prometheus.log"),
  });
  const api = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${url}${path}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== "success") throw new Error(`prometheus ${path}: ${body.error ?? res.status}`);
    return body.data;
  };
  await waitFor(async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.status === 200, {
    what: "prometheus to be ready",
    timeoutMs: 60_000,
    process: proc,
  });
  return {
    proc,
    url,
    query: async (expr) =>
      (await api<{ result: { metric: Record<string, string>; value: [number, string] }[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`)).result,
    alerts: async () => (await api<{ alerts: { labels: Record<string, string>; state: string }[] }>("/api/v1/alerts")).alerts,
    stop: async () => {
      if (isAlive(proc.pid)) await stopProcess(proc.pid);
    },
  };
}

export function prometheusLog(p: PrometheusProcess, lines = 20): string {
  return tail(p.proc.log, lines);
}

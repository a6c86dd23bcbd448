// `conveyor top`: every pipeline of a namespace (or of all), a line each, redrawn every few seconds, from their
// status alone: one list call a frame, whatever the number of pipelines.
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { GROUP, PLURAL, type StreamPipeline, VERSION } from "../api.ts";
import { fit, span, WIDTH } from "./describe-view.ts";

export async function listPipelines(kc: KubeConfig, namespace: string | undefined): Promise<StreamPipeline[]> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const list = (
    namespace === undefined
      ? await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })
      : await api.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: PLURAL })
  ) as { items: StreamPipeline[] };
  return list.items;
}

export interface TopRow {
  namespace: string;
  name: string;
  ready: string;
  lag?: number;
  inputRate?: number;
  consumeRate?: number;
  watermarkDelayMs?: number;
  state: string;
}

export function topRow(p: StreamPipeline, now: number): TopRow {
  const s = p.status ?? {};
  const ready = s.conditions?.find((c) => c.type === "Ready");
  const scaling = s.scaling;
  const low = s.watermarks?.low;
  const lag = s.lag ?? scaling?.lag;
  return {
    namespace: p.metadata?.namespace ?? "",
    name: p.metadata?.name ?? "",
    ready: `${s.readyReplicas ?? 0}/${s.replicas ?? p.spec.replicas ?? "?"}`,
    ...(lag !== undefined ? { lag } : {}),
    ...(scaling?.inputRate !== undefined ? { inputRate: scaling.inputRate } : {}),
    ...(scaling?.consumeRate !== undefined ? { consumeRate: scaling.consumeRate } : {}),
    ...(low !== undefined ? { watermarkDelayMs: now - Date.parse(low) } : {}),
    state: [ready?.reason ?? "NotReconciled", scaling && scaling.reason !== "Steady" ? scaling.reason : ""].filter(Boolean).join(", "),
  };
}

const num = (n: number | undefined) => (n === undefined ? "-" : Math.round(n).toLocaleString("en-US"));

/** One frame: a header, then a line a pipeline, in 80 columns. */
export function renderTop(pipelines: StreamPipeline[], now: number, allNamespaces: boolean, width = WIDTH): string {
  const rows = pipelines.map((p) => topRow(p, now)).sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  const nameWidth = allNamespaces ? 28 : 20;
  const line = (name: string, ready: string, lag: string, inRate: string, outRate: string, delay: string, state: string) =>
    `${fit(name, nameWidth, false, "middle")} ${fit(ready, 5, true)} ${fit(lag, 8, true)} ${fit(inRate, 6, true)} ${fit(outRate, 6, true)} ${fit(delay, 6, true)}  ${state}`.slice(
      0,
      width,
    );
  const out = [
    `${new Date(now).toISOString().slice(0, 19)}Z  ${rows.length} pipeline${rows.length === 1 ? "" : "s"}; lag and rates from the lag autoscaler (scaling.mode lag)`.slice(
      0,
      width,
    ),
    line(allNamespaces ? "NAMESPACE/NAME" : "NAME", "READY", "LAG", "IN/S", "OUT/S", "WM LAG", "STATE"),
    ...rows.map((r) =>
      line(
        allNamespaces ? `${r.namespace}/${r.name}` : r.name,
        r.ready,
        num(r.lag),
        num(r.inputRate),
        num(r.consumeRate),
        r.watermarkDelayMs === undefined ? "-" : span(r.watermarkDelayMs),
        r.state,
      ),
    ),
  ];
  return `${out.join("\n")}\n`;
}

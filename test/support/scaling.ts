// What the scaling end-to-end suites share: a watch of a pipeline's decisions and its StatefulSet's replicas,
// stamped with the time each change arrived, and the pipelines and waits they build on.
import { type KubeConfig, type V1StatefulSet, Watch } from "@kubernetes/client-node";
import { API_VERSION, GROUP, KIND, PLURAL, type ScalingStatus, type StreamPipeline, type StreamPipelineSpec, VERSION } from "../../src/api.ts";
import { type Started, tail, waitFor } from "../env/proc.ts";
import { forEachToEnd } from "./kafka.ts";
import type { OperatorProcess } from "./operator.ts";

/** What the watches saw, stamped with the time each change arrived. */
export class Observer {
  /** One entry per decision (status.scaling.sampleTime). */
  readonly decisions: { seen: number; scaling: ScalingStatus }[] = [];
  /** One entry per change of the StatefulSet's spec.replicas. */
  readonly replicas: { seen: number; replicas: number }[] = [];
  readonly generations = new Set<number>();
  private readonly aborts: AbortController[] = [];
  private stopped = false;
  private readonly kc: KubeConfig;
  private readonly name: string;

  constructor(kc: KubeConfig, name: string) {
    this.kc = kc;
    this.name = name;
  }

  async start(namespace: string): Promise<void> {
    await this.watch(`/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`, (p: StreamPipeline) => {
      if (p.metadata?.generation !== undefined) this.generations.add(p.metadata.generation);
      const s = p.status?.scaling;
      if (s && this.decisions.at(-1)?.scaling.sampleTime !== s.sampleTime) this.decisions.push({ seen: Date.now(), scaling: s });
    });
    await this.watch(`/apis/apps/v1/namespaces/${namespace}/statefulsets`, (sts: V1StatefulSet) => {
      const n = sts.spec?.replicas;
      if (n !== undefined && this.replicas.at(-1)?.replicas !== n) this.replicas.push({ seen: Date.now(), replicas: n });
    });
  }

  /** A watch that starts again (with the current state) whenever the apiserver closes it. */
  private async watch<T>(path: string, onObject: (o: T) => void): Promise<void> {
    const w = new Watch(this.kc);
    const start = async (): Promise<void> => {
      if (this.stopped) return;
      const abort = await w.watch(
        path,
        { fieldSelector: `metadata.name=${this.name}` },
        (_phase, obj: T) => onObject(obj),
        () => {
          if (!this.stopped) start().catch(() => undefined);
        },
      );
      this.aborts.push(abort);
    };
    await start();
  }

  stop(): void {
    this.stopped = true;
    for (const a of this.aborts) a.abort();
  }

  /** Waits for one worker, with the autoscaler content with it (Steady). */
  settledAtOne(operator: Started): Promise<true> {
    return waitFor(() => this.decisions.at(-1)?.scaling.reason === "Steady" && this.currentReplicas === 1, {
      what: "one settled worker",
      timeoutMs: 60_000,
      process: operator,
    });
  }

  get currentReplicas(): number | undefined {
    return this.replicas.at(-1)?.replicas;
  }
}

/** kubectl apply of a StreamPipeline. */
export function applyPipeline(kubectl: (args: string[], input?: string) => string, namespace: string, name: string, spec: StreamPipelineSpec): void {
  kubectl(["apply", "-f", "-"], JSON.stringify({ apiVersion: API_VERSION, kind: KIND, metadata: { name, namespace }, spec }));
}

/** A stateless pipeline that writes each JSON record's id from `from` to `to`, with the scaling and processing given. */
export function copyIds(bootstrap: string, from: string, to: string, more: Pick<StreamPipelineSpec, "scaling" | "processing">): StreamPipelineSpec {
  return {
    kafka: { bootstrapServers: [bootstrap] },
    source: { topics: [from], format: "json", startFrom: "earliest" },
    steps: [{ name: "shape", map: "{'id': value.id}" }],
    sink: { topic: to, format: "json" },
    ...more,
  };
}

/** For a wait that failed: the error again, with the operator's last log lines and the pods. */
export function withDiagnostics(op: OperatorProcess, kubectl: (args: string[]) => string, namespace: string): (err: Error) => never {
  return (err) => {
    throw new Error(`${err.message}\noperator log:\n${tail(op.proc.log, 40)}\npods:\n${kubectl(["get", "pods", "-n", namespace, "-o", "wide"])}`);
  };
}

/** Waits until the read_committed topic holds `n` distinct ids; returns how many records it holds. */
export async function waitForIds(bootstrap: string, topic: string, n: number, op: OperatorProcess): Promise<number> {
  let records = 0;
  await waitFor(
    async () => {
      const ids = new Set<number>();
      records = await forEachToEnd(bootstrap, topic, (m) => ids.add((JSON.parse(m.value.toString()) as { id: number }).id), { timeoutMs: 30_000 });
      return ids.size === n;
    },
    { what: `${n} distinct records in ${topic}`, timeoutMs: 90_000, intervalMs: 1_000, process: op.proc },
  );
  return records;
}

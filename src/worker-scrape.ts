// Reading the workers' /metrics (for status.watermarks and the state-capacity forecast): only from pods that
// the pipeline's own StatefulSet controls, never from any pod that carries its labels, and within a time and a
// size, so that no pod can hold the operator or fill its heap.
import type { V1Pod, V1StatefulSet } from "@kubernetes/client-node";
import { API_VERSION, KIND, type StreamPipeline } from "./api.ts";
import type { WorkerPod } from "./watermark-status.ts";

/** The most of one worker's /metrics the operator reads; a worker's is a few hundred KiB at its largest. */
export const SCRAPE_MAX_BYTES = 4 * 1024 * 1024;

/** A /metrics body past the bound: the worker counts as unread, like one that does not answer. */
export class ScrapeTooLargeError extends Error {
  override name = "ScrapeTooLargeError";
}

/**
 * GET `url`, as text, within `timeoutMs` for the whole exchange and `maxBytes` of (decoded) body. The body is
 * read as it comes and the request is dropped at the bound. Redirects are refused: the answer is the pod's own.
 */
export async function scrapeMetrics(url: string, opts: { timeoutMs: number; maxBytes: number }): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(opts.timeoutMs), redirect: "error" });
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new Error(`GET /metrics answered ${res.status}`);
  }
  const tooLarge = () => new ScrapeTooLargeError(`GET /metrics answered more than ${opts.maxBytes} bytes`);
  if (Number(res.headers.get("content-length") ?? 0) > opts.maxBytes) {
    await res.body.cancel();
    throw tooLarge();
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > opts.maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size).toString("utf8");
}

/**
 * The pipeline's running workers: pods the StatefulSet of that name controls, by its uid, where that
 * StatefulSet is the pipeline's own (its controller is the pipeline, by uid). Anyone who may create pods in the
 * namespace can copy the labels; nobody but the StatefulSet controller makes pods it controls.
 */
export function ownedWorkerPods(p: StreamPipeline, sts: V1StatefulSet | undefined, pods: readonly V1Pod[]): WorkerPod[] {
  const pipelineUid = p.metadata?.uid;
  const stsOwner = sts?.metadata?.ownerReferences?.find((r) => r.controller);
  const stsUid = sts?.metadata?.uid;
  if (
    !pipelineUid ||
    !stsUid ||
    sts?.metadata?.name !== p.metadata?.name ||
    sts?.metadata?.namespace !== p.metadata?.namespace ||
    stsOwner?.uid !== pipelineUid ||
    stsOwner.kind !== KIND ||
    stsOwner.apiVersion !== API_VERSION
  )
    return [];
  return pods
    .filter((pod) => {
      const owner = pod.metadata?.ownerReferences?.find((r) => r.controller);
      return owner?.kind === "StatefulSet" && owner.apiVersion === "apps/v1" && owner.uid === stsUid && pod.metadata?.namespace === p.metadata?.namespace;
    })
    .filter((pod) => pod.status?.phase === "Running")
    .map((pod) => ({
      name: pod.metadata?.name ?? "",
      ready: pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
      ...(pod.status?.podIP ? { ip: pod.status.podIP } : {}),
    }));
}

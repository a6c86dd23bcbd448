// Starts the operator as a local process against the bed, as `npm run operator` does.
import { join } from "node:path";
import { GROUP, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { freePort, type Started, startProcess, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { bedEnv, uniqueSuffix } from "./bed.ts";
import type { Kube } from "./kube.ts";

export interface OperatorProcess {
  proc: Started;
  /** probes and metrics on 127.0.0.1 */
  port: number;
  id: string;
}

/** An operator whose leader lease lives in the suite's own namespace, so that suites never wait on each other. */
export async function startOperator(leaseNamespace: string, id = `op-${uniqueSuffix()}`): Promise<OperatorProcess> {
  const env = bedEnv();
  const port = await freePort();
  const proc = startProcess({
    name: `operator ${id}`,
    cmd: process.execPath,
    args: [join(repoRoot, "src/main.ts")],
    log: join(env.state.dir, `operator-${id}.log`),
    cwd: repoRoot,
    env: {
      ...process.env,
      KUBECONFIG: env.kubeconfig,
      POD_NAME: id,
      POD_IP: "127.0.0.1",
      CONVEYOR_HTTP_PORT: String(port),
      CONVEYOR_LEASE_NAMESPACE: leaseNamespace,
    },
  });
  return { proc, port, id };
}

/** Deletes every pipeline of a namespace and waits until the operator's finalizer has let them go. */
export async function deletePipelines(k: Kube, namespace: string, operator: Started, timeoutMs = 60_000): Promise<void> {
  const list = (await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace })) as { items: StreamPipeline[] };
  for (const p of list.items) {
    await k.custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name: p.metadata?.name ?? "" });
  }
  await waitFor(
    async () =>
      ((await k.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace })) as { items: unknown[] }).items.length === 0,
    { what: `the pipelines of ${namespace} to be deleted (finalizers)`, timeoutMs, process: operator },
  );
}

// An e2e describe block's own world on the shared bed: a namespace, the CRD and an operator of its own,
// started before its tests and torn down after them (its pipelines deleted through the finalizer first).
import { after, before } from "node:test";
import type { Admin } from "@platformatic/kafka";
import { GROUP, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { stopProcess } from "../env/proc.ts";
import { type BedEnv, bedEnv } from "./bed.ts";
import { admin } from "./kafka.ts";
import { type Kube, kube, testNamespace } from "./kube.ts";
import { kubectl as runKubectl } from "./kubectl.ts";
import { deletePipelines, type OperatorProcess, startOperator } from "./operator.ts";

export interface OperatorSuite {
  readonly env: BedEnv;
  kubectl(args: string[], input?: string): string;
  /** set once the suite's before hook has run */
  k: Kube;
  a: Admin;
  ns: string;
  op: OperatorProcess;
  /** a pipeline of the suite's namespace, as stored */
  read(name: string): Promise<StreamPipeline>;
}

/**
 * Runs every step of a suite's teardown even when one fails, then throws the first failure (all of them when
 * several fail). A step skipped after a failure leaks: an operator reconciling the next suites' pipelines, or an
 * open Kafka client that keeps the test file's process alive until the runner gives up on it.
 */
export async function teardown(...steps: (() => unknown)[]): Promise<void> {
  const errors: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} teardown steps failed`);
}

/** Registers the hooks of the calling describe block; `setup` runs before the operator starts (topics, say). */
export function operatorSuite(prefix: string, setup?: (s: OperatorSuite) => Promise<void>): OperatorSuite {
  const env = bedEnv();
  const cleanups: (() => Promise<void>)[] = [];
  const s = {
    env,
    kubectl: (args: string[], input?: string) => runKubectl(env.kubeconfig, args, input),
    read: async (name: string) =>
      (await s.k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: s.ns, plural: PLURAL, name })) as StreamPipeline,
  } as OperatorSuite;
  before(async () => {
    s.k = kube();
    s.a = admin(env.bootstrap);
    s.ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, s.k, prefix);
    s.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    s.kubectl(["wait", "--for=condition=Established", "crd/streampipelines.conveyor.dev", "--timeout=30s"]);
    await setup?.(s);
    s.op = await startOperator(s.ns);
  });
  after(async () => {
    // The operator and the namespace go even when a finalizer does not finish: the failure is still reported.
    await teardown(
      () => s.op && deletePipelines(s.k, s.ns, s.op.proc),
      () => s.op && stopProcess(s.op.proc.pid),
      ...cleanups,
      () => s.a?.close(),
    );
  });
  return s;
}

// What a suite needs to reach the shared test bed that `npm test` started (scripts/test.ts), from inside its network namespace.
import { type BedState, readBedState } from "../env/bed.ts";

export interface BedEnv {
  kubeconfig: string;
  bootstrap: string;
  state: BedState;
}

export function bedEnv(): BedEnv {
  const kubeconfig = process.env.KUBECONFIG;
  const bootstrap = process.env.KAFKA_BOOTSTRAP;
  const dir = process.env.CONVEYOR_BED_DIR;
  if (!kubeconfig || !bootstrap || !dir) {
    throw new Error("no test bed: run the suite through `npm test` (it starts Kafka and Kubernetes, and runs the suites inside the bed's network namespace)");
  }
  const state = readBedState(dir);
  if (!state) throw new Error(`no test bed state in ${dir}`);
  return { kubeconfig, bootstrap, state };
}

/** A short unique suffix for names of namespaces, topics and groups. */
export function uniqueSuffix(): string {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4).toString(36)}`;
}

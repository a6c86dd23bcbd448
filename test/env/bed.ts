// The whole test bed: Kafka, the Kubernetes control plane and the node shim, with a state file so that
// `npm run bed -- down` and a later run can find and stop what an earlier one started.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { apiGet, type ComponentSpec, type ControlPlane, startComponent, startControlPlane, stopControlPlane, waitApiserverReady } from "./k8s.ts";
import { type KafkaCluster, startKafka, stopKafka } from "./kafka.ts";
import { BedError, isAlive, startProcess, stopProcess, waitFor } from "./proc.ts";
import type { ImageTable } from "./shim/images.ts";
import { repoRoot } from "./toolchain.ts";

export const RUNTIME_IMAGE = "conveyor/runtime";
export const OPERATOR_IMAGE = "conveyor/operator";
/** a plain shell, for tests that need a pod that is not Conveyor's */
export const SHELL_IMAGE = "bed/shell";
/** the uid the project's images run as (distroless "nonroot") */
export const IMAGE_USER = 65532;

export interface BedState {
  dir: string;
  kubeconfig: string;
  kafkaBootstrap: string;
  kafka: KafkaCluster;
  controlPlane: ControlPlane;
  shim: { pid: number; log: string; work: string; args: string[] };
  /** processes started on top of the bed (the demo's operator); stopped first */
  extras?: { name: string; pid: number; log: string }[];
  startedAt: string;
}

export interface Bed extends BedState {
  stop(): Promise<void>;
}

export function defaultBedDir(): string {
  return process.env.CONVEYOR_BED_DIR ?? "/tmp/conveyor-bed";
}

function stateFile(dir: string): string {
  return join(dir, "bed.json");
}

export function imageTable(): ImageTable {
  const node = process.execPath;
  return {
    [RUNTIME_IMAGE]: { command: [node, join(repoRoot, "runtime/main.ts")], user: IMAGE_USER, workingDir: repoRoot },
    [OPERATOR_IMAGE]: { command: [node, join(repoRoot, "src/main.ts")], user: IMAGE_USER, workingDir: repoRoot },
    [SHELL_IMAGE]: { command: ["/bin/sh", "-c"], args: ["sleep infinity"], user: 0 },
  };
}

function serialize(state: BedState): string {
  return JSON.stringify(state, (_k, v: unknown) => (v instanceof Map ? { __map: [...v.entries()] } : v), 2);
}

export function readBedState(dir = defaultBedDir()): BedState | undefined {
  const file = stateFile(dir);
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8"), (_k, v: unknown) =>
    typeof v === "object" && v !== null && "__map" in v ? new Map((v as { __map: [unknown, unknown][] }).__map) : v,
  ) as BedState;
}

export function writeBedState(state: BedState): void {
  writeFileSync(stateFile(state.dir), serialize(state));
}

export const HOSTPATH_PROVISIONER_ROOT = "/tmp/hostpath_pv/";

/** The host directories of the bed's PersistentVolumes (only under the provisioner's fixed root). */
async function hostPathVolumes(cp: ControlPlane): Promise<string[]> {
  if (![...cp.pids.values()].every(isAlive)) return [];
  const res = await apiGet(cp, "/api/v1/persistentvolumes");
  if (res.status !== 200) throw new BedError(`listing PersistentVolumes: ${res.status}`);
  const list = JSON.parse(res.body) as { items: { spec?: { hostPath?: { path?: string } } }[] };
  return list.items.map((pv) => pv.spec?.hostPath?.path ?? "").filter((p) => p.startsWith(HOSTPATH_PROVISIONER_ROOT) && !p.includes(".."));
}

/** Stops what a bed state file names, in reverse order of start. */
export async function stopBedState(state: BedState): Promise<void> {
  const errors: string[] = [];
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      return undefined;
    }
  };
  for (const x of state.extras ?? []) await attempt(x.name, () => stopProcess(x.pid, 15_000));
  await attempt("node shim", () => stopProcess(state.shim.pid, 15_000));
  // The hostpath provisioner's directories outlive the bed unless the bed removes what its own PVs name.
  const volumeDirs = await attempt("listing PersistentVolumes", () => hostPathVolumes(state.controlPlane));
  await attempt("control plane", () => stopControlPlane(state.controlPlane));
  for (const d of volumeDirs ?? []) rmSync(d, { recursive: true, force: true });
  await attempt("kafka", () => stopKafka(state.kafka));
  rmSync(stateFile(state.dir), { force: true });
  if (errors.length > 0) throw new BedError(`stopping the bed: ${errors.join("; ")}`);
}

export async function waitNodeReady(cp: ControlPlane, shim: { pid: number; log: string }, node = "bed-node-1"): Promise<void> {
  await waitFor(
    async () => {
      const res = await apiGet(cp, `/api/v1/nodes/${node}`);
      if (res.status !== 200) return false;
      const n = JSON.parse(res.body) as { status?: { conditions?: { type: string; status: string }[] } };
      return n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
    },
    { what: `node ${node} to be Ready (node shim)`, timeoutMs: 30_000, process: { name: "node shim", ...shim } },
  );
}

export async function startShim(cp: ControlPlane, dir: string): Promise<BedState["shim"]> {
  const work = join(dir, "shim");
  mkdirSync(work, { recursive: true });
  const images = join(dir, "images.json");
  writeFileSync(images, JSON.stringify(imageTable(), null, 2));
  const args = [join(repoRoot, "test/env/shim/main.ts"), "--kubeconfig", cp.kubeconfig, "--images", images, "--work", work];
  const proc = startProcess({ name: "node-shim", cmd: process.execPath, args, log: join(dir, "shim.log"), cwd: repoRoot });
  const shim = { pid: proc.pid, log: proc.log, work, args };
  await waitNodeReady(cp, shim);
  return shim;
}

/** Starts Kafka, the control plane and the node shim; stops whatever an earlier bed in the same dir left running. */
export async function startBed(dir = defaultBedDir()): Promise<Bed> {
  const say = (s: string) => process.stderr.write(`[bed] ${s}\n`);
  const previous = readBedState(dir);
  if (previous) {
    say(`stopping what an earlier bed in ${dir} left running`);
    await stopBedState(previous).catch((err: unknown) => say(`could not stop all of the earlier bed: ${err instanceof Error ? err.message : String(err)}`));
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const t0 = Date.now();

  const kafka = await startKafka({ dir: join(dir, "kafka") });
  say(`Kafka ready at ${kafka.bootstrap} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  let controlPlane: ControlPlane | undefined;
  try {
    controlPlane = await startControlPlane({ dir: join(dir, "k8s") });
    say(`Kubernetes control plane ready at ${controlPlane.server} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    const shim = await startShim(controlPlane, dir);
    say(`node shim ready, node bed-node-1 (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    const state: BedState = {
      dir,
      kubeconfig: controlPlane.kubeconfig,
      kafkaBootstrap: kafka.bootstrap,
      kafka,
      controlPlane,
      shim,
      startedAt: new Date().toISOString(),
    };
    writeBedState(state);
    // A fault test may restart a component: stop what the state file names by then, not what started.
    return { ...state, stop: () => stopBedState(readBedState(dir) ?? state) };
  } catch (err) {
    // The start failed; clean up, report what cleanup could not stop, and throw the start's own error.
    const report = (what: string) => (e: unknown) => say(`could not stop ${what}: ${e instanceof Error ? e.message : String(e)}`);
    if (controlPlane) await stopControlPlane(controlPlane).catch(report("the control plane"));
    await stopKafka(kafka).catch(report("Kafka"));
    throw err;
  }
}

/** Kills kube-apiserver (SIGKILL, like a crash) and starts it again as it was (same flags, same etcd), for fault tests. */
export async function restartApiserver(dir = defaultBedDir(), downMs = 0): Promise<{ downForMs: number }> {
  const state = readBedState(dir);
  if (!state) throw new BedError(`no bed state in ${dir}`);
  const cp = state.controlPlane;
  const spec = cp.components.find((c) => c.name === "kube-apiserver") as ComponentSpec;
  const t0 = Date.now();
  await stopProcess(cp.pids.get("kube-apiserver") ?? 0, 0);
  if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
  cp.pids.set("kube-apiserver", startComponent(spec, cp.dir).pid);
  writeBedState(state);
  await waitApiserverReady(cp);
  return { downForMs: Date.now() - t0 };
}

/** A bed whose processes all still run, or undefined. */
export function runningBed(dir = defaultBedDir()): BedState | undefined {
  const state = readBedState(dir);
  return state && bedStatus(state).every((r) => r.alive) ? state : undefined;
}

export function bedStatus(state: BedState): { name: string; pid: number; alive: boolean }[] {
  const rows: { name: string; pid: number; alive: boolean }[] = [];
  for (const [id, pid] of state.kafka.pids) rows.push({ name: `kafka-broker-${id}`, pid, alive: isAlive(pid) });
  for (const [name, pid] of state.controlPlane.pids) rows.push({ name, pid, alive: isAlive(pid) });
  rows.push({ name: "node-shim", pid: state.shim.pid, alive: isAlive(state.shim.pid) });
  for (const x of state.extras ?? []) rows.push({ name: x.name, pid: x.pid, alive: isAlive(x.pid) });
  return rows;
}

// The whole test bed: Kafka, the Kubernetes control plane and the node shim, with a state file so that
// `npm run bed -- down` and a later run can find and stop what an earlier one started.
//
// The bed runs in a network namespace of its own (test/env/net.ts): the host's namespace gets no address and no
// route. `startBed` makes the namespace and the bed's cgroup, starts the host half of the loopback forwarder, and
// runs the rest (test/env/bed-inside.ts) inside the namespace, where every process it starts stays.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Admin } from "@platformatic/kafka";
import { bedCgroupFor, ensureCgroup, removeCgroup } from "./cgroup.ts";
import { FORWARDER_READY } from "./forward.ts";
import { apiGet, type ComponentSpec, type ControlPlane, startComponent, stopControlPlane, waitApiserverReady } from "./k8s.ts";
import { type KafkaCluster, stopKafka } from "./kafka.ts";
import { type BedNet, bedNetFor, createBedNet, removeBedNet, removeLegacyPodRoute } from "./net.ts";
import { imageTable, type PodsMode, podsMode } from "./pod-images.ts";
import { BedError, freePorts, isAlive, placedArgv, type Started, startProcess, stopProcess, tail, waitFor } from "./proc.ts";
import { repoRoot } from "./toolchain.ts";

export interface BedState {
  dir: string;
  /** works in the host's namespace and in the bed's: both reach the apiserver at 127.0.0.1:<port> */
  kubeconfig: string;
  /** Kafka on the pod network: for pipelines' specs, and for processes in the bed's namespace */
  kafkaBootstrap: string;
  /** Kafka from the namespace that ran `bed up`, through the forwarder (advertised as itself) */
  kafkaHostBootstrap: string;
  /** Kafka's secured listeners, each on the pod network and from the host (through the forwarder) */
  kafkaSecure: {
    /** SASL_SSL with SCRAM-SHA-512 */
    saslBootstrap: string;
    saslHostBootstrap: string;
    /** SSL with a client certificate required: its CN is the principal */
    mtlsBootstrap: string;
    mtlsHostBootstrap: string;
    /** the bed's CA (PEM): it signed the broker's certificate and the apiserver's, and signs client certificates */
    ca: string;
    caKey: string;
    /** a super user of the SASL listener, for setting up users and ACLs */
    admin: { username: string; password: string };
  };
  kafka: KafkaCluster;
  controlPlane: ControlPlane;
  shim: { pid: number; log: string; work: string; args: string[] };
  /** what the pods of Conveyor's images run: the built images (unpacked) or this checkout (test/env/pod-images.ts) */
  pods: PodsMode;
  net: BedNet & {
    /** the cgroup (v2) that holds every process of the bed: `system/` its own, `pods/<uid>/<container>` the pods' */
    cgroup: string;
    /** the host half (in the namespace of `bed up`) and the bed half of the loopback forwarder */
    forwarders: Started[];
  };
  /** processes started on top of the bed (the demo's operator); stopped first */
  extras?: { name: string; pid: number; log: string }[];
  startedAt: string;
}

/** What the part of the start that runs inside the bed's namespace hands back. */
export type InsideState = Pick<BedState, "kafka" | "controlPlane" | "shim" | "kafkaBootstrap" | "kafkaSecure"> & { forwarder: Started };

/** The bed's Kafka super user on the SASL listener. */
export const BED_KAFKA_ADMIN = "conveyor-admin";

export interface Bed extends BedState {
  stop(): Promise<void>;
}

export function defaultBedDir(): string {
  return process.env.CONVEYOR_BED_DIR ?? "/tmp/conveyor-bed";
}

function stateFile(dir: string): string {
  return join(dir, "bed.json");
}

/** The environment of a command run inside the bed's namespace: where the bed's parts are from there. */
export function insideEnv(state: BedState): Record<string, string> {
  const s = state.kafkaSecure;
  return {
    KUBECONFIG: state.kubeconfig,
    KAFKA_BOOTSTRAP: state.kafkaBootstrap,
    ...securedKafkaEnv(state, s.saslBootstrap, s.mtlsBootstrap),
    CONVEYOR_BED_DIR: state.dir,
  };
}

/** Where the secured listeners are, the CA, and the super user: what `bed up` prints, one per line. */
export function securedKafkaEnv(state: BedState, sasl: string, mtls: string): Record<string, string> {
  const s = state.kafkaSecure;
  return { KAFKA_SASL_BOOTSTRAP: sasl, KAFKA_MTLS_BOOTSTRAP: mtls, BED_CA: s.ca, KAFKA_SASL_ADMIN: `${s.admin.username}:${s.admin.password}` };
}

/** The same, for the namespace that ran `bed up`: through the forwarder. */
export function hostEnv(state: BedState): Record<string, string> {
  const s = state.kafkaSecure;
  return { KUBECONFIG: state.kubeconfig, KAFKA_BOOTSTRAP: state.kafkaHostBootstrap, ...securedKafkaEnv(state, s.saslHostBootstrap, s.mtlsHostBootstrap) };
}

/** JSON with Maps kept (the pid tables). */
export function serializeBedState(state: unknown): string {
  return JSON.stringify(state, (_k, v: unknown) => (v instanceof Map ? { __map: [...v.entries()] } : v), 2);
}

export function readBedState(dir = defaultBedDir()): BedState | undefined {
  const file = stateFile(dir);
  if (!existsSync(file)) return undefined;
  return parseBedState(readFileSync(file, "utf8")) as BedState;
}

function parseBedState(text: string): unknown {
  return JSON.parse(text, (_k, v: unknown) =>
    typeof v === "object" && v !== null && "__map" in v ? new Map((v as { __map: [unknown, unknown][] }).__map) : v,
  );
}

export function writeBedState(state: BedState): void {
  // it holds the Kafka super user's password: for the user who started the bed only
  writeFileSync(stateFile(state.dir), serializeBedState(state), { mode: 0o600 });
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

/**
 * Removes whatever a bed in `dir` may have left, whether or not its state file names it: every process in its
 * cgroup, its network namespaces (with their links, addresses and routes), and the host route of an older bed.
 */
export async function sweepBed(dir: string): Promise<void> {
  await removeCgroup(bedCgroupFor(dir));
  removeBedNet(bedNetFor(dir));
  removeLegacyPodRoute();
}

/** Stops what a bed state file names, in reverse order of start, then sweeps what is left. */
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
  for (const f of state.net.forwarders) await attempt(f.name, () => stopProcess(f.pid, 5_000));
  await attempt("the bed's cgroup and network namespaces", () => sweepBed(state.dir));
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

export async function startShim(cp: ControlPlane, dir: string, cgroup: string): Promise<BedState["shim"]> {
  const work = join(dir, "shim");
  mkdirSync(work, { recursive: true });
  // written by startBed, in the namespace that builds the images (the bed's has no way out to the registries)
  const images = join(dir, "images.json");
  const args = [
    join(repoRoot, "test/env/shim/main.ts"),
    ...["--kubeconfig", cp.kubeconfig, "--images", images, "--work", work, "--bed", dir, "--cgroup", cgroup],
  ];
  const proc = startProcess({ name: "node-shim", cmd: process.execPath, args, log: join(dir, "shim.log"), cwd: repoRoot });
  const shim = { pid: proc.pid, log: proc.log, work, args };
  await waitNodeReady(cp, shim);
  return shim;
}

export function forwarderSockets(dir: string): string {
  return join(dir, "net");
}

/** Starts one half of the loopback forwarder and waits until it listens. */
export async function startForwarder(side: "host" | "bed", dir: string, ports: number[], cgroup: string): Promise<Started> {
  const log = join(dir, `forwarder-${side}.log`);
  const proc = startProcess({
    name: `${side}-forwarder`,
    cmd: process.execPath,
    args: [join(repoRoot, "test/env/forward.ts"), side, forwarderSockets(dir), ...ports.map(String)],
    log,
    cgroup,
  });
  await waitFor(() => existsSync(log) && readFileSync(log, "utf8").includes(FORWARDER_READY), {
    what: `the ${side} half of the loopback forwarder to listen`,
    timeoutMs: 15_000,
    intervalMs: 50,
    process: proc,
  });
  return proc;
}

/** The ports the host forwarder serves on 127.0.0.1, the same on both sides. */
interface BedPorts {
  apiserver: number;
  kafkaHost: number;
  saslHost: number;
  mtlsHost: number;
}

/** Runs test/env/bed-inside.ts in the bed's namespace and cgroup; it starts Kafka, the control plane and the shim there. */
function startInside(dir: string, net: BedNet, cgroup: string, ports: BedPorts): Promise<InsideState> {
  const args = [ports.apiserver, ports.kafkaHost, ports.saslHost, ports.mtlsHost].map(String);
  const argv = placedArgv([process.execPath, join(repoRoot, "test/env/bed-inside.ts"), dir, ...args], {
    cgroup: join(cgroup, "system"),
    netns: net.netns,
  });
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", (err) => reject(new BedError(`starting the bed inside its network namespace: ${err.message}`)));
    child.on("close", (code) => {
      if (code !== 0) return reject(new BedError(`the bed's start inside its network namespace failed (exit ${code}); its reasons are above`));
      try {
        resolve(parseBedState(out) as InsideState);
      } catch (err) {
        reject(new BedError(`the bed's start inside its network namespace printed no state: ${String(err)}: ${out.slice(0, 500)}`));
      }
    });
  });
}

/** Both ways in from the namespace `bed up` runs in: the apiserver's /readyz and a Kafka metadata request. */
async function checkFromHost(state: BedState): Promise<void> {
  await waitApiserverReady(state.controlPlane, 15_000);
  await waitFor(
    async () => {
      const a = new Admin({ clientId: "bed-host-check", bootstrapBrokers: [state.kafkaHostBootstrap], retries: 0, timeout: 2_000 });
      try {
        return (await a.metadata({ topics: [] })).brokers.size > 0;
      } finally {
        await a.close().catch(() => undefined);
      }
    },
    { what: `Kafka through the host forwarder at ${state.kafkaHostBootstrap}`, timeoutMs: 15_000, intervalMs: 200 },
  );
}

/** Starts Kafka, the control plane and the node shim; stops whatever an earlier bed in the same dir left running. */
export async function startBed(dir = defaultBedDir(), opts: { pods?: PodsMode } = {}): Promise<Bed> {
  const say = (s: string) => process.stderr.write(`[bed] ${s}\n`);
  const previous = readBedState(dir);
  if (previous) {
    say(`stopping what an earlier bed in ${dir} left running`);
    await stopBedState(previous).catch((err: unknown) => say(`could not stop all of the earlier bed: ${err instanceof Error ? err.message : String(err)}`));
  }
  // Also what no state file names: a bed killed before it wrote one, or pods whose shim was SIGKILLed.
  await sweepBed(dir);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(forwarderSockets(dir), { recursive: true });
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

  const cgroup = bedCgroupFor(dir);
  const net = bedNetFor(dir);
  const pods = opts.pods ?? podsMode("checkout");
  const images = await imageTable(pods, dir);
  writeFileSync(join(dir, "images.json"), JSON.stringify(images, null, 2));
  say(
    pods === "image"
      ? `pods run the images: ${Object.values(images)
          .flatMap((e) => (e.digest ? [e.digest] : []))
          .join(", ")} (${since()})`
      : `pods run this checkout (CONVEYOR_PODS=checkout) (${since()})`,
  );
  let forwarders: Started[] = [];
  try {
    ensureCgroup(join(cgroup, "system"));
    createBedNet(net);
    say(`network namespace ${net.netns}: bridge ${net.gateway}, pods on 10.244.0.0/16 (${since()})`);
    // 127.0.0.1:<port> on both sides of the forwarder: the ports must be free here; the bed's namespace is new.
    const [apiserver, kafkaHost, saslHost, mtlsHost] = (await freePorts(4)) as [number, number, number, number];
    const ports: BedPorts = { apiserver, kafkaHost, saslHost, mtlsHost };
    forwarders = [await startForwarder("host", dir, [ports.apiserver, ports.kafkaHost, ports.saslHost, ports.mtlsHost], join(cgroup, "system"))];
    const inside = await startInside(dir, net, cgroup, ports);
    forwarders.push(inside.forwarder);
    const state: BedState = {
      dir,
      kubeconfig: inside.controlPlane.kubeconfig,
      kafkaBootstrap: inside.kafkaBootstrap,
      kafkaHostBootstrap: `127.0.0.1:${ports.kafkaHost}`,
      kafkaSecure: inside.kafkaSecure,
      kafka: inside.kafka,
      controlPlane: inside.controlPlane,
      shim: inside.shim,
      pods,
      net: { ...net, cgroup, forwarders },
      startedAt: new Date().toISOString(),
    };
    writeBedState(state);
    await checkFromHost(state);
    say(`reachable from here: apiserver ${state.controlPlane.server}, Kafka ${state.kafkaHostBootstrap} (${since()})`);
    // A fault test may restart a component: stop what the state file names by then, not what started.
    return { ...state, stop: () => stopBedState(readBedState(dir) ?? state) };
  } catch (err) {
    // The start failed: everything it started is in the bed's cgroup. Report what cleanup could not remove, and
    // throw the start's own error.
    const state = readBedState(dir);
    if (state) await stopBedState(state).catch((e: unknown) => say(`could not stop the bed: ${e instanceof Error ? e.message : String(e)}`));
    for (const f of forwarders) await stopProcess(f.pid, 2_000).catch(() => undefined);
    await sweepBed(dir).catch((e: unknown) => say(`could not remove the bed's cgroup or namespaces: ${e instanceof Error ? e.message : String(e)}`));
    for (const f of forwarders) if (isAlive(f.pid)) say(`${f.name} still runs; log:\n${tail(f.log)}`);
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
  cp.pids.set("kube-apiserver", startComponent(spec, cp.dir, { cgroup: join(state.net.cgroup, "system"), netns: state.net.netns }).pid);
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
  for (const f of state.net.forwarders) rows.push({ name: f.name, pid: f.pid, alive: isAlive(f.pid) });
  for (const x of state.extras ?? []) rows.push({ name: x.name, pid: x.pid, alive: isAlive(x.pid) });
  return rows;
}

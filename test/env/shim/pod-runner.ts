// One pod on the shim node: its volumes, its containers as local processes, its probes and its status.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import {
  type CoreV1Api,
  PatchStrategy,
  setHeaderOptions,
  type V1Container,
  type V1ContainerStatus,
  type V1Pod,
  type V1PodCondition,
  type V1Probe,
} from "@kubernetes/client-node";
import { statusCode } from "../../../src/kube-errors.ts";
import { parseBytes } from "../../../src/topology/quantity.ts";
import { ensureCgroup, joinCgroupLine, killCgroup, limitMemory, removeCgroup } from "../cgroup.ts";
import { inNetns } from "../net.ts";
import { signalGroup } from "../proc.ts";
import { containerArgv, type ImageTable, lookupImage } from "./images.ts";
import { fieldValue, prepareVolumes, VolumeError } from "./volumes.ts";

export interface ShimContext {
  api: CoreV1Api;
  images: ImageTable;
  workDir: string;
  apiserverHost: string;
  apiserverPort: number;
  /** the node's address on the pod network (status.hostIP) */
  hostIP: string;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

/** Where a pod lives: its network namespace (made by the shim before the runner starts) and its cgroup. */
export interface PodPlace {
  netns: string;
  cgroup: string;
}

const BACKOFF_BASE_MS = 1_000;
const BACKOFF_MAX_MS = 20_000;
/** a container that ran this long has its restart back-off reset */
const BACKOFF_RESET_MS = 60_000;

type Phase = "Pending" | "Running" | "Succeeded" | "Failed";

interface Terminated {
  exitCode: number;
  signal?: number;
  reason: string;
  message?: string;
  startedAt: Date;
  finishedAt: Date;
}

interface ContainerRun {
  spec: V1Container;
  init: boolean;
  proc?: ChildProcess;
  startedAt?: Date;
  restartCount: number;
  consecutiveFailures: number;
  current?: Terminated;
  last?: Terminated;
  waiting?: { reason: string; message?: string };
  ready: boolean;
  probeTimers: NodeJS.Timeout[];
  backoffTimer?: NodeJS.Timeout;
  exited?: Promise<void>;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11 };

export class PodRunner {
  private pod: V1Pod;
  private readonly containers: ContainerRun[];
  private phase: Phase = "Pending";
  private reason?: string;
  private message?: string;
  private readonly startTime = new Date();
  private terminating = false;
  private stopped = false;
  private volumes = new Map<string, string>();
  private statusDirty = false;
  private statusWrite: Promise<void> = Promise.resolve();
  private readonly podDir: string;
  private readonly ctx: ShimContext;
  readonly ip: string;
  readonly place: PodPlace;

  constructor(ctx: ShimContext, pod: V1Pod, ip: string, place: PodPlace) {
    this.ctx = ctx;
    this.ip = ip;
    this.place = place;
    this.pod = pod;
    this.podDir = join(ctx.workDir, "pods", `${pod.metadata?.namespace}_${pod.metadata?.name}_${pod.metadata?.uid}`);
    const init = (pod.spec?.initContainers ?? []).map((spec) => this.newRun(spec, true));
    const main = (pod.spec?.containers ?? []).map((spec) => this.newRun(spec, false));
    this.containers = [...init, ...main];
  }

  private newRun(spec: V1Container, init: boolean): ContainerRun {
    return { spec, init, restartCount: 0, consecutiveFailures: 0, ready: false, probeTimers: [], waiting: { reason: "ContainerCreating" } };
  }

  get key(): string {
    return `${this.pod.metadata?.namespace}/${this.pod.metadata?.name}`;
  }

  update(pod: V1Pod): void {
    this.pod = pod;
  }

  async start(): Promise<void> {
    mkdirSync(this.podDir, { recursive: true });
    this.markStatus();
    for (;;) {
      if (this.terminating) return;
      try {
        const fsGroup = this.pod.spec?.securityContext?.fsGroup;
        this.volumes = await prepareVolumes({ api: this.ctx.api, pod: this.podWithIP(), podDir: this.podDir, fsGroup });
        break;
      } catch (err) {
        const retryable = !(err instanceof VolumeError) || err.retryable;
        const msg = err instanceof Error ? err.message : String(err);
        this.reason = "ContainerCreating";
        this.message = `volumes: ${msg}`;
        this.markStatus();
        if (!retryable) return this.fail("VolumeUnsupported", msg);
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
    this.reason = undefined;
    this.message = undefined;
    for (const c of this.containers.filter((c) => c.init)) {
      if (!(await this.runInitToCompletion(c))) return;
    }
    for (const c of this.containers.filter((c) => !c.init)) this.launch(c);
    if (!this.stopped && this.phase === "Pending") this.phase = "Running";
    this.markStatus();
  }

  private podWithIP(): V1Pod {
    return { ...this.pod, status: { ...this.pod.status, podIP: this.ip, hostIP: this.ctx.hostIP } };
  }

  private fail(reason: string, message: string): void {
    this.phase = "Failed";
    this.reason = reason;
    this.message = message;
    this.ctx.log("pod failed", { pod: this.key, reason, message });
    this.markStatus();
  }

  private async runInitToCompletion(c: ContainerRun): Promise<boolean> {
    for (;;) {
      if (this.terminating || this.phase === "Failed") return false;
      this.launch(c);
      await c.exited;
      if (c.last?.exitCode === 0 || c.current?.exitCode === 0) return true;
      if (this.pod.spec?.restartPolicy === "Never") {
        this.fail("InitContainerFailed", `init container ${c.spec.name} exited ${c.current?.exitCode}`);
        return false;
      }
      await new Promise((r) => setTimeout(r, this.backoff(c)));
    }
  }

  private backoff(c: ContainerRun): number {
    return Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, c.consecutiveFailures - 1), BACKOFF_MAX_MS);
  }

  /** What every container gets before its own env: a kubelet's defaults and the service environment. */
  private baseEnv(user: number): Record<string, string> {
    const pod = this.podWithIP();
    return {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      HOSTNAME: pod.metadata?.name ?? "",
      HOME: user === 0 ? "/root" : "/",
      POD_IP: this.ip,
      KUBERNETES_SERVICE_HOST: this.ctx.apiserverHost,
      KUBERNETES_SERVICE_PORT: String(this.ctx.apiserverPort),
      KUBERNETES_SERVICE_PORT_HTTPS: String(this.ctx.apiserverPort),
      KUBERNETES_PORT: `tcp://${this.ctx.apiserverHost}:${this.ctx.apiserverPort}`,
    };
  }

  /** The image's ENV first, then a kubelet's, then the container's own, each over the one before. */
  private async resolveEnv(c: V1Container, user: number, imageEnv: string[]): Promise<Record<string, string>> {
    const env: Record<string, string> = {};
    for (const e of imageEnv) {
      const eq = e.indexOf("=");
      if (eq > 0) env[e.slice(0, eq)] = e.slice(eq + 1);
    }
    const image = { ...env };
    Object.assign(env, this.baseEnv(user), image.PATH ? { PATH: image.PATH } : {});
    const ns = this.pod.metadata?.namespace ?? "default";
    const pod = this.podWithIP();
    for (const from of c.envFrom ?? []) {
      const prefix = from.prefix ?? "";
      if (from.configMapRef) {
        const cm = await this.ctx.api.readNamespacedConfigMap({ name: from.configMapRef.name ?? "", namespace: ns });
        for (const [k, v] of Object.entries(cm.data ?? {})) env[prefix + k] = v;
      }
      if (from.secretRef) {
        const s = await this.ctx.api.readNamespacedSecret({ name: from.secretRef.name ?? "", namespace: ns });
        for (const [k, v] of Object.entries(s.data ?? {})) env[prefix + k] = Buffer.from(v, "base64").toString();
      }
    }
    for (const e of c.env ?? []) {
      if (e.value !== undefined) env[e.name] = e.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => env[n] ?? m);
      else if (e.valueFrom?.fieldRef) env[e.name] = fieldValue(pod, e.valueFrom.fieldRef);
      else if (e.valueFrom?.configMapKeyRef) {
        const ref = e.valueFrom.configMapKeyRef;
        const cm = await this.ctx.api.readNamespacedConfigMap({ name: ref.name ?? "", namespace: ns });
        const v = cm.data?.[ref.key];
        if (v === undefined && !ref.optional) throw new Error(`configmap ${ref.name} has no key ${ref.key}`);
        if (v !== undefined) env[e.name] = v;
      } else if (e.valueFrom?.secretKeyRef) {
        const ref = e.valueFrom.secretKeyRef;
        const s = await this.ctx.api.readNamespacedSecret({ name: ref.name ?? "", namespace: ns });
        const v = s.data?.[ref.key];
        if (v === undefined && !ref.optional) throw new Error(`secret ${ref.name} has no key ${ref.key}`);
        if (v !== undefined) env[e.name] = Buffer.from(v, "base64").toString();
      } else if (e.valueFrom?.resourceFieldRef) {
        const ref = e.valueFrom.resourceFieldRef;
        const [kind, res] = ref.resource.split(".");
        const q = kind === "limits" ? c.resources?.limits?.[res ?? ""] : c.resources?.requests?.[res ?? ""];
        env[e.name] = q ?? "0";
      }
    }
    return env;
  }

  /** Each container's processes, and whatever they leave behind, in a cgroup of its own below the pod's. */
  private containerCgroup(c: V1Container): string {
    return join(this.place.cgroup, c.name);
  }

  /** The launcher's first lines: it joins the container's cgroup, with its memory limit, as a kubelet would place it. */
  private cgroupLines(c: V1Container): string[] {
    const lines = [joinCgroupLine(this.containerCgroup(c)), "set -e"];
    // limits.memory, enforced as a kubelet does: the container's cgroup (or its v1 memory twin) holds it
    const limit = c.resources?.limits?.memory;
    if (limit !== undefined) {
      const bytes = parseBytes(String(limit));
      if (bytes === undefined) throw new Error(`limits.memory ${limit} is not a quantity of bytes`);
      const procs = limitMemory(this.containerCgroup(c), bytes);
      if (procs !== join(this.containerCgroup(c), "cgroup.procs")) lines.splice(1, 0, joinCgroupLine(dirname(procs)));
    }
    return lines;
  }

  /** Each volume mount's host directory (with its subPath) and where it goes, with the mount lines under root. */
  private volumeLines(c: V1Container, root: string): string[] {
    const lines: string[] = [];
    for (const m of c.volumeMounts ?? []) {
      const src = this.volumes.get(m.name);
      if (!src) throw new Error(`volumeMount ${m.name} names no volume of the pod`);
      const from = m.subPath ? join(src, m.subPath) : src;
      mkdirSync(from, { recursive: true });
      const target = join(root, m.mountPath);
      if (root === "/") mkdirSync(m.mountPath, { recursive: true });
      else lines.push(`mkdir -p ${shellQuote(target)}`);
      lines.push(`mount --bind ${shellQuote(from)} ${shellQuote(target)}`);
      if (m.readOnly) lines.push(`mount -o remount,bind,ro ${shellQuote(target)}`);
    }
    return lines;
  }

  /**
   * The checkout mode's launcher runs in the pod's network namespace and a private mount namespace: it joins the
   * container's cgroup first, then mounts the volumes at their mount paths, then the root read-only, then becomes
   * the user.
   */
  private launcherScript(c: V1Container, argv: string[], user: number, group: number, workingDir: string): string {
    const lines = [...this.cgroupLines(c), ...this.volumeLines(c, "/")];
    if (c.securityContext?.readOnlyRootFilesystem) lines.push("mount -o remount,bind,ro /");
    lines.push(`cd ${shellQuote(workingDir)}`);
    const groups = this.pod.spec?.securityContext?.fsGroup;
    const setpriv =
      user === 0 && group === 0 ? "" : `setpriv --reuid=${user} --regid=${group} ${groups !== undefined ? `--groups=${groups}` : "--clear-groups"} -- `;
    lines.push(`exec ${setpriv}${argv.map(shellQuote).join(" ")}`);
    return `${lines.join("\n")}\n`;
  }

  /**
   * The image mode's launcher, as a container runtime makes a container of an image: in the private mount
   * namespace, an overlay of a fresh writable layer on the image's unpacked root, with /proc, /sys, a minimal /dev,
   * the pod's /etc/hosts and the volumes mounted in it; the root read-only if the pod asks; then the entrypoint as
   * the user, with the root as / and the working directory as its cwd.
   */
  private imageLauncherScript(c: V1Container, rootfs: string, argv: string[], user: number, group: number, workingDir: string): string {
    const fsGroup = this.pod.spec?.securityContext?.fsGroup;
    if (fsGroup !== undefined && fsGroup !== group && user !== 0)
      throw new Error(`fsGroup ${fsGroup} differs from the group ${group}: the node shim's image mode gives a container no supplementary groups`);
    const dir = join(this.podDir, "containers", c.name);
    const [upper, work, root] = [join(dir, "upper"), join(dir, "work"), join(dir, "root")];
    rmSync(dir, { recursive: true, force: true }); // each start of a container gets a new writable layer
    for (const d of [upper, work, root]) mkdirSync(d, { recursive: true });
    const hosts = join(dir, "hosts");
    writeFileSync(hosts, `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${this.ip}\t${this.pod.metadata?.name ?? ""}\n`);
    const q = (p: string) => shellQuote(join(root, p));
    const lines = [
      ...this.cgroupLines(c),
      `mount -t overlay overlay -o ${shellQuote(`lowerdir=${rootfs},upperdir=${upper},workdir=${work}`)} ${shellQuote(root)}`,
      `mkdir -p ${q("proc")} ${q("sys")} ${q("dev")} ${q("etc")}`,
      `mount -t proc -o nosuid,nodev,noexec proc ${q("proc")}`,
      `mount --rbind /sys ${q("sys")}`,
      `mount -o remount,bind,ro ${q("sys")}`,
      `mount -t tmpfs -o nosuid,mode=755,size=65536k tmpfs ${q("dev")}`,
      ...["null", "zero", "full", "random", "urandom", "tty"].map((d) => `touch ${q(`dev/${d}`)} && mount --bind /dev/${d} ${q(`dev/${d}`)}`),
      `ln -s /proc/self/fd ${q("dev/fd")} && ln -s /proc/self/fd/0 ${q("dev/stdin")} && ln -s /proc/self/fd/1 ${q("dev/stdout")} && ln -s /proc/self/fd/2 ${q("dev/stderr")}`,
      `mkdir ${q("dev/shm")} && mount -t tmpfs -o nosuid,nodev,mode=1777 shm ${q("dev/shm")}`,
      `touch ${q("etc/hosts")} && mount --bind ${shellQuote(hosts)} ${q("etc/hosts")}`,
      ...this.volumeLines(c, root),
    ];
    if (c.securityContext?.readOnlyRootFilesystem) lines.push(`mount -o remount,ro ${shellQuote(root)}`);
    const who = user === 0 && group === 0 ? "" : ` -S ${user} -G ${group}`;
    lines.push(`exec nsenter --root=${shellQuote(root)} --wd=${q(workingDir)}${who} -- ${argv.map(shellQuote).join(" ")}`);
    return `${lines.join("\n")}\n`;
  }

  private launch(c: ContainerRun): void {
    if (this.terminating) return;
    void this.launchAsync(c).catch((err: unknown) => {
      const msg = err instanceof Error ? err.message : String(err);
      c.waiting = { reason: "CreateContainerError", message: msg };
      this.ctx.log("container could not start", { pod: this.key, container: c.spec.name, error: msg });
      this.markStatus();
      this.scheduleRestart(c, 1);
    });
  }

  private async launchAsync(c: ContainerRun): Promise<void> {
    const spec = c.spec;
    const image = spec.image ?? "";
    const entry = lookupImage(this.ctx.images, image);
    if (!entry) {
      c.waiting = { reason: "ErrImagePull", message: `image "${image}" is not in the node shim's image table` };
      this.fail("UnmappedImage", `image "${image}" of container ${spec.name} is not in the node shim's image table; map it to a local command`);
      return;
    }
    const psc = this.pod.spec?.securityContext;
    const sc = spec.securityContext;
    const user = sc?.runAsUser ?? psc?.runAsUser ?? entry.user ?? 0;
    const group = sc?.runAsGroup ?? psc?.runAsGroup ?? user;
    if ((sc?.runAsNonRoot ?? psc?.runAsNonRoot) && user === 0) {
      c.waiting = { reason: "CreateContainerConfigError", message: "container has runAsNonRoot and image will run as root" };
      this.markStatus();
      return;
    }
    const argv = containerArgv(entry, spec.command, spec.args);
    const env = await this.resolveEnv(spec, user, entry.env ?? []);
    const workingDir = spec.workingDir ?? entry.workingDir ?? "/";
    const script = join(this.podDir, `${spec.name}.launch.sh`);
    ensureCgroup(this.containerCgroup(spec));
    const text = entry.rootfs
      ? this.imageLauncherScript(spec, entry.rootfs, argv, user, group, workingDir)
      : this.launcherScript(spec, argv, user, group, workingDir);
    writeFileSync(script, text, { mode: 0o700 });
    const logFile = join(this.podDir, `${spec.name}.log`);
    const fd = openSync(logFile, "a");
    let proc: ChildProcess;
    try {
      const [cmd, ...args] = inNetns(this.place.netns, ["unshare", "--mount", "--propagation", "private", "/bin/sh", script]) as [string, ...string[]];
      proc = spawn(cmd, args, { env, stdio: ["ignore", fd, fd], detached: true });
    } finally {
      closeSync(fd);
    }
    c.proc = proc;
    c.startedAt = new Date();
    c.current = undefined;
    c.waiting = undefined;
    c.ready = false;
    c.exited = new Promise((resolve) => {
      proc.on("exit", (code, signal) => {
        this.onExit(c, code, signal);
        resolve();
      });
    });
    proc.on("error", (err) => this.ctx.log("spawn error", { pod: this.key, container: spec.name, error: err.message }));
    this.ctx.log("container started", {
      pod: this.key,
      container: spec.name,
      pid: proc.pid,
      argv,
      ip: this.ip,
      ...(entry.digest ? { image: entry.digest } : {}),
    });
    if (!c.init) this.startProbes(c);
    this.markStatus();
  }

  private onExit(c: ContainerRun, code: number | null, signal: NodeJS.Signals | null): void {
    for (const t of c.probeTimers) clearTimeout(t);
    c.probeTimers = [];
    const exitCode = code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0);
    const finishedAt = new Date();
    const ranFor = finishedAt.getTime() - (c.startedAt?.getTime() ?? 0);
    const t: Terminated = {
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      startedAt: c.startedAt ?? finishedAt,
      finishedAt,
      ...(signal ? { signal: SIGNALS[signal] ?? 0 } : {}),
    };
    c.proc = undefined;
    c.ready = false;
    c.current = t;
    this.ctx.log("container exited", { pod: this.key, container: c.spec.name, exitCode, signal });
    // As a container runtime tears down a container whose main process ended: nothing it started lives on.
    void killCgroup(this.containerCgroup(c.spec)).catch((err: unknown) =>
      this.ctx.log("could not kill what the container left", { pod: this.key, container: c.spec.name, error: String(err) }),
    );
    if (this.terminating || c.init) {
      this.markStatus();
      return;
    }
    c.consecutiveFailures = ranFor > BACKOFF_RESET_MS ? 1 : c.consecutiveFailures + 1;
    const policy = this.pod.spec?.restartPolicy ?? "Always";
    if (policy === "Always" || (policy === "OnFailure" && exitCode !== 0)) {
      this.scheduleRestart(c, c.consecutiveFailures);
    } else {
      this.settleIfAllDone();
    }
    this.markStatus();
  }

  private scheduleRestart(c: ContainerRun, failures: number): void {
    if (this.terminating) return;
    const delay = Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, failures - 1), BACKOFF_MAX_MS);
    c.waiting = { reason: "CrashLoopBackOff", message: `back-off ${delay} ms restarting failed container ${c.spec.name}` };
    c.backoffTimer = setTimeout(() => {
      c.backoffTimer = undefined;
      if (this.terminating) return;
      if (c.current) c.last = c.current;
      c.current = undefined;
      c.restartCount++;
      this.launch(c);
    }, delay);
  }

  private settleIfAllDone(): void {
    const main = this.containers.filter((c) => !c.init);
    if (main.some((c) => c.proc || c.backoffTimer)) return;
    this.phase = main.every((c) => c.current?.exitCode === 0) ? "Succeeded" : "Failed";
  }

  private startProbes(c: ContainerRun): void {
    const readiness = c.spec.readinessProbe;
    if (!readiness) c.ready = true;
    else
      this.loopProbe(c, readiness, false, (ok) => {
        if (c.ready !== ok) {
          c.ready = ok;
          this.markStatus();
        }
      });
    const liveness = c.spec.livenessProbe;
    if (liveness)
      this.loopProbe(c, liveness, true, (ok) => {
        if (!ok && c.proc?.pid) {
          this.ctx.log("liveness probe failed; restarting container", { pod: this.key, container: c.spec.name });
          this.signal(c, "SIGKILL");
        }
      });
  }

  /** Probes until the container goes; reports a change of state: up after successThreshold, down after failureThreshold. */
  private loopProbe(c: ContainerRun, probe: V1Probe, initial: boolean, onResult: (ok: boolean) => void): void {
    const period = (probe.periodSeconds ?? 10) * 1000;
    const successThreshold = probe.successThreshold ?? 1;
    const failureThreshold = probe.failureThreshold ?? 3;
    let successes = 0;
    let failures = 0;
    let state = initial;
    const proc = c.proc;
    const tick = async () => {
      if (c.proc !== proc || this.terminating) return;
      const ok = await this.probeOnce(c, probe);
      if (ok) {
        successes++;
        failures = 0;
      } else {
        failures++;
        successes = 0;
      }
      if (ok && successes >= successThreshold && !state) {
        state = true;
        onResult(true);
      } else if (!ok && failures >= failureThreshold && state) {
        state = false;
        onResult(false);
      }
      if (c.proc === proc && !this.terminating) c.probeTimers.push(setTimeout(tick, period));
    };
    c.probeTimers.push(setTimeout(tick, (probe.initialDelaySeconds ?? 0) * 1000 + 200));
  }

  private async probeOnce(c: ContainerRun, probe: V1Probe): Promise<boolean> {
    const timeout = (probe.timeoutSeconds ?? 1) * 1000;
    const portOf = (p: number | string): number => {
      if (typeof p === "number") return p;
      const named = c.spec.ports?.find((x) => x.name === p);
      return named?.containerPort ?? Number(p);
    };
    // A probe reaches only the pod it belongs to: a kubelet would follow `host`, but on the bed it could name
    // anything the shim's namespace reaches, and answer for a pod that is not running.
    const host = probe.httpGet?.host ?? probe.tcpSocket?.host;
    if (host !== undefined && host !== this.ip) {
      this.ctx.log("probe host is not the pod's address; the node shim probes only the pod itself, so the probe fails", {
        pod: this.key,
        container: c.spec.name,
        host,
      });
      return false;
    }
    try {
      if (probe.httpGet) {
        const g = probe.httpGet;
        const scheme = (g.scheme ?? "HTTP").toLowerCase();
        const res = await fetch(`${scheme}://${this.ip}:${portOf(g.port)}${g.path ?? "/"}`, { signal: AbortSignal.timeout(timeout) });
        await res.arrayBuffer();
        return res.status >= 200 && res.status < 400;
      }
      if (probe.tcpSocket) {
        const { connect } = await import("node:net");
        const port = portOf(probe.tcpSocket.port);
        return await new Promise<boolean>((resolve) => {
          const s = connect({ host: this.ip, port, timeout });
          s.once("connect", () => {
            s.destroy();
            resolve(true);
          });
          s.once("error", () => resolve(false));
          s.once("timeout", () => {
            s.destroy();
            resolve(false);
          });
        });
      }
      this.ctx.log("probe type not supported by the node shim; the probe fails", { pod: this.key, container: c.spec.name });
      return false;
    } catch {
      return false;
    }
  }

  private signal(c: ContainerRun, sig: NodeJS.Signals): void {
    const pid = c.proc?.pid;
    if (pid !== undefined) signalGroup(pid, sig);
  }

  /** What a kubelet does for a pod with a deletionTimestamp: SIGTERM, the grace period, SIGKILL. */
  async terminate(graceSeconds: number): Promise<void> {
    if (this.stopped) return;
    this.terminating = true;
    for (const c of this.containers) {
      if (c.backoffTimer) clearTimeout(c.backoffTimer);
      c.backoffTimer = undefined;
      for (const t of c.probeTimers) clearTimeout(t);
      c.probeTimers = [];
    }
    const running = this.containers.filter((c) => c.proc);
    for (const c of running) this.signal(c, "SIGTERM");
    const all = Promise.all(running.map((c) => c.exited));
    const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), Math.max(0, graceSeconds) * 1000));
    if ((await Promise.race([all, timer])) === "timeout") {
      for (const c of this.containers.filter((c) => c.proc)) this.signal(c, "SIGKILL");
      await all;
    }
    // Whatever left the containers' process groups, or ignored the signals, goes with the pod.
    await killCgroup(this.place.cgroup);
    this.stopped = true;
    this.ctx.log("pod stopped", { pod: this.key, graceSeconds });
  }

  /** The pod object is gone: kill what is left at once. */
  async kill(): Promise<void> {
    this.terminating = true;
    this.stopped = true;
    for (const c of this.containers) {
      if (c.backoffTimer) clearTimeout(c.backoffTimer);
      for (const t of c.probeTimers) clearTimeout(t);
      this.signal(c, "SIGKILL");
    }
    await killCgroup(this.place.cgroup);
  }

  /** After the last process is gone: the pod's cgroups. Its network namespace is the shim's to remove. */
  async release(): Promise<void> {
    await removeCgroup(this.place.cgroup);
  }

  private containerStatus(c: ContainerRun): V1ContainerStatus {
    const state: V1ContainerStatus["state"] = c.proc
      ? { running: { startedAt: c.startedAt } }
      : c.current
        ? { terminated: { ...c.current } }
        : { waiting: c.waiting ?? { reason: "ContainerCreating" } };
    if (!c.proc && c.current && c.waiting) state.waiting = c.waiting;
    if (state.waiting && state.terminated) delete state.terminated;
    const last = c.last ?? (c.waiting?.reason === "CrashLoopBackOff" ? c.current : undefined);
    return {
      name: c.spec.name,
      image: c.spec.image ?? "",
      imageID: "",
      containerID: c.proc?.pid ? `shim://${c.proc.pid}` : undefined,
      ready: c.ready && !!c.proc,
      started: !!c.proc,
      restartCount: c.restartCount,
      state,
      lastState: last ? { terminated: { ...last } } : {},
    };
  }

  private status(): V1Pod["status"] {
    const now = new Date();
    const main = this.containers.filter((c) => !c.init);
    const init = this.containers.filter((c) => c.init);
    const initialized = init.every((c) => c.current?.exitCode === 0 || c.last?.exitCode === 0);
    const containersReady = main.length > 0 && main.every((c) => c.ready && c.proc);
    const ready = containersReady && !this.terminating && this.phase === "Running";
    const cond = (type: string, ok: boolean, reason?: string): V1PodCondition => ({
      type,
      status: ok ? "True" : "False",
      lastTransitionTime: now,
      ...(ok || !reason ? {} : { reason }),
    });
    return {
      phase: this.phase,
      ...(this.reason ? { reason: this.reason } : {}),
      ...(this.message ? { message: this.message } : {}),
      hostIP: this.ctx.hostIP,
      hostIPs: [{ ip: this.ctx.hostIP }],
      podIP: this.ip,
      podIPs: [{ ip: this.ip }],
      startTime: this.startTime,
      conditions: [
        cond("PodScheduled", true),
        cond("Initialized", initialized, "ContainersNotInitialized"),
        cond("ContainersReady", containersReady, "ContainersNotReady"),
        cond("Ready", ready, "ContainersNotReady"),
      ],
      containerStatuses: main.map((c) => this.containerStatus(c)),
      ...(init.length > 0 ? { initContainerStatuses: init.map((c) => this.containerStatus(c)) } : {}),
    };
  }

  /** Coalesces status writes: one in flight, the latest state after it. */
  private markStatus(): void {
    if (this.statusDirty) return;
    this.statusDirty = true;
    this.statusWrite = this.statusWrite.then(async () => {
      await new Promise((r) => setTimeout(r, 50));
      this.statusDirty = false;
      await this.writeStatus();
    });
  }

  private async writeStatus(): Promise<void> {
    const name = this.pod.metadata?.name ?? "";
    const namespace = this.pod.metadata?.namespace ?? "";
    const status = this.status();
    // Keep transition times stable when nothing changed, as a kubelet does.
    const old = new Map((this.pod.status?.conditions ?? []).map((c) => [c.type, c]));
    for (const c of status?.conditions ?? []) {
      const prev = old.get(c.type);
      if (prev && prev.status === c.status && prev.lastTransitionTime) c.lastTransitionTime = prev.lastTransitionTime;
    }
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const body = { metadata: { uid: this.pod.metadata?.uid }, status };
        const updated = await this.ctx.api.patchNamespacedPodStatus({ name, namespace, body }, setHeaderOptions("Content-Type", PatchStrategy.MergePatch));
        this.pod = updated;
        return;
      } catch (err) {
        const code = statusCode(err);
        if (code === 404 || code === 409) return;
        this.ctx.log("pod status write failed; retrying", { pod: this.key, error: err instanceof Error ? err.message : String(err) });
        await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      }
    }
    this.ctx.log("pod status write failed 5 times", { pod: this.key });
  }

  async flushStatus(): Promise<void> {
    this.markStatus();
    await this.statusWrite;
  }
}

// A real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, on 127.0.0.1 (the
// apiserver also on the pods' gateway when it has one).
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { type CertFiles, issueCert, makeCa } from "./pki.ts";
import { assertPortFree, BedError, freePort, run, type Started, startProcess, stopProcess, waitFor } from "./proc.ts";
import { ensureKubernetes } from "./toolchain.ts";

export interface ComponentSpec {
  name: string;
  cmd: string;
  args: string[];
  log: string;
}

export interface ControlPlane {
  dir: string;
  server: string;
  port: number;
  caFile: string;
  adminToken: string;
  kubeconfig: string;
  components: ComponentSpec[];
  pids: Map<string, number>;
}

export interface ControlPlaneOptions {
  dir: string;
  /** fixed apiserver port (for the port-taken test, and the bed's, which the host forwards); a free one otherwise */
  apiserverPort?: number;
  /**
   * The apiserver's address for pods (the `kubernetes` Service's endpoint, and a name on its certificate). When set,
   * the apiserver listens on every address of its network namespace; otherwise on 127.0.0.1 alone.
   */
  advertiseAddress?: string;
  /** the bed's CA, which signs the apiserver's certificate; a new one otherwise */
  ca?: CertFiles;
}

export const STORAGE_CLASS = "standard";

/** The control plane's certificates: the bed's CA (made here unless given), the apiserver's, and the service-account keys. */
async function makePki(pki: string, advertiseAddress: string, ca?: CertFiles): Promise<void> {
  mkdirSync(pki, { recursive: true });
  if (ca) {
    copyFileSync(ca.cert, join(pki, "ca.crt"));
    copyFileSync(ca.key, join(pki, "ca.key"));
  } else await makeCa(pki);
  await issueCert({ cert: join(pki, "ca.crt"), key: join(pki, "ca.key") }, pki, "apiserver", {
    cn: "kube-apiserver",
    usage: "server",
    ips: ["127.0.0.1", "10.0.0.1", ...(advertiseAddress === "127.0.0.1" ? [] : [advertiseAddress])],
    dns: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
  });
  await run("openssl", ["genrsa", "-out", "sa.key", "2048"], { cwd: pki, what: "making the service-account key" });
  await run("openssl", ["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], { cwd: pki, what: "making the service-account key" });
}

export function kubeconfigYaml(server: string, caFile: string, token: string, user: string): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    `- name: bed`,
    "  cluster:",
    `    server: ${server}`,
    `    certificate-authority: ${caFile}`,
    "users:",
    `- name: ${user}`,
    "  user:",
    `    token: ${token}`,
    "contexts:",
    "- name: bed",
    "  context:",
    "    cluster: bed",
    `    user: ${user}`,
    "current-context: bed",
    "",
  ].join("\n");
}

/** GET on the apiserver with the admin token; resolves with status and body. */
export function apiGet(cp: Pick<ControlPlane, "server" | "caFile" | "adminToken">, path: string): Promise<{ status: number; body: string }> {
  return apiRequest(cp, "GET", path, undefined);
}

export function apiRequest(
  cp: Pick<ControlPlane, "server" | "caFile" | "adminToken">,
  method: string,
  path: string,
  body: unknown,
  contentType = "application/json",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
    const req = request(
      `${cp.server}${path}`,
      {
        method,
        ca: readFileSync(cp.caFile),
        headers: { authorization: `Bearer ${cp.adminToken}`, "content-type": contentType, "content-length": Buffer.byteLength(data) },
        timeout: method === "GET" ? 3_000 : 10_000,
      },
      (res) => {
        let out = "";
        res.on("data", (d: Buffer) => {
          out += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: out }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(data);
  });
}

/** `placement` puts a restarted component back where the bed runs its own (its cgroup and network namespace). */
export function startComponent(c: ComponentSpec, cwd: string, placement: { cgroup?: string; netns?: string } = {}): Started {
  return startProcess({ name: c.name, cmd: c.cmd, args: c.args, log: c.log, cwd, ...placement });
}

export async function waitApiserverReady(cp: ControlPlane, timeoutMs = 60_000): Promise<void> {
  const pid = cp.pids.get("kube-apiserver");
  const spec = cp.components.find((c) => c.name === "kube-apiserver");
  await waitFor(async () => (await apiGet(cp, "/readyz")).status === 200, {
    what: `kube-apiserver /readyz on ${cp.server}`,
    timeoutMs,
    intervalMs: 250,
    process: pid && spec ? { name: "kube-apiserver", pid, log: spec.log } : undefined,
  });
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const bin = await ensureKubernetes();
  const dir = opts.dir;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const pki = join(dir, "pki");
  const advertise = opts.advertiseAddress ?? "127.0.0.1";
  const bindAddress = opts.advertiseAddress ? "0.0.0.0" : "127.0.0.1";
  await makePki(pki, advertise, opts.ca);

  const tokens = { admin: randomBytes(16).toString("hex"), kcm: randomBytes(16).toString("hex"), sched: randomBytes(16).toString("hex") };
  writeFileSync(
    join(pki, "tokens.csv"),
    `${tokens.admin},admin,admin,system:masters\n${tokens.kcm},system:kube-controller-manager,kcm\n${tokens.sched},system:kube-scheduler,sched\n`,
  );
  const etcdClient = await freePort();
  const etcdPeer = await freePort();
  const port = opts.apiserverPort ?? (await freePort());
  await assertPortFree(port, "kube-apiserver secure port", bindAddress);
  const kcmPort = await freePort();
  const schedPort = await freePort();
  const server = `https://127.0.0.1:${port}`;
  const caFile = join(pki, "ca.crt");
  const kc = (name: string, token: string, user: string) => {
    const file = join(dir, `${name}.kubeconfig`);
    writeFileSync(file, kubeconfigYaml(server, caFile, token, user), { mode: 0o600 });
    return file;
  };
  const adminKc = kc("admin", tokens.admin, "admin");
  const kcmKc = kc("kcm", tokens.kcm, "kcm");
  const schedKc = kc("sched", tokens.sched, "sched");

  const components: ComponentSpec[] = [
    {
      name: "etcd",
      cmd: bin.etcd,
      args: [join(dir, "etcd"), `http://127.0.0.1:${etcdClient}`, `http://127.0.0.1:${etcdPeer}`],
      log: join(dir, "etcd.log"),
    },
    {
      name: "kube-apiserver",
      cmd: bin.apiserver,
      args: [
        `--etcd-servers=http://127.0.0.1:${etcdClient}`,
        `--bind-address=${bindAddress}`,
        `--advertise-address=${advertise}`,
        `--secure-port=${port}`,
        `--tls-cert-file=${join(pki, "apiserver.crt")}`,
        `--tls-private-key-file=${join(pki, "apiserver.key")}`,
        `--client-ca-file=${caFile}`,
        `--token-auth-file=${join(pki, "tokens.csv")}`,
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        `--service-account-key-file=${join(pki, "sa.pub")}`,
        `--service-account-signing-key-file=${join(pki, "sa.key")}`,
        "--service-cluster-ip-range=10.0.0.0/24",
        "--enable-aggregator-routing=true",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
      ],
      log: join(dir, "apiserver.log"),
    },
    {
      name: "kube-controller-manager",
      cmd: bin.controllerManager,
      args: [
        `--kubeconfig=${kcmKc}`,
        `--authentication-kubeconfig=${kcmKc}`,
        `--authorization-kubeconfig=${kcmKc}`,
        "--bind-address=127.0.0.1",
        `--secure-port=${kcmPort}`,
        "--leader-elect=false",
        `--service-account-private-key-file=${join(pki, "sa.key")}`,
        `--root-ca-file=${caFile}`,
        "--use-service-account-credentials",
        "--enable-hostpath-provisioner",
        "--controllers=*",
        "--cluster-name=conveyor-bed",
        "--profiling=false",
        "--v=1",
      ],
      log: join(dir, "controller-manager.log"),
    },
    {
      name: "kube-scheduler",
      cmd: bin.scheduler,
      args: [
        `--kubeconfig=${schedKc}`,
        `--authentication-kubeconfig=${schedKc}`,
        `--authorization-kubeconfig=${schedKc}`,
        "--bind-address=127.0.0.1",
        `--secure-port=${schedPort}`,
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
      ],
      log: join(dir, "scheduler.log"),
    },
  ];
  const cp: ControlPlane = { dir, server, port, caFile, adminToken: tokens.admin, kubeconfig: adminKc, components, pids: new Map() };
  try {
    const etcd = components[0] as ComponentSpec;
    const etcdProc = startComponent(etcd, dir);
    cp.pids.set("etcd", etcdProc.pid);
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${etcdClient}/health`);
        return res.ok;
      },
      { what: `etcd on 127.0.0.1:${etcdClient}`, timeoutMs: 30_000, process: etcdProc },
    );
    cp.pids.set("kube-apiserver", startComponent(components[1] as ComponentSpec, dir).pid);
    await waitApiserverReady(cp);
    for (const c of components.slice(2)) cp.pids.set(c.name, startComponent(c, dir).pid);
    await installStorageClass(cp);
    // Pods need the namespace's default ServiceAccount, which the controller-manager creates.
    await waitFor(async () => (await apiGet(cp, "/api/v1/namespaces/default/serviceaccounts/default")).status === 200, {
      what: "the controller-manager to create the default ServiceAccount",
      timeoutMs: 60_000,
      process: { name: "kube-controller-manager", pid: cp.pids.get("kube-controller-manager") ?? 0, log: join(dir, "controller-manager.log") },
    });
  } catch (err) {
    await stopControlPlane(cp);
    throw err;
  }
  return cp;
}

async function installStorageClass(cp: ControlPlane): Promise<void> {
  const sc = {
    apiVersion: "storage.k8s.io/v1",
    kind: "StorageClass",
    metadata: { name: STORAGE_CLASS, annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
    provisioner: "kubernetes.io/host-path",
    reclaimPolicy: "Delete",
    volumeBindingMode: "Immediate",
    allowVolumeExpansion: true,
  };
  const res = await apiRequest(cp, "POST", "/apis/storage.k8s.io/v1/storageclasses", sc);
  if (res.status !== 201 && res.status !== 409) throw new BedError(`creating the StorageClass failed: ${res.status} ${res.body}`);
}

/** Stops in reverse order: scheduler, controller-manager, apiserver, then etcd; each with a deadline and SIGKILL after it. */
export async function stopControlPlane(cp: ControlPlane): Promise<void> {
  for (const name of ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]) {
    const pid = cp.pids.get(name);
    if (pid !== undefined) await stopProcess(pid, 10_000);
    cp.pids.delete(name);
  }
}

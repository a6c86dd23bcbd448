// Builds or downloads, once, what the bed runs, into a cache outside the repo keyed by version.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { BedError, requireCommand, run } from "./proc.ts";

export const repoRoot = resolve(import.meta.dirname, "../..");
const envDir = join(repoRoot, "test/env");

export const versions = {
  kafka: readPomProperty(join(envDir, "kafka/pom.xml"), "kafka.version"),
  kubernetes: readGoRequire(join(envDir, "k8s/go.mod"), "k8s.io/kubernetes"),
  etcd: readGoRequire(join(envDir, "etcd/go.mod"), "go.etcd.io/etcd/server/v3"),
  helm: "v4.3.1",
  prometheus: "v0.316.0",
  actionlint: "v1.7.12",
} as const;

export function cacheRoot(): string {
  return process.env.CONVEYOR_CACHE ?? join(homedir(), ".cache", "conveyor");
}

function readPomProperty(file: string, name: string): string {
  const m = readFileSync(file, "utf8").match(new RegExp(`<${name.replace(".", "\\.")}>([^<]+)</`));
  if (!m?.[1]) throw new BedError(`${file} has no <${name}>`);
  return m[1];
}

function readGoRequire(file: string, module: string): string {
  const m = readFileSync(file, "utf8").match(new RegExp(`^\\s*(?:require\\s+)?${module.replaceAll(".", "\\.")}\\s+(v\\S+)`, "m"));
  if (!m?.[1]) throw new BedError(`${file} does not require ${module}`);
  return m[1];
}

/** Prints a line now and then while a long step runs, so that a first build does not look hung. */
async function withProgress<T>(what: string, expect: string, work: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  const say = (s: string) => process.stderr.write(`[bed] ${s}\n`);
  say(`${what} (first run only; ${expect})`);
  const timer = setInterval(() => say(`  ... ${what}: ${Math.round((Date.now() - t0) / 1000)} s`), 30_000);
  try {
    const out = await work();
    say(`${what}: done in ${Math.round((Date.now() - t0) / 1000)} s`);
    return out;
  } finally {
    clearInterval(timer);
  }
}

/** Fills dir through a temporary sibling that is renamed into place, so that a broken build never looks complete. */
async function buildInto(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await fill(tmp);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function goEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GOFLAGS: "-mod=mod", CGO_ENABLED: "0" };
}

/** The directory of Kafka's jars (broker, tools, an slf4j binding). */
export async function ensureKafka(java = "java"): Promise<string> {
  const dir = join(cacheRoot(), `kafka-${versions.kafka}`, "lib");
  requireCommand(java, "to run the Kafka broker", ["-version"]);
  if (existsSync(dir)) return dir;
  requireCommand("mvn", "to fetch Kafka's jars from Maven Central", ["-v"]);
  await withProgress(`downloading Apache Kafka ${versions.kafka} jars from Maven Central`, "about 15 s", () =>
    buildInto(dir, async (tmp) => {
      await run(
        "mvn",
        ["-q", "-B", "-f", join(envDir, "kafka/pom.xml"), "dependency:copy-dependencies", "-DincludeScope=runtime", `-DoutputDirectory=${tmp}`],
        { what: "Kafka jars" },
      );
    }),
  );
  return dir;
}

export interface K8sBinaries {
  apiserver: string;
  controllerManager: string;
  scheduler: string;
  etcd: string;
}

export async function ensureKubernetes(): Promise<K8sBinaries> {
  const kdir = join(cacheRoot(), `k8s-${versions.kubernetes}`);
  const edir = join(cacheRoot(), `etcd-${versions.etcd}`);
  if (!existsSync(kdir) || !existsSync(edir)) requireCommand("go", "to build Kubernetes and etcd from Go modules", ["version"]);
  if (!existsSync(kdir)) {
    await withProgress(`building kube-apiserver, kube-controller-manager, kube-scheduler ${versions.kubernetes}`, "about 5 minutes on 2 cores", () =>
      buildInto(kdir, async (tmp) => {
        await run(
          "go",
          [
            "build",
            "-o",
            `${tmp}/`,
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
          ],
          { cwd: join(envDir, "k8s"), env: goEnv(), what: "Kubernetes build" },
        );
      }),
    );
  }
  if (!existsSync(edir)) {
    await withProgress(`building etcd ${versions.etcd}`, "about 30 s", () =>
      buildInto(edir, async (tmp) => {
        await run("go", ["build", "-o", join(tmp, "etcd-embed"), "."], { cwd: join(envDir, "etcd"), env: goEnv(), what: "etcd build" });
      }),
    );
  }
  return {
    apiserver: join(kdir, "kube-apiserver"),
    controllerManager: join(kdir, "kube-controller-manager"),
    scheduler: join(kdir, "kube-scheduler"),
    etcd: join(edir, "etcd-embed"),
  };
}

/** Where ensureHelm puts helm (the bed's global setup builds it). */
export function helmPath(): string {
  return join(cacheRoot(), `helm-${versions.helm}`, "helm");
}

/** Go commands installed by `go install` into dir, once: the cache entry of a tool built from Go modules. */
async function goInstallOnce(dir: string, what: string, expect: string, modules: string[]): Promise<void> {
  if (existsSync(dir)) return;
  requireCommand("go", `to build ${what} from Go modules`, ["version"]);
  await withProgress(`building ${what}`, expect, () =>
    buildInto(dir, async (tmp) => {
      await run("go", ["install", ...modules], { env: { ...goEnv(), GOFLAGS: "", GOBIN: tmp }, what: `${what} build` });
    }),
  );
}

export async function ensureHelm(): Promise<string> {
  await goInstallOnce(join(cacheRoot(), `helm-${versions.helm}`), `helm ${versions.helm}`, "about 2 minutes", [`helm.sh/helm/v4/cmd/helm@${versions.helm}`]);
  return helmPath();
}

/** Where ensurePrometheus puts prometheus and promtool. */
export function prometheusDir(): string {
  return join(cacheRoot(), `prometheus-${versions.prometheus}`);
}

/**
 * Prometheus and promtool, built from Go modules (the server without its web UI's assets: the tests use its
 * HTTP API). Only `npm test` needs them: the monitoring suite runs one against the bed.
 */
export async function ensurePrometheus(): Promise<{ prometheus: string; promtool: string }> {
  const dir = prometheusDir();
  const at = (cmd: string) => `github.com/prometheus/prometheus/cmd/${cmd}@${versions.prometheus}`;
  await goInstallOnce(dir, `prometheus and promtool ${versions.prometheus}`, "about 5 minutes on 2 cores", [at("prometheus"), at("promtool")]);
  return { prometheus: join(dir, "prometheus"), promtool: join(dir, "promtool") };
}

export function actionlintPath(): string {
  return join(cacheRoot(), `actionlint-${versions.actionlint}`, "actionlint");
}

/** actionlint, which checks the release workflow (the workflow itself runs on GitHub only). Only `npm test` needs it. */
export async function ensureActionlint(): Promise<string> {
  await goInstallOnce(join(cacheRoot(), `actionlint-${versions.actionlint}`), `actionlint ${versions.actionlint}`, "about 30 s", [
    `github.com/rhysd/actionlint/cmd/actionlint@${versions.actionlint}`,
  ]);
  return actionlintPath();
}

/** Everything the bed needs, built or fetched in an order that keeps the two cores busy with one build at a time. */
export async function ensureAll(): Promise<{ kafkaLib: string; k8s: K8sBinaries; helm: string }> {
  const kafkaLib = await ensureKafka();
  const k8s = await ensureKubernetes();
  const helm = await ensureHelm();
  return { kafkaLib, k8s, helm };
}

// 1,200 seeded random mutations of a valid spec. Each is refused at apply with a message, or accepted; the
// accepted ones are applied to a pool of pipelines and the operator reports a condition for each generation.
// The operator never crashes, and once the fuzzing stops it does not loop hot.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import yaml from "js-yaml";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, type StreamPipelineSpec, VERSION } from "../../src/api.ts";
import { checkPipeline, defaultValidateOptions, manifestFiles } from "../../src/cli/validate.ts";
import { crdChecker } from "../../src/crd-check.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { admin, createTopic } from "../support/kafka.ts";
import { type Kube, kube, statusCode, testNamespace } from "../support/kube.ts";
import { kubectl } from "../support/kubectl.ts";
import { deletePipelines, type LocalWebhook, type OperatorProcess, registerLocalWebhook, startOperator, webhookServing } from "../support/operator.ts";
import { prng } from "../support/prng.ts";
import { teardown } from "../support/suite.ts";

const MUTATIONS = 1_200;
const POOL = 12;

/** mulberry32: small, seeded, good enough to make the same mutations on every run. */

const NASTY_VALUES: unknown[] = [
  "",
  " ",
  "value.amount >",
  "1 + 'x'",
  "((((((((",
  "value.a.all(x, x.b.all(y, y.c.all(z, z)))",
  "🙂",
  "Bad_Name",
  "a".repeat(300),
  "1m",
  "-5s",
  "30 seconds",
  "kafka:9092",
  "x:99999",
  "-1",
  0,
  -1,
  1,
  1e9,
  3.5,
  true,
  false,
  null,
  [],
  [""],
  ["a", "a"],
  {},
  { nested: { deeper: [1, 2, 3] } },
  { count: {} },
  { sum: "value.amount" },
  { tumbling: "1m" },
  { hopping: { size: "1m", advance: "5m" } },
];

type Json = Record<string, unknown>;

function paths(obj: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (obj === null || typeof obj !== "object") return [prefix];
  const out: (string | number)[][] = [prefix];
  const entries = Array.isArray(obj) ? obj.map((v, i) => [i, v] as const) : Object.entries(obj);
  for (const [k, v] of entries) out.push(...paths(v, [...prefix, k]));
  return out;
}

function mutate(spec: StreamPipelineSpec, rand: () => number): Json {
  const s = structuredClone(spec) as unknown as Json;
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const rounds = 1 + Math.floor(rand() * 3);
  for (let r = 0; r < rounds; r++) {
    const all = paths(s).filter((p) => p.length > 0);
    const path = pick(all);
    let parent: unknown = s;
    for (const k of path.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[k];
    const key = path.at(-1) as string | number;
    const container = parent as Record<string | number, unknown>;
    const op = rand();
    if (op < 0.3) {
      if (Array.isArray(container)) container.splice(Number(key), 1);
      else delete container[key];
    } else if (op < 0.85) {
      container[key] = structuredClone(pick(NASTY_VALUES));
    } else if (Array.isArray(container)) {
      container.push(structuredClone(container[Number(key)]));
    } else {
      container[`x${Math.floor(rand() * 100)}`] = pick(NASTY_VALUES);
    }
  }
  return s;
}

describe("fuzzing the StreamPipeline API", () => {
  const env = bedEnv();
  let k: Kube;
  let ns: string;
  let op: OperatorProcess;
  let hook: LocalWebhook | undefined;
  const cleanups: (() => Promise<void>)[] = [];
  const source = `fuzz-src-${uniqueSuffix()}`;
  const valid = (): StreamPipelineSpec => ({
    kafka: { bootstrapServers: [env.bootstrap] },
    source: { topics: [source], watermark: { maxOutOfOrderness: "30s" } },
    steps: [
      { name: "big", filter: "value.amount > 1000" },
      { name: "by-user", keyBy: "value.user" },
      { name: "per-minute", window: { tumbling: "1m", grace: "10s" }, aggregate: { n: { count: {} }, total: { sum: "value.amount" } } },
    ],
    sink: { topic: `${source}-out` },
    processing: { guarantee: "atLeastOnce", maxInFlight: 100 },
    scaling: { minReplicas: 1, maxReplicas: 4 },
    replicas: 0,
  });

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "fuzz");
    kubectl(env.kubeconfig, ["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    const a = admin(env.bootstrap);
    await createTopic(a, source, 2).finally(() => a.close());
    // The webhook judges this namespace, as the chart's does: compile failures are refused at apply.
    hook = await registerLocalWebhook(k, ns);
    op = await startOperator(ns, undefined, hook.env);
    await webhookServing(k, hook, op.proc);
  });
  after(async () => {
    // every step runs even when a finalizer does not finish (the failure is still reported): a leaked operator
    // would reconcile the next suites' pipelines
    const alive = op && isAlive(op.proc.pid) ? op : undefined;
    await teardown(
      () => alive && deletePipelines(k, ns, alive.proc, 120_000),
      () => alive && stopProcess(alive.proc.pid),
      () => hook && k.admission.deleteValidatingWebhookConfiguration({ name: hook.config }),
      ...cleanups,
    );
  });

  const body = (name: string, spec: unknown, resourceVersion?: string, finalizers?: string[]) => ({
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name, namespace: ns, ...(resourceVersion ? { resourceVersion } : {}), ...(finalizers ? { finalizers } : {}) },
    spec,
  });
  const read = async (name: string) =>
    (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name })) as StreamPipeline;

  test(`${MUTATIONS} mutations: each refused with a message, or answered with a condition`, async () => {
    const rand = prng(20261125);
    let refused = 0;
    let refusedByWebhook = 0;
    let accepted = 0;
    const reasons = new Map<string, number>();
    // `conveyor validate` must give the apiserver's verdict on every mutation. This suite writes through the API,
    // whose field validation only warns about an unknown field, so the offline check does the same.
    const checker = crdChecker();
    const offline = { ...defaultValidateOptions, fieldValidation: "warn" as const, namespace: ns };
    const disagreements: string[] = [];
    const pool = Array.from({ length: POOL }, (_, i) => `fuzz-${i}`);
    for (const name of pool)
      await k.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, body: body(name, valid()) });

    for (let i = 0; i < MUTATIONS; i += POOL) {
      // One mutation per pipeline of the pool, applied as an update, then every pool member must settle.
      const round = await Promise.all(
        pool.map(async (name) => {
          const spec = mutate(valid(), rand);
          const verdict = checkPipeline(body(name, spec), offline, checker).errors;
          const agree = (refusedHere: boolean, why: string) => {
            if (refusedHere !== verdict.length > 0)
              disagreements.push(
                `apiserver ${refusedHere ? "refused" : "accepted"} (${why}), validate ${verdict.length > 0 ? `refused: ${JSON.stringify(verdict)}` : "accepted"}: ${JSON.stringify(spec)}`,
              );
          };
          // The operator writes these objects too (finalizers): retry on a conflict, as any client would.
          for (let attempt = 0; ; attempt++) {
            const current = await read(name);
            try {
              const updated = (await k.custom.replaceNamespacedCustomObject({
                group: GROUP,
                version: VERSION,
                namespace: ns,
                plural: PLURAL,
                name,
                body: body(name, spec, current.metadata?.resourceVersion, current.metadata?.finalizers),
              })) as StreamPipeline;
              agree(false, "");
              return { name, generation: updated.metadata?.generation };
            } catch (err) {
              const code = statusCode(err);
              if (code === 409 && attempt < 10) continue;
              assert.ok(code === 422 || code === 400, `a refusal must be 422 or 400, got ${code}: ${String(err)} for ${JSON.stringify(spec)}`);
              const message = (JSON.parse(String((err as { body?: unknown }).body)) as { message?: string }).message ?? "";
              assert.ok(message.length > 0, `a refusal without a message for ${JSON.stringify(spec)}`);
              if (message.startsWith('admission webhook "validate.streampipelines.conveyor.dev" denied the request: ')) refusedByWebhook++;
              agree(true, message);
              return undefined;
            }
          }
        }),
      );
      for (const r of round) {
        if (!r) {
          refused++;
          continue;
        }
        accepted++;
        const p = await waitFor(
          async () => {
            const x = await read(r.name);
            const gen = x.metadata?.generation;
            return x.status?.observedGeneration === gen &&
              x.status?.conditions?.some((c) => c.observedGeneration === gen && (c.type === "Ready" || c.type === "Degraded"))
              ? x
              : false;
          },
          { what: `the operator to report on ${r.name} generation ${r.generation}`, timeoutMs: 30_000, process: op.proc },
        );
        const ready = p.status?.conditions?.find((c) => c.type === "Ready");
        reasons.set(ready?.reason ?? "none", (reasons.get(ready?.reason ?? "none") ?? 0) + 1);
      }
    }
    process.stdout.write(
      `# ${MUTATIONS} mutations: ${refused} refused at apply (${refusedByWebhook} of them by the webhook), ${accepted} accepted; Ready reasons: ${JSON.stringify(Object.fromEntries(reasons))}\n`,
    );
    assert.ok(refusedByWebhook > 0, "some mutations only the topology compiler catches");
    assert.equal(reasons.get("InvalidTopology"), undefined, "with the webhook, a topology that does not compile is never stored");
    assert.deepEqual(disagreements.slice(0, 5), [], `${disagreements.length} verdicts of conveyor validate differ from the apiserver's`);
    assert.equal(refused + accepted, MUTATIONS);
    assert.ok(refused > 100 && accepted > 100, "the mutations should exercise both paths");
    assert.ok(isAlive(op.proc.pid), "the operator crashed");
    assert.equal((await fetch(`http://127.0.0.1:${op.port}/healthz`)).status, 200);
  });

  test("every example is accepted by the apiserver and by conveyor validate, as is", async () => {
    const checker = crdChecker();
    const files = manifestFiles(join(import.meta.dirname, "../../examples"));
    let n = 0;
    for (const file of files) {
      for (const doc of yaml.loadAll(readFileSync(file, "utf8")) as StreamPipeline[]) {
        if (doc?.kind !== KIND) continue;
        n++;
        const object = { ...doc, metadata: { ...doc.metadata, namespace: ns } };
        assert.deepEqual(checkPipeline(object, { ...defaultValidateOptions, namespace: ns }, checker), { errors: [], warnings: [] }, file);
        // kubectl's strict field validation, and a dry run: the webhook answers, nothing is stored
        await k.custom.createNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace: ns,
          plural: PLURAL,
          body: object,
          dryRun: "All",
          fieldValidation: "Strict",
        });
      }
    }
    assert.ok(n >= files.length, `${n} example pipelines`);
  });

  test("once the fuzzing stops, the operator does not loop hot", async () => {
    const requests = async () => {
      const text = await (await fetch(`http://127.0.0.1:${op.port}/metrics`)).text();
      return text
        .split("\n")
        .filter((l) => l.startsWith("conveyor_kube_requests_total{"))
        .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
    };
    await delay(5_000); // let the last round's requeues and backoffs run their course
    const before = await requests();
    const windowMs = 20_000;
    await delay(windowMs);
    const perPipelinePerMinute = ((await requests()) - before) / POOL / (windowMs / 60_000);
    process.stdout.write(`# idle apiserver requests: ${perPipelinePerMinute.toFixed(1)} per pipeline per minute\n`);
    // A pipeline waiting for a missing source topic is looked at every 10 s (one status write each); nothing
    // else is periodic. Twelve a minute leaves room for that and a backoff retry, and no room for a hot loop.
    assert.ok(perPipelinePerMinute <= 12, `${perPipelinePerMinute} requests per pipeline per minute`);
    assert.ok(isAlive(op.proc.pid));
  });
});

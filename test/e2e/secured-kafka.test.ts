// Pipelines on the bed's secured Kafka, as a platform team runs them on a cluster with an authorizer: the
// pipeline's user has exactly the ACLs the README lists (src/kafka-acls.ts) and nothing more, its credentials
// are in Secrets the spec names, and the workers and the operator both connect with them.
// 1. An exactly-once windowed pipeline with SCRAM-SHA-512 over TLS, in lag mode: every window exact, and the
//    operator reads the lag with the pipeline's user and scales the workers up.
// 2. A stateless pipeline over mutual TLS: every record through.
// 3. A wrong password, a missing Secret, a missing key and a missing ACL: each a condition and an event that say
//    what is wrong, the operator never restarts, and the password is in no log, ConfigMap, status, event or metric.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Producer } from "../../runtime/kafka/client.ts";
import type { PipelineCondition, StreamPipelineSpec } from "../../src/api.ts";
import { operatorAcls, workerAcls } from "../../src/kafka-acls.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { brokers, createTopic, readToEnd } from "../support/kafka.ts";
import { type AclGrant, clientCert, createScramUser, grant, type SecuredKafka, securedKafka } from "../support/kafka-secure.ts";
import { compiled, userWindowSpec } from "../support/runtime.ts";
import { applyPipeline, copyIds, Observer, waitForIds, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const HOUR = 3_600_000;
const T0 = Math.floor((Date.now() - HOUR) / 60_000) * 60_000;
const USERS = 7;
const RECORDS = 6_000;
const PER_WORKER = 300;
const FLUSH_USER = "flush";

interface Result {
  n: number;
  total: number;
}

describe("secured Kafka end to end: SCRAM over TLS and mutual TLS, under exactly the README's ACLs", () => {
  const suffix = uniqueSuffix();
  const t = {
    src: `sec-src-${suffix}`,
    sink: `sec-sink-${suffix}`,
    late: `sec-late-${suffix}`,
    dlq: `sec-dlq-${suffix}`,
    mtlsSrc: `sec-mtls-src-${suffix}`,
    mtlsSink: `sec-mtls-sink-${suffix}`,
    badSrc: `sec-bad-src-${suffix}`,
    badSink: `sec-bad-sink-${suffix}`,
  };
  const s = operatorSuite("secure", async (s) => {
    for (const topic of [t.src, t.sink, t.late, t.dlq]) await createTopic(s.a, topic, 2, { "retention.ms": "-1" });
    for (const topic of [t.mtlsSrc, t.mtlsSink, t.badSrc, t.badSink]) await createTopic(s.a, topic, 1, { "retention.ms": "-1" });
  });
  let k: SecuredKafka;
  const passwords: string[] = [];
  let observer: Observer | undefined;

  const secret = async (name: string, data: Record<string, string>, type = "Opaque") => {
    await s.k.core.createNamespacedSecret({ namespace: s.ns, body: { metadata: { name }, type, stringData: data } });
  };
  const grantAll = (principal: string, rules: ReturnType<typeof workerAcls>) =>
    grant(
      k,
      principal,
      rules.map((r): AclGrant => ({ resource: r.resource, name: r.name, prefix: r.prefix, operation: r.operation })),
    );

  before(async () => {
    k = securedKafka();
    await secret("kafka-ca", { "ca.crt": k.ca });
  });
  after(() => observer?.stop());

  test("an exactly-once windowed pipeline with SCRAM-SHA-512 over TLS: windows exact, and lag scaling with the pipeline's user", {
    timeout: 300_000,
  }, async () => {
    const name = "windows";
    const user = await createScramUser(k, `sp-windows-${suffix}`);
    passwords.push(user.password);
    await secret("windows-kafka", { username: user.username, password: user.password });
    const spec: StreamPipelineSpec = {
      ...userWindowSpec({
        bootstrap: k.sasl,
        source: t.src,
        sink: t.sink,
        late: t.late,
        window: { tumbling: "1m" },
        emit: "onWindowClose",
        rest: {
          deadLetter: { topic: t.dlq },
          processing: { guarantee: "exactlyOnce", maxRecordsPerSecond: PER_WORKER },
          scaling: { mode: "lag", minReplicas: 1, maxReplicas: 2, targetCatchUp: "10s", lagPerReplica: PER_WORKER * 10 },
        },
      }),
    };
    spec.kafka = {
      bootstrapServers: [k.sasl],
      sasl: { mechanism: "scram-sha-512", secretRef: { name: "windows-kafka" } },
      tls: { caSecretRef: { name: "kafka-ca" } },
    };
    const topology = compiled(spec, { namespace: s.ns, name });
    await grantAll(`User:${user.username}`, [...workerAcls(topology), ...operatorAcls(topology, { autoGrow: false })]);
    observer = new Observer(s.k.kc, name);
    await observer.start(s.ns);
    applyPipeline(s.kubectl, s.ns, name, spec);
    const withLog = withDiagnostics(s.op, s.kubectl, s.ns);

    // The records, through PLAINTEXT as the platform's producers would write them; one partition per half of the users.
    const expected = new Map<string, Result>();
    const producer = new Producer({ clientId: "secure-feed", bootstrapBrokers: brokers(s.env.bootstrap), acks: -1, idempotent: true });
    try {
      const messages = [];
      for (let i = 0; i < RECORDS; i++) {
        const u = `u-${i % USERS}`;
        const ts = T0 + Math.floor((i * 600_000) / RECORDS);
        const amount = (i % 13) + 1;
        const key = `${u}|${Math.floor(ts / 60_000) * 60_000}`;
        const r = expected.get(key) ?? { n: 0, total: 0 };
        expected.set(key, { n: r.n + 1, total: r.total + amount });
        messages.push({ topic: t.src, partition: i % 2, key: Buffer.from(u), value: Buffer.from(JSON.stringify({ user: u, ts, amount })) });
      }
      for (let i = 0; i < messages.length; i += 1000) await producer.send({ messages: messages.slice(i, i + 1000) });
      // An hour ahead on both partitions: every window of the data closes.
      await producer.send({
        messages: [0, 1].map((partition) => ({
          topic: t.src,
          partition,
          key: Buffer.from(FLUSH_USER),
          value: Buffer.from(JSON.stringify({ user: FLUSH_USER, ts: T0 + HOUR, amount: 0 })),
        })),
      });
    } finally {
      await producer.close();
    }

    // The operator read the lag with the pipeline's user, and scaled out for the backlog.
    await waitFor(() => observer?.decisions.find((d) => d.scaling.reason === "ScaleUp" && d.scaling.desired === 2), {
      what: "a ScaleUp to 2 workers, decided on lag the operator read with the pipeline's SCRAM user",
      timeoutMs: 90_000,
      process: s.op.proc,
    }).catch(withLog);

    const got = new Map<string, Result>();
    await waitFor(
      async () => {
        got.clear();
        for (const m of await readToEnd(s.env.bootstrap, t.sink, { timeoutMs: 20_000 })) {
          const v = JSON.parse(m.value.toString()) as { key: string; windowStart: number; n: number; total: number };
          if (v.key === FLUSH_USER) continue;
          const key = `${v.key}|${v.windowStart}`;
          assert.equal(got.has(key), false, `window ${key} emitted once (exactly once, onWindowClose)`);
          got.set(key, { n: v.n, total: v.total });
        }
        return got.size >= expected.size;
      },
      { what: `all ${expected.size} windows in ${t.sink}`, timeoutMs: 150_000, intervalMs: 2_000, process: s.op.proc },
    ).catch(withLog);
    assert.deepEqual(Object.fromEntries([...got].sort()), Object.fromEntries([...expected].sort()), "every window's count and sum exact");
    assert.deepEqual(await readToEnd(s.env.bootstrap, t.dlq, { timeoutMs: 5_000 }), [], "no dead letters");
    assert.deepEqual(await readToEnd(s.env.bootstrap, t.late, { timeoutMs: 5_000 }), [], "no late records");
    const lagReads = observer.decisions.filter((d) => d.scaling.lag !== undefined);
    assert.ok(lagReads.length > 0, "status.scaling carries lag the operator read");
  });

  test("a stateless pipeline over mutual TLS: every record through", { timeout: 300_000 }, async () => {
    const cn = `sp-mtls-${suffix}`;
    const cert = await clientCert(k, cn);
    await secret("mtls-client", { "tls.crt": cert.cert, "tls.key": cert.key }, "kubernetes.io/tls");
    const spec = copyIds(k.mtls, t.mtlsSrc, t.mtlsSink, {});
    spec.kafka = { bootstrapServers: [k.mtls], tls: { caSecretRef: { name: "kafka-ca" }, clientSecretRef: { name: "mtls-client" } } };
    const topology = compiled(spec, { namespace: s.ns, name: "mtls" });
    await grantAll(`User:${cn}`, [...workerAcls(topology), ...operatorAcls(topology, { autoGrow: false })]);
    applyPipeline(s.kubectl, s.ns, "mtls", spec);
    const producer = new Producer({ clientId: "mtls-feed", bootstrapBrokers: brokers(s.env.bootstrap), acks: -1 });
    try {
      await producer.send({ messages: Array.from({ length: 1000 }, (_, id) => ({ topic: t.mtlsSrc, value: Buffer.from(JSON.stringify({ id })) })) });
    } finally {
      await producer.close();
    }
    await waitForIds(s.env.bootstrap, t.mtlsSink, 1000, s.op).catch(withDiagnostics(s.op, s.kubectl, s.ns));
  });

  test("a wrong password, a missing Secret, a missing key, a missing ACL: each a condition and an event naming it; no secret anywhere; a rotation puts it right", {
    timeout: 300_000,
  }, async () => {
    const user = await createScramUser(k, `sp-bad-${suffix}`);
    const short = await createScramUser(k, `sp-short-${suffix}`);
    passwords.push(user.password, short.password);
    const wrong = `wrong-${user.password}`;
    passwords.push(wrong);
    await secret("wrong-password", { username: user.username, password: wrong });
    await secret("no-password", { username: user.username });
    await secret("right-password", { username: short.username, password: short.password });
    const base = copyIds(k.sasl, t.badSrc, t.badSink, {});
    const sasl = (name: string): StreamPipelineSpec["kafka"] => ({
      bootstrapServers: [k.sasl],
      sasl: { mechanism: "scram-sha-512", secretRef: { name } },
      tls: { caSecretRef: { name: "kafka-ca" } },
    });
    // user: every ACL (a right password is all it lacks); short: every ACL but those on the source
    const acls = (name: string) => {
      const topology = compiled(base, { namespace: s.ns, name });
      return [...workerAcls(topology), ...operatorAcls(topology, { autoGrow: false })];
    };
    await grantAll(`User:${user.username}`, acls("wrong-password"));
    await grantAll(
      `User:${short.username}`,
      acls("no-acl").filter((r) => !(r.resource === "topic" && r.name === t.badSrc)),
    );

    const cases: { name: string; secret: string; reason: string; says: RegExp }[] = [
      { name: "wrong-password", secret: "wrong-password", reason: "KafkaUnavailable", says: /authenticat/i },
      { name: "no-secret", secret: "no-such-secret", reason: "KafkaCredentialsMissing", says: /secret .*\/no-such-secret does not exist/ },
      { name: "no-key", secret: "no-password", reason: "KafkaCredentialsMissing", says: /secret .*\/no-password has no key "password"/ },
      { name: "no-acl", secret: "right-password", reason: "KafkaUnavailable", says: /authoriz/i },
    ];
    for (const c of cases) applyPipeline(s.kubectl, s.ns, c.name, { ...base, kafka: sasl(c.secret) });
    for (const c of cases) {
      const degraded = await waitFor(
        async () => {
          const p = await s.read(c.name);
          const d = p.status?.conditions?.find((x: PipelineCondition) => x.type === "Degraded");
          return d?.status === "True" && d.reason === c.reason ? d : undefined;
        },
        { what: `${c.name}: Degraded=True ${c.reason}`, timeoutMs: 60_000, process: s.op.proc },
      ).catch(withDiagnostics(s.op, s.kubectl, s.ns));
      assert.match(degraded.message, c.says, `${c.name}: the condition says what is wrong`);
      const events = JSON.parse(s.kubectl(["get", "events", "-n", s.ns, "--field-selector", `involvedObject.name=${c.name}`, "-o", "json"])) as {
        items: { reason: string; message: string }[];
      };
      assert.ok(
        events.items.some((e) => e.reason === c.reason && c.says.test(e.message)),
        `${c.name}: an event ${c.reason}: ${JSON.stringify(events.items.map((e) => e.reason))}`,
      );
    }
    // the suite's operator is one process, started once: alive now means it never crashed
    assert.ok(isAlive(s.op.proc.pid), "the operator runs on");

    // No password in any log, ConfigMap, status, event or metric.
    const places: [string, string][] = [
      ["operator log", readFileSync(s.op.proc.log, "utf8")],
      ["ConfigMaps", s.kubectl(["get", "configmaps", "-n", s.ns, "-o", "json"])],
      ["pipelines and their status", s.kubectl(["get", "streampipelines", "-n", s.ns, "-o", "json"])],
      ["events", s.kubectl(["get", "events", "-n", s.ns, "-o", "json"])],
      ["StatefulSets", s.kubectl(["get", "statefulsets", "-n", s.ns, "-o", "json"])],
      ["operator metrics", await (await fetch(`http://127.0.0.1:${s.op.port}/metrics`)).text()],
      ...workerLogs(s.env.state.shim.work, s.ns),
    ];
    assert.ok(
      places.some(([where]) => where.startsWith("pod log")),
      "the workers' logs are among the places searched",
    );
    for (const [where, text] of places) for (const pw of passwords) assert.equal(text.includes(pw), false, `a password appears in ${where}`);

    // Deleted without their credentials: let go at once, saying what was left on the cluster.
    for (const name of ["no-secret", "no-key"]) {
      s.kubectl(["delete", "streampipeline", name, "-n", s.ns, "--wait=true", "--timeout=60s"]);
      const events = s.kubectl(["get", "events", "-n", s.ns, "--field-selector", `involvedObject.name=${name},reason=KafkaCleanupSkipped`, "-o", "name"]);
      assert.notEqual(events.trim(), "", `${name}: a KafkaCleanupSkipped event`);
    }

    // The wrong password put right in its Secret (a rotation): the workers roll to it and the pipeline recovers.
    const annotation = async () =>
      (await s.k.apps.readNamespacedStatefulSet({ name: "wrong-password", namespace: s.ns })).spec?.template.metadata?.annotations?.[
        "conveyor.dev/secrets-version"
      ];
    const before = await annotation();
    assert.ok(before, "the workers carry the version of the Secrets they read");
    await s.k.core.replaceNamespacedSecret({
      name: "wrong-password",
      namespace: s.ns,
      body: { metadata: { name: "wrong-password" }, stringData: { username: user.username, password: user.password } },
    });
    await waitFor(
      async () => {
        const p = await s.read("wrong-password");
        const is = (type: string, status: string) => p.status?.conditions?.some((c: PipelineCondition) => c.type === type && c.status === status);
        return is("Degraded", "False") && is("Ready", "True");
      },
      { what: "wrong-password, its Secret rotated: Ready, not Degraded", timeoutMs: 150_000, intervalMs: 1_000, process: s.op.proc },
    ).catch(withDiagnostics(s.op, s.kubectl, s.ns));
    assert.notEqual(await annotation(), before, "the rotation rolled the workers: a new secrets-version on the pod template");
  });
});

/** The container logs of the namespace's pods, as the node shim keeps them. */
function workerLogs(shimWork: string, namespace: string): [string, string][] {
  const pods = join(shimWork, "pods");
  const out: [string, string][] = [];
  for (const dir of readdirSync(pods).filter((d) => d.startsWith(`${namespace}_`))) {
    for (const f of readdirSync(join(pods, dir)).filter((x) => x.endsWith(".log"))) {
      const file = join(pods, dir, f);
      if (statSync(file).isFile()) out.push([`pod log ${dir}/${f}`, readFileSync(file, "utf8")]);
    }
  }
  return out;
}

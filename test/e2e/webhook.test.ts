// The validating admission webhook on the real apiserver: `kubectl apply` of a broken expression fails at once
// with the step and the column, and nothing is stored. The operator issues its own serving certificate into a
// Secret owned by the webhook configuration, writes the caBundle, keeps the certificate across restarts and
// replaces it when it no longer fits.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { connect } from "node:tls";
import { API_VERSION, GROUP, KIND, PLURAL, type StreamPipeline, VERSION } from "../../src/api.ts";
import { checkPipeline, defaultValidateOptions } from "../../src/cli/validate.ts";
import { crdChecker } from "../../src/crd-check.ts";
import { fromSecretData, issueServingCert, toSecretData } from "../../src/webhook/certs.ts";
import { isAlive, stopProcess, waitFor } from "../env/proc.ts";
import { bedEnv } from "../support/bed.ts";
import { type Kube, kube, statusCode, testNamespace } from "../support/kube.ts";
import { kubectl } from "../support/kubectl.ts";
import { type LocalWebhook, type OperatorProcess, registerLocalWebhook, startOperator, webhookServing } from "../support/operator.ts";

describe("the validating webhook", () => {
  const env = bedEnv();
  let k: Kube;
  let ns: string;
  let hook: LocalWebhook;
  let op: OperatorProcess | undefined;
  const cleanups: (() => Promise<void>)[] = [];

  const pipeline = (name: string, filter: string) => ({
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name, namespace: ns },
    spec: {
      kafka: { bootstrapServers: [env.bootstrap] },
      source: { topics: ["webhook-src"] },
      steps: [
        { name: "big-payments", filter },
        { name: "shape", map: "{'id': value.id, 'amount': value.amount}" },
      ],
      sink: { topic: "webhook-out" },
      replicas: 0,
    },
  });
  const checker = crdChecker();
  /** kubectl apply, and `conveyor validate`'s verdict on the same document, which must be the apiserver's */
  const apply = (doc: object) => {
    const res = spawnSync("kubectl", ["apply", "-f", "-"], {
      input: JSON.stringify(doc),
      encoding: "utf8",
      env: { ...process.env, KUBECONFIG: env.kubeconfig },
    });
    const offline = checkPipeline(doc, { ...defaultValidateOptions, namespace: ns }, checker).errors;
    assert.equal(offline.length > 0, res.status !== 0, `conveyor validate says ${JSON.stringify(offline)}, kubectl apply says ${res.stderr}`);
    for (const e of offline) assert.ok(res.stderr.includes(`${e.field}: `), `the apiserver also names ${e.field}: ${res.stderr}`);
    return res;
  };
  const read = async (name: string) =>
    (await k.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, name })) as StreamPipeline;
  const startOp = async () => {
    op = await startOperator(ns, undefined, hook.env);
    await webhookServing(k, hook, op.proc);
    return op;
  };
  const denied = async () => {
    assert.ok(op);
    const text = await (await fetch(`http://127.0.0.1:${op.port}/metrics`)).text();
    return Number(/^conveyor_webhook_reviews_total\{verdict="denied"\} (\d+)/m.exec(text)?.[1] ?? 0);
  };
  const secret = async () => k.core.readNamespacedSecret({ name: hook.secret, namespace: ns });

  before(async () => {
    k = kube();
    ns = await testNamespace({ after: (fn: () => Promise<void>) => cleanups.push(fn) }, k, "webhook");
    kubectl(env.kubeconfig, ["apply", "--server-side", "--force-conflicts", "-f", "crds"]);
    hook = await registerLocalWebhook(k, ns);
    await startOp();
  });
  after(async () => {
    if (op && isAlive(op.proc.pid)) await stopProcess(op.proc.pid);
    await k.admission.deleteValidatingWebhookConfiguration({ name: hook.config }).catch((err: unknown) => {
      if (statusCode(err) !== 404) throw err;
    });
    for (const c of cleanups) await c();
  });

  test("kubectl apply of a broken expression fails at once, naming the step and the column, and stores nothing", async () => {
    const deniedBefore = await denied();
    const res = apply(pipeline("broken", "value.amount > "));
    assert.notEqual(res.status, 0, "the apply must fail");
    assert.equal(
      res.stderr.trim(),
      'The StreamPipeline "broken" is invalid: spec.steps[0].filter: step "big-payments", line 1, column 16: Unexpected token: EOF',
    );
    assert.equal(await denied(), deniedBefore + 1, "the webhook, not the schema, refused it");
    await assert.rejects(read("broken"), (err: unknown) => statusCode(err) === 404);
  });

  test("through the API, the refusal says which webhook refused and why, with the field path as the cause", async () => {
    const err = await k.custom
      .createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: PLURAL, body: pipeline("broken-api", "value.amount > ") })
      .then(
        () => assert.fail("the create must be refused"),
        (e: unknown) => e,
      );
    assert.equal(statusCode(err), 422);
    const status = JSON.parse(String((err as { body?: unknown }).body)) as { reason: string; message: string; details: { causes: { field: string }[] } };
    assert.equal(status.reason, "Invalid");
    assert.match(
      status.message,
      /^admission webhook "validate\.streampipelines\.conveyor\.dev" denied the request: StreamPipeline [\w-]+\/broken-api: the topology does not compile: spec\.steps\[0\]\.filter \(step "big-payments"\) at line 1, column 16: /,
    );
    assert.deepEqual(
      status.details.causes.map((c) => c.field),
      ["spec.steps[0].filter"],
    );
  });

  test("a type error is refused too, with its field path; a sound pipeline applies", async () => {
    const typed = apply(pipeline("typed", "value.amount + 1"));
    assert.notEqual(typed.status, 0);
    assert.match(typed.stderr, /is invalid: spec\.steps\[0\]\.filter: step "big-payments": a filter must give a bool, but this expression gives int/);
    const good = apply(pipeline("good", "value.amount > 100"));
    assert.equal(good.status, 0, good.stderr);
    assert.equal((await read("good")).spec.steps?.[0]?.filter, "value.amount > 100");
  });

  test("another namespace's changelog or repartition topic, as a sink or a source, is refused at apply with its field path", async () => {
    const theirs = "team-a_orders_per-minute-changelog";
    const asSink = pipeline("steal-sink", "value.amount > 100");
    asSink.spec.sink.topic = theirs;
    const sink = apply(asSink);
    assert.notEqual(sink.status, 0);
    assert.match(sink.stderr, /is invalid: spec\.sink\.topic: team-a_orders_per-minute-changelog is named as a pipeline's internal topic/);
    const asSource = pipeline("steal-source", "value.amount > 100");
    asSource.spec.source.topics = ["team-a.orders-by-user-repartition"];
    const source = apply(asSource);
    assert.notEqual(source.status, 0);
    assert.match(source.stderr, /is invalid: spec\.source\.topics\[0\]: team-a\.orders-by-user-repartition is named as a pipeline's internal topic/);
    for (const name of ["steal-sink", "steal-source"]) {
      await assert.rejects(read(name), (err: unknown) => statusCode(err) === 404, `${name} was not stored`);
    }
  });

  test("an image outside the operator's allowlist is refused at apply, naming spec.template.image", async () => {
    const foreign = pipeline("foreign-image", "value.amount > 100");
    const res = apply({ ...foreign, spec: { ...foreign.spec, template: { image: "evil.example.com/miner:latest" } } });
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /is invalid: spec\.template\.image: image evil\.example\.com\/miner:latest is not allowed/);
    await assert.rejects(read("foreign-image"), (err: unknown) => statusCode(err) === 404);
  });

  test("an edit that breaks a stored pipeline is refused, and the stored spec is untouched", async () => {
    const before = await read("good");
    const res = apply(pipeline("good", "value.amount >> 1"));
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /The StreamPipeline "good" is invalid: spec\.steps\[0\]\.filter: step "big-payments", line 1, column \d+: /);
    const now = await read("good");
    assert.equal(now.metadata?.generation, before.metadata?.generation);
    assert.equal(now.spec.steps?.[0]?.filter, "value.amount > 100");
  });

  test("the certificate is in a Secret owned by the webhook configuration, and the caBundle trusts it", async () => {
    const s = await secret();
    const cfg = await k.admission.readValidatingWebhookConfiguration({ name: hook.config });
    assert.equal(s.type, "kubernetes.io/tls");
    assert.deepEqual(
      s.metadata?.ownerReferences?.map((o) => [o.kind, o.name, o.uid]),
      [["ValidatingWebhookConfiguration", hook.config, cfg.metadata?.uid]],
    );
    const cert = fromSecretData(s.data);
    assert.ok(cert, "the Secret holds tls.crt, tls.key and ca.crt");
    assert.equal(Buffer.from(cfg.webhooks?.[0]?.clientConfig.caBundle ?? "", "base64").toString("utf8"), cert.caCert);
    // A client that trusts only the caBundle completes a handshake with the operator.
    const peer = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: hook.port, ca: cert.caCert }, () => {
        resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? "");
        socket.end();
      });
      socket.once("error", reject);
    });
    assert.ok(peer.length > 0);
  });

  test("a restarted operator keeps the certificate; a certificate for other names is replaced under the same CA", async () => {
    const first = fromSecretData((await secret()).data);
    assert.ok(op);
    await stopProcess(op.proc.pid);
    await startOp();
    assert.deepEqual(fromSecretData((await secret()).data), first, "a fitting certificate is reused, not reissued");

    // Someone stores a certificate that does not name 127.0.0.1 (the CA stays): the next start replaces it.
    assert.ok(op);
    await stopProcess(op.proc.pid);
    assert.ok(first?.caKey);
    const wrong = await issueServingCert(["somewhere-else.example"], new Date(), { cert: first.caCert, key: first.caKey });
    const s = await secret();
    await k.core.replaceNamespacedSecret({ name: hook.secret, namespace: ns, body: { ...s, data: toSecretData(wrong) } });
    await startOp();
    await waitFor(async () => fromSecretData((await secret()).data)?.cert !== wrong.cert, {
      what: "the operator to replace the unfit certificate",
      timeoutMs: 20_000,
    });
    const replaced = fromSecretData((await secret()).data);
    assert.equal(replaced?.caCert, first.caCert, "renewal keeps the CA");
    assert.notEqual(replaced?.cert, first.cert);
    const res = apply(pipeline("still-checked", "value.amount >"));
    assert.match(
      res.stderr,
      /"still-checked" is invalid: spec\.steps\[0\]\.filter: step "big-payments"/,
      "the apiserver still trusts the webhook after the renewal",
    );
  });

  test("the restarted operator counts its answers in /metrics and is ready", async () => {
    assert.ok(op);
    assert.ok((await denied()) >= 1, "the refusal after the renewal was counted");
    assert.equal((await fetch(`http://127.0.0.1:${op.port}/readyz`)).status, 200);
  });
});

// The chart's monitoring against a real Prometheus on the bed: promtool passes the chart's alert rules, every
// panel of the chart's Grafana dashboard returns series while a windowed pipeline runs, and the stalled-
// watermark alert fires when one source partition goes silent while the other keeps bringing records.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import yaml from "js-yaml";
import { Producer } from "../../runtime/kafka/client.ts";
import type { StreamPipelineSpec } from "../../src/api.ts";
import { waitFor } from "../env/proc.ts";
import { ensurePrometheus, helmPath, repoRoot } from "../env/toolchain.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { brokers, createTopic } from "../support/kafka.ts";
import { type PrometheusProcess, prometheusLog, startPrometheus } from "../support/prometheus.ts";
import { applyPipeline, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const NAME = "clicks-per-10s";
const CHART = join(repoRoot, "charts/conveyor");

/** The chart's PrometheusRule, rendered by helm with `sets`, as a rules file's groups. */
function renderedRules(sets: string[]): { groups: unknown[] } {
  const res = spawnSync(
    helmPath(),
    [
      "template",
      "conveyor",
      CHART,
      "--show-only",
      "templates/prometheusrule.yaml",
      "--set",
      "prometheusRule.enabled=true",
      ...sets.flatMap((x) => ["--set", x]),
    ],
    {
      encoding: "utf8",
    },
  );
  assert.equal(res.status, 0, res.stderr);
  const rule = yaml.load(res.stdout) as { kind: string; spec: { groups: unknown[] } };
  assert.equal(rule.kind, "PrometheusRule");
  return { groups: rule.spec.groups };
}

describe("monitoring: the chart's dashboard and alerts on a real Prometheus", () => {
  const suffix = uniqueSuffix();
  const source = `clicks-${suffix}`;
  const [sink, late, dlq] = [`clicks-out-${suffix}`, `clicks-late-${suffix}`, `clicks-dlq-${suffix}`];
  const s = operatorSuite("monitoring", async (s) => {
    await createTopic(s.a, source, 2);
    for (const t of [sink, late, dlq]) await createTopic(s.a, t, 1);
  });
  let prom: PrometheusProcess | undefined;
  let producer: Producer<Buffer, Buffer, Buffer, Buffer> | undefined;
  after(async () => {
    await prom?.stop();
    await producer?.close();
  });
  const send = (partition: number, values: object[]) =>
    producer?.send({ messages: values.map((v, i) => ({ topic: source, partition, key: Buffer.from(`u${i % 7}`), value: Buffer.from(JSON.stringify(v)) })) });

  test("promtool passes the rules; every panel returns series; a silent partition fires ConveyorWatermarkStalled", { timeout: 300_000 }, async () => {
    const { promtool } = await ensurePrometheus();
    const dir = join(s.env.state.dir, `monitoring-${suffix}`);
    // The rules as the chart ships them, and with windows short enough for a test.
    const short = renderedRules([
      "prometheusRule.step=2s",
      "prometheusRule.watermarkStalled.window=20s",
      "prometheusRule.watermarkStalled.for=6s",
      "prometheusRule.deadLetters.for=2s",
    ]);
    for (const [file, rules] of [
      ["rules-default.yaml", renderedRules([])],
      ["rules-short.yaml", short],
    ] as const) {
      const path = join(s.env.state.dir, `${suffix}-${file}`);
      writeFileSync(path, yaml.dump(rules));
      const check = spawnSync(promtool, ["check", "rules", path], { encoding: "utf8" });
      assert.equal(check.status, 0, `promtool check rules ${file}:\n${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /SUCCESS: 5 rules found/);
    }

    producer = new Producer({ clientId: "monitoring-test", bootstrapBrokers: brokers(s.env.bootstrap), acks: -1 });
    const t0 = Date.now() - 60_000;
    await send(0, [{ user: "u1", ts: t0 }]);
    await send(1, [{ user: "u2", ts: t0 }]);
    await producer.send({ messages: Array.from({ length: 10 }, (_, i) => ({ topic: source, partition: i % 2, value: Buffer.from(`{not json ${i}`) })) });
    const spec: StreamPipelineSpec = {
      kafka: { bootstrapServers: [s.env.bootstrap] },
      source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "2s", idleTimeout: "10m" } },
      steps: [
        { name: "by-user", keyBy: "value.user" },
        { name: "per-10s", window: { tumbling: "10s", grace: "0s" }, aggregate: { n: { count: {} } }, late: { topic: late } },
      ],
      sink: { topic: sink },
      deadLetter: { topic: dlq },
      scaling: { mode: "lag", minReplicas: 1, maxReplicas: 2 },
    };
    applyPipeline(s.kubectl, s.ns, NAME, spec);
    const fail = withDiagnostics(s.op, s.kubectl, s.ns);
    await waitFor(async () => ((await s.read(NAME)).status?.readyReplicas ?? 0) >= 1, { what: "a ready worker", timeoutMs: 90_000, process: s.op.proc }).catch(
      fail,
    );

    prom = await startPrometheus({ dir, kubeconfig: s.env.kubeconfig, namespace: s.ns, operatorTarget: `127.0.0.1:${s.op.port}`, rules: short });
    const p = prom;
    // Partition 0 keeps bringing records of now; partition 1 stays silent, and holds the watermark (idleTimeout
    // is 10 minutes). Records of half an hour ago are late, and some are not JSON. The feed stops by itself after 150 s at the latest.
    const feeding = new AbortController();
    const feed = (async () => {
      const until = Date.now() + 150_000;
      for (let n = 0; !feeding.signal.aborted && Date.now() < until; n++) {
        await send(
          0,
          Array.from({ length: 20 }, () => ({ user: `u${n % 7}`, ts: Date.now() })),
        );
        if (n % 10 === 5) await send(0, [{ user: "u3", ts: Date.now() - 1_800_000 }]);
        if (n % 10 === 0) await producer?.send({ messages: [{ topic: source, partition: 0, value: Buffer.from(`{not json ${n}`) }] });
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();
    try {
      const dashboard = JSON.parse(readFileSync(join(CHART, "files/dashboard.json"), "utf8")) as { panels: { title: string; targets: { expr: string }[] }[] };
      const queries = dashboard.panels.flatMap((panel) =>
        panel.targets.map((t) => ({
          panel: panel.title,
          expr: t.expr.replaceAll("$namespace", s.ns).replaceAll("$pipeline", NAME).replaceAll("$__rate_interval", "30s"),
        })),
      );
      assert.equal(dashboard.panels.length, 9);
      const empty = async () => {
        const out: string[] = [];
        for (const q of queries) if ((await p.query(q.expr)).length === 0) out.push(`${q.panel}: ${q.expr}`);
        return out;
      };
      await waitFor(async () => (await empty()).length === 0, { what: "series for every panel", timeoutMs: 120_000 }).catch(async (err: Error) => {
        throw new Error(`${err.message}; still empty:\n${(await empty()).join("\n")}\nprometheus:\n${prometheusLog(p)}`);
      });
      const firing = await waitFor(
        async () => (await p.alerts()).find((a) => a.labels.alertname === "ConveyorWatermarkStalled" && a.labels.pipeline === NAME && a.state === "firing"),
        { what: "ConveyorWatermarkStalled to fire", timeoutMs: 120_000 },
      );
      assert.equal(firing.labels.namespace, s.ns);
      // records that are not JSON keep coming: the dead letters alert follows
      await waitFor(
        async () => (await p.alerts()).some((a) => a.labels.alertname === "ConveyorDeadLetters" && a.labels.kind === "parse" && a.labels.pipeline === NAME),
        {
          what: "ConveyorDeadLetters for the parse failures",
          timeoutMs: 60_000,
        },
      );
      const alerts = await p.alerts();
      assert.ok(!alerts.some((a) => a.labels.alertname === "ConveyorOperatorDown"), "the operator is up");
      process.stdout.write(`# alerts: ${alerts.map((a) => `${a.labels.alertname} ${a.state}`).join(", ")}\n`);
    } finally {
      feeding.abort();
      await feed;
    }
  });
});

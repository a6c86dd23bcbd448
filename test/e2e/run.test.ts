// `conveyor run` on the bed's broker with no Kubernetes: the windowed pipeline of one YAML file, run once by the
// operator on a worker pod and once by `conveyor run` in a process of its own, writes the same window results.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import yaml from "js-yaml";
import type { StreamPipelineSpec } from "../../src/api.ts";
import { isAlive, waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { createTopic, produce, readToEnd } from "../support/kafka.ts";
import { applyPipeline, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const RECORDS = 3_000;
const USERS = 10;
const MINUTE = 60_000;

describe("conveyor run", () => {
  const suffix = uniqueSuffix();
  const source = `run-src-${suffix}`;
  const [onPods, local] = [`run-pods-${suffix}`, `run-local-${suffix}`];
  const s = operatorSuite("run", async (s) => {
    await createTopic(s.a, source, 1);
    for (const t of [onPods, local, `${onPods}-late`, `${local}-late`]) await createTopic(s.a, t, 1);
  });
  const spec = (sink: string): StreamPipelineSpec => ({
    kafka: { bootstrapServers: [s.env.bootstrap] },
    source: { topics: [source], startFrom: "earliest", eventTime: "value.ts", watermark: { maxOutOfOrderness: "5s" } },
    steps: [
      { name: "by-user", keyBy: "value.user" },
      {
        name: "per-minute",
        window: { tumbling: "1m", grace: "0s" },
        aggregate: { n: { count: {} }, total: { sum: "value.amount" } },
        late: { topic: `${sink}-late` },
      },
    ],
    sink: { topic: sink },
    processing: { guarantee: "exactlyOnce" },
  });

  test("the same window results as the pipeline on a worker pod", { timeout: 240_000 }, async () => {
    const t0 = Math.floor(Date.now() / MINUTE) * MINUTE - 10 * MINUTE;
    const records = Array.from({ length: RECORDS }, (_, i) => {
      const user = `u${i % USERS}`;
      return { key: user, value: JSON.stringify({ user, amount: i % 97, ts: t0 + Math.floor((i * 4 * MINUTE) / RECORDS) }) };
    });
    // one record far ahead moves the watermark past every window of the four minutes
    records.push({ key: "u0", value: JSON.stringify({ user: "u0", amount: 0, ts: t0 + 9 * MINUTE }) });
    await produce(s.env.bootstrap, source, records);
    const windows = new Set(
      records
        .slice(0, RECORDS)
        .map((r) => JSON.parse(r.value) as { user: string; ts: number })
        .map((v) => `${v.user}@${Math.floor(v.ts / MINUTE)}`),
    ).size;

    applyPipeline(s.kubectl, s.ns, "per-minute", spec(onPods));
    // the same YAML a user would write, with the other sink, for conveyor run
    const dir = join(s.env.state.dir, `run-${suffix}`);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "pipeline.yaml");
    writeFileSync(file, yaml.dump({ apiVersion: "conveyor.dev/v1alpha1", kind: "StreamPipeline", metadata: { name: "per-minute" }, spec: spec(local) }));
    const child = spawn(process.execPath, [join(repoRoot, "src/cli/main.ts"), "run", file, "--bootstrap", s.env.bootstrap, "--state-dir", join(dir, "state")], {
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    let log = "";
    child.stderr.on("data", (b: Buffer) => {
      log += b.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      const fail = withDiagnostics(s.op, s.kubectl, s.ns);
      const results = async (topic: string) => (await readToEnd(s.env.bootstrap, topic)).map((m) => `${m.key?.toString()} ${m.value.toString()}`).sort();
      const [a, b] = await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`conveyor run exited with ${child.exitCode}:\n${log}`);
          const both: [string[], string[]] = [await results(onPods), await results(local)];
          return both.every((r) => r.length >= windows) ? both : false;
        },
        { what: `${windows} window results from the pod and from conveyor run`, timeoutMs: 150_000, process: s.op.proc },
      ).catch((err: Error) => fail(new Error(`${err.message}\nconveyor run's log:\n${log.split("\n").slice(-20).join("\n")}`)));
      assert.equal(a.length, windows);
      assert.deepEqual(b, a, "conveyor run wrote what the worker pod wrote");
      assert.match(log, /^running local\/per-minute against \S+ as group local\.per-minute; Ctrl-C drains and stops it$/m);
      // Ctrl-C (SIGINT) drains and stops it
      child.kill("SIGINT");
      assert.equal(await exited, 0, log);
    } finally {
      if (child.pid && isAlive(child.pid)) process.kill(-child.pid, "SIGKILL");
    }
  });
});

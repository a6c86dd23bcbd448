// `conveyor dlq` on the bed: an exactly-once pipeline whose map reads a field that some records lack sends
// those records to its dead-letter topic. Once the map is fixed, `dlq replay --to source` sends them back, and
// every one reaches the sink exactly once, also when the first replay is SIGKILLed halfway and run again.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import type { StreamPipelineSpec } from "../../src/api.ts";
import { waitFor } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";
import { uniqueSuffix } from "../support/bed.ts";
import { createTopic, endOffsets, produce, readToEnd } from "../support/kafka.ts";
import { applyPipeline, withDiagnostics } from "../support/scaling.ts";
import { operatorSuite } from "../support/suite.ts";

const run = promisify(execFile);
const NAME = "scaled";
const GOOD = 600;
/** records without value.extra: the first map fails on them */
const BARE = 400;
const BROKEN = 20;
const MAIN = join(repoRoot, "src/cli/main.ts");

describe("conveyor dlq", () => {
  const suffix = uniqueSuffix();
  const source = `dlq-src-${suffix}`;
  const sink = `dlq-out-${suffix}`;
  const dlq = `dlq-dlq-${suffix}`;
  const s = operatorSuite("dlq", async (s) => {
    await createTopic(s.a, source, 2);
    for (const t of [sink, dlq]) await createTopic(s.a, t, 1);
  });
  const env = () => ({ ...process.env, KUBECONFIG: s.env.kubeconfig });
  const cli = async (...args: string[]) => run(process.execPath, [MAIN, ...args], { encoding: "utf8", env: env(), timeout: 120_000 });
  const spec = (map: string): StreamPipelineSpec => ({
    kafka: { bootstrapServers: [s.env.bootstrap] },
    source: { topics: [source], startFrom: "earliest" },
    steps: [{ name: "scale", map }],
    sink: { topic: sink },
    deadLetter: { topic: dlq },
    processing: { guarantee: "exactlyOnce" },
  });
  const ids = async () => (await readToEnd(s.env.bootstrap, sink)).map((m) => (JSON.parse(m.value.toString()) as { id: number }).id);
  const dead = async () => (await endOffsets(s.a, dlq)).reduce((x, y) => x + y, 0n);

  test("tail shows why; replay after the fix: every dead letter reaches the sink once, also across a SIGKILL halfway", { timeout: 300_000 }, async () => {
    const records = Array.from({ length: GOOD + BARE }, (_, i) => ({
      key: `k${i}`,
      value: JSON.stringify(i < GOOD ? { id: i, amount: 100 + i, extra: { factor: 2 } } : { id: i, amount: 100 + i }),
    }));
    const broken = Array.from({ length: BROKEN }, (_, i) => ({ key: `b${i}`, value: `{"id": ${i},` }));
    await produce(s.env.bootstrap, source, [...records, ...broken]);
    applyPipeline(s.kubectl, s.ns, NAME, spec("{'id': value.id, 'scaled': value.amount * value.extra.factor}"));
    const fail = withDiagnostics(s.op, s.kubectl, s.ns);
    await waitFor(async () => (await ids()).length === GOOD && (await dead()) >= BigInt(BARE + BROKEN), {
      what: `${GOOD} records in the sink and ${BARE + BROKEN} dead letters`,
      timeoutMs: 120_000,
      process: s.op.proc,
    }).catch(fail);

    const tailed = await cli("dlq", "tail", NAME, "-n", s.ns, "--kind", "eval", "--limit", "3");
    assert.equal(tailed.stderr, "3 dead letters of " + dlq + "\n");
    assert.equal(tailed.stdout.match(/^\S+Z {2}eval at step scale, from /gm)?.length, 3, tailed.stdout);
    assert.match(tailed.stdout, /^ {2}error: .*No such key: extra/m);
    const parse = await cli("dlq", "tail", NAME, "-n", s.ns, "--kind", "parse", "--limit", "100");
    assert.equal(parse.stderr, `${BROKEN} dead letters of ${dlq}\n`);

    // The fix: a record without extra keeps its amount. The workers roll out with it.
    applyPipeline(s.kubectl, s.ns, NAME, spec("{'id': value.id, 'scaled': has(value.extra) ? value.amount * value.extra.factor : value.amount}"));
    await waitFor(
      async () => {
        const p = await s.read(NAME);
        const gen = p.metadata?.generation;
        return gen === 2 && p.status?.conditions?.some((c) => c.type === "Progressing" && c.status === "False" && c.observedGeneration === gen) === true;
      },
      { what: "the fixed pipeline rolled out", timeoutMs: 120_000, process: s.op.proc },
    ).catch(fail);

    const dry = await cli("dlq", "replay", NAME, "-n", s.ns, "--to", "source", "--kind", "eval", "--dry-run");
    assert.match(dry.stdout, new RegExp(`^would replay ${BARE} to ${source}$`, "m"));
    assert.match(dry.stdout, new RegExp(`^passed over ${BROKEN} that the filters leave out$`, "m"));

    // The first replay, slowed to 100 records/s in transactions of 20, is killed once some have gone.
    const first = spawn(process.execPath, [MAIN, "dlq", "replay", NAME, "-n", s.ns, "--to", "source", "--kind", "eval", "--batch", "20", "--rate", "100"], {
      env: env(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let progress = "";
    first.stderr.on("data", (b: Buffer) => {
      progress += b.toString();
    });
    const exited = new Promise<number | null>((resolve) => first.on("exit", (code) => resolve(code)));
    await waitFor(() => /replayed ([4-9]\d|1\d\d) of/.test(progress), { what: "the first replay's progress past 40 records", timeoutMs: 60_000 });
    first.kill("SIGKILL");
    assert.equal(await exited, null, `the first replay ended by itself before the kill:\n${progress}`);

    const second = await cli("dlq", "replay", NAME, "-n", s.ns, "--to", "source", "--kind", "eval");
    const before = Number(/^(\d+) were done by an earlier run/m.exec(second.stdout)?.[1]);
    const now = Number(new RegExp(`^replayed (\\d+) to ${source}$`, "m").exec(second.stdout)?.[1]);
    assert.ok(before > 0 && before < BARE + BROKEN, `the killed run went part of the way: ${second.stdout}`);
    assert.ok(now > 0, second.stdout);
    process.stdout.write(`# killed after:\n${progress.replace(/^/gm, "#   ")}# run again:\n${second.stdout.replace(/^/gm, "#   ")}`);

    // Every id once: the 600 that went through, and the 400 replayed, none twice.
    const all = await waitFor(
      async () => {
        const got = await ids();
        return got.length >= GOOD + BARE ? got : false;
      },
      { what: `${GOOD + BARE} records in the sink`, timeoutMs: 120_000, process: s.op.proc },
    ).catch(fail);
    const counts = new Map<number, number>();
    for (const id of all) counts.set(id, (counts.get(id) ?? 0) + 1);
    assert.deepEqual(
      [...counts].filter(([, n]) => n !== 1),
      [],
      "no id twice",
    );
    assert.equal(counts.size, GOOD + BARE);
    // A third run has nothing left to do.
    const third = await cli("dlq", "replay", NAME, "-n", s.ns, "--to", "source", "--kind", "eval");
    assert.match(third.stdout, /^replayed none$/m);
  });
});

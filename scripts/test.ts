// npm test: static checks, then every unit, integration and e2e suite on one shared test bed.
// The bed keeps its pods' addresses inside a network namespace of its own, so the test runner runs in there,
// where the suites reach the apiserver, Kafka and every pod as the operator would.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { type Bed, type BedState, insideEnv, runningBed, startBed } from "../test/env/bed.ts";
import { podsMode } from "../test/env/pod-images.ts";
import { placedArgv } from "../test/env/proc.ts";
import { ensureActionlint, ensureAll, ensurePrometheus } from "../test/env/toolchain.ts";

const root = join(import.meta.dirname, "..");
const bin = (name: string) => join(root, "node_modules/.bin", name);
const t0 = Date.now();

function step(title: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): void {
  const s = Date.now();
  process.stdout.write(`\n== ${title}\n`);
  const res = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env: env ?? process.env });
  const secs = ((Date.now() - s) / 1000).toFixed(1);
  if (res.status !== 0) {
    process.stdout.write(`== ${title}: FAILED after ${secs} s\n`);
    throw new StepFailed(res.status ?? 1);
  }
  process.stdout.write(`== ${title}: ok in ${secs} s\n`);
}

class StepFailed extends Error {
  readonly code: number;
  constructor(code: number) {
    super(`exit ${code}`);
    this.code = code;
  }
}

/** One bed for the whole run (CONVEYOR_REUSE_BED=1 takes a running one; CONVEYOR_KEEP_BED=1 leaves it up). */
async function bedForRun(dir: string): Promise<{ state: BedState; started?: Bed }> {
  const s = Date.now();
  process.stdout.write("\n== the test bed\n");
  const reuse = process.env.CONVEYOR_REUSE_BED === "1" ? runningBed(dir) : undefined;
  if (reuse) {
    process.stdout.write(
      `[bed] reusing the running bed in ${dir} (CONVEYOR_REUSE_BED=1); its pods run ${reuse.pods === "image" ? "the images" : "this checkout"}\n`,
    );
    return { state: reuse };
  }
  await ensureAll();
  // the monitoring suite's Prometheus: built here, with the rest, rather than inside a test's timeout
  await ensurePrometheus();
  // the release workflow's linter (the workflow itself runs on GitHub only)
  await ensureActionlint();
  // CI's mode: the pods of Conveyor's images run the images themselves (CONVEYOR_PODS=checkout for a fast loop)
  const bed = await startBed(dir, { pods: podsMode("image") });
  process.stdout.write(
    `[bed] up in ${((Date.now() - s) / 1000).toFixed(1)} s: KUBECONFIG=${bed.kubeconfig} KAFKA_BOOTSTRAP=${bed.kafkaBootstrap} (netns ${bed.net.netns})\n`,
  );
  return { state: bed, started: bed };
}

async function main(): Promise<number> {
  step("lint and format (biome)", bin("biome"), ["ci", "--colors=off", "."]);
  step("typecheck (tsc)", bin("tsc"), ["--noEmit", "-p", "."]);
  const only = process.argv.slice(2);
  const dir = process.env.CONVEYOR_TEST_BED_DIR ?? "/tmp/conveyor-test-bed";
  const { state, started } = await bedForRun(dir);
  try {
    const argv = placedArgv(
      [
        process.execPath,
        "--test",
        "--test-concurrency=1",
        "--test-timeout=900000",
        "--test-reporter=spec",
        "--test-reporter-destination=stdout",
        "--test-reporter=./test/durations-reporter.ts",
        "--test-reporter-destination=stdout",
        ...(only.length > 0 ? only : ["src/**/*.test.ts", "runtime/**/*.test.ts", "scripts/**/*.test.ts", "test/**/*.test.ts"]),
      ],
      { netns: state.net.netns },
    );
    // Suites that check the host's side (the bed by hand) enter this process's namespace: it outlives them.
    const env = { ...process.env, ...insideEnv(state), CONVEYOR_HOST_NETNS: `/proc/${process.pid}/ns/net` };
    step(`tests (unit, integration, e2e; in the bed's network namespace ${state.net.netns})`, argv[0] as string, argv.slice(1), env);
  } finally {
    if (started && process.env.CONVEYOR_KEEP_BED !== "1") {
      const s = Date.now();
      await started.stop();
      process.stdout.write(`[bed] stopped in ${((Date.now() - s) / 1000).toFixed(1)} s\n`);
    }
  }
  process.stdout.write(`\nnpm test finished in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof StepFailed) process.exit(err.code);
    process.stderr.write(`[test] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

// One test bed per `npm test` run, shared by every integration and e2e suite (each isolates itself by
// namespace and topic prefix). The test files run in child processes that inherit these variables.
import { type Bed, readBedState, startBed } from "./env/bed.ts";
import { isAlive } from "./env/proc.ts";
import { ensureAll } from "./env/toolchain.ts";

let bed: Bed | undefined;

export async function globalSetup(): Promise<void> {
  const t0 = Date.now();
  const dir = process.env.CONVEYOR_TEST_BED_DIR ?? "/tmp/conveyor-test-bed";
  const reuse = process.env.CONVEYOR_REUSE_BED === "1" ? readBedState(dir) : undefined;
  if (reuse && [...reuse.kafka.pids.values(), ...reuse.controlPlane.pids.values(), reuse.shim.pid].every(isAlive)) {
    process.stderr.write(`[bed] reusing the running bed in ${dir} (CONVEYOR_REUSE_BED=1)\n`);
    process.env.KUBECONFIG = reuse.kubeconfig;
    process.env.KAFKA_BOOTSTRAP = reuse.kafkaBootstrap;
    process.env.CONVEYOR_BED_DIR = dir;
    return;
  }
  await ensureAll();
  bed = await startBed(dir);
  process.env.KUBECONFIG = bed.kubeconfig;
  process.env.KAFKA_BOOTSTRAP = bed.kafkaBootstrap;
  process.env.CONVEYOR_BED_DIR = dir;
  process.stderr.write(`[bed] up in ${((Date.now() - t0) / 1000).toFixed(1)} s: KUBECONFIG=${bed.kubeconfig} KAFKA_BOOTSTRAP=${bed.kafkaBootstrap}\n`);
}

export async function globalTeardown(): Promise<void> {
  if (!bed || process.env.CONVEYOR_KEEP_BED === "1") return;
  const t0 = Date.now();
  await bed.stop();
  process.stderr.write(`[bed] stopped in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}

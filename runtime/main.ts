// The Conveyor runtime: one worker process of a pipeline.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { errorMessage, jsonLogger } from "../src/log.ts";
import { parsePipelineConfig } from "../src/pipeline-config.ts";
import { sourceTopicsOf } from "../src/topology/compile.ts";
import { startProbeServer } from "./http.ts";
import { observeStateVolume, runtimeMetrics } from "./metrics.ts";
import { Worker } from "./worker.ts";

const SHUTDOWN_DEADLINE_MS = 20_000;

async function main(): Promise<void> {
  const configPath = process.env.CONVEYOR_CONFIG ?? "/etc/conveyor/pipeline.json";
  const config = parsePipelineConfig(readFileSync(configPath, "utf8"));
  const podName = process.env.POD_NAME ?? hostname();
  const log = jsonLogger({ component: "runtime", pipeline: `${config.pipeline.namespace}/${config.pipeline.name}`, pod: podName });
  let stopping = false;
  const metrics = runtimeMetrics();
  // A topology with stateful steps (keyBy, windows) is refused here, visibly, rather than run without them.
  const stateDir = process.env.CONVEYOR_STATE_DIR ?? "/var/lib/conveyor/state";
  observeStateVolume(metrics, stateDir);
  const worker = new Worker({
    config,
    clientId: podName,
    log,
    metrics,
    stateDir,
    // a tuning knob, as Kafka Streams' repartition.purge.interval.ms; the tests shorten it
    ...purgeInterval(process.env.CONVEYOR_REPARTITION_PURGE_INTERVAL_MS),
    // Offsets are committed only after writes, so exiting here loses nothing: the restarted worker resumes there.
    onFatal: (err) => {
      if (stopping) return;
      log.error("exiting: the worker loop cannot go on", { error: err.message, stats: worker.stats });
      process.exit(1);
    },
  });
  const server = await startProbeServer(
    process.env.POD_IP ?? "127.0.0.1",
    Number(process.env.CONVEYOR_HTTP_PORT ?? 8080),
    {
      ready: () => worker.ready && !stopping,
      healthy: () => worker.healthy,
    },
    metrics.registry,
  );
  await worker.start();
  log.info("worker started", { group: config.consumerGroup, source: sourceTopicsOf(config.topology), sink: config.topology.sink.topic });

  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("draining", { signal, stats: worker.stats });
    const deadline = setTimeout(() => {
      log.error("shutdown deadline passed; exiting", { deadlineMs: SHUTDOWN_DEADLINE_MS });
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    worker
      .stop()
      .then(() => {
        clearTimeout(deadline);
        server.close();
        log.info("stopped", { stats: worker.stats });
        process.exit(0);
      })
      .catch((err: unknown) => {
        log.error("shutdown failed", { error: errorMessage(err) });
        process.exit(1);
      });
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

main().catch((err: unknown) => {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: "error", msg: "runtime failed", error: errorMessage(err) })}\n`);
  process.exit(1);
});

/** CONVEYOR_REPARTITION_PURGE_INTERVAL_MS, when set to a whole number of milliseconds; anything else is refused. */
function purgeInterval(raw: string | undefined): { purgeIntervalMs?: number } {
  if (raw === undefined || raw === "") return {};
  const ms = Number(raw);
  if (!Number.isSafeInteger(ms) || ms < 0) throw new Error(`CONVEYOR_REPARTITION_PURGE_INTERVAL_MS must be whole milliseconds, not ${JSON.stringify(raw)}`);
  return { purgeIntervalMs: ms };
}

// The Conveyor runtime: one worker process of a pipeline.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { errorMessage, jsonLogger } from "../src/log.ts";
import { parsePipelineConfig } from "../src/pipeline-config.ts";
import { Copier } from "./copier.ts";
import { startProbeServer } from "./http.ts";

const SHUTDOWN_DEADLINE_MS = 20_000;

async function main(): Promise<void> {
  const configPath = process.env.CONVEYOR_CONFIG ?? "/etc/conveyor/pipeline.json";
  const config = parsePipelineConfig(readFileSync(configPath, "utf8"));
  const podName = process.env.POD_NAME ?? hostname();
  const log = jsonLogger({ component: "runtime", pipeline: `${config.pipeline.namespace}/${config.pipeline.name}`, pod: podName });
  if (config.topology.steps.length > 0) {
    // This runtime copies records from the sources to the sink and nothing more. Running a pipeline with
    // steps would silently skip them; refusing makes the pods fail visibly instead.
    throw new Error(`the pipeline has ${config.topology.steps.length} steps, and this runtime version executes none: refusing to run rather than skip them`);
  }
  let stopping = false;
  const copier = new Copier({
    config,
    clientId: podName,
    log,
    // Offsets are committed only after writes, so exiting here loses nothing: the restarted worker resumes there.
    onFatal: (err) => {
      if (stopping) return;
      log.error("exiting: the worker loop cannot go on", { error: err.message, stats: copier.stats });
      process.exit(1);
    },
  });
  const server = await startProbeServer(process.env.POD_IP ?? "127.0.0.1", Number(process.env.CONVEYOR_HTTP_PORT ?? 8080), {
    ready: () => copier.joined && copier.healthy && !stopping,
    healthy: () => copier.healthy,
  });
  await copier.start();
  log.info("worker started", { group: config.consumerGroup, source: config.topology.source.topics, sink: config.topology.sink.topic });

  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("draining", { signal, stats: copier.stats });
    const deadline = setTimeout(() => {
      log.error("shutdown deadline passed; exiting", { deadlineMs: SHUTDOWN_DEADLINE_MS });
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    copier
      .stop()
      .then(() => {
        clearTimeout(deadline);
        server.close();
        log.info("stopped", { stats: copier.stats });
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

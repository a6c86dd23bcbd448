// The Conveyor operator: `npm run operator` runs it against $KUBECONFIG; in a cluster it uses its ServiceAccount.
import { KubeConfig } from "@kubernetes/client-node";
import { defaultOperatorConfig } from "./children.ts";
import { Controller } from "./controller.ts";
import { errorMessage, jsonLogger } from "./log.ts";

const log = jsonLogger({ component: "operator" });
const kubeConfig = new KubeConfig();
kubeConfig.loadFromDefault();

const controller = new Controller({
  kubeConfig,
  config: { ...defaultOperatorConfig, runtimeImage: process.env.CONVEYOR_RUNTIME_IMAGE ?? defaultOperatorConfig.runtimeImage },
  log,
});

const shutdown = (signal: string) => {
  log.info("stopping", { signal });
  controller.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      log.error("stop failed", { error: errorMessage(err) });
      process.exit(1);
    },
  );
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

controller.start().catch((err: unknown) => {
  log.error("operator failed to start", { error: errorMessage(err) });
  process.exit(1);
});

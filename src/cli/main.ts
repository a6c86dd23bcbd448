#!/usr/bin/env node
// The `conveyor` command (also `kubectl conveyor`): what an on-call engineer or a GitOps repository's CI asks of
// a pipeline, in one place.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { Command, InvalidArgumentError, Option } from "commander";
import { defaultOperatorConfig } from "../children.ts";
import type { FieldValidation } from "../crd-check.ts";
import { jsonLogger } from "../log.ts";
import { describePipeline } from "./describe.ts";
import { renderDescription } from "./describe-view.ts";
import { formatLetter, parseSince, pipelineKafka, replay, tail } from "./dlq.ts";
import { runLocal } from "./run.ts";
import { listPipelines, renderTop } from "./top.ts";
import { runValidate } from "./validate.ts";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };

const collect = (value: string, previous: string[]) => [...previous, value];

/** The user's kubeconfig (KUBECONFIG, or ~/.kube/config, or in-cluster), and its context's namespace. */
function userKube(): { kc: KubeConfig; namespace: string } {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return { kc, namespace: kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default" };
}

/** Progress on stderr, only where a person watches it. */
const progress = (line: string) => {
  if (process.stderr.isTTY) process.stderr.write(`… ${line}\n`);
};

export function program(): Command {
  const cli = new Command()
    // run as kubectl's plugin (kubectl-conveyor on the PATH), its usage lines say `kubectl conveyor`
    .name(basename(process.argv[1] ?? "").startsWith("kubectl-") ? "kubectl conveyor" : "conveyor")
    .description("Inspect and check Conveyor StreamPipelines.")
    .version(pkg.version)
    .showHelpAfterError()
    .configureHelp({ helpWidth: 80 });

  cli
    .command("validate")
    .summary("check StreamPipeline manifests offline, as the apiserver and the webhook would")
    .description(
      "Run the apply-time checks offline: the CRD's schema and CEL rules, then the topology compiler the webhook runs. " +
        "Reads YAML or JSON files, directories (recursively) or - for stdin (multi-document YAML, Kustomize output). " +
        "Prints each error as file:line: field path: message and exits 1 on any error.",
    )
    .argument("[paths...]", "files, directories, or - for stdin", [])
    .addOption(
      new Option("--field-validation <mode>", "strict: an unknown field is an error, as kubectl apply does; warn: a warning, as the API's default")
        .choices(["strict", "warn"])
        .default("strict"),
    )
    .option("-n, --namespace <namespace>", "the namespace of pipelines whose metadata names none", "default")
    .option("--runtime-image <image>", "the operator's runtime image (its runtimeImage setting)", defaultOperatorConfig.runtimeImage)
    .option("--allowed-image <prefix>", "an image prefix the operator allows (its allowedImages setting); repeatable", collect, [])
    .action((paths: string[], opts: { fieldValidation: FieldValidation; namespace: string; runtimeImage: string; allowedImage: string[] }) => {
      if (paths.length === 0) {
        if (process.stdin.isTTY) throw new InvalidArgumentError("give files, directories, or - to read stdin");
        paths = ["-"];
      }
      process.exitCode = runValidate(
        paths,
        {
          fieldValidation: opts.fieldValidation,
          namespace: opts.namespace,
          config: { ...defaultOperatorConfig, runtimeImage: opts.runtimeImage, allowedImages: opts.allowedImage },
        },
        { stdin: () => readFileSync(0, "utf8"), out: (l) => process.stdout.write(`${l}\n`), err: (l) => process.stderr.write(`${l}\n`) },
      );
    });
  const positive = (flag: string) => (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} takes a whole number of at least 1`);
    return n;
  };
  cli
    .command("describe")
    .summary("one pipeline: conditions, lag per partition and its owner, watermarks, state, dead letters, scaling")
    .description(
      "Everything about one pipeline that an on-call engineer needs, read from the status and Events, from Kafka with " +
        "the pipeline's own connection and Secrets (committed and end offsets, as kafka-consumer-groups --describe shows " +
        "them; the dead letters of the last hour), and from each worker's /metrics through the apiserver's pod proxy.",
    )
    .argument("<name>", "the StreamPipeline")
    .option("-n, --namespace <namespace>", "its namespace (default: the kubeconfig context's)")
    .addOption(new Option("-o, --output <format>", "text, or json for scripts").choices(["text", "json"]).default("text"))
    .option("--watch <seconds>", "read the lag and the workers every 2 s for this long, and draw them as sparklines", positive("--watch"))
    .action(async (name: string, opts: { namespace?: string; output: "text" | "json"; watch?: number }) => {
      const { kc, namespace } = userKube();
      const d = await describePipeline(kc, opts.namespace ?? namespace, name, { progress, ...(opts.watch ? { watchMs: opts.watch * 1_000 } : {}) });
      process.stdout.write(opts.output === "json" ? `${JSON.stringify(d, null, 2)}\n` : renderDescription(d));
    });
  const dlq = cli.command("dlq").summary("a pipeline's dead letters: look at them, and replay them once the cause is fixed");

  // checked as it is parsed; kept as given, for a replay's identity
  const since = (v: string) => {
    try {
      parseSince(v);
      return v;
    } catch (err) {
      throw new InvalidArgumentError(err instanceof Error ? err.message : String(err));
    }
  };
  dlq
    .command("tail")
    .description("Print the last dead letters of a pipeline, oldest first: when and where each failed, why, and its key and value.")
    .argument("<name>", "the StreamPipeline")
    .option("-n, --namespace <namespace>", "its namespace (default: the kubeconfig context's)")
    .option("--limit <n>", "how many", positive("--limit"), 10)
    .option("--kind <kind>", "only this kind: parse, eval, encode or eventTime")
    .option("--step <step>", "only those that failed at this step (source, sink, late, or a step's name)")
    .option("--since <when>", "only those that failed since: 90s, 30m, 2h, 1d, or a time", since)
    .action(async (name: string, o: { namespace?: string; limit: number; kind?: string; step?: string; since?: string }) => {
      const { kc, namespace } = userKube();
      const p = await pipelineKafka(kc, kc.makeApiClient(CoreV1Api), o.namespace ?? namespace, name);
      progress(`reading ${p.dlq}`);
      const letters = await tail(p, {
        limit: o.limit,
        ...(o.kind ? { kind: o.kind } : {}),
        ...(o.step ? { step: o.step } : {}),
        ...(o.since !== undefined ? { since: parseSince(o.since) } : {}),
      });
      for (const d of letters) process.stdout.write(`${formatLetter(d)}\n`);
      process.stderr.write(`${letters.length} dead letter${letters.length === 1 ? "" : "s"} of ${p.dlq}\n`);
    });
  dlq
    .command("replay")
    .description(
      "Send a pipeline's dead letters back, without the runtime's conveyor.* headers: to the source topic and partition " +
        "each came from, or to a topic. Progress is kept in a consumer group of the replay's own, committed in the same " +
        "Kafka transaction as the records, so a replay that stops (killed, or a broker gone) and is run again with the " +
        "same options writes no record twice. It reads up to the end the topic has when it starts.",
    )
    .argument("<name>", "the StreamPipeline")
    .requiredOption("--to <target>", "source, or a topic")
    .option("-n, --namespace <namespace>", "its namespace (default: the kubeconfig context's)")
    .option("--kind <kind>", "only this kind: parse, eval, encode or eventTime")
    .option("--step <step>", "only those that failed at this step")
    .option("--since <when>", "only those that failed since: 90s, 30m, 2h, 1d, or a time", since)
    .option("--dry-run", "count what would be replayed, and write nothing", false)
    .option("--batch <n>", "records per transaction", positive("--batch"), 500)
    .option("--rate <n>", "at most this many records a second", positive("--rate"))
    .action(
      async (
        name: string,
        o: { to: string; namespace?: string; kind?: string; step?: string; since?: string; dryRun: boolean; batch: number; rate?: number },
      ) => {
        const { kc, namespace } = userKube();
        const p = await pipelineKafka(kc, kc.makeApiClient(CoreV1Api), o.namespace ?? namespace, name);
        const r = await replay(p, {
          to: o.to,
          dryRun: o.dryRun,
          batch: o.batch,
          ...(o.kind ? { kind: o.kind } : {}),
          ...(o.step ? { step: o.step } : {}),
          ...(o.since !== undefined ? { since: parseSince(o.since), sinceText: o.since } : {}),
          ...(o.rate !== undefined ? { rate: o.rate } : {}),
          progress: (l) => process.stderr.write(`… ${l}\n`),
        });
        const verb = o.dryRun ? "would replay" : "replayed";
        const lines = [
          ...[...r.replayed].map(([topic, n]) => `${verb} ${n} to ${topic}`),
          ...(r.replayed.size === 0 ? [`${verb} none`] : []),
          ...(r.filtered > 0 ? [`passed over ${r.filtered} that the filters leave out`] : []),
          ...[...r.skipped].map(([why, n]) => `skipped ${n}: ${why} (replay them with --to TOPIC)`),
          ...(r.alreadyDone > 0n ? [`${r.alreadyDone} were done by an earlier run with these options (group ${r.group})`] : []),
        ];
        process.stdout.write(`${lines.join("\n")}\n`);
      },
    );
  cli
    .command("top")
    .summary("every pipeline of a namespace, a line each, redrawn every few seconds")
    .description(
      "Every StreamPipeline of the namespace (or of all, -A), a line each, from their status: ready workers, lag, " +
        "input and consumed rates, how far the low watermark is behind now, and the Ready reason with the autoscaler's " +
        "when it is not Steady. Redrawn every --interval seconds until Ctrl-C; --once prints one frame.",
    )
    .option("-n, --namespace <namespace>", "the namespace (default: the kubeconfig context's)")
    .option("-A, --all-namespaces", "every namespace", false)
    .option("--interval <seconds>", "seconds between frames", positive("--interval"), 2)
    .option("--once", "one frame, then exit", false)
    .action(async (o: { namespace?: string; allNamespaces: boolean; interval: number; once: boolean }) => {
      const { kc, namespace } = userKube();
      const ns = o.allNamespaces ? undefined : (o.namespace ?? namespace);
      if (o.once) {
        process.stdout.write(renderTop(await listPipelines(kc, ns), Date.now(), ns === undefined));
        return;
      }
      const stopped = new AbortController();
      process.once("SIGINT", () => stopped.abort());
      // a failed list shows in the frame and is tried again, backing off to 30 s
      for (let failures = 0; !stopped.signal.aborted; ) {
        let frame: string;
        try {
          frame = renderTop(await listPipelines(kc, ns), Date.now(), ns === undefined);
          failures = 0;
        } catch (err) {
          failures++;
          frame = `${new Date().toISOString().slice(0, 19)}Z  could not list the pipelines (try ${failures}): ${err instanceof Error ? err.message : String(err)}\n`;
        }
        process.stdout.write(process.stdout.isTTY ? `\x1b[H\x1b[2J${frame}` : `${frame}\n`);
        const wait = failures === 0 ? o.interval * 1_000 : Math.min(30_000, o.interval * 1_000 * 2 ** failures);
        await sleep(wait, undefined, { signal: stopped.signal }).catch((err: unknown) => {
          if (!stopped.signal.aborted) throw err;
        });
      }
    });

  cli
    .command("run")
    .summary("one worker of a pipeline against a Kafka cluster, with no Kubernetes")
    .description(
      "Runs one worker of the StreamPipeline in FILE in this process, against the broker at --bootstrap, with its " +
        "state in a local directory: the spec is checked as at apply, its defaults applied, its internal topics " +
        "created as the operator creates them. Its group and internal topics are named under --namespace (local), so " +
        "it never joins a cluster's workers. Logs go to stderr as JSON lines; Ctrl-C drains, commits and stops.",
    )
    .argument("<file>", "a YAML file with the StreamPipeline")
    .requiredOption("--bootstrap <host:port>", "the Kafka broker (no SASL or TLS)")
    .option("--name <name>", "which StreamPipeline of the file, when it holds several")
    .option("-n, --namespace <namespace>", "the namespace its names are made under", "local")
    .option("--state-dir <dir>", "where its state stores go (default: .conveyor/<namespace>/<name>)")
    .option("--id <id>", "the worker's client and transactional id (default: <name>-<hostname>)")
    .option("--metrics-port <port>", "serve /metrics, /healthz and /readyz on 127.0.0.1 at this port", positive("--metrics-port"))
    .action(async (file: string, o: { bootstrap: string; name?: string; namespace: string; stateDir?: string; id?: string; metricsPort?: number }) => {
      const log = jsonLogger({ component: "conveyor-run" }, (l) => process.stderr.write(l));
      const running = await runLocal({ file, log, ...o });
      const c = running.config;
      process.stderr.write(
        `running ${c.pipeline.namespace}/${c.pipeline.name} against ${o.bootstrap} as group ${c.consumerGroup}; Ctrl-C drains and stops it\n`,
      );
      await new Promise<void>((resolve, reject) => {
        const stop = (signal: string) => {
          log.info("draining", { signal });
          const deadline = setTimeout(() => reject(new Error("the worker did not stop within 20 s")), 20_000);
          running.stop().then(() => {
            clearTimeout(deadline);
            log.info("stopped", { stats: running.worker.stats });
            resolve();
          }, reject);
        };
        process.once("SIGINT", () => stop("SIGINT"));
        process.once("SIGTERM", () => stop("SIGTERM"));
      });
      process.exit(0);
    });
  return cli;
}

if (import.meta.main) {
  try {
    await program().parseAsync();
  } catch (err) {
    process.stderr.write(`conveyor: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  }
}

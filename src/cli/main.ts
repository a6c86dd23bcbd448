#!/usr/bin/env node
// The `conveyor` command (also `kubectl conveyor`): what an on-call engineer or a GitOps repository's CI asks of
// a pipeline, in one place.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { Command, InvalidArgumentError, Option } from "commander";
import { defaultOperatorConfig } from "../children.ts";
import type { FieldValidation } from "../crd-check.ts";
import { describePipeline } from "./describe.ts";
import { renderDescription } from "./describe-view.ts";
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
    .action(async (name: string, opts: { namespace?: string; output: "text" | "json" }) => {
      const { kc, namespace } = userKube();
      const d = await describePipeline(kc, opts.namespace ?? namespace, name, { progress });
      process.stdout.write(opts.output === "json" ? `${JSON.stringify(d, null, 2)}\n` : renderDescription(d));
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

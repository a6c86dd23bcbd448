// Generates deploy/install.yaml, the `kubectl apply -f` bundle: the CRD and the chart rendered with its
// default values into the conveyor-system namespace. `npm run gen:bundle` writes it; a test fails on drift.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureHelm } from "../test/env/toolchain.ts";

const root = join(import.meta.dirname, "..");
export const BUNDLE_FILE = join(root, "deploy/install.yaml");
export const BUNDLE_NAMESPACE = "conveyor-system";

export function renderBundle(helm: string): string {
  const res = spawnSync(helm, ["template", "conveyor", join(root, "charts/conveyor"), "--namespace", BUNDLE_NAMESPACE], { encoding: "utf8" });
  if (res.error || res.status !== 0) throw new Error(`helm template failed: ${res.error?.message ?? res.stderr}`);
  const namespace = ["apiVersion: v1", "kind: Namespace", "metadata:", `  name: ${BUNDLE_NAMESPACE}`, ""].join("\n");
  const crd = readFileSync(join(root, "crds/streampipelines.conveyor.dev.yaml"), "utf8");
  return [
    "# Conveyor install bundle: kubectl apply --server-side -f deploy/install.yaml",
    "# Generated from charts/conveyor by `npm run gen:bundle`. Do not edit by hand.",
    "---",
    namespace,
    "---",
    crd.trimEnd(),
    res.stdout.trimEnd(),
    "",
  ].join("\n");
}

if (import.meta.main) {
  writeFileSync(BUNDLE_FILE, renderBundle(await ensureHelm()));
  process.stdout.write(`wrote ${BUNDLE_FILE}\n`);
}

// Generates src/api-types.gen.ts from the CRD, the single source of truth for the StreamPipeline API.
// `npm run gen:types` writes it; scripts/gen-api-types.test.ts fails when the file and the CRD drift.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { load } from "js-yaml";

export const CRD_FILE = join(import.meta.dirname, "../crds/streampipelines.conveyor.dev.yaml");
export const TYPES_FILE = join(import.meta.dirname, "../src/api-types.gen.ts");

interface Schema {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema | boolean;
  enum?: unknown[];
  "x-kubernetes-int-or-string"?: boolean;
  "x-kubernetes-preserve-unknown-fields"?: boolean;
  default?: unknown;
}

/** Object schemas at these paths become named, exported interfaces; the rest are inlined. */
const NAMED: Record<string, string> = {
  spec: "StreamPipelineSpec",
  status: "StreamPipelineStatus",
  "spec.kafka": "KafkaSpec",
  "spec.source": "SourceSpec",
  "spec.steps[]": "StepSpec",
  "spec.steps[].window": "WindowSpec",
  "spec.steps[].aggregate{}": "AggregationSpec",
  "spec.sink": "SinkSpec",
  "spec.sinks[]": "NamedSinkSpec",
  "spec.deadLetter": "DeadLetterSpec",
  "spec.processing": "ProcessingSpec",
  "spec.state": "StateSpec",
  "spec.scaling": "ScalingSpec",
  "spec.template": "PodTemplateOverrides",
  "status.conditions[]": "PipelineCondition",
};

function comment(s: Schema, indent: string): string {
  const parts: string[] = [];
  if (s.description) parts.push(s.description.trim());
  if (s.default !== undefined) parts.push(`Default: ${JSON.stringify(s.default)}.`);
  if (parts.length === 0) return "";
  return `${indent}/** ${parts.join(" ").replaceAll("*/", "*\\/")} */\n`;
}

class Generator {
  private readonly decls: string[] = [];

  typeOf(s: Schema, path: string, indent: string): string {
    const named = NAMED[path];
    if (named) {
      this.decls.push(`${comment(s, "")}export interface ${named} ${this.objectBody(s, path, "")}\n`);
      return named;
    }
    if (s["x-kubernetes-int-or-string"]) return "number | string";
    if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
    switch (s.type) {
      case "string":
        return "string";
      case "integer":
      case "number":
        return "number";
      case "boolean":
        return "boolean";
      case "array":
        return `${this.wrap(this.typeOf(s.items ?? {}, `${path}[]`, indent))}[]`;
      case "object":
        if (s.properties) return this.objectBody(s, path, indent);
        if (s.additionalProperties && typeof s.additionalProperties === "object") {
          return `Record<string, ${this.typeOf(s.additionalProperties, `${path}{}`, indent)}>`;
        }
        return s["x-kubernetes-preserve-unknown-fields"] ? "Record<string, unknown>" : "Record<string, never>";
      default:
        return "unknown";
    }
  }

  private wrap(t: string): string {
    return t.includes("|") ? `(${t})` : t;
  }

  private objectBody(s: Schema, path: string, indent: string): string {
    const inner = `${indent}  `;
    const required = new Set(s.required ?? []);
    let out = "{\n";
    for (const [name, prop] of Object.entries(s.properties ?? {})) {
      out += comment(prop, inner);
      out += `${inner}${name}${required.has(name) ? "" : "?"}: ${this.typeOf(prop, path === "" ? name : `${path}.${name}`, inner)};\n`;
    }
    return `${out}${indent}}`;
  }

  generate(root: Schema): string {
    for (const part of ["spec", "status"]) {
      const s = root.properties?.[part];
      if (!s) throw new Error(`the CRD schema has no ${part}`);
      this.typeOf(s, part, "");
    }
    const defaults: string[] = [];
    collectDefaults(root.properties?.spec ?? {}, "", defaults);
    return [
      "// Generated from crds/streampipelines.conveyor.dev.yaml by `npm run gen:types`. Do not edit by hand.",
      "",
      ...this.decls.reverse(),
      "/** The CRD's defaults for scalar spec fields, by path (`[]` marks a list item), for code that reads a spec the apiserver has not defaulted. */",
      "export const SPEC_DEFAULTS = {",
      ...defaults,
      "} as const;",
      "",
    ].join("\n");
  }
}

function collectDefaults(s: Schema, path: string, out: string[]): void {
  if (s.default !== undefined && (typeof s.default !== "object" || s.default === null)) out.push(`  ${JSON.stringify(path)}: ${JSON.stringify(s.default)},`);
  for (const [name, p] of Object.entries(s.properties ?? {})) collectDefaults(p, path === "" ? name : `${path}.${name}`, out);
  if (s.items) collectDefaults(s.items, `${path}[]`, out);
}

export function generateApiTypes(crdYaml: string): string {
  const crd = load(crdYaml) as { spec: { versions: { name: string; schema: { openAPIV3Schema: Schema } }[] } };
  const version = crd.spec.versions.find((v) => v.name === "v1alpha1");
  if (!version) throw new Error("the CRD has no v1alpha1");
  return new Generator().generate(version.schema.openAPIV3Schema);
}

if (import.meta.main) {
  writeFileSync(TYPES_FILE, generateApiTypes(readFileSync(CRD_FILE, "utf8")));
  process.stdout.write(`wrote ${TYPES_FILE}\n`);
}

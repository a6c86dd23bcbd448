// What the apiserver does with a StreamPipeline before the webhook sees it, offline: prune unknown fields (an
// error under kubectl's strict field validation, a warning under the API's default), apply the schema's defaults,
// drop non-nullable nulls, check the OpenAPI schema, the list types and the CEL rules. `conveyor validate` runs
// it, then the topology compiler the webhook runs, so a GitOps repository's CI gets the apiserver's verdict.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { Environment } from "@marcbachmann/cel-js";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import yaml from "js-yaml";
import { API_VERSION, KIND } from "./api.ts";

export const CRD_FILE = join(import.meta.dirname, "../crds/streampipelines.conveyor.dev.yaml");

/** One problem, at a field path written as the apiserver writes it: spec.steps[1].window.size */
export interface FieldProblem {
  field: string;
  message: string;
}

/** kubectl's default is strict: an unknown field is refused. The API's own default is to warn and drop it. */
export type FieldValidation = "strict" | "warn";

export interface CheckResult {
  errors: FieldProblem[];
  /** the errors in spec alone: the topology can be compiled when there are none */
  specErrors: FieldProblem[];
  warnings: FieldProblem[];
  /** the object as it would be stored: unknown fields and nulls pruned, defaults applied */
  object: Record<string, unknown>;
}

interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  default?: unknown;
  nullable?: boolean;
  "x-kubernetes-int-or-string"?: boolean;
  "x-kubernetes-preserve-unknown-fields"?: boolean;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: string[];
  "x-kubernetes-validations"?: { rule: string; message?: string; messageExpression?: string; fieldPath?: string; reason?: string }[];
  [keyword: string]: unknown;
}

type Segment = string | number;

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A path as the apiserver writes it: properties with dots, list indices and map keys in brackets. */
function render(path: readonly { seg: Segment; key: boolean }[]): string {
  return path.map((p, i) => (p.key ? `[${p.seg}]` : i === 0 ? String(p.seg) : `.${p.seg}`)).join("");
}

/** The schema as plain JSON Schema for Ajv: Kubernetes' extensions become what they mean, or are dropped. */
function toJsonSchema(s: Schema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith("x-kubernetes-") || k === "description" || k === "default" || k === "nullable" || k === "format") continue;
    if (k === "properties") out[k] = Object.fromEntries(Object.entries(v as Record<string, Schema>).map(([p, ps]) => [p, toJsonSchema(ps)]));
    else if (k === "items" || (k === "additionalProperties" && typeof v === "object")) out[k] = toJsonSchema(v as Schema);
    else out[k] = v;
  }
  if (s["x-kubernetes-int-or-string"]) {
    delete out.type;
    out.type = ["integer", "string"];
  }
  if (s.nullable && typeof out.type === "string") out.type = [out.type, "null"];
  // unknown fields were pruned (or refused) before this runs, as the apiserver does
  delete out.additionalProperties;
  if (typeof s.additionalProperties === "object") out.additionalProperties = toJsonSchema(s.additionalProperties);
  return out;
}

function celEnvironment(): Environment {
  // Kubernetes' CEL libraries that our rules use beyond standard CEL: lists' indexOf.
  return new Environment({ homogeneousAggregateLiterals: false })
    .registerVariable("self", "dyn")
    .registerFunction("list.indexOf(dyn): int", (list: unknown[], x: unknown) => BigInt(list.findIndex((e) => isDeepStrictEqual(e, x))));
}

/** A value as CEL sees it: integers are ints (bigint), as the schema types them. */
function toCel(value: unknown, s: Schema | undefined): unknown {
  if (value === null || value === undefined) return value;
  if (typeof value === "number" && (s?.type === "integer" || s?.["x-kubernetes-int-or-string"]) && Number.isInteger(value)) return BigInt(value);
  if (Array.isArray(value)) return value.map((v) => toCel(v, s?.items));
  if (typeof value === "object") {
    const extra = typeof s?.additionalProperties === "object" ? s.additionalProperties : undefined;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toCel(v, s?.properties?.[k] ?? extra)]));
  }
  return value;
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export interface CrdChecker {
  check(object: unknown, fieldValidation?: FieldValidation): CheckResult;
}

/** A checker for the StreamPipeline CRD in `crdYaml` (by default, the one in crds/). */
export function crdChecker(crdYaml: string = readFileSync(CRD_FILE, "utf8")): CrdChecker {
  const crd = yaml.load(crdYaml) as { spec: { versions: { name: string; schema: { openAPIV3Schema: Schema } }[] } };
  const specSchema = crd.spec.versions[0]?.schema.openAPIV3Schema.properties?.spec;
  if (!specSchema) throw new Error("the CRD has no schema for spec");
  const spec: Schema = specSchema;
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  const validateSpec: ValidateFunction = ajv.compile(toJsonSchema(spec));
  const env = celEnvironment();
  const rules = new Map<string, (vars: { self: unknown }) => unknown>();
  const rule = (text: string) => {
    let f = rules.get(text);
    if (!f) {
      f = env.parse(text) as (vars: { self: unknown }) => unknown;
      rules.set(text, f);
    }
    return f;
  };

  function check(input: unknown, fieldValidation: FieldValidation = "strict"): CheckResult {
    const errors: FieldProblem[] = [];
    const warnings: FieldProblem[] = [];
    if (input === null || typeof input !== "object" || Array.isArray(input)) {
      const errors = [{ field: "<root>", message: "a StreamPipeline must be an object" }];
      return { errors, specErrors: errors, warnings, object: {} };
    }
    const object = structuredClone(input) as Record<string, unknown>;
    if (object.apiVersion !== API_VERSION) errors.push({ field: "apiVersion", message: `must be ${API_VERSION}, not ${describe(object.apiVersion)}` });
    if (object.kind !== KIND) errors.push({ field: "kind", message: `must be ${KIND}, not ${describe(object.kind)}` });
    const meta = object.metadata as Record<string, unknown> | undefined;
    if (meta === null || typeof meta !== "object" || Array.isArray(meta)) errors.push({ field: "metadata", message: "Required value" });
    else {
      const name = meta.name;
      if (name === undefined && meta.generateName === undefined)
        errors.push({ field: "metadata.name", message: "Required value: name or generateName is required" });
      else if (name !== undefined && (typeof name !== "string" || name.length > 253 || !DNS_SUBDOMAIN.test(name)))
        errors.push({
          field: "metadata.name",
          message: `Invalid value: ${describe(name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
        });
      const ns = meta.namespace;
      if (ns !== undefined && (typeof ns !== "string" || ns.length > 63 || !DNS_LABEL.test(ns)))
        errors.push({ field: "metadata.namespace", message: `Invalid value: ${describe(ns)}: a lowercase RFC 1123 label` });
    }
    // A status in the body is dropped: the status subresource owns it.
    delete object.status;
    for (const k of Object.keys(object)) {
      if (["apiVersion", "kind", "metadata", "spec"].includes(k)) continue;
      (fieldValidation === "strict" ? errors : warnings).push({ field: k, message: `unknown field "${k}"` });
      delete object[k];
    }
    const value = object.spec;
    if (value === undefined || value === null) {
      const specErrors = [{ field: "spec", message: "Required value" }];
      return { errors: [...errors, ...specErrors], specErrors, warnings, object };
    }
    const path: { seg: Segment; key: boolean }[] = [{ seg: "spec", key: false }];
    const specErrors: FieldProblem[] = [];
    // an unknown field is pruned before the schema's checks, so it does not stop them, even where it is an error
    prune(value, spec, path, (field) => (fieldValidation === "strict" ? errors : warnings).push({ field, message: `unknown field "${field}"` }));
    if (!validateSpec(value)) for (const e of validateSpec.errors ?? []) specErrors.push(ajvProblem(e, value, spec));
    if (specErrors.length === 0) listTypes(value, spec, path, specErrors);
    // CEL rules run on a well-typed spec only: a rule over a mistyped field says nothing more than the schema did.
    if (specErrors.length === 0) celRules(value, spec, path, specErrors);
    return { errors: [...errors, ...specErrors], specErrors, warnings, object };
  }

  /** Drops unknown fields (reporting each), applies defaults, and removes non-nullable nulls without one. */
  function prune(value: unknown, s: Schema, path: { seg: Segment; key: boolean }[], unknown: (field: string) => void): void {
    if (Array.isArray(value)) {
      if (s.items) value.forEach((v, i) => prune(v, s.items as Schema, [...path, { seg: i, key: true }], unknown));
      return;
    }
    if (value === null || typeof value !== "object" || s.type !== "object") return;
    const obj = value as Record<string, unknown>;
    const extra = typeof s.additionalProperties === "object" ? s.additionalProperties : undefined;
    for (const k of Object.keys(obj)) {
      const ps = s.properties?.[k];
      if (!ps && !extra && !s["x-kubernetes-preserve-unknown-fields"] && s.additionalProperties !== true) {
        unknown(render([...path, { seg: k, key: false }]));
        delete obj[k];
      }
    }
    for (const [k, ps] of Object.entries(s.properties ?? {})) {
      if ((obj[k] === undefined || obj[k] === null) && ps.default !== undefined && !(obj[k] === null && ps.nullable)) obj[k] = structuredClone(ps.default);
      else if (obj[k] === null && !ps.nullable) delete obj[k];
      if (obj[k] !== undefined) prune(obj[k], ps, [...path, { seg: k, key: false }], unknown);
    }
    if (extra) for (const k of Object.keys(obj)) if (!s.properties?.[k]) prune(obj[k], extra, [...path, { seg: k, key: false }], unknown);
  }

  function ajvProblem(e: ErrorObject, value: unknown, s: Schema): FieldProblem {
    const segs = e.instancePath
      .split("/")
      .slice(1)
      .map((x) => x.replaceAll("~1", "/").replaceAll("~0", "~"));
    const path: { seg: Segment; key: boolean }[] = [{ seg: "spec", key: false }];
    let v: unknown = value;
    let sc: Schema | undefined = s;
    for (const seg of segs) {
      if (Array.isArray(v)) {
        path.push({ seg: Number(seg), key: true });
        v = v[Number(seg)];
        sc = sc?.items;
      } else {
        const prop = sc?.properties?.[seg];
        // the schema's errors name a map's key as a field (aggregate.top), as kube-openapi does; CEL's in brackets
        path.push({ seg, key: false });
        v = (v as Record<string, unknown> | undefined)?.[seg];
        sc = prop ?? (typeof sc?.additionalProperties === "object" ? sc.additionalProperties : undefined);
      }
    }
    const p = e.params as Record<string, unknown>;
    switch (e.keyword) {
      case "required":
        return { field: render([...path, { seg: String(p.missingProperty), key: false }]), message: "Required value" };
      case "enum":
        return {
          field: render(path),
          message: `Unsupported value: ${describe(v)}: supported values: ${(p.allowedValues as unknown[]).map((x) => describe(x)).join(", ")}`,
        };
      case "type":
        return { field: render(path), message: `Invalid value: ${describe(v)}: must be of type ${[p.type].flat().join(" or ")}` };
      default:
        return { field: render(path), message: `Invalid value: ${describe(v)}: ${e.message ?? e.keyword}` };
    }
  }

  function listTypes(value: unknown, s: Schema, path: { seg: Segment; key: boolean }[], errors: FieldProblem[]): void {
    walk(value, s, path, (v, sc, p) => {
      if (!Array.isArray(v)) return;
      const type = sc["x-kubernetes-list-type"];
      if (type !== "set" && type !== "map") return;
      const keys = sc["x-kubernetes-list-map-keys"] ?? [];
      const seen: unknown[] = [];
      v.forEach((item, i) => {
        const id = type === "map" ? Object.fromEntries(keys.map((k) => [k, (item as Record<string, unknown>)?.[k]])) : item;
        if (seen.some((x) => isDeepStrictEqual(x, id)))
          errors.push({ field: render([...p, { seg: i, key: true }]), message: `Duplicate value: ${describe(id)}` });
        seen.push(id);
      });
    });
  }

  function celRules(value: unknown, s: Schema, path: { seg: Segment; key: boolean }[], errors: FieldProblem[]): void {
    walk(value, s, path, (v, sc, p) => {
      for (const r of sc["x-kubernetes-validations"] ?? []) {
        let ok: unknown;
        try {
          ok = rule(r.rule)({ self: toCel(v, sc) });
        } catch (err) {
          errors.push({
            field: render(p),
            message: `Invalid value: the rule ${r.rule} could not be evaluated: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`,
          });
          continue;
        }
        if (ok === true) continue;
        const field = r.fieldPath ? `${render(p)}${r.fieldPath}` : render(p);
        const kind = Array.isArray(v) ? "array" : typeof v === "object" ? "object" : typeof v;
        errors.push({ field, message: `Invalid value: "${kind}": ${r.message ?? `failed rule: ${r.rule}`}` });
      }
    });
  }

  return { check };
}

/** Visits every value with its schema and path, parents before children. */
function walk(
  value: unknown,
  s: Schema,
  path: { seg: Segment; key: boolean }[],
  visit: (v: unknown, s: Schema, path: { seg: Segment; key: boolean }[]) => void,
): void {
  if (value === undefined || value === null) return;
  visit(value, s, path);
  if (Array.isArray(value)) {
    if (s.items) value.forEach((v, i) => walk(v, s.items as Schema, [...path, { seg: i, key: true }], visit));
    return;
  }
  if (typeof value !== "object") return;
  const extra = typeof s.additionalProperties === "object" ? s.additionalProperties : undefined;
  for (const [k, v] of Object.entries(value)) {
    const ps = s.properties?.[k];
    if (ps) walk(v, ps, [...path, { seg: k, key: false }], visit);
    else if (extra) walk(v, extra, [...path, { seg: k, key: true }], visit);
  }
}

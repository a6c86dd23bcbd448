import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { load } from "js-yaml";
import { CRD_FILE, generateApiTypes, TYPES_FILE } from "./gen-api-types.ts";

// Every key the apiserver accepts in a JSONSchemaProps that this CRD uses. A stray key (a YAML flow mapping
// split by a comma, a typo) would otherwise be found only when the apiserver refuses the CRD.
const SCHEMA_KEYS = new Set([
  "type",
  "description",
  "properties",
  "required",
  "items",
  "additionalProperties",
  "enum",
  "default",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "minProperties",
  "maxProperties",
  "pattern",
  "format",
  "x-kubernetes-int-or-string",
  "x-kubernetes-preserve-unknown-fields",
  "x-kubernetes-list-type",
  "x-kubernetes-list-map-keys",
  "x-kubernetes-validations",
]);

interface Schema {
  [k: string]: unknown;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
}

function walk(s: Schema, path: string, visit: (s: Schema, path: string) => void): void {
  visit(s, path);
  for (const [name, p] of Object.entries(s.properties ?? {})) walk(p, `${path}.${name}`, visit);
  if (s.items) walk(s.items, `${path}[]`, visit);
  if (s.additionalProperties && typeof s.additionalProperties === "object") walk(s.additionalProperties, `${path}{}`, visit);
}

describe("the API types and the CRD", () => {
  const crdText = readFileSync(CRD_FILE, "utf8");

  test("src/api-types.gen.ts is what the CRD generates (run `npm run gen:types` after a CRD change)", () => {
    assert.equal(readFileSync(TYPES_FILE, "utf8"), generateApiTypes(crdText));
  });

  const root = (load(crdText) as { spec: { versions: { schema: { openAPIV3Schema: Schema } }[] } }).spec.versions[0]?.schema.openAPIV3Schema as Schema;

  test("every schema key is one the apiserver knows", () => {
    const bad: string[] = [];
    walk(root, "", (s, path) => {
      for (const k of Object.keys(s)) if (!SCHEMA_KEYS.has(k)) bad.push(`${path}: ${k}`);
    });
    assert.deepEqual(bad, []);
  });

  test("every spec field has a description, so that kubectl explain reads well", () => {
    const missing: string[] = [];
    walk(root.properties?.spec as Schema, "spec", (s, path) => {
      if (!s.description && !path.endsWith("{}") && !path.endsWith("[]")) missing.push(path);
    });
    assert.deepEqual(missing, []);
  });
});

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { crdChecker } from "../crd-check.ts";
import { checkPipeline, defaultValidateOptions, fieldSegments, manifestFiles, validateText } from "./validate.ts";

const EXAMPLES = join(import.meta.dirname, "../../examples");
const MAIN = join(import.meta.dirname, "main.ts");
const checker = crdChecker();

const pipeline = (spec: Record<string, unknown>, name = "p") => ({ apiVersion: "conveyor.dev/v1alpha1", kind: "StreamPipeline", metadata: { name }, spec });
const base = () => ({ kafka: { bootstrapServers: ["kafka:9092"] }, source: { topics: ["in"] }, sink: { topic: "out" } });
const errors = (object: unknown, options = defaultValidateOptions) => checkPipeline(object, options, checker).errors;

describe("conveyor validate", () => {
  test("every example passes", () => {
    const files = manifestFiles(EXAMPLES);
    assert.ok(files.length >= 10, `examples found: ${files.length}`);
    let pipelines = 0;
    for (const file of files) {
      const r = validateText(readFileSync(file, "utf8"), file, defaultValidateOptions, checker);
      assert.deepEqual(r.findings, [], file);
      pipelines += r.pipelines;
    }
    assert.ok(pipelines >= files.length);
  });

  test("field paths split as the apiserver writes them", () => {
    assert.deepEqual(fieldSegments("spec.steps[1].window.size"), ["spec", "steps", 1, "window", "size"]);
    assert.deepEqual(fieldSegments("spec.template.resources.requests[cpu]"), ["spec", "template", "resources", "requests", "cpu"]);
  });

  test("each error comes with its line and field path, from the schema, the CEL rules and the compiler", () => {
    const text = [
      "apiVersion: v1", //                                1
      "kind: ConfigMap",
      "metadata: {name: x}",
      "---",
      "apiVersion: conveyor.dev/v1alpha1", //             5
      "kind: StreamPipeline",
      "metadata:",
      "  name: Bad_Name",
      "spec:",
      "  kafka: {bootstrapServers: ['kafka:9092']}", //   10
      "  source:",
      "    topics: [in]",
      "    format: xml",
      "  steps:",
      "    - name: w", //                                 15
      "      window: {tumbling: 1m}",
      "  sink: {topic: out}",
      "  replicas: many",
      "---",
      "apiVersion: conveyor.dev/v1alpha1", //             20
      "kind: StreamPipeline",
      "metadata: {name: compile}",
      "spec:",
      "  kafka: {bootstrapServers: ['kafka:9092']}",
      "  source: {topics: [in]}", //                      25
      "  steps:",
      "    - name: big",
      "      filter: value.amount + 1",
      "  sink: {topic: out}",
    ].join("\n");
    const r = validateText(text, "f.yaml", defaultValidateOptions, checker);
    assert.equal(r.pipelines, 2);
    assert.equal(r.others, 1);
    const lines = r.findings.map((f) => `${f.line} ${f.field}`);
    assert.deepEqual(lines, ["8 metadata.name", "13 spec.source.format", "18 spec.replicas", "28 spec.steps[0].filter"]);
    assert.match(r.findings[1]?.message ?? "", /^Unsupported value: "xml": supported values: /);
    assert.match(r.findings[3]?.message ?? "", /a filter must give a bool, but this expression gives int/);
  });

  test("a CEL rule of the CRD refuses what the schema alone lets through", () => {
    const spec = { ...base(), steps: [{ name: "w", window: { tumbling: "1m" } }] };
    assert.deepEqual(errors(pipeline(spec)), [{ field: "spec.steps[0]", message: 'Invalid value: "object": a window step has an aggregate' }]);
    const scaling = { ...base(), scaling: { minReplicas: 5, maxReplicas: 2 } };
    assert.equal(errors(pipeline(scaling))[0]?.field, "spec.scaling.minReplicas");
    // a list rule that calls Kubernetes' lists.indexOf: an aggregate needs a keyBy before it
    const unkeyed = { ...base(), steps: [{ name: "a", aggregate: { n: { count: {} } } }] };
    assert.equal(errors(pipeline(unkeyed))[0]?.field, "spec.steps");
    const keyed = {
      ...base(),
      steps: [
        { name: "k", keyBy: "value.user" },
        { name: "a", aggregate: { n: { count: {} } } },
      ],
    };
    assert.deepEqual(errors(pipeline(keyed)), []);
  });

  test("steps are a list keyed by name: a duplicate is refused", () => {
    const spec = {
      ...base(),
      steps: [
        { name: "f", filter: "true" },
        { name: "f", filter: "false" },
      ],
    };
    assert.deepEqual(errors(pipeline(spec)), [{ field: "spec.steps[1]", message: 'Duplicate value: {"name":"f"}' }]);
  });

  test("an unknown field is an error as kubectl's strict validation makes it, a warning under the API's default", () => {
    const p = pipeline({ ...base(), bogus: 1 });
    assert.deepEqual(errors(p), [{ field: "spec.bogus", message: 'unknown field "spec.bogus"' }]);
    const warn = checkPipeline(p, { ...defaultValidateOptions, fieldValidation: "warn" }, checker);
    assert.deepEqual(warn, { errors: [], warnings: [{ field: "spec.bogus", message: 'unknown field "spec.bogus"' }] });
  });

  test("a null is dropped and defaulted as the apiserver does, not refused", () => {
    assert.deepEqual(errors(pipeline({ ...base(), replicas: null, processing: { guarantee: null } })), []);
    assert.ok(errors(pipeline({ ...base(), source: { topics: [null] } })).some((e) => e.field === "spec.source.topics[0]"));
    const { object } = checker.check(pipeline({ ...base(), processing: { guarantee: null } }));
    assert.equal((object.spec as { processing: { guarantee: string } }).processing.guarantee, "atLeastOnce");
  });

  test("the image policy is the operator's: refused by default, allowed under an allowed prefix", () => {
    const p = pipeline({ ...base(), template: { image: "registry.example/team/runtime:1" } });
    assert.equal(errors(p)[0]?.field, "spec.template.image");
    assert.deepEqual(errors(p, { ...defaultValidateOptions, config: { ...defaultValidateOptions.config, allowedImages: ["registry.example/team/"] } }), []);
  });

  test("a YAML error has its line; a List's items are each checked", () => {
    const broken = validateText(
      "apiVersion: conveyor.dev/v1alpha1\nkind: StreamPipeline\nkind: Other\nmetadata: {name: x}\n",
      "b.yaml",
      defaultValidateOptions,
      checker,
    );
    assert.equal(broken.findings[0]?.field, "<yaml>");
    assert.equal(broken.findings[0]?.line, 3);
    const list = { apiVersion: "v1", kind: "List", items: [pipeline(base(), "a"), pipeline({ ...base(), replicas: -1 }, "b")] };
    const r = validateText(JSON.stringify(list, null, 1), "l.json", defaultValidateOptions, checker);
    assert.equal(r.pipelines, 2);
    assert.deepEqual(
      r.findings.map((f) => f.field),
      ["spec.replicas"],
    );
  });

  test("the command reads stdin and directories, prints file:line: field: message, and exits 1 on an error", () => {
    const dir = mkdtempSync(join(tmpdir(), "conveyor-validate-"));
    try {
      writeFileSync(join(dir, "good.yaml"), JSON.stringify(pipeline(base(), "good")));
      writeFileSync(join(dir, "notes.txt"), "not a manifest");
      const good = spawnSync(process.execPath, [MAIN, "validate", dir], { encoding: "utf8" });
      assert.equal(good.status, 0, good.stderr);
      assert.equal(good.stdout, "");
      assert.match(good.stderr, /^1 StreamPipeline in 1 file: 0 errors, 0 warnings\n$/);
      const bad = spawnSync(process.execPath, [MAIN, "validate", "-"], {
        encoding: "utf8",
        input: `${JSON.stringify(pipeline(base(), "ok"))}\n---\n${JSON.stringify(pipeline({ ...base(), replicas: "x" }, "bad"))}\n`,
      });
      assert.equal(bad.status, 1);
      assert.equal(bad.stdout, '<stdin>:3: spec.replicas: Invalid value: "x": must be of type integer\n');
      const missing = spawnSync(process.execPath, [MAIN, "validate", join(dir, "nope.yaml")], { encoding: "utf8" });
      assert.equal(missing.status, 2);
      assert.match(missing.stderr, /ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

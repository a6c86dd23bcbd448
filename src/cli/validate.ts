// `conveyor validate`: the apply-time checks, offline, over YAML files, directories or stdin (multi-document, or
// Kustomize's output), with each error as `file:line: field path: message`.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { isMap, isScalar, isSeq, LineCounter, type Node, parseAllDocuments } from "yaml";
import type { StreamPipelineSpec } from "../api.ts";
import { defaultOperatorConfig, type OperatorConfig } from "../children.ts";
import { type CrdChecker, crdChecker, type FieldValidation } from "../crd-check.ts";
import { describeCompileError } from "../topology/compile.ts";
import { validatePipeline } from "../validate.ts";

export interface ValidateOptions {
  fieldValidation: FieldValidation;
  /** the namespace of a pipeline whose metadata names none, as kubectl's context would give it */
  namespace: string;
  config: OperatorConfig;
}

export const defaultValidateOptions: ValidateOptions = { fieldValidation: "strict", namespace: "default", config: defaultOperatorConfig };

export interface Finding {
  file: string;
  line: number;
  severity: "error" | "warning";
  field: string;
  message: string;
}

export interface Report {
  findings: Finding[];
  pipelines: number;
  /** documents of other kinds, which an apply would send elsewhere */
  others: number;
}

export function formatFinding(f: Finding): string {
  return `${f.file}:${f.line}: ${f.severity === "warning" ? "warning: " : ""}${f.field}: ${f.message}`;
}

/** "spec.steps[0].window.size" -> ["spec", "steps", 0, "window", "size"]; map keys in brackets stay strings. */
export function fieldSegments(field: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const m of field.matchAll(/([^.[\]]+)|\[([^\]]*)\]/g)) {
    if (m[1] !== undefined) out.push(m[1]);
    else out.push(/^\d+$/.test(m[2] ?? "") ? Number(m[2]) : (m[2] ?? ""));
  }
  return out;
}

/** The offset of the deepest node on the field's path that the document has: the field, or its nearest parent. */
function offsetOf(root: Node | null, segments: (string | number)[]): number {
  let node: unknown = root;
  let offset = (root?.range?.[0] as number | undefined) ?? 0;
  for (const seg of segments) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) break;
      offset = (isScalar(pair.key) ? pair.key.range?.[0] : undefined) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === "number" && seg < node.items.length) {
      node = node.items[seg];
      offset = (node as Node).range?.[0] ?? offset;
    } else break;
  }
  return offset;
}

/** Checks every StreamPipeline in one file's text. */
export function validateText(text: string, file: string, options: ValidateOptions = defaultValidateOptions, checker: CrdChecker = crdChecker()): Report {
  const lines = new LineCounter();
  const report: Report = { findings: [], pipelines: 0, others: 0 };
  const lineAt = (offset: number) => lines.linePos(offset).line;
  for (const doc of parseAllDocuments(text, { lineCounter: lines, uniqueKeys: true })) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors)
        report.findings.push({ file, line: lineAt(e.pos[0]), severity: "error", field: "<yaml>", message: e.message.split("\n")[0] ?? e.message });
      continue;
    }
    const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
    if (value === null || value === undefined) continue;
    const items: { object: unknown; prefix: (string | number)[] }[] =
      isObject(value) && value.kind === "List" && Array.isArray(value.items)
        ? value.items.map((object, i) => ({ object, prefix: ["items", i] }))
        : [{ object: value, prefix: [] }];
    for (const { object, prefix } of items) {
      if (!isObject(object) || !(object.kind === "StreamPipeline" || String(object.apiVersion ?? "").startsWith("conveyor.dev/"))) {
        report.others++;
        continue;
      }
      report.pipelines++;
      const at = (field: string) => lineAt(offsetOf(doc.contents, [...prefix, ...(field === "<root>" ? [] : fieldSegments(field))]));
      const problems = checkPipeline(object, options, checker);
      for (const p of problems.errors) report.findings.push({ file, line: at(p.field), severity: "error", ...p });
      for (const p of problems.warnings) report.findings.push({ file, line: at(p.field), severity: "warning", ...p });
    }
  }
  report.findings.sort((a, b) => a.line - b.line);
  return report;
}

/** The apiserver's checks, then the webhook's, which the apiserver only calls on an object its schema accepts. */
export function checkPipeline(
  object: unknown,
  options: ValidateOptions = defaultValidateOptions,
  checker: CrdChecker = crdChecker(),
): { errors: { field: string; message: string }[]; warnings: { field: string; message: string }[] } {
  const checked = checker.check(object, options.fieldValidation);
  // The apiserver calls the webhook only when the schema passes; a bad name does not stop the compile here, so
  // that one run shows everything there is to fix.
  if (checked.specErrors.length > 0) return checked;
  const meta = (checked.object.metadata ?? {}) as { name?: unknown; generateName?: unknown; namespace?: unknown };
  const name = typeof meta.name === "string" ? meta.name : typeof meta.generateName === "string" ? meta.generateName : "";
  const namespace = typeof meta.namespace === "string" ? meta.namespace : options.namespace;
  const compiled = validatePipeline(checked.object.spec as StreamPipelineSpec, { namespace, name }, options.config);
  const compileErrors = compiled.ok ? [] : compiled.errors.map((e) => ({ field: e.field, message: describeCompileError(e) }));
  return { errors: [...checked.errors, ...compileErrors], warnings: checked.warnings };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === "object" && !Array.isArray(x);
}

/** The YAML and JSON files under `path`, in a stable order; `path` itself when it is a file. */
export function manifestFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path, { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((e) => {
      const p = join(path, e.name);
      if (e.isDirectory()) return manifestFiles(p);
      return /\.(ya?ml|json)$/.test(e.name) ? [p] : [];
    });
}

/** Validates files, directories, or "-" (stdin, given as `stdin`), and prints the findings. Returns the exit status. */
export function runValidate(
  paths: string[],
  options: ValidateOptions,
  io: { stdin: () => string; out: (line: string) => void; err: (line: string) => void },
): number {
  const checker = crdChecker();
  const total: Report = { findings: [], pipelines: 0, others: 0 };
  let files = 0;
  for (const path of paths) {
    const sources = path === "-" ? [{ file: "<stdin>", text: io.stdin() }] : manifestFiles(path).map((file) => ({ file, text: readFileSync(file, "utf8") }));
    for (const { file, text } of sources) {
      files++;
      const r = validateText(text, file, options, checker);
      total.findings.push(...r.findings);
      total.pipelines += r.pipelines;
      total.others += r.others;
    }
  }
  for (const f of total.findings) io.out(formatFinding(f));
  const errors = total.findings.filter((f) => f.severity === "error").length;
  const warnings = total.findings.length - errors;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  io.err(
    `${plural(total.pipelines, "StreamPipeline")} in ${plural(files, "file")}: ${plural(errors, "error")}, ${plural(warnings, "warning")}` +
      (total.others > 0 ? ` (${plural(total.others, "other document")} not checked)` : ""),
  );
  return errors > 0 ? 1 : 0;
}

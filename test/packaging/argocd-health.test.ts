// Runs the Argo CD health check (argocd/.../health.lua) on Lua 5.1, as Argo CD does, against the cases of
// its health_test.yaml (Argo's own test format).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { load } from "js-yaml";
import { repoRoot } from "../env/toolchain.ts";

const dir = join(repoRoot, "argocd/conveyor.dev/StreamPipeline");

/** A JSON-like value as a Lua table constructor. */
function luaLiteral(v: unknown): string {
  if (v === null || v === undefined) return "nil";
  if (typeof v === "boolean" || typeof v === "number") return String(v);
  if (typeof v === "string") return `"${v.replace(/[\\"\n\r]/g, (c) => ({ "\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r" })[c] as string)}"`;
  if (v instanceof Date) return luaLiteral(v.toISOString());
  if (Array.isArray(v)) return `{${v.map(luaLiteral).join(", ")}}`;
  return `{${Object.entries(v as Record<string, unknown>)
    .filter(([, x]) => x !== null && x !== undefined)
    .map(([k, x]) => `[${luaLiteral(k)}] = ${luaLiteral(x)}`)
    .join(", ")}}`;
}

function runHealth(obj: unknown): { status: string; message: string } {
  const script = `obj = ${luaLiteral(obj)}\nlocal hs = assert(loadfile(${luaLiteral(join(dir, "health.lua"))}))()\nio.write(hs.status, "\\n", hs.message or "")`;
  const res = spawnSync("lua5.1", ["-e", script], { encoding: "utf8" });
  if (res.error) throw new Error(`lua5.1 could not run (apt-get install lua5.1): ${res.error.message}`);
  assert.equal(res.status, 0, res.stderr);
  const [status = "", ...rest] = res.stdout.split("\n");
  return { status, message: rest.join("\n") };
}

describe("Argo CD health check for StreamPipeline", () => {
  const spec = load(readFileSync(join(dir, "health_test.yaml"), "utf8")) as {
    tests: { healthStatus: { status: string; message: string }; inputPath: string }[];
  };
  assert.ok(spec.tests.length >= 6);
  for (const t of spec.tests) {
    test(`${t.inputPath} is ${t.healthStatus.status}`, () => {
      const obj = load(readFileSync(join(dir, t.inputPath), "utf8"));
      assert.deepEqual(runHealth(obj), t.healthStatus);
    });
  }

  test("Lua literals escape what would break out of a string", () => {
    assert.equal(luaLiteral({ a: ['x"\\\n'] }), '{["a"] = {"x\\"\\\\\\n"}}');
  });
});

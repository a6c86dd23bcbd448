// There is no container engine on these machines, so this checks what can be checked without one: each path
// the Dockerfile copies exists, both targets are Node 24 and non-root, their entrypoints are the npm scripts'
// commands, and everything the images run imports only production dependencies.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { join } from "node:path";
import { describe, test } from "node:test";
import { OPERATOR_NODE_FLAGS } from "../../src/node-flags.ts";
import { repoRoot } from "../env/toolchain.ts";

interface Stage {
  name: string;
  from: string;
  lines: string[];
}

function stages(text: string): Stage[] {
  const out: Stage[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const from = line.match(/^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i);
    if (from) out.push({ from: from[1] as string, name: from[2] ?? "", lines: [] });
    else out.at(-1)?.lines.push(line);
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts") && !f.endsWith(".test.ts"))
    .map((f) => join(dir, f));
}

describe("the Dockerfile", () => {
  test("the operator runs with the Node flags the suites, the bed and the demo start it with", () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts.operator, ["node", ...OPERATOR_NODE_FLAGS, "src/main.ts"].join(" "));
  });

  const all = stages(readFileSync(join(repoRoot, "Dockerfile"), "utf8"));
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { scripts: Record<string, string>; dependencies: Record<string, string> };

  test("every stage builds on Node 24", () => {
    for (const s of all) if (!all.some((o) => o.name === s.from)) assert.match(s.from, /^node:24(-|$)/, `${s.name} starts from ${s.from}`);
  });

  test("every path it copies from the build context exists", () => {
    for (const s of all)
      for (const l of s.lines.filter((x) => /^COPY\s/i.test(x) && !/--from=/i.test(x))) {
        const parts = l.split(/\s+/).slice(1, -1);
        for (const p of parts) assert.ok(existsSync(join(repoRoot, p)), `COPY ${p} (stage ${s.name}) does not exist`);
      }
  });

  for (const [target, script] of [
    ["operator", "operator"],
    ["runtime", "runtime"],
  ] as const) {
    test(`the ${target} target runs what \`npm run ${script}\` runs, as a non-root user`, () => {
      const stage = all.find((s) => s.name === target);
      assert.ok(stage, `no ${target} stage`);
      const chain: Stage[] = [];
      for (let s: Stage | undefined = stage; s; s = all.find((o) => o.name === s?.from)) chain.push(s);
      const lines = chain.flatMap((s) => s.lines);
      const entrypoint = lines.find((l) => l.startsWith("ENTRYPOINT"));
      assert.ok(entrypoint, `${target} has no ENTRYPOINT`);
      const argv = JSON.parse(entrypoint.replace(/^ENTRYPOINT\s+/, "")) as string[];
      assert.deepEqual(argv, pkg.scripts[script]?.split(" "), "exec form, the npm script's command: no shell needed");
      const user = lines.find((l) => l.startsWith("USER"));
      assert.match(user ?? "", /^USER\s+[1-9]\d*(:[1-9]\d*)?$/, "a numeric non-root user, so that runAsNonRoot can verify it");
      const copied = lines.filter((l) => l.startsWith("COPY") && !l.includes("--from=")).map((l) => l.split(/\s+/)[1]);
      const entryFile = argv.at(-1) ?? "";
      assert.ok(
        copied.some((c) => entryFile.startsWith(`${c}/`)),
        `${entryFile} is not copied into the ${target} image`,
      );
    });
  }

  test("what the images run imports only production dependencies", () => {
    const allowed = new Set([...Object.keys(pkg.dependencies), ...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);
    for (const file of [...sourceFiles("src"), ...sourceFiles("runtime")]) {
      const text = readFileSync(join(repoRoot, file), "utf8");
      for (const m of text.matchAll(/^import\s+(?!type\b)[^;]*?from\s+"([^".][^"]*)"/gm)) {
        const spec = m[1] as string;
        const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : (spec.split("/")[0] as string);
        assert.ok(allowed.has(name) || allowed.has(spec), `${file} imports ${spec}, which npm ci --omit=dev does not install`);
      }
      for (const m of text.matchAll(/from\s+"(\.\.\/[^"]+)"/g)) {
        assert.ok(!(m[1] as string).includes("test/"), `${file} imports test code: ${m[1]}`);
      }
    }
  });
});

// There is no container engine on these machines, so the Dockerfile is checked against what can be known without
// one: it describes the images `npm run images` builds (scripts/images/spec.ts), piece by piece: the Debian
// release, packages and what is removed from them; the user; Node's version; the production dependencies and
// what is pruned from them; the files; the environment; the entrypoints; the labels. Each path it copies exists,
// and what the images run imports only production dependencies.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { join } from "node:path";
import { describe, test } from "node:test";
import { load } from "js-yaml";
import { appFiles } from "../../scripts/images/build.ts";
import {
  DEBIAN,
  DEPS_PRUNE,
  ENV,
  EXCLUDE,
  GROUP,
  IMAGES,
  LABELS,
  NODE_BINARY,
  PASSWD,
  REGISTRY,
  STATUS_HOOK,
  USER,
  WORKDIR,
} from "../../scripts/images/spec.ts";
import { defaultOperatorConfig } from "../../src/children.ts";
import { OPERATOR_NODE_FLAGS } from "../../src/node-flags.ts";
import { repoRoot } from "../env/toolchain.ts";

interface Stage {
  name: string;
  from: string;
  /** instructions, continuation lines joined */
  lines: string[];
}

function stages(text: string): Stage[] {
  const out: Stage[] = [];
  const joined = text.replace(/\\\n\s*/g, " ");
  for (const raw of joined.split("\n")) {
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

/** The double-quoted strings of a shell line, unquoted. */
function quoted(line: string): string[] {
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1] as string);
}

/** LABEL k="v" k2="v2" ... of a list of lines. */
function labels(lines: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of lines.filter((x) => x.startsWith("LABEL "))) for (const m of l.matchAll(/(\S+)="([^"]*)"/g)) out[m[1] as string] = m[2] as string;
  return out;
}

describe("the Dockerfile describes the images npm run images builds", () => {
  const all = stages(readFileSync(join(repoRoot, "Dockerfile"), "utf8"));
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
    scripts: Record<string, string>;
    dependencies: Record<string, string>;
    devDependencies: Record<string, string>;
  };
  const stage = (name: string): Stage => {
    const s = all.find((x) => x.name === name);
    assert.ok(s, `the Dockerfile has no stage ${name}`);
    return s;
  };
  /** the stage's lines, its parents' first */
  const chain = (name: string): string[] => {
    const out: Stage[] = [];
    for (let s: Stage | undefined = stage(name); s; s = all.find((o) => o.name === s?.from)) out.unshift(s);
    return out.flatMap((s) => s.lines);
  };

  test("the operator runs with the Node flags the suites, the bed and the demo start it with", () => {
    assert.equal(pkg.scripts.operator, ["node", ...OPERATOR_NODE_FLAGS, "src/main.ts"].join(" "));
  });

  test("the same Debian release, packages, package records and removals", () => {
    const root = stage("root");
    assert.equal(root.from, `debian:${DEBIAN.suite}-slim`);
    const mm = root.lines.find((l) => l.includes("mmdebstrap --mode"));
    assert.ok(mm, "the root stage runs mmdebstrap");
    assert.match(mm, /--variant=extract/);
    assert.ok(mm.includes(`--include=${DEBIAN.packages.join(",")} `), `the packages are ${DEBIAN.packages.join(",")}`);
    assert.ok(mm.includes(`--extract-hook='${STATUS_HOOK}'`), "the same dpkg records (status.d) as npm run images writes");
    assert.ok(mm.includes(` ${DEBIAN.suite} /rootfs `), `the suite is ${DEBIAN.suite}`);
    assert.deepEqual(
      quoted(mm).filter((q) => q.startsWith("deb ")),
      [...DEBIAN.sources],
    );
    const rm = root.lines.find((l) => l.includes("rm -rf dev"));
    assert.ok(rm, "the root stage removes what the image does not need");
    const removed = (rm.match(/rm -rf ([^&]+)/)?.[1] ?? "").trim().split(/\s+/);
    assert.deepEqual(
      removed,
      DEBIAN.remove.filter((p) => p !== "usr/share/doc"),
    );
    assert.match(rm, /find usr\/share\/doc -mindepth 2 -not -name copyright -delete/, "usr/share/doc keeps the copyright files only");
    assert.match(rm, /find var\/lib\/dpkg .*-not -name status\.d/);
    const printfs = [...rm.matchAll(/printf '([^']*)' > (\S+)/g)].map((m) => [m[2], (m[1] as string).replaceAll("\\n", "\n")]);
    assert.deepEqual(Object.fromEntries(printfs), { "etc/passwd": PASSWD, "etc/group": GROUP });
    assert.match(rm, new RegExp(`chown ${USER.uid}:${USER.gid} ${USER.home.slice(1)}`));
  });

  test("Node of the version package.json pins, on the same Debian release", () => {
    const deps = stage("deps");
    assert.equal(deps.from, `node:${pkg.devDependencies.node}-${DEBIAN.suite}-slim`);
    assert.ok(chain("base").includes(`COPY --from=deps /usr/local/bin/node ${NODE_BINARY}`));
  });

  test("the same production dependencies, pruned the same way", () => {
    const deps = stage("deps");
    const ci = deps.lines.find((l) => l.startsWith("RUN npm ci"));
    assert.ok(ci);
    assert.match(ci, /npm ci --omit=dev --ignore-scripts /);
    assert.deepEqual((ci.match(/rm -rf (.+)$/)?.[1] ?? "").trim().split(/\s+/), [...DEPS_PRUNE]);
    assert.ok(chain("base").includes(`COPY --from=deps ${WORKDIR}/node_modules ${WORKDIR}/node_modules`));
  });

  test("the build context leaves out what the images leave out", () => {
    const ignore = readFileSync(join(repoRoot, ".dockerignore"), "utf8").split("\n");
    assert.ok(ignore.includes("**/*.test.ts"));
    assert.ok(EXCLUDE.test("src/x.test.ts") && !EXCLUDE.test("src/x.ts"));
  });

  for (const spec of IMAGES) {
    test(`the ${spec.target} target: user, working directory, environment, files, entrypoint and labels`, () => {
      const lines = chain(spec.target);
      assert.equal(all.find((s) => s.name === "base")?.from, "scratch", "nothing under the root but what it is given");
      assert.deepEqual(
        lines.filter((l) => l.startsWith("USER")),
        [`USER ${USER.uid}:${USER.gid}`],
      );
      assert.deepEqual(
        lines.filter((l) => l.startsWith("WORKDIR")),
        [`WORKDIR ${WORKDIR}`],
      );
      assert.deepEqual(
        lines.filter((l) => l.startsWith("ENV")),
        [`ENV ${ENV.join(" ")}`],
      );
      const copied = lines
        .filter((l) => l.startsWith("COPY") && !l.includes("--from="))
        .flatMap((l) => l.split(/\s+/).slice(1, -1))
        .filter((p) => p !== "./");
      assert.deepEqual(copied, spec.files, "the checkout's paths, in the spec's order");
      for (const p of copied) assert.ok(existsSync(join(repoRoot, p)), `COPY ${p} does not exist`);
      assert.ok(appFiles(spec).every((f) => !EXCLUDE.test(f)));
      const entrypoint = lines.find((l) => l.startsWith("ENTRYPOINT"));
      assert.ok(entrypoint, `${spec.target} has no ENTRYPOINT`);
      const argv = JSON.parse(entrypoint.replace(/^ENTRYPOINT\s+/, "")) as string[];
      assert.deepEqual(argv, spec.entrypoint, "exec form: no shell needed");
      assert.deepEqual(argv, pkg.scripts[spec.target]?.split(" "), "the npm script's command");
      assert.deepEqual(labels(lines), {
        ...LABELS,
        "org.opencontainers.image.base.name": `debian:${DEBIAN.suite}`,
        "org.opencontainers.image.title": spec.title,
        "org.opencontainers.image.description": spec.description,
      });
    });
  }

  test("the chart's default images and the operator's default runtime image are the images' names", () => {
    const values = load(readFileSync(join(repoRoot, "charts/conveyor/values.yaml"), "utf8")) as { image: Record<string, { repository: string }> };
    const chart = load(readFileSync(join(repoRoot, "charts/conveyor/Chart.yaml"), "utf8")) as { appVersion: string };
    for (const spec of IMAGES) assert.equal(values.image[spec.target]?.repository, spec.name);
    assert.equal(chart.appVersion, (pkg as unknown as { version: string }).version);
    assert.equal(defaultOperatorConfig.runtimeImage, `${IMAGES.find((i) => i.target === "runtime")?.name}:${chart.appVersion}`);
    assert.ok(IMAGES.every((i) => i.name.startsWith(`${REGISTRY}/`)));
  });

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

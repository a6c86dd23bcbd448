// The images `npm run images` builds: two builds from two clean clones, each with a cache of its own, give the
// same digests and the same archives; and what is in them is what the spec says and nothing more: one program
// (Node), no shell, package manager or compiler, the user 65532, the entrypoints, the labels, a stated size.
//
// The suites run in the bed's network namespace, where no registry is reachable, so these builds are offline:
// the Debian root is the one the run's own build fetched (copied into each clean cache), the dependencies come
// from npm's cache, Node from the checkout's node package. Everything above the Debian root is built twice cold.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { BuildResult } from "../../scripts/images/build.ts";
import { DEBIAN, IMAGES, NODE_BINARY, USER, WORKDIR } from "../../scripts/images/spec.ts";
import { cacheRoot, repoRoot } from "../env/toolchain.ts";

/** The bounds this project states for its images (README, "Images"). */
const MAX_COMPRESSED_MIB = 80;
const MAX_UNPACKED_MIB = 260;

function sh(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const res = spawnSync(cmd, args, { ...opts, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (res.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${res.status}: ${res.stderr}${res.error ?? ""}`);
  return res.stdout;
}

/**
 * The Debian roots that builds (the bed's, or `npm run images`) left in the shared cache: an offline build takes
 * the newest one made from its own description (packages, user, hook), which another checkout's may not share.
 */
function cachedBases(): string[] {
  const dir = join(cacheRoot(), "images");
  const bases = existsSync(dir) ? readdirSync(dir).filter((d) => /^base-[0-9a-f]{16}$/.test(d)) : [];
  if (bases.length === 0) throw new Error(`no Debian root in ${dir}: \`npm test\` builds one before the bed (or run \`npm run images\`)`);
  return bases.map((d) => join(dir, d));
}

interface Build {
  result: BuildResult;
  out: string;
  seconds: number;
}

/** A clean clone of HEAD, built with a cache of its own that holds only the Debian root. */
function cleanBuild(work: string, name: string): Build {
  const clone = join(work, `clone-${name}`);
  sh("git", ["clone", "--quiet", "--no-hardlinks", repoRoot, clone]);
  symlinkSync(join(repoRoot, "node_modules"), join(clone, "node_modules"));
  const cache = join(work, `cache-${name}`);
  mkdirSync(join(cache, "images"), { recursive: true });
  for (const base of cachedBases()) cpSync(base, join(cache, "images", base.split("/").at(-1) as string), { recursive: true, preserveTimestamps: true });
  const out = join(work, `out-${name}`);
  const t0 = Date.now();
  sh(process.execPath, ["scripts/images.ts", "--offline", "--out", out], { cwd: clone, env: { ...process.env, CONVEYOR_CACHE: cache } });
  const result = JSON.parse(readFileSync(join(out, "images.json"), "utf8")) as BuildResult;
  return { result, out, seconds: (Date.now() - t0) / 1000 };
}

function walk(root: string, rel = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, rel))) {
    const p = rel ? `${rel}/${e}` : e;
    const st = lstatSync(join(root, p));
    out.push(p);
    if (st.isDirectory()) out.push(...walk(root, p));
  }
  return out;
}

describe("the images: reproducible, and holding only what they should", () => {
  let work: string;
  let a: Build;
  let b: Build;
  const head = sh("git", ["-C", repoRoot, "rev-parse", "HEAD"]).trim();

  before(() => {
    work = mkdtempSync(join(tmpdir(), "conveyor-images-"));
    a = cleanBuild(work, "a");
    b = cleanBuild(work, "b");
    process.stdout.write(`# two cold builds from clean clones: ${a.seconds.toFixed(1)} s and ${b.seconds.toFixed(1)} s\n`);
  });
  after(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test("two builds from two clean clones give the same digests and the same archives", () => {
    assert.equal(a.result.images.length, IMAGES.length);
    for (const [i, img] of a.result.images.entries()) {
      const other = b.result.images[i];
      assert.equal(img.digest, other?.digest, `${img.ref}: the manifests differ`);
      assert.equal(img.configDigest, other?.configDigest);
      assert.match(img.digest, /^sha256:[0-9a-f]{64}$/);
      const sum = (f: string) => sh("sha256sum", [f]).split(" ")[0];
      assert.equal(sum(img.archive as string), sum(other?.archive as string), `${img.ref}: the docker archives differ`);
      process.stdout.write(`# ${img.ref} ${img.digest}\n`);
    }
    assert.ok(
      a.result.layers.slice(1, 3).every((l) => !l.cached),
      "Node's layer and the dependencies' were built, not taken from a cache",
    );
  });

  test("the archives are what docker load takes: the tag, and the image's config as its ID", () => {
    for (const img of a.result.images) {
      const manifest = JSON.parse(sh("tar", ["-xOf", img.archive as string, "manifest.json"])) as { Config: string; RepoTags: string[]; Layers: string[] }[];
      assert.equal(manifest.length, 1);
      assert.deepEqual(manifest[0]?.RepoTags, [img.ref], "the tag docker load gives it");
      assert.equal(manifest[0]?.Config.replace(/\.json$/, ""), img.configDigest.replace("sha256:", ""), "docker load's image ID is the config's digest");
      assert.equal(manifest[0]?.Layers.length, 4);
      const inspected = JSON.parse(sh("skopeo", ["inspect", "--config", `docker-archive:${img.archive}`])) as { config: { User: string } };
      assert.equal(inspected.config.User, `${USER.uid}:${USER.gid}`);
    }
  });

  for (const spec of IMAGES) {
    test(`${spec.target}: the config runs the entrypoint as ${USER.uid} in ${WORKDIR}, labelled with the commit`, () => {
      const img = a.result.images.find((i) => i.target === spec.target);
      assert.ok(img);
      const cfg = JSON.parse(readFileSync(join(a.result.layout, "blobs", ...img.configDigest.split(":")), "utf8")) as {
        created: string;
        architecture: string;
        os: string;
        config: { User: string; Entrypoint: string[]; Cmd?: string[]; WorkingDir: string; Labels: Record<string, string> };
      };
      assert.equal(cfg.config.User, `${USER.uid}:${USER.gid}`);
      assert.deepEqual(cfg.config.Entrypoint, spec.entrypoint);
      assert.equal(cfg.config.Cmd, undefined);
      assert.equal(cfg.config.WorkingDir, WORKDIR);
      assert.equal(`${cfg.os}/${cfg.architecture}`, "linux/amd64");
      assert.equal(cfg.config.Labels["org.opencontainers.image.revision"], head);
      assert.equal(cfg.config.Labels["org.opencontainers.image.title"], spec.title);
      const commitTime = Number(sh("git", ["-C", repoRoot, "log", "-1", "--format=%ct"]).trim());
      assert.equal(Date.parse(cfg.created), commitTime * 1000, "created is the commit's time, not the build's");
      const mib = (n: number) => n / 1024 / 1024;
      process.stdout.write(`# ${img.ref}: ${mib(img.compressedBytes).toFixed(1)} MiB compressed, ${mib(img.unpackedBytes).toFixed(1)} MiB unpacked\n`);
      assert.ok(
        mib(img.compressedBytes) < MAX_COMPRESSED_MIB,
        `${img.ref} is ${mib(img.compressedBytes).toFixed(1)} MiB compressed, over ${MAX_COMPRESSED_MIB}`,
      );
      assert.ok(mib(img.unpackedBytes) < MAX_UNPACKED_MIB, `${img.ref} is ${mib(img.unpackedBytes).toFixed(1)} MiB unpacked, over ${MAX_UNPACKED_MIB}`);
    });
  }

  test("the runtime's root: Node is its one program; no shell, package manager or compiler; the Debian packages recorded", () => {
    const bundle = join(work, "unpacked");
    sh("umoci", ["unpack", "--image", `${a.result.layout}:runtime`, bundle]);
    const root = join(bundle, "rootfs");
    const files = walk(root);
    const programs = files.filter((p) => {
      const st = lstatSync(join(root, p));
      return st.isFile() && (st.mode & 0o111) !== 0 && !p.startsWith(`${WORKDIR.slice(1)}/`);
    });
    // executables outside the application: Node, and shared libraries (which Debian ships executable)
    assert.deepEqual(
      programs.filter((p) => !/\.so(\.\d+)*$/.test(p)),
      [NODE_BINARY.slice(1)],
    );
    for (const bad of ["bin/sh", "bin/bash", "bin/dash", "usr/bin/apt", "usr/bin/dpkg", "usr/bin/gcc", "usr/bin/perl", "usr/bin/env"])
      assert.ok(!existsSync(join(root, bad)), `${bad} is in the image`);
    assert.deepEqual(readdirSync(join(root, "var/lib/dpkg/status.d")).sort(), ["gcc-12-base", ...DEBIAN.packages].sort());
    assert.match(readFileSync(join(root, "etc/passwd"), "utf8"), new RegExp(`^${USER.name}:x:${USER.uid}:${USER.gid}:`, "m"));
    assert.equal(statSync(join(root, USER.home.slice(1))).uid, USER.uid);
    assert.equal(statSync(join(root, "tmp")).mode & 0o7777, 0o1777);
    assert.ok(existsSync(join(root, "app/node_modules/@nxtedition/rocksdb/prebuilds/linux-x64/@nxtedition+rocksdb.node")), "RocksDB's binding for linux-x64");
    assert.ok(existsSync(join(root, "app/runtime/main.ts")));
    assert.ok(!files.some((p) => p.endsWith(".test.ts")), "no test files");
    assert.ok(!existsSync(join(root, "app/node_modules/typescript")), "no development dependencies");
    assert.ok(
      readdirSync(join(root, "usr/share/doc")).every((d) => readdirSync(join(root, "usr/share/doc", d)).every((f) => f === "copyright")),
      "of the packages' docs, the copyright files only",
    );
  });
});

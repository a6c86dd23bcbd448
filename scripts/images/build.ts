// Builds Conveyor's images without a container engine: a Debian root made by mmdebstrap, Node from the npm
// registry, the production dependencies and the sources, each a layer tar written with fixed times, owners and
// order, put together as an OCI image layout by umoci and exported by skopeo as archives that `docker load` takes.
//
// Same inputs, same digests: every file of every layer has mtime 0 and a sorted place in its tar; the images'
// `created` is the commit's time. The three layers below the sources are cached by their inputs (the Debian
// archive's Release files and the package list; Node's binary; the lockfile), so a rebuild after a source change
// only writes the last layer.
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { BedError, requireCommand, run } from "../../test/env/proc.ts";
import { cacheRoot, repoRoot } from "../../test/env/toolchain.ts";
import { DEBIAN, DEPS_PRUNE, ENV, EXCLUDE, GROUP, IMAGES, type ImageSpec, LABELS, NODE_BINARY, PASSWD, STATUS_HOOK, USER, WORKDIR } from "./spec.ts";

export interface Layer {
  /** what the layer holds, for the image's history */
  what: string;
  tar: string;
  /** true when it came from the cache */
  cached: boolean;
}

export interface BuiltImage {
  target: ImageSpec["target"];
  /** e.g. ghcr.io/conveyor-dev/conveyor/runtime:0.1.0 */
  ref: string;
  /** the OCI manifest's digest: what a registry serves the image by */
  digest: string;
  configDigest: string;
  /** the layers' compressed sizes, as pulled */
  compressedBytes: number;
  /** the layers' uncompressed sizes, as unpacked */
  unpackedBytes: number;
  /** `docker load -i` takes it; `skopeo copy docker-archive:<it> docker://...` pushes it (none with archives: false) */
  archive?: string;
}

export interface BuildResult {
  layout: string;
  images: BuiltImage[];
  layers: { what: string; cached: boolean }[];
  /** the Debian packages in the base, name and version */
  packages: { name: string; version: string }[];
  seconds: number;
}

const say = (s: string) => process.stderr.write(`[images] ${s}\n`);

export function imagesCache(): string {
  return join(cacheRoot(), "images");
}

export function defaultImagesOut(): string {
  return join(repoRoot, "dist", "images");
}

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function fileSha256(file: string): string {
  return sha256(readFileSync(file));
}

/** The tools that only Debian provides; .ci/run installs them, and a newcomer is told how. */
export function requireImageTools(): void {
  if (process.getuid?.() !== 0) throw new BedError("npm run images runs as root: mmdebstrap's root mode, and the files' owners in the layers");
  const why = "to build the images (Debian: apt-get install mmdebstrap umoci skopeo)";
  requireCommand("mmdebstrap", why);
  requireCommand("umoci", why);
  requireCommand("skopeo", why);
  requireCommand("tar", "to write layers", ["--version"]);
}

/**
 * Writes dir's contents as a layer tar that depends on nothing but their names, contents, modes and owners:
 * entries sorted, every mtime 0, numeric owners, no atime, ctime or extended attributes (GNU format).
 */
async function writeLayerTar(dir: string, tar: string): Promise<void> {
  const entries = readdirSync(dir).sort();
  await run("tar", ["--create", `--file=${tar}`, "--format=gnu", "--sort=name", "--mtime=@0", "--numeric-owner", `--directory=${dir}`, "--", ...entries], {
    what: `layer ${tar}`,
  });
}

/** A layer in the cache under its key, made by fill() into a fresh directory when missing. */
async function cachedLayer(name: string, key: string, what: string, fill: (root: string, meta: string) => Promise<void>): Promise<Layer> {
  const dir = join(imagesCache(), `${name}-${key.slice(0, 16)}`);
  const tar = join(dir, "layer.tar");
  if (existsSync(tar)) return { what, tar, cached: true };
  const tmp = `${dir}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, "root"), { recursive: true });
  try {
    await fill(join(tmp, "root"), tmp);
    await writeLayerTar(join(tmp, "root"), join(tmp, "layer.tar"));
    rmSync(join(tmp, "root"), { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return { what, tar, cached: false };
}

/** The Release files of the base's suites: the same files, the same package versions. */
async function releaseDigests(): Promise<string[]> {
  const out: string[] = [];
  for (const line of DEBIAN.sources) {
    const [, uri, suite] = line.split(" ");
    const url = `${uri}/dists/${suite}/InRelease`;
    let res: Response | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
        if (res.ok) break;
        throw new Error(`HTTP ${res.status}`);
      } catch (err) {
        if (attempt === 3) throw new BedError(`could not read ${url}: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 1_000 * attempt));
      }
    }
    out.push(`${url} ${sha256(Buffer.from(await res.arrayBuffer()))}`);
  }
  return out;
}

/**
 * The newest cached base built from the same description (offline builds: they cannot read the Release files,
 * so they take the Debian root the last online build fetched).
 */
function newestCachedBase(description: string): Layer | undefined {
  const dirs = existsSync(imagesCache()) ? readdirSync(imagesCache()).filter((d) => /^base-[0-9a-f]{16}$/.test(d)) : [];
  const found = dirs
    .map((d) => join(imagesCache(), d))
    .filter((d) => existsSync(join(d, "layer.tar")) && existsSync(join(d, "inputs.json")))
    .filter((d) => (JSON.parse(readFileSync(join(d, "inputs.json"), "utf8")) as { description: string }).description === description)
    .sort((a, b) => statSync(join(b, "layer.tar")).mtimeMs - statSync(join(a, "layer.tar")).mtimeMs)[0];
  return found ? { what: "", tar: join(found, "layer.tar"), cached: true } : undefined;
}

async function baseLayer(offline: boolean): Promise<Layer> {
  const mmdebstrap = (await run("mmdebstrap", ["--version"], { what: "mmdebstrap" })).trim();
  // everything that shapes the root besides the archive: a change to any of them makes a new base
  const description = sha256(JSON.stringify({ DEBIAN, USER, PASSWD, GROUP, STATUS_HOOK, mmdebstrap }));
  const what = `Debian ${DEBIAN.release} (${DEBIAN.suite}): ${DEBIAN.packages.join(", ")}; user ${USER.uid}`;
  if (offline) {
    const cached = newestCachedBase(description);
    if (!cached) throw new BedError("an offline build needs the Debian root of an earlier online `npm run images` in the cache; there is none");
    return { ...cached, what };
  }
  const releases = await releaseDigests();
  const key = sha256(JSON.stringify({ description, releases }));
  return cachedLayer("base", key, what, async (root, meta) => {
    writeFileSync(join(meta, "inputs.json"), `${JSON.stringify({ description, releases }, null, 2)}\n`);
    say(`base: mmdebstrap ${DEBIAN.suite} with ${DEBIAN.packages.join(", ")}`);
    await run(
      "mmdebstrap",
      [
        "--mode=root",
        "--variant=extract",
        `--include=${DEBIAN.packages.join(",")}`,
        `--extract-hook=${STATUS_HOOK}`,
        "--format=directory",
        DEBIAN.suite,
        root,
        ...DEBIAN.sources,
      ],
      { what: "mmdebstrap", env: { ...process.env, SOURCE_DATE_EPOCH: "0" } },
    );
    for (const p of DEBIAN.remove) {
      if (p !== "usr/share/doc") rmSync(join(root, p), { recursive: true, force: true });
    }
    // keep each package's copyright file, which its licence asks to travel with the binaries
    const docs = join(root, "usr/share/doc");
    for (const pkg of existsSync(docs) ? readdirSync(docs) : []) {
      for (const f of readdirSync(join(docs, pkg))) if (f !== "copyright") rmSync(join(docs, pkg, f), { recursive: true, force: true });
    }
    const dpkg = join(root, "var/lib/dpkg");
    for (const f of readdirSync(dpkg)) if (f !== "status.d") rmSync(join(dpkg, f), { recursive: true, force: true });
    writeFileSync(
      join(root, "etc/passwd"),
      `root:x:0:0:root:/root:/sbin/nologin\n${USER.name}:x:${USER.uid}:${USER.gid}:${USER.name}:${USER.home}:/sbin/nologin\n`,
    );
    writeFileSync(join(root, "etc/group"), `root:x:0:\n${USER.name}:x:${USER.gid}:\n`);
    mkdirSync(join(root, USER.home), { recursive: true });
    chownSync(join(root, USER.home), USER.uid, USER.gid);
    chmodSync(join(root, USER.home), 0o755);
    mkdirSync(join(root, "tmp"), { recursive: true });
    chmodSync(join(root, "tmp"), 0o1777);
    const packages = readdirSync(join(dpkg, "status.d"))
      .sort()
      .map((p) => {
        const text = readFileSync(join(dpkg, "status.d", p), "utf8");
        return `${p}\t${text.match(/^Version: (.+)$/m)?.[1] ?? "?"}`;
      });
    writeFileSync(join(meta, "packages.tsv"), `${packages.join("\n")}\n`);
  });
}

function nodeVersionWanted(): string {
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { devDependencies: Record<string, string> };
  return pkg.devDependencies.node as string;
}

async function nodeLayer(): Promise<Layer> {
  const binary = join(repoRoot, "node_modules/node/bin/node");
  if (!existsSync(binary)) throw new BedError(`${binary} is missing: run npm ci first`);
  const version = (await run(binary, ["--version"], { what: "node --version" })).trim();
  if (version !== `v${nodeVersionWanted()}`) throw new BedError(`${binary} is ${version}, package.json asks for ${nodeVersionWanted()}: run npm ci`);
  return cachedLayer("node", fileSha256(binary), `Node ${version} from the npm registry's node package`, async (root) => {
    const target = join(root, NODE_BINARY.slice(1));
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(binary, target);
    chmodSync(target, 0o755);
  });
}

async function depsLayer(offline: boolean): Promise<Layer> {
  const pkgText = readFileSync(join(repoRoot, "package.json"), "utf8");
  const pkg = JSON.parse(pkgText) as { dependencies: Record<string, string> };
  const lock = readFileSync(join(repoRoot, "package-lock.json"));
  const key = sha256(JSON.stringify({ deps: pkg.dependencies, lock: sha256(lock), prune: DEPS_PRUNE, node: nodeVersionWanted() }));
  return cachedLayer("deps", key, "production dependencies: npm ci --omit=dev --ignore-scripts", async (root) => {
    const app = join(root, WORKDIR.slice(1));
    mkdirSync(app, { recursive: true });
    copyFileSync(join(repoRoot, "package.json"), join(app, "package.json"));
    copyFileSync(join(repoRoot, "package-lock.json"), join(app, "package-lock.json"));
    say("deps: npm ci --omit=dev --ignore-scripts");
    const flags = ["--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error", ...(offline ? ["--offline"] : [])];
    await run("npm", ["ci", ...flags], { cwd: app, what: "npm ci --omit=dev" });
    rmSync(join(app, "package.json"));
    rmSync(join(app, "package-lock.json"));
    for (const p of DEPS_PRUNE) rmSync(join(app, p), { recursive: true, force: true });
  });
}

/** The checkout's files an image holds, relative to the repository: spec.files, tests left out. */
export function appFiles(spec: ImageSpec): string[] {
  const out: string[] = [];
  for (const f of spec.files) {
    const abs = join(repoRoot, f);
    if (!statSync(abs).isDirectory()) {
      out.push(f);
      continue;
    }
    for (const rel of readdirSync(abs, { recursive: true, encoding: "utf8" }).sort()) {
      const path = join(f, rel);
      if (statSync(join(repoRoot, path)).isFile() && !EXCLUDE.test(path)) out.push(path);
    }
  }
  return out;
}

async function appLayer(spec: ImageSpec, work: string): Promise<Layer> {
  const root = join(work, `app-${spec.target}`);
  rmSync(root, { recursive: true, force: true });
  for (const f of appFiles(spec)) {
    const target = join(root, WORKDIR.slice(1), f);
    mkdirSync(dirname(target), { recursive: true });
    cpSync(join(repoRoot, f), target);
    chmodSync(target, 0o644);
  }
  const tar = join(work, `app-${spec.target}.tar`);
  await writeLayerTar(root, tar);
  rmSync(root, { recursive: true, force: true });
  return { what: `${spec.files.join(", ")} of the checkout`, tar, cached: false };
}

interface OciIndex {
  manifests: { digest: string; annotations?: Record<string, string> }[];
}
interface OciManifest {
  config: { digest: string };
  layers: { digest: string; size: number }[];
}

function blob(layout: string, digest: string): string {
  return join(layout, "blobs", ...digest.split(":"));
}

/** The commit's time: what the images' `created` says, so that a rebuild of one commit gives the same digests. */
async function sourceDateEpoch(): Promise<number> {
  if (process.env.SOURCE_DATE_EPOCH) return Number(process.env.SOURCE_DATE_EPOCH);
  const out = await run("git", ["-C", repoRoot, "log", "-1", "--format=%ct"], { what: "the commit's time" });
  return Number(out.trim());
}

async function revision(): Promise<string> {
  return (await run("git", ["-C", repoRoot, "rev-parse", "HEAD"], { what: "the commit" })).trim();
}

export interface BuildOptions {
  /** where the OCI layout, the archives and images.json go (dist/images) */
  out?: string;
  /** write the docker-archive exports (the bed needs only the layout) */
  archives?: boolean;
  /**
   * reach no registry: the Debian root from the cache (the newest of the same description) and the dependencies
   * from npm's cache; for the tests, which run where only the bed's network is
   */
  offline?: boolean;
}

export async function buildImages(opts: BuildOptions = {}): Promise<BuildResult> {
  const t0 = Date.now();
  requireImageTools();
  const out = opts.out ?? defaultImagesOut();
  const work = join(out, "work");
  const layout = join(out, "oci");
  rmSync(out, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });

  const offline = opts.offline ?? false;
  const base = await baseLayer(offline);
  const node = await nodeLayer();
  const deps = await depsLayer(offline);
  const created = new Date((await sourceDateEpoch()) * 1000).toISOString();
  const version = (JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;
  const commit = await revision();

  await run("umoci", ["init", "--layout", layout], { what: "umoci init" });
  const images: BuiltImage[] = [];
  const layers = [base, node, deps];
  for (const spec of IMAGES) {
    const app = await appLayer(spec, work);
    layers.push(app);
    const image = `${layout}:${spec.target}`;
    await run("umoci", ["new", "--image", image], { what: "umoci new" });
    for (const layer of [base, node, deps, app]) {
      await run("umoci", ["raw", "add-layer", "--image", image, "--history.created", created, "--history.created_by", layer.what, layer.tar], {
        what: `umoci raw add-layer ${layer.what}`,
      });
    }
    const labels: Record<string, string> = {
      ...LABELS,
      "org.opencontainers.image.title": spec.title,
      "org.opencontainers.image.description": spec.description,
      "org.opencontainers.image.version": version,
      "org.opencontainers.image.revision": commit,
      "org.opencontainers.image.created": created,
      "org.opencontainers.image.base.name": `debian:${DEBIAN.suite}`,
    };
    await run(
      "umoci",
      [
        "config",
        "--image",
        image,
        "--no-history",
        "--created",
        created,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.user",
        `${USER.uid}:${USER.gid}`,
        "--config.workingdir",
        WORKDIR,
        ...ENV.flatMap((e) => ["--config.env", e]),
        ...spec.entrypoint.flatMap((a) => ["--config.entrypoint", a]),
        ...Object.entries(labels).flatMap(([k, v]) => ["--config.label", `${k}=${v}`]),
      ],
      { what: "umoci config" },
    );
  }
  await run("umoci", ["gc", "--layout", layout], { what: "umoci gc" });

  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")) as OciIndex;
  for (const spec of IMAGES) {
    const desc = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === spec.target);
    if (!desc) throw new BedError(`the OCI layout has no ${spec.target} image`);
    const manifest = JSON.parse(readFileSync(blob(layout, desc.digest), "utf8")) as OciManifest;
    const ref = `${spec.name}:${version}`;
    const archive = opts.archives === false ? undefined : join(out, `conveyor-${spec.target}.tar`);
    if (archive) {
      await run("skopeo", ["--insecure-policy", "copy", "--quiet", `oci:${layout}:${spec.target}`, `docker-archive:${archive}:${ref}`], {
        what: `skopeo copy ${spec.target}`,
      });
    }
    const appTar = layers.find((l) => l.tar.endsWith(`app-${spec.target}.tar`))?.tar as string;
    images.push({
      target: spec.target,
      ref,
      digest: desc.digest,
      configDigest: manifest.config.digest,
      compressedBytes: manifest.layers.reduce((n, l) => n + l.size, 0),
      unpackedBytes: [base, node, deps].reduce((n, l) => n + statSync(l.tar).size, statSync(appTar).size),
      ...(archive ? { archive } : {}),
    });
  }
  rmSync(work, { recursive: true, force: true });
  const packages = readFileSync(join(dirname(base.tar), "packages.tsv"), "utf8")
    .trim()
    .split("\n")
    .map((l) => {
      const [name, version] = l.split("\t");
      return { name: name as string, version: version as string };
    });
  const result: BuildResult = { layout, images, layers: layers.map((l) => ({ what: l.what, cached: l.cached })), packages, seconds: (Date.now() - t0) / 1000 };
  writeFileSync(join(out, "images.json"), `${JSON.stringify(result, null, 2)}\n`);
  return result;
}

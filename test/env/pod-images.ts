// What the bed's pods run for Conveyor's images, in one of two modes:
// - "image" (what `npm test` and CI use): the images `npm run images` builds, each unpacked once into the cache
//   by its digest; the node shim runs a container inside that root filesystem, as a cluster would run it.
// - "checkout": this checkout's files with this Node, for a fast inner loop and for the demo (no image tools needed).
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildImages, imagesCache } from "../../scripts/images/build.ts";
import { IMAGES, type ImageSpec, USER } from "../../scripts/images/spec.ts";
import { OPERATOR_NODE_FLAGS } from "../../src/node-flags.ts";
import { BedError, run } from "./proc.ts";
import type { ImageEntry, ImageTable } from "./shim/images.ts";
import { repoRoot } from "./toolchain.ts";

export const RUNTIME_IMAGE = imageSpec("runtime").name;
export const OPERATOR_IMAGE = imageSpec("operator").name;
/** a plain shell, for tests that need a pod that is not Conveyor's */
export const SHELL_IMAGE = "bed/shell";
/** the uid the project's images run as (distroless "nonroot"), as their spec says */
export const IMAGE_USER = USER.uid;

function imageSpec(target: ImageSpec["target"]): ImageSpec {
  return IMAGES.find((i) => i.target === target) as ImageSpec;
}

export type PodsMode = "image" | "checkout";

/** CONVEYOR_PODS, or the given default: the demo and the bed by hand use the checkout, `npm test` the images. */
export function podsMode(fallback: PodsMode): PodsMode {
  const v = process.env.CONVEYOR_PODS;
  if (v === undefined || v === "") return fallback;
  if (v !== "image" && v !== "checkout") throw new BedError(`CONVEYOR_PODS is "${v}": it takes image or checkout`);
  return v;
}

const shell: ImageEntry = { command: ["/bin/sh", "-c"], args: ["sleep infinity"], user: 0 };

function checkoutTable(): ImageTable {
  const node = process.execPath;
  return {
    [RUNTIME_IMAGE]: { command: [node, join(repoRoot, "runtime/main.ts")], user: IMAGE_USER, workingDir: repoRoot },
    [OPERATOR_IMAGE]: { command: [node, ...OPERATOR_NODE_FLAGS, join(repoRoot, "src/main.ts")], user: IMAGE_USER, workingDir: repoRoot },
    [SHELL_IMAGE]: shell,
  };
}

interface OciConfig {
  config: { User?: string; Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; WorkingDir?: string };
}

/** An image's root filesystem, unpacked by umoci into the cache under its digest (once per digest). */
async function unpacked(layout: string, target: string, digest: string): Promise<string> {
  const root = join(imagesCache(), "rootfs");
  const dir = join(root, digest.replace(":", "-"));
  if (!existsSync(join(dir, "rootfs"))) {
    mkdirSync(root, { recursive: true });
    const tmp = `${dir}.partial-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    await run("umoci", ["unpack", "--image", `${layout}:${target}`, tmp], { what: `umoci unpack ${target}` });
    renameSync(tmp, dir);
  }
  // Root filesystems of earlier builds: a day unused, they go.
  for (const old of readdirSync(root)) {
    const p = join(root, old);
    if (p !== dir && Date.now() - statSync(p).mtimeMs > 86_400_000) rmSync(p, { recursive: true, force: true });
  }
  return join(dir, "rootfs");
}

/** Builds the images (seconds when only sources changed) and maps each to its unpacked root filesystem. */
async function imageModeTable(out: string): Promise<ImageTable> {
  const built = await buildImages({ out, archives: false });
  const table: ImageTable = { [SHELL_IMAGE]: shell };
  for (const img of built.images) {
    const cfg = JSON.parse(readFileSync(join(built.layout, "blobs", ...img.configDigest.split(":")), "utf8")) as OciConfig;
    const user = Number((cfg.config.User ?? "0").split(":")[0]);
    if (!Number.isInteger(user)) throw new BedError(`${img.ref} has a user the shim cannot read: ${cfg.config.User}`);
    const name = img.ref.slice(0, img.ref.lastIndexOf(":"));
    table[name] = {
      command: cfg.config.Entrypoint ?? [],
      ...(cfg.config.Cmd ? { args: cfg.config.Cmd } : {}),
      user,
      workingDir: cfg.config.WorkingDir ?? "/",
      env: cfg.config.Env ?? [],
      rootfs: await unpacked(built.layout, img.target, img.digest),
      digest: `${img.ref}@${img.digest}`,
    };
  }
  return table;
}

export async function imageTable(mode: PodsMode, dir: string): Promise<ImageTable> {
  return mode === "image" ? imageModeTable(join(dir, "images")) : checkoutTable();
}

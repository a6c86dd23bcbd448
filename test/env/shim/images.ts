// The node shim's image table: what runs for a container image. An entry with a rootfs is a real image, unpacked:
// the shim runs its entrypoint inside that root filesystem. One without stands for an image by a local command
// (the checkout mode, and the bed's plain shell).
import { readFileSync } from "node:fs";

export interface ImageEntry {
  /** the image's ENTRYPOINT as a local command line; a container's `command` replaces it */
  command: string[];
  /** the image's CMD; a container's `args`, or its `command`, replaces it */
  args?: string[];
  /** the image's USER, checked against runAsNonRoot as a kubelet does */
  user?: number;
  /** the image's WORKDIR */
  workingDir?: string;
  /** the image's ENV, NAME=value, under the container's own env */
  env?: string[];
  /** the image's unpacked root filesystem (read only: each container gets a writable layer over it) */
  rootfs?: string;
  /** the image's reference and digest, for the shim's log */
  digest?: string;
}

export type ImageTable = Record<string, ImageEntry>;

export function loadImageTable(file: string): ImageTable {
  return JSON.parse(readFileSync(file, "utf8")) as ImageTable;
}

/** Finds an image by its full reference, then by its name without tag or digest. */
export function lookupImage(table: ImageTable, image: string): ImageEntry | undefined {
  if (table[image]) return table[image];
  const withoutDigest = image.split("@")[0] ?? image;
  const lastSlash = withoutDigest.lastIndexOf("/");
  const colon = withoutDigest.lastIndexOf(":");
  const name = colon > lastSlash ? withoutDigest.slice(0, colon) : withoutDigest;
  return table[name];
}

/** The argv a container runs, with Kubernetes' rules for command and args over ENTRYPOINT and CMD. */
export function containerArgv(entry: ImageEntry, command: string[] | undefined, args: string[] | undefined): string[] {
  if (command && command.length > 0) return [...command, ...(args ?? [])];
  return [...entry.command, ...(args ?? entry.args ?? [])];
}

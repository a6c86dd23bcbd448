// The bed keeps every process it starts in a cgroup (v2) of its own, and each pod's processes in one below it,
// so that a stop can find and kill all of them: a worker blocked on a call that never answers, a container that
// ignores SIGTERM, a child that left its process group, or what a SIGKILLed bed left behind.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { BedError } from "./proc.ts";

/** Where cgroup v2 is mounted (/sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one). */
export function cgroup2Root(): string {
  const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n");
  const line = mounts.map((l) => l.split(" ")).find((f) => f[2] === "cgroup2");
  if (!line?.[1]) throw new BedError("the bed needs cgroup v2 mounted (no cgroup2 entry in /proc/self/mounts) to keep track of its pods' processes");
  return line[1];
}

/** The bed's cgroup, named from its directory like its network namespace. */
export function bedCgroupFor(dir: string): string {
  const id = createHash("sha256").update(resolve(dir)).digest("hex").slice(0, 10);
  return join(cgroup2Root(), `conveyor-bed-${id}`);
}

export function ensureCgroup(path: string): void {
  try {
    mkdirSync(path, { recursive: true });
  } catch (err) {
    throw new BedError(`creating cgroup ${path} (the bed needs root): ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The pids in a cgroup and every cgroup below it. */
export function cgroupPids(path: string): number[] {
  if (!existsSync(path)) return [];
  const own = readFileSync(join(path, "cgroup.procs"), "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map(Number);
  const children = readdirSync(path, { withFileTypes: true }).filter((d) => d.isDirectory());
  return [...own, ...children.flatMap((d) => cgroupPids(join(path, d.name)))];
}

function populated(path: string): boolean {
  const events = readFileSync(join(path, "cgroup.events"), "utf8");
  return /^populated 1$/m.test(events);
}

/** SIGKILLs everything in a cgroup and below it (cgroup.kill, or pid by pid where the kernel lacks it) and waits until it is empty. */
export async function killCgroup(path: string, timeoutMs = 10_000): Promise<void> {
  if (!existsSync(path)) return;
  const deadline = Date.now() + timeoutMs;
  const killFile = join(path, "cgroup.kill");
  while (populated(path)) {
    if (existsSync(killFile)) writeFileSync(killFile, "1");
    else
      for (const pid of cgroupPids(path)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone between the read and the kill
        }
      }
    if (Date.now() > deadline) throw new BedError(`cgroup ${path} still has processes ${cgroupPids(path).join(", ")} after SIGKILL`);
    await delay(20);
  }
}

/** Kills what is left in a cgroup, then removes it and every cgroup below it. */
export async function removeCgroup(path: string): Promise<void> {
  if (!existsSync(path)) return;
  await killCgroup(path);
  const removeTree = (p: string) => {
    for (const d of readdirSync(p, { withFileTypes: true })) if (d.isDirectory()) removeTree(join(p, d.name));
    rmdirSync(p);
  };
  removeTree(path);
}

/** A shell line that moves the shell into a cgroup; run first, before it execs or forks anything. */
export function joinCgroupLine(path: string): string {
  return `echo $$ > '${join(path, "cgroup.procs").replaceAll("'", `'\\''`)}'`;
}

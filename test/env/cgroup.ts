// The bed keeps every process it starts in a cgroup (v2) of its own, and each pod's processes in one below it,
// so that a stop can find and kill all of them: a worker blocked on a call that never answers, a container that
// ignores SIGTERM, a child that left its process group, or what a SIGKILLed bed left behind.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
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

/** Kills what is left in a cgroup, then removes it and every cgroup below it (and their memory twins). */
export async function removeCgroup(path: string): Promise<void> {
  if (!existsSync(path)) {
    removeMemoryTwin(path);
    return;
  }
  await killCgroup(path);
  removeMemoryTwin(path);
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

/** The memory controller: in the unified hierarchy where it is enabled there, else the v1 hierarchy a hybrid host mounts. */
export interface MemoryController {
  version: 1 | 2;
  root: string;
}

export function memoryController(): MemoryController | undefined {
  const v2 = cgroup2Root();
  const controllers = readFileSync(join(v2, "cgroup.controllers"), "utf8").split(/\s+/);
  if (controllers.includes("memory")) return { version: 2, root: v2 };
  const mounts = readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" "));
  const v1 = mounts.find((f) => f[2] === "cgroup" && (f[3] ?? "").split(",").includes("memory"));
  return v1?.[1] ? { version: 1, root: v1[1] } : undefined;
}

/**
 * Puts a memory limit on a bed cgroup (`path`, in the v2 hierarchy), as a kubelet does for a container's
 * limits.memory, and returns the cgroup.procs file a process writes itself into to be under it: the same
 * cgroup on a unified host, its twin in the v1 memory hierarchy on a hybrid one.
 */
export function limitMemory(path: string, bytes: number): string {
  const mc = memoryController();
  if (!mc) throw new BedError("the bed cannot enforce limits.memory: no cgroup memory controller on this host");
  const rel = relative(cgroup2Root(), path);
  if (mc.version === 2) {
    // each ancestor hands the controller down; none of them holds a process of its own
    const parts = rel.split("/");
    for (let i = 0; i < parts.length; i++) {
      const dir = join(mc.root, ...parts.slice(0, i));
      const enabled = readFileSync(join(dir, "cgroup.subtree_control"), "utf8").split(/\s+/);
      if (!enabled.includes("memory")) writeFileSync(join(dir, "cgroup.subtree_control"), "+memory");
    }
    writeFileSync(join(path, "memory.max"), String(bytes));
    return join(path, "cgroup.procs");
  }
  const dir = join(mc.root, rel);
  ensureCgroup(dir);
  writeFileSync(join(dir, "memory.limit_in_bytes"), String(bytes));
  return join(dir, "cgroup.procs");
}

/** Removes the v1 memory twins of a bed cgroup and those below it; their processes are gone by then. */
export function removeMemoryTwin(path: string): void {
  const mc = memoryController();
  if (mc?.version !== 1) return;
  const dir = join(mc.root, relative(cgroup2Root(), path));
  if (!existsSync(dir)) return;
  const removeTree = (p: string) => {
    for (const d of readdirSync(p, { withFileTypes: true })) if (d.isDirectory()) removeTree(join(p, d.name));
    rmdirSync(p);
  };
  removeTree(dir);
}

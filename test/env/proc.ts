// Process plumbing for the test bed: start with a log file, wait on conditions with deadlines, stop by pid.
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, closeSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { joinCgroupLine } from "./cgroup.ts";
import { inNetns } from "./net.ts";

export class BedError extends Error {
  override name = "BedError";
}

export interface Started {
  name: string;
  pid: number;
  log: string;
}

export interface StartSpec {
  name: string;
  cmd: string;
  args: string[];
  log: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** a cgroup (v2) directory that the process joins before it runs anything */
  cgroup?: string;
  /** a named network namespace to run it in */
  netns?: string;
}

/**
 * The argv that runs a command in a cgroup and a network namespace: a shell joins the cgroup, then execs nsenter,
 * which execs the command, so the pid is the command's own and nothing it starts escapes the cgroup.
 */
export function placedArgv(argv: string[], where: { cgroup?: string; netns?: string }): string[] {
  const inNs = where.netns ? inNetns(where.netns, argv) : argv;
  return where.cgroup ? ["/bin/sh", "-c", `${joinCgroupLine(where.cgroup)} && exec "$@"`, "sh", ...inNs] : inNs;
}

/** Starts a process whose stdout and stderr go to a log file, in its own process group so that a stop reaches its children. */
export function startProcess(spec: StartSpec): Started {
  const fd = openSync(spec.log, "a");
  try {
    const [cmd, ...args] = placedArgv([spec.cmd, ...spec.args], spec) as [string, ...string[]];
    const child = spawn(cmd, args, {
      cwd: spec.cwd,
      env: spec.env ?? process.env,
      stdio: ["ignore", fd, fd],
      detached: true,
    });
    if (child.pid === undefined) throw new BedError(`${spec.name}: could not start ${spec.cmd}`);
    // The bed outlives the call that started it (bed up) and is stopped explicitly, by pid.
    child.unref();
    // The readiness wait reports the log's tail, so a spawn error goes there.
    child.on("error", (err) => appendFileSync(spec.log, `\n[bed] ${spec.name}: spawn error: ${err.message}\n`));
    return { name: spec.name, pid: child.pid, log: spec.log };
  } finally {
    closeSync(fd);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); its /proc status says Z.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z";
  } catch {
    return false;
  }
}

/** Signals a process group (a process started detached leads one), or the process alone if it leads none. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, wait up to graceMs, then SIGKILL, and wait for the process to be gone. */
export async function stopProcess(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  signalGroup(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) return;
    await delay(50);
  }
  signalGroup(pid, "SIGKILL");
  const killDeadline = Date.now() + 5_000;
  while (Date.now() < killDeadline) {
    if (!isAlive(pid)) return;
    await delay(50);
  }
  throw new BedError(`process ${pid} survived SIGKILL for 5 s`);
}

export function tail(file: string, lines = 25): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export interface WaitOptions {
  /** what is awaited, for the error message */
  what: string;
  timeoutMs: number;
  intervalMs?: number;
  /** a process that must stay alive while waiting; its log tail goes into the error */
  process?: Started;
}

/** Polls a condition until it returns a value other than undefined/false, or the deadline passes. */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitOptions): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    if (opts.process && !isAlive(opts.process.pid)) {
      throw new BedError(`${opts.process.name} exited while waiting for ${opts.what}; log ${opts.process.log}:\n${tail(opts.process.log)}`);
    }
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      const logPart = opts.process ? `; log ${opts.process.log}:\n${tail(opts.process.log)}` : "";
      throw new BedError(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${why}${logPart}`);
    }
    await delay(opts.intervalMs ?? 200);
  }
}

/** `n` distinct ports on 127.0.0.1 that were free a moment ago. */
export async function freePorts(n: number, host = "127.0.0.1"): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort(host));
  return [...ports];
}

/** Every port freePort gave in this process: none is given twice. */
const handedOut = new Set<number>();

/**
 * A port on 127.0.0.1 that was free a moment ago, and that this process has not given before: two processes
 * started at once (the tests that run pipelines side by side) could otherwise be given the same one, as the
 * kernel may hand a port just closed to the next bind, and the second to bind it fails.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = await probePort(host);
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no port on ${host} that this process has not given out already, in 100 tries`);
}

function probePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Fails with a clear message when a port is already taken. */
export async function assertPortFree(port: number, owner: string, host = "127.0.0.1"): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", (err: NodeJS.ErrnoException) => reject(new BedError(`${owner}: port ${host}:${port} is not free (${err.code ?? err.message})`)));
    srv.listen(port, host, () => srv.close(() => resolve()));
  });
}

/** Fails with a clear message when a command the bed needs is missing. */
export function requireCommand(cmd: string, why: string, versionArgs: string[] = ["--version"]): void {
  const res = spawnSync(cmd, versionArgs, { stdio: "ignore" });
  if (res.error || res.status !== 0) {
    const reason = res.error ? (res.error as NodeJS.ErrnoException).code : `exit ${res.status}`;
    throw new BedError(`${cmd} is needed ${why}, but '${cmd} ${versionArgs.join(" ")}' failed (${reason})`);
  }
}

/** Runs a command to completion, streaming nothing; fails with its output tail. */
export async function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; what: string; log?: string }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", (err) => reject(new BedError(`${opts.what}: ${cmd} could not run: ${err.message}`)));
    child.on("close", (code) => {
      if (code === 0) resolve(out);
      else reject(new BedError(`${opts.what}: '${cmd} ${args.join(" ")}' exited ${code}:\n${out.trimEnd().split("\n").slice(-30).join("\n")}`));
    });
  });
}

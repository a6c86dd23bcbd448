// The Kafka Streams side of bench/runtime.ts: bench/kafka-streams/ (a Maven project) built into one runnable jar,
// once and again whenever its sources change, and run as a process beside the bench's worker; and the CPU time of
// a process, which both sides are measured by.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getHeapStatistics } from "node:v8";
import { BedError, isAlive, requireCommand, type Started, startProcess, stopProcess, tail, waitFor } from "../test/env/proc.ts";
import { repoRoot } from "../test/env/toolchain.ts";

const PROJECT = join(repoRoot, "bench/kafka-streams");
/** The shaded jar (maven-shade-plugin, beside the plain one): the app and every dependency. */
const JAR = join(PROJECT, "target/conveyor-bench-kafka-streams-all.jar");
const BUILD_TIMEOUT_MS = 20 * 60_000;

/** The Kafka Streams version the app is built with (the pom's kafka.version). */
export const kafkaStreamsVersion: string = readFileSync(join(PROJECT, "pom.xml"), "utf8").match(/<kafka\.version>([^<]+)</)?.[1] ?? "unknown";

/** The newest modification time under a path (a file, or a directory walked through), in ms; 0 if it is missing. */
function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const e of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, e)));
  return newest;
}

function jarIsFresh(): boolean {
  return existsSync(JAR) && statSync(JAR).mtimeMs >= Math.max(newestMtime(join(PROJECT, "pom.xml")), newestMtime(join(PROJECT, "src")));
}

/**
 * The path of the app's jar, built first with `mvn -q -B package` when it is missing or older than pom.xml or
 * anything under src/. Maven keeps what it downloads in its own repository (~/.m2), outside this one. The build
 * runs as a process of its own group, logged to `opts.log`; its pid is in `opts.live` while it runs, so that an
 * interrupt of the caller can stop it.
 */
export async function kafkaStreamsJar(opts: { log?: string; live?: Set<number> } = {}): Promise<string> {
  if (jarIsFresh()) return JAR;
  requireCommand("mvn", "to build the Kafka Streams side of the bench (bench/kafka-streams)", ["-v"]);
  const log = opts.log ?? join(tmpdir(), "conveyor-bench-kafka-streams-build.log");
  rmSync(log, { force: true });
  process.stderr.write(
    `[bench] building bench/kafka-streams with mvn -q -B package (log ${log}); the first build downloads Kafka Streams and its dependencies into ~/.m2\n`,
  );
  const t0 = performance.now();
  const proc = startProcess({ name: "mvn package (bench/kafka-streams)", cmd: "mvn", args: ["-q", "-B", "package"], cwd: PROJECT, log });
  opts.live?.add(proc.pid);
  try {
    await waitFor(() => !isAlive(proc.pid), { what: "mvn package in bench/kafka-streams to finish", timeoutMs: BUILD_TIMEOUT_MS, intervalMs: 200 });
  } finally {
    await stopProcess(proc.pid);
    opts.live?.delete(proc.pid);
  }
  // The process is not this one's child to wait for, so its exit code is out of reach: a fresh jar is the success.
  if (!jarIsFresh()) throw new BedError(`mvn package in bench/kafka-streams made no fresh ${JAR}; log ${log}:\n${tail(log)}`);
  process.stderr.write(`[bench] built ${JAR} in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  return JAR;
}

export interface KafkaStreamsOptions {
  jar: string;
  bootstrap: string;
  topology: "stateless" | "windowed";
  guarantee: "at_least_once" | "exactly_once_v2";
  source: string;
  sink: string;
  /** also the consumer group's id */
  applicationId: string;
  /** where the log (<applicationId>.log) and the state directory (<applicationId>-state) go */
  dir: string;
  /** -Xmx in MiB; by default the V8 heap limit our worker gets (see ourWorkerHeapMiB) */
  heapMiB?: number;
}

/** What the app prints as it stops: its counters, and Kafka Streams' dropped-records-total (late and malformed records). */
export interface KafkaStreamsStats {
  in: number;
  out: number;
  malformed: number;
  dropped: number;
}

export interface KafkaStreamsProcess {
  proc: Started;
  pid: number;
  /** the java command line, for the record */
  argv: string[];
  /** SIGTERM (then SIGKILL after a grace), and the counters it printed on the way out, if it did */
  stop(): Promise<KafkaStreamsStats | undefined>;
}

/**
 * The heap limit our worker runs with in the bench, in MiB. startRuntime (test/support/runtime.ts) starts it with
 * this process's node (process.execPath) and environment and no heap flag of its own, so its V8 heap limit is this
 * process's: V8 sizes it from the machine's memory (about 4 GiB on a machine of 24 GiB), or NODE_OPTIONS does.
 */
export function ourWorkerHeapMiB(): number {
  return Math.round(getHeapStatistics().heap_size_limit / 2 ** 20);
}

/** Starts the app; it runs until stopped. */
export function runKafkaStreams(opts: KafkaStreamsOptions): KafkaStreamsProcess {
  mkdirSync(opts.dir, { recursive: true });
  const log = join(opts.dir, `${opts.applicationId}.log`);
  const stateDir = join(opts.dir, `${opts.applicationId}-state`);
  mkdirSync(stateDir, { recursive: true });
  // -Xmx: the same ceiling as our worker's V8 heap (ourWorkerHeapMiB), rather than the JVM's own default of a
  // quarter of the machine's memory, so that neither side gets more heap than the other. Neither is the most
  // either one touches: both keep RocksDB's memory (block cache, memtables) outside it, which peak RSS shows.
  const argv = [
    `-Xmx${opts.heapMiB ?? ourWorkerHeapMiB()}m`,
    "-jar",
    opts.jar,
    "--bootstrap-servers",
    opts.bootstrap,
    "--topology",
    opts.topology,
    "--guarantee",
    opts.guarantee,
    "--source",
    opts.source,
    "--sink",
    opts.sink,
    "--application-id",
    opts.applicationId,
    "--state-dir",
    stateDir,
  ];
  const proc = startProcess({ name: `kafka streams ${opts.applicationId}`, cmd: "java", args: argv, log });
  return {
    proc,
    pid: proc.pid,
    argv: ["java", ...argv],
    stop: async () => {
      await stopProcess(proc.pid);
      return statsFrom(log);
    },
  };
}

/** The last `STATS {...}` line of the app's log. */
function statsFrom(log: string): KafkaStreamsStats | undefined {
  let text: string;
  try {
    text = readFileSync(log, "utf8");
  } catch {
    return undefined;
  }
  const line = text
    .split("\n")
    .reverse()
    .find((l) => l.startsWith("STATS {"));
  if (!line) return undefined;
  try {
    const s = JSON.parse(line.slice("STATS ".length)) as Partial<KafkaStreamsStats>;
    const ok = (n: unknown): n is number => typeof n === "number" && Number.isFinite(n);
    return ok(s.in) && ok(s.out) && ok(s.malformed) && ok(s.dropped) ? { in: s.in, out: s.out, malformed: s.malformed, dropped: s.dropped } : undefined;
  } catch {
    return undefined;
  }
}

let clockTicks: number | undefined;

/** Clock ticks per second, the unit of /proc/<pid>/stat's times (getconf CLK_TCK; 100 on Linux as built). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    } catch {
      clockTicks = Number.NaN;
    }
    if (!Number.isFinite(clockTicks) || clockTicks <= 0) clockTicks = 100;
  }
  return clockTicks;
}

/**
 * The CPU time a process has used so far, user and system, every thread of it (GC and JIT too): utime and stime,
 * fields 14 and 15 of /proc/<pid>/stat, in seconds. Undefined once the process is gone (or on a system without /proc).
 */
export function cpuSeconds(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Field 2, the command's name, is in parentheses and may hold spaces and parentheses: count from the last ")".
  // What follows it starts with field 3, so field n is at index n - 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / ticksPerSecond();
}

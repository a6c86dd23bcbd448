// What the benchmarks read of a worker they run: whether its group has committed up to given ends, its peak
// RSS, and why it exited.
import { readFileSync } from "node:fs";
import type { Admin } from "@platformatic/kafka";
import { type KafkaCluster, stopKafka } from "../test/env/kafka.ts";
import { signalGroup } from "../test/env/proc.ts";
import { committedOffsets } from "../test/support/kafka.ts";

/** Whether the group's committed offsets of `topic` reach `ends`, partition by partition. */
export async function reached(a: Admin, group: string, topic: string, ends: bigint[]): Promise<boolean> {
  const committed = await committedOffsets(a, group, topic, ends.length);
  return ends.every((e, p) => (committed[p] ?? -1n) >= e);
}

/** The runtime logs JSON lines; the last error line says why a worker exited. */
export function workerError(log: string): string | undefined {
  const lines = readFileSync(log, "utf8").trimEnd().split("\n").reverse();
  for (const line of lines) {
    try {
      const l = JSON.parse(line) as { level?: string; msg?: string; error?: string };
      if (l.level === "error") return [l.msg, l.error].filter(Boolean).join(": ");
    } catch {
      // not a log line of the runtime's (a Node warning, say)
    }
  }
  return undefined;
}

export function peakRssMiB(pid: number): number | undefined {
  try {
    const kb = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

/** waitFor's message ends with the log's tail; the table gets one line (without the log, whose path comes after). */
export function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]?.replace(/; log \/.*$/, "") || "unknown";
}

/** On SIGINT or SIGTERM, the processes a bench started (`live`) get SIGTERM, and the bench exits. */
export function stopLiveOnSignal(live: ReadonlySet<number>): void {
  const interrupt = (signal: NodeJS.Signals) => {
    for (const pid of live) signalGroup(pid, "SIGTERM");
    process.stderr.write(`[bench] ${signal}: sent SIGTERM to ${[...live].join(", ") || "nothing"}\n`);
    process.exit(130);
  };
  process.once("SIGINT", interrupt);
  process.once("SIGTERM", interrupt);
}

/** Stops a bench's broker, if it started, and forgets its processes. */
export async function stopBroker(cluster: KafkaCluster | undefined, live: Set<number>): Promise<void> {
  if (!cluster) return;
  const pids = [...cluster.pids.values()];
  await stopKafka(cluster);
  for (const pid of pids) live.delete(pid);
}

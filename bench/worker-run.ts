// What the benchmarks read of a worker they run: whether its group has committed up to given ends, its peak
// RSS, and why it exited.
import { readFileSync } from "node:fs";
import type { Admin } from "@platformatic/kafka";
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

// node bench/profile-summary.ts <file.cpuprofile> [top]: where a V8 CPU profile's time went (bench:runtime's
// BENCH_CPU_PROF writes one per worker). Self time per function, and per part: idle, garbage collection, the
// Kafka client, CEL, RocksDB, prom-client, the runtime's own files, Node's internals.
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** The part of the process a function belongs to, by its file. */
export function partOf(url: string, name: string): string {
  if (name === "(idle)") return "idle (waiting for the network)";
  if (name === "(garbage collector)") return "garbage collection";
  if (name === "(program)") return "V8 and native (program)";
  const m = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (m) return m[1] as string;
  const own = url.match(/\/(runtime|src)\/(.+)$/);
  if (own) return `${own[1]}/${own[2]}`;
  if (url.startsWith("node:")) return "node internals";
  return url === "" ? "native" : url;
}

/** Self time in ms per node id, from the samples and their time deltas (hitCount when there are none). */
export function selfTimes(p: Profile): Map<number, number> {
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas && p.samples.length === p.timeDeltas.length) {
    // a sample's time is the delta that follows it
    for (let i = 0; i < p.samples.length; i++) {
      const id = p.samples[i] as number;
      const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
      self.set(id, (self.get(id) ?? 0) + dt);
    }
    return self;
  }
  const hits = p.nodes.reduce((n, x) => n + (x.hitCount ?? 0), 0);
  const per = hits > 0 ? (p.endTime - p.startTime) / 1000 / hits : 0;
  for (const n of p.nodes) self.set(n.id, (n.hitCount ?? 0) * per);
  return self;
}

function main(): void {
  const file = process.argv[2];
  if (!file) throw new Error("usage: node bench/profile-summary.ts <file.cpuprofile> [top]");
  const top = Number(process.argv[3] ?? 25);
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const self = selfTimes(p);
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const parts = new Map<string, number>();
  const fns = new Map<string, number>();
  for (const n of p.nodes) {
    const ms = self.get(n.id) ?? 0;
    if (ms === 0) continue;
    const part = partOf(n.callFrame.url, n.callFrame.functionName);
    parts.set(part, (parts.get(part) ?? 0) + ms);
    const fn = `${n.callFrame.functionName || "(anonymous)"} ${part}:${n.callFrame.lineNumber + 1}`;
    fns.set(fn, (fns.get(fn) ?? 0) + ms);
  }
  const pct = (ms: number) => `${((ms * 100) / total).toFixed(1).padStart(5)}%`;
  console.log(`${file}: ${(total / 1000).toFixed(1)} s sampled`);
  console.log("\nby part:");
  for (const [k, ms] of [...parts].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(ms)}  ${(ms / 1000).toFixed(2).padStart(7)} s  ${k}`);
  console.log(`\ntop ${top} functions by self time:`);
  for (const [k, ms] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(ms)}  ${k}`);
}

if (import.meta.main) main();

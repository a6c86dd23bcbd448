// Loaded by bench:operator into each operator it runs (node --import): keeps the process's peak V8 heap, sampled
// every 100 ms, and the heap just after each full (mark-compact) collection, the live data, in the file
// CONVEYOR_BENCH_HEAP_FILE, so that the bench reads the same figures for this operator and for the previous
// commit's, which has no such metric.
import { writeFileSync } from "node:fs";
import { constants, PerformanceObserver } from "node:perf_hooks";

const file = process.env.CONVEYOR_BENCH_HEAP_FILE;
if (file) {
  let used = 0;
  let total = 0;
  /** the most live data any full collection left, and what the last one left */
  let peakLive = 0;
  let lastLive = 0;
  let lastWrite = 0;
  const write = () => writeFileSync(file, JSON.stringify({ heapUsed: used, heapTotal: total, peakLive, lastLive }));
  const sample = () => {
    const m = process.memoryUsage();
    used = Math.max(used, m.heapUsed);
    total = Math.max(total, m.heapTotal);
    const now = Date.now();
    if (now - lastWrite >= 1_000) {
      lastWrite = now;
      write();
    }
  };
  setInterval(sample, 100).unref();
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if ((e as { detail?: { kind?: number } }).detail?.kind !== constants.NODE_PERFORMANCE_GC_MAJOR) continue;
      lastLive = process.memoryUsage().heapUsed;
      peakLive = Math.max(peakLive, lastLive);
    }
  }).observe({ entryTypes: ["gc"] });
}

// Loaded by bench:operator into each operator it runs (node --import): keeps the process's peak V8 heap, used and
// total, sampled every 100 ms, in the file CONVEYOR_BENCH_HEAP_FILE, so that the bench reads the same figure for
// this operator and for the previous commit's, which has no such metric.
import { writeFileSync } from "node:fs";

const file = process.env.CONVEYOR_BENCH_HEAP_FILE;
if (file) {
  let used = 0;
  let total = 0;
  let lastWrite = 0;
  const sample = () => {
    const m = process.memoryUsage();
    used = Math.max(used, m.heapUsed);
    total = Math.max(total, m.heapTotal);
    const now = Date.now();
    if (now - lastWrite >= 1_000) {
      lastWrite = now;
      writeFileSync(file, JSON.stringify({ heapUsed: used, heapTotal: total }));
    }
  };
  setInterval(sample, 100).unref();
}

// A test reporter that prints, after the run, how long each suite (test file) took, so that growth shows.
import { relative } from "node:path";

interface TestEvent {
  type: string;
  data: { nesting: number; file?: string; name: string; details?: { duration_ms?: number } };
}

export default async function* durations(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const byFile = new Map<string, { ms: number; failed: boolean }>();
  for await (const event of source) {
    if ((event.type === "test:pass" || event.type === "test:fail") && event.data.nesting === 0) {
      const file = event.data.file ? relative(process.cwd(), event.data.file) : event.data.name;
      const row = byFile.get(file) ?? { ms: 0, failed: false };
      row.ms += event.data.details?.duration_ms ?? 0;
      row.failed ||= event.type === "test:fail";
      byFile.set(file, row);
    }
  }
  const rows = [...byFile.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const total = rows.reduce((s, [, r]) => s + r.ms, 0);
  let out = "\nSuite durations:\n";
  for (const [file, r] of rows) out += `  ${(r.ms / 1000).toFixed(1).padStart(7)} s  ${r.failed ? "FAIL" : "ok  "}  ${file}\n`;
  out += `  ${(total / 1000).toFixed(1).padStart(7)} s  total in suites\n`;
  yield out;
}

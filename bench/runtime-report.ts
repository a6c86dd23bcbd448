// What bench/runtime.ts measures for a row, and how it prints: two tables, one row each per bench row, with this
// runtime's, the previous design's (BENCH_BASELINE; the column goes with BENCH_BASELINE=none) and Kafka Streams'
// figures side by side, the ratios between them, and the notes on what each figure means.
import type { StreamPipelineSpec } from "../src/api-types.gen.ts";

export type Guarantee = NonNullable<NonNullable<StreamPipelineSpec["processing"]>["guarantee"]>;

export interface Row {
  name: string;
  kind: "stateless" | "windowed";
  guarantee: Guarantee;
  /** the source topic the row reads */
  source: string;
  /** how many distinct value.user (and record keys) that topic holds */
  keys: number;
}

export interface Measured {
  seconds: number;
  /** CPU seconds of the process, from its start to the same moment */
  cpuSeconds?: number;
  /** source records read, records written to the sink (Kafka Streams': as it counted them on its way out) */
  in?: number;
  out?: number;
  late?: number;
  /** marker records on the repartition topic per 1,000 data records written there */
  markersPer1000?: number;
  /** records on the window store's changelog topic (under exactlyOnce, with transaction markers) */
  changelog?: number;
  rssMiB?: number;
}

export type Side = { ok: true; m: Measured } | { ok: false; reason: string };

/** A row's runs on the same source: this runtime's worker, the previous design's, then Kafka Streams'. */
export interface RowResult {
  row: Row;
  current: Side;
  /** absent when the bench runs without a baseline (BENCH_BASELINE=none) */
  previous?: Side;
  ks: Side;
}

export const k = (n: number) => `${(n / 1000).toFixed(1)}k`;

export interface ReportContext {
  records: number;
  /** ConsumerPerformance's records/s, which every side's rate is set against */
  consume?: number;
  /** the previous design's commit, when its column is there */
  baseline?: string;
}

/** A side's figure, "-" where it has none, "failed" where the side failed. */
function cell(side: Side | undefined, f: (m: Measured) => string | undefined): string {
  if (!side) return "-";
  return side.ok ? (f(side.m) ?? "-") : "failed";
}

const ratio = (x?: number, y?: number) => (x !== undefined && y !== undefined && y > 0 ? `${(x / y).toFixed(2)}x` : "-");

interface Column {
  head: string;
  cell: (r: RowResult) => string;
}

function render(columns: Column[], results: RowResult[]): string[] {
  const head = columns.map((c) => c.head);
  const rows = results.map((r) => columns.map((c) => c.cell(r)));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < cells.length - 1 ? c.padEnd(widths[i] ?? 0) : c)).join("  ");
  return [line(head), ...rows.map(line)];
}

/**
 * Two tables: how fast and at what CPU each side went (with the ratios), then what each side did (records out,
 * late, repartition markers, changelog records, peak RSS); then why any side failed.
 */
export function tables(results: RowResult[], ctx: ReportContext): string {
  const { records, consume } = ctx;
  const withPrevious = ctx.baseline !== undefined;
  const rate = (s?: Side) => (s?.ok ? records / s.m.seconds : undefined);
  /** CPU seconds per 1,000,000 source records */
  const cpu = (s?: Side) => (s?.ok && s.m.cpuSeconds !== undefined ? (s.m.cpuSeconds * 1_000_000) / records : undefined);
  const who = withPrevious ? "this / prev / KS" : "this / KS";
  const sides = (r: RowResult): (Side | undefined)[] => (withPrevious ? [r.current, r.previous, r.ks] : [r.current, r.ks]);
  /** one cell with every side's figure, "a / b / c" */
  const each =
    (f: (m: Measured) => string | undefined) =>
    (r: RowResult): string =>
      sides(r)
        .map((s) => cell(s, f))
        .join(" / ");
  const num = (n?: number) => (n === undefined ? undefined : String(n));
  const onlyWithPrevious = (cols: Column[]) => (withPrevious ? cols : []);
  const speed: Column[] = [
    { head: "row", cell: (r) => r.row.name },
    { head: "keys", cell: (r) => String(r.row.keys) },
    { head: `seconds ${who}`, cell: each((m) => m.seconds.toFixed(2)) },
    { head: "records/s this", cell: (r) => cell(r.current, (m) => k(records / m.seconds)) },
    ...onlyWithPrevious([{ head: "records/s prev", cell: (r) => cell(r.previous, (m) => k(records / m.seconds)) }]),
    { head: "records/s KS", cell: (r) => cell(r.ks, (m) => k(records / m.seconds)) },
    ...onlyWithPrevious([{ head: "rate this/prev", cell: (r) => ratio(rate(r.current), rate(r.previous)) }]),
    { head: "rate this/KS", cell: (r) => ratio(rate(r.current), rate(r.ks)) },
    { head: "CPU s/1M this", cell: (r) => cell(r.current, () => cpu(r.current)?.toFixed(2)) },
    ...onlyWithPrevious([{ head: "CPU s/1M prev", cell: (r) => cell(r.previous, () => cpu(r.previous)?.toFixed(2)) }]),
    { head: "CPU s/1M KS", cell: (r) => cell(r.ks, () => cpu(r.ks)?.toFixed(2)) },
    ...onlyWithPrevious([{ head: "CPU prev/this", cell: (r) => ratio(cpu(r.previous), cpu(r.current)) }]),
    { head: "CPU KS/this", cell: (r) => ratio(cpu(r.ks), cpu(r.current)) },
    { head: `vs broker consume ${who}`, cell: each((m) => (consume ? (records / m.seconds / consume).toFixed(3) : undefined)) },
  ];
  const what: Column[] = [
    { head: "row", cell: (r) => r.row.name },
    { head: `out ${who}`, cell: each((m) => num(m.out)) },
    { head: `late ${who}`, cell: each((m) => num(m.late)) },
    { head: `markers/1k ${who}`, cell: each((m) => m.markersPer1000?.toFixed(1)) },
    { head: `changelog ${who}`, cell: each((m) => num(m.changelog)) },
    { head: `peak RSS MiB ${who}`, cell: each((m) => m.rssMiB?.toFixed(0)) },
  ];
  // A failed side's reason goes under the tables rather than widening them.
  const failures: string[] = [];
  for (const r of results) {
    if (!r.current.ok) failures.push(`${r.row.name}, this runtime: failed: ${r.current.reason}`);
    if (r.previous && !r.previous.ok) failures.push(`${r.row.name}, the previous design: failed: ${r.previous.reason}`);
    if (!r.ks.ok) failures.push(`${r.row.name}, Kafka Streams: failed: ${r.ks.reason}`);
  }
  return [...render(speed, results), "", ...render(what, results), ...(failures.length ? ["", ...failures] : [])].join("\n");
}

/** What the tables' figures are, under them. */
export function notes(o: { baseline?: string; lateMetric: string; kafkaStreamsVersion: string; heapMiB: number }): string {
  return [
    "this: this checkout's runtime; " +
      (o.baseline !== undefined
        ? `prev: the runtime of commit ${o.baseline} (BENCH_BASELINE, by default the last one before windows went to disk; none leaves ` +
          "it out), run from a git archive of it beside this checkout's node_modules, on this checkout's compiled config; "
        : "") +
      "KS: Kafka Streams. Each runs under a consumer group (application id) and into a sink of its own",
    "records/s: from the process's start to its group's committed offsets reaching the source's end (and its repartition topic's, for windowed rows); " +
      `rate this/${o.baseline !== undefined ? "prev, this/" : ""}KS above 1: this runtime is faster`,
    "CPU s/1M: the process's user + system CPU seconds (/proc/<pid>/stat, every thread) from its start to that moment, per 1,000,000 source records; " +
      `CPU ${o.baseline !== undefined ? "prev/this, " : ""}KS/this above 1: this runtime uses less`,
    "keys: distinct value.user in the row's source; distinct-keys-eos reads a source whose every record has a user of its own, so that each " +
      "record opens a window of its own (the windows still close as the event time moves on)",
    `late: the runtime's ${o.lateMetric}, KS its dropped-records-total less the malformed records; markers/1k: repartition records that are not data, ` +
      `per 1,000 data records (under exactly-once, with transaction markers); changelog: records on the window store's changelog (KS: on all its ` +
      `changelogs, the window store's and the suppression buffer's), as their end offsets say; peak RSS: VmHWM`,
    `KS: Kafka Streams ${o.kafkaStreamsVersion} (bench/kafka-streams), the same topologies on the same sources, ` +
      `java -Xmx${o.heapMiB}m (the workers' V8 heap limit in this run); its in/out as the app counted them`,
    "",
  ].join("\n");
}

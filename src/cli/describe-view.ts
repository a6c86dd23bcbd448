// `conveyor describe`'s text: sections an on-call engineer reads top to bottom, in 80 columns.
import { sparkline } from "../plot.ts";
import type { Description } from "./describe.ts";

export const WIDTH = 80;

/**
 * `s` in exactly `w` columns: padded (on the left when `right`), or cut with an ellipsis at its end, or in its
 * middle for names whose both ends tell them apart (topics, pods: `orders-per-…-repartition`, `…-minute-0`).
 */
export function fit(s: string, w: number, right = false, cut: "end" | "middle" = "end"): string {
  let t = s;
  if (s.length > w) {
    const head = cut === "middle" ? Math.floor((w - 1) * 0.4) : w - 1;
    t = `${s.slice(0, head)}…${s.slice(s.length - (w - 1 - head))}`;
  }
  return right ? t.padStart(w) : t.padEnd(w);
}

/** A line of at most `width` columns, cut with an ellipsis. */
function line(s: string, width: number): string {
  return s.length > width ? `${s.slice(0, width - 1)}…` : s;
}

/** `text` in lines of at most `width` columns, each after `indent` spaces, broken at spaces; at most `max` lines. */
export function wrap(text: string, indent: number, width: number, max = 6): string[] {
  const room = width - indent;
  const lines: string[] = [];
  let cur = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (cur && cur.length + 1 + word.length > room) {
      lines.push(cur);
      cur = word;
    } else cur = cur ? `${cur} ${word}` : word;
  }
  if (cur) lines.push(cur);
  const kept = lines.slice(0, max).map((l) => " ".repeat(indent) + line(l, room));
  if (lines.length > max) kept[max - 1] = " ".repeat(indent) + line(`${lines[max - 1]} …`.slice(0, room - 1), room - 1) + "…";
  return kept;
}

/** A duration as people say it: 850ms, 42s, 3m12s, 2h05m, 3d04h. */
export function span(ms: number): string {
  if (!Number.isFinite(ms)) return "?";
  const neg = ms < 0 ? "-" : "";
  const a = Math.abs(ms);
  if (a < 1_000) return `${neg}${Math.round(a)}ms`;
  const s = Math.floor(a / 1_000);
  if (s < 60) return `${neg}${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${neg}${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${neg}${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${neg}${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

function count(n: number | string | undefined): string {
  if (n === undefined) return "-";
  return BigInt(n).toLocaleString("en-US");
}

function rate(n: number | undefined): string {
  return n === undefined ? "?" : `${Math.round(n).toLocaleString("en-US")}/s`;
}

export function renderDescription(d: Description, width = WIDTH): string {
  const out: string[] = [];
  const at = Date.parse(d.at);
  const ago = (t: string) => `${span(at - Date.parse(t))} ago`;
  const say = (s = "") => out.push(line(s, width));
  const head = (title: string) => {
    say();
    say(title);
  };
  say(`StreamPipeline ${d.namespace}/${d.name}`);
  if (d.generation !== undefined)
    say(
      `Generation     ${d.generation}${d.observedGeneration === d.generation ? ", reconciled" : `, the operator has seen ${d.observedGeneration ?? "none"}`}`,
    );
  say(`Group          ${d.consumerGroup}`);
  if (d.group) say(`               ${d.group.state}, ${d.group.members} member${d.group.members === 1 ? "" : "s"}`);
  const w = d.workers;
  const sc = w.scaling;
  say(
    `Workers        ${w.ready ?? 0} ready of ${w.desired ?? "?"}` +
      (sc ? `; ${sc.mode} scaling wants ${sc.desired} (${sc.reason}${sc.cappedBy ? `, capped by ${sc.cappedBy}` : ""})` : ""),
  );
  if (sc && (sc.lag !== undefined || sc.inputRate !== undefined))
    say(`               lag ${count(sc.lag)} records, in ${rate(sc.inputRate)}, consumed ${rate(sc.consumeRate)}`);

  head("CONDITIONS");
  for (const c of d.conditions) {
    say(`  ${fit(c.type, 21)} ${fit(c.status, 7)} ${fit(c.reason, 26)} ${ago(c.since)}`);
    for (const l of wrap(c.message, 4, width)) say(l);
  }
  if (d.conditions.length === 0) say("  none yet: the operator has not reconciled it");

  head("PARTITIONS (offsets as kafka-consumer-groups --describe shows them)");
  if (d.partitions.length > 0) {
    const row = (part: string, committed: string, end: string, lag: string, owner: string) =>
      `    ${fit(part, 4, true)} ${fit(committed, 12, true)} ${fit(end, 12, true)} ${fit(lag, 10, true)}  ${fit(owner, width - 48, false, "middle").trimEnd()}`;
    for (const topic of [...new Set(d.partitions.map((r) => r.topic))]) {
      const rows = d.partitions.filter((r) => r.topic === topic);
      say(`  ${topic} (${rows[0]?.kind === "repartition" ? "repartition" : "source"})`);
      say(row("PART", "COMMITTED", "END", "LAG", "OWNER"));
      for (const r of rows) say(row(String(r.partition), r.committed ?? "-", r.end ?? "-", r.lag ?? "-", r.owner ?? "-"));
    }
    const total = d.partitions.reduce((s, r) => s + (r.lag === undefined ? 0n : BigInt(r.lag)), 0n);
    say(
      `  total lag ${count(total.toString())}${d.partitions.some((r) => r.kind === "repartition") ? " (a repartition topic's records are work still to do)" : ""}`,
    );
  } else say("  unknown");

  if (d.watermarks) {
    const wm = d.watermarks;
    head(`WATERMARKS (low ${wm.low ?? "none yet"}${wm.lowBehindMs !== undefined ? `, ${span(wm.lowBehindMs)} behind` : ""}; read ${ago(wm.observedTime)})`);
    for (const s of wm.sources)
      say(
        `  source ${fit(`${s.topic}/${s.partition}`, 26, false, "middle")} ${fit(s.watermark ?? "none", 24)} ${s.idle ? "idle" : s.behindMs !== undefined ? `${span(s.behindMs)} behind` : ""}`,
      );
    for (const t of wm.tasks)
      say(`  task   ${fit(String(t.partition), 26)} ${fit(t.watermark ?? "none", 24)} ${t.behindMs !== undefined ? `${span(t.behindMs)} behind` : ""}`);
  }

  head("STATE");
  if (d.state.length > 0) {
    say(`  ${fit("WORKER", 26)} ${fit("READY", 5)} ${fit("STATE", 10, true)} ${fit("VOLUME", 10, true)} ${fit("USED", 6, true)}  RESTORING`);
    for (const s of d.state) {
      const used = s.stateBytes !== undefined && s.capacityBytes ? `${((100 * s.stateBytes) / s.capacityBytes).toFixed(1)}%` : "-";
      say(
        `  ${fit(s.pod, 26, false, "middle")} ${fit(s.ready ? "yes" : "no", 5)} ${fit(bytes(s.stateBytes), 10, true)} ${fit(bytes(s.capacityBytes), 10, true)} ${fit(used, 6, true)}  ${s.restoringRecords ? `${count(s.restoringRecords)} records` : "-"}`,
      );
    }
  } else say("  no workers");
  // the forecast's message is the condition's, shown above in full
  if (d.capacity) say(`  forecast: ${d.capacity.reason} (the StateCapacityAtRisk condition above)`);

  if (d.deadLetters) {
    const dl = d.deadLetters;
    head(`DEAD LETTERS in ${dl.topic}, last ${span(dl.windowMs)}: ${dl.atLeast ? "at least " : ""}${count(dl.count)}`);
    if (dl.byKind.length > 0) {
      say(`  ${fit("KIND", 10)} ${fit("STEP", 30)} ${fit("COUNT", 10, true)}`);
      for (const k of dl.byKind) say(`  ${fit(k.kind, 10)} ${fit(k.step, 30)} ${fit(count(k.count), 10, true)}`);
      say("  the last ones:");
      for (const l of dl.last) {
        say(`  ${span(at - Date.parse(l.at))} ago, ${l.kind} at step ${l.step}, from ${l.source}:`);
        for (const x of wrap(l.error, 4, width, 2)) say(x);
      }
    }
  }

  if (d.late.length > 0) {
    head("LATE RECORDS (since each worker started)");
    for (const l of d.late) say(`  ${fit(l.step, 30)} ${fit(l.action === "dropped" ? "dropped" : "to the late topic", 18)} ${fit(count(l.count), 10, true)}`);
  }

  if (d.trend && d.trend.points.length > 0) {
    const tr = d.trend;
    const pts = tr.points;
    head(`TREND, every ${span(tr.intervalMs)} for ${span(Date.parse(pts.at(-1)?.at ?? d.at) - Date.parse(pts[0]?.at ?? d.at))}`);
    const row = (label: string, values: (number | undefined)[]) => {
      const known = values.filter((v): v is number => v !== undefined);
      const range = known.length > 0 ? `${count(Math.min(...known))} .. ${count(Math.max(...known))}` : "unknown";
      const room = width - 14 - range.length - 2;
      say(`  ${fit(label, 10)}  ${sparkline(values.slice(-room))}  ${range}`);
    };
    row(
      "lag",
      pts.map((p) => p.lag),
    );
    row(
      "workers",
      pts.map((p) => p.workers),
    );
    row(
      "ready",
      pts.map((p) => p.ready),
    );
  }

  head("SCALING AND PARTITION GROWTH");
  for (const h of d.history) {
    say(`  ${ago(h.at)}: ${h.reason}`);
    for (const l of wrap(h.message, 4, width)) say(l);
  }
  if (d.history.length === 0) say("  none in the Events the apiserver keeps (an hour by default)");

  if (d.errors.length > 0) {
    head("COULD NOT READ");
    for (const e of d.errors) for (const [i, l] of wrap(e, 4, width).entries()) say(i === 0 ? `  - ${l.trimStart()}` : l);
  }
  return `${out.join("\n")}\n`;
}

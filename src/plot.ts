// Pictures of a pipeline over time: an SVG line plot (the demo writes one of lag, workers and partitions) and a
// terminal sparkline (`conveyor describe --watch`). Small enough to write here: a plotting library would bring a
// DOM or a canvas for two kinds of lines.

const BARS = "▁▂▃▄▅▆▇█";

/** Values as a row of block characters, lowest to highest; an unknown value is a space. */
export function sparkline(
  values: (number | undefined)[],
  max = Math.max(0, ...values.filter((v): v is number => v !== undefined && Number.isFinite(v))),
): string {
  return values
    .map((v) => {
      if (v === undefined || !Number.isFinite(v)) return " ";
      if (max <= 0) return BARS[0];
      return BARS[Math.min(BARS.length - 1, Math.max(0, Math.round((v / max) * (BARS.length - 1))))];
    })
    .join("");
}

export interface Series {
  name: string;
  color: string;
  axis: "left" | "right";
  /** drawn as steps (a count of workers), not slopes */
  step?: boolean;
  dashed?: boolean;
  points: { t: number; v: number | undefined }[];
}

export interface Plot {
  title: string;
  xLabel: string;
  leftLabel: string;
  rightLabel: string;
  series: Series[];
  /** vertical lines with a label: a scale step, a growth */
  marks?: { t: number; label: string }[];
  width?: number;
  height?: number;
}

const esc = (s: string) => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");

/** A round step for an axis: 1, 2 or 5 times a power of ten, giving about `ticks` ticks up to `max`. */
function niceStep(max: number, ticks: number): number {
  const raw = Math.max(max, 1) / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  return ([1, 2, 5, 10].find((m) => m * p >= raw) ?? 10) * p;
}

const fmt = (n: number) => (Math.abs(n) >= 1000 ? `${Math.round(n / 100) / 10}k` : String(Math.round(n * 100) / 100));

export function svgPlot(p: Plot): string {
  const width = p.width ?? 880;
  const height = p.height ?? 380;
  const m = { left: 64, right: 56, top: 36, bottom: 64 };
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const all = p.series.flatMap((s) => s.points.filter((x) => x.v !== undefined));
  const t0 = Math.min(...all.map((x) => x.t), ...(p.marks ?? []).map((x) => x.t));
  const t1 = Math.max(...all.map((x) => x.t), t0 + 1);
  const top = (axis: "left" | "right") => {
    const vals = p.series.filter((s) => s.axis === axis).flatMap((s) => s.points.map((x) => x.v ?? 0));
    const step = niceStep(Math.max(0, ...vals), axis === "left" ? 5 : 4);
    return { step, max: Math.max(step, Math.ceil(Math.max(0, ...vals) / step) * step) };
  };
  const axes = { left: top("left"), right: top("right") };
  const x = (t: number) => m.left + ((t - t0) / (t1 - t0)) * w;
  const y = (v: number, axis: "left" | "right") => m.top + h - (v / axes[axis].max) * h;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14">${esc(p.title)}</text>`,
  ];
  for (let v = 0; v <= axes.left.max; v += axes.left.step) {
    out.push(`<line x1="${m.left}" x2="${m.left + w}" y1="${y(v, "left")}" y2="${y(v, "left")}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${m.left - 6}" y="${y(v, "left") + 4}" text-anchor="end">${fmt(v)}</text>`);
  }
  for (let v = 0; v <= axes.right.max; v += axes.right.step) out.push(`<text x="${m.left + w + 6}" y="${y(v, "right") + 4}">${fmt(v)}</text>`);
  const tStep = niceStep(t1 - t0, 8);
  for (let t = Math.ceil(t0 / tStep) * tStep; t <= t1; t += tStep) out.push(`<text x="${x(t)}" y="${m.top + h + 16}" text-anchor="middle">${fmt(t)}</text>`);
  out.push(`<rect x="${m.left}" y="${m.top}" width="${w}" height="${h}" fill="none" stroke="#888"/>`);
  out.push(`<text x="${m.left + w / 2}" y="${m.top + h + 34}" text-anchor="middle">${esc(p.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.top + h / 2}) rotate(-90)" text-anchor="middle">${esc(p.leftLabel)}</text>`);
  out.push(`<text transform="translate(${width - 12} ${m.top + h / 2}) rotate(90)" text-anchor="middle">${esc(p.rightLabel)}</text>`);
  for (const mark of p.marks ?? []) {
    out.push(`<line x1="${x(mark.t)}" x2="${x(mark.t)}" y1="${m.top}" y2="${m.top + h}" stroke="#bbb" stroke-dasharray="3 3"/>`);
    out.push(`<text x="${x(mark.t) + 3}" y="${m.top + 12}" font-size="10" fill="#666">${esc(mark.label)}</text>`);
  }
  for (const s of p.series) {
    // an unknown value breaks the line
    const runs: string[][] = [[]];
    let prev: { t: number; v: number } | undefined;
    for (const pt of s.points) {
      if (pt.v === undefined) {
        if ((runs.at(-1)?.length ?? 0) > 0) runs.push([]);
        prev = undefined;
        continue;
      }
      const run = runs.at(-1) as string[];
      if (s.step && prev) run.push(`${x(pt.t).toFixed(1)},${y(prev.v, s.axis).toFixed(1)}`);
      run.push(`${x(pt.t).toFixed(1)},${y(pt.v, s.axis).toFixed(1)}`);
      prev = { t: pt.t, v: pt.v };
    }
    for (const run of runs.filter((r) => r.length > 0))
      out.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""} points="${run.join(" ")}"><title>${esc(s.name)}</title></polyline>`,
      );
  }
  p.series.forEach((s, i) => {
    const lx = m.left + i * 170;
    const ly = height - 10;
    out.push(
      `<line x1="${lx}" x2="${lx + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
    );
    out.push(`<text x="${lx + 30}" y="${ly}">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

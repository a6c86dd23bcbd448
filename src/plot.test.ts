import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sparkline, svgPlot } from "./plot.ts";

describe("plots", () => {
  test("a sparkline runs from the lowest bar to the highest; unknown is a gap", () => {
    assert.equal(sparkline([0, 1, 2, 3, 4, 5, 6, 7]), "▁▂▃▄▅▆▇█");
    assert.equal(sparkline([0, undefined, 10]), "▁ █");
    assert.equal(sparkline([0, 0]), "▁▁");
    assert.equal(sparkline([5], 10), "▅");
  });

  test("an SVG with a line per series, steps for counts, a gap where a value is unknown, and text escaped", () => {
    const svg = svgPlot({
      title: "lag & <workers>",
      xLabel: "s",
      leftLabel: "records",
      rightLabel: "workers",
      series: [
        {
          name: "lag",
          color: "#00f",
          axis: "left",
          points: [
            { t: 0, v: 100 },
            { t: 1, v: undefined },
            { t: 2, v: 50 },
            { t: 3, v: 0 },
          ],
        },
        {
          name: "workers",
          color: "#0f0",
          axis: "right",
          step: true,
          points: [
            { t: 0, v: 1 },
            { t: 2, v: 2 },
          ],
        },
      ],
      marks: [{ t: 2, label: "1 -> 2" }],
    });
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(svg, /lag &amp; &lt;workers&gt;/);
    const lines = [...svg.matchAll(/<polyline [^>]*points="([^"]+)"><title>([^<]+)<\/title>/g)].map((m) => [m[2], (m[1] ?? "").split(" ").length]);
    // lag: one point, a gap, then two; workers: a step adds a corner (3 points for 2 readings)
    assert.deepEqual(lines, [
      ["lag", 1],
      ["lag", 2],
      ["workers", 3],
    ]);
    assert.match(svg, /1 -&gt; 2/);
    assert.ok(svg.trimEnd().endsWith("</svg>"));
  });
});

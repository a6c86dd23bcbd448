import assert from "node:assert/strict";
import { test } from "node:test";
import type { StreamPipeline } from "./api.ts";
import { CAPACITY_CONDITION, CapacityWatch, capacityCondition, forecast, growthOf, parseStateBytes } from "./state-capacity.ts";

const MiB = 1_048_576;
const T = Date.parse("2026-01-01T00:00:00.000Z");

test("a worker's state bytes: the sum over its tasks' stores", () => {
  const text = [
    "# HELP conveyor_runtime_state_bytes State size",
    'conveyor_runtime_state_bytes{step="per-minute",partition="0"} 1000',
    'conveyor_runtime_state_bytes{step="per-minute",partition="3"} 2500',
    'conveyor_runtime_state_bytes_other{step="x"} 7',
  ].join("\n");
  assert.equal(parseStateBytes(text), 3500);
  assert.equal(parseStateBytes("conveyor_runtime_records_in_total 5"), undefined, "no window task: nothing to say");
});

test("growth is a least-squares line through the readings, once there are enough over long enough", () => {
  assert.equal(growthOf([{ at: T, bytes: 0 }]), undefined);
  assert.equal(growthOf([0, 5, 10].map((s) => ({ at: T + s * 1000, bytes: s * 100 }))), undefined, "10 s is too short a span");
  const steady = [0, 15, 30, 45].map((s) => ({ at: T + s * 1000, bytes: 1000 + s * 100 }));
  assert.equal(growthOf(steady), 100);
  // Lumpy (flushes, compactions), the line through them still gives the trend.
  const lumpy = [0, 15, 30, 45, 60].map((s, i) => ({ at: T + s * 1000, bytes: s * 100 + (i % 2 === 0 ? 300 : -300) }));
  assert.ok(Math.abs((growthOf(lumpy) as number) - 100) < 15);
});

test("the forecast: when the volume fills at that growth", () => {
  const readings = [0, 15, 30].map((s) => ({ at: T + s * 1000, bytes: MiB + s * 1024 }));
  const f = forecast("state-p-0", readings, 2 * MiB);
  assert.equal(f.bytesPerSecond, 1024);
  // 1 MiB + 30 KiB held, 1 KiB/s: (2 MiB - that) / 1 KiB/s = 994 s after the last reading.
  assert.equal(f.fullAt, T + 30_000 + 994_000);
  assert.equal(
    forecast(
      "state-p-0",
      readings.map((r) => ({ ...r, bytes: MiB })),
      2 * MiB,
    ).fullAt,
    undefined,
    "no growth, no date",
  );
});

test("StateCapacityAtRisk: the soonest to fill within the horizon, or one 90 % full; otherwise False with the soonest", () => {
  const soon = { volume: "state-p-1", bytes: 1.5 * MiB, capacity: 2 * MiB, bytesPerSecond: 1024, fullAt: T + 512_000 };
  const later = { volume: "state-p-0", bytes: MiB, capacity: 8 * MiB, bytesPerSecond: 10, fullAt: T + 40 * 86_400_000 };
  const c = capacityCondition([later, soon], T);
  assert.deepEqual([c.status, c.reason], ["True", "VolumeFillsSoon"]);
  assert.match(c.message, /^state-p-1 holds 1\.50 MiB of 2\.00 MiB and grows 0\.06 MiB\/min: full in about 9 min \(2026-01-01T00:08:32\.000Z\)/);
  assert.match(c.message, /shorten the window or state\.ttl, or raise state\.storage\.size/);
  assert.deepEqual(
    c.atRisk.map((f) => f.volume),
    ["state-p-1"],
  );
  const full = capacityCondition([{ volume: "state-p-2", bytes: 1.9 * MiB, capacity: 2 * MiB }], T);
  assert.deepEqual([full.status, full.reason], ["True", "VolumeFillsSoon"]);
  assert.match(full.message, /nearly full/);
  const ok = capacityCondition([later], T);
  assert.deepEqual([ok.status, ok.reason], ["False", "CapacitySufficient"]);
  assert.match(ok.message, /state-p-0, would take 960\.0 h/);
});

test("the watch writes the condition when it changes (and its figures once a minute while at risk), with one Event as it turns True", async () => {
  let now = T;
  const applied: { status: string; reason: string; lastTransitionTime: string }[] = [];
  const events: string[] = [];
  let p: StreamPipeline = {
    metadata: { namespace: "ns", name: "p" },
    spec: { kafka: { bootstrapServers: [] }, source: { topics: ["a"] }, sink: { topic: "b" } },
  };
  let lists = 0;
  const watch = new CapacityWatch({
    stateVolumes: async () => {
      lists++;
      return [{ name: "state-p-0", capacity: "2Mi" }];
    },
    applyCondition: async (_p, c) => {
      applied.push(c);
      p = { ...p, status: { conditions: [{ ...c, status: c.status as "True" | "False" }] } };
    },
    event: async (_p, reason, message) => {
      events.push(`${reason}: ${message}`);
    },
    now: () => now,
  });
  const metrics = (bytes: number) => new Map([["p-0", `conveyor_runtime_state_bytes{step="w",partition="0"} ${bytes}`]]);
  // Flat at 0.5 MiB: not enough readings for a growth at first, then no growth: False.
  for (let i = 0; i < 3; i++, now += 15_000) await watch.observe(p, metrics(0.5 * MiB));
  assert.deepEqual(
    applied.map((c) => c.status),
    ["False"],
    "written once, then unchanged",
  );
  // Growing 20 KiB/s: 1.5 MiB left fills in minutes.
  for (let i = 0; i < 4; i++, now += 15_000) await watch.observe(p, metrics(0.5 * MiB + i * 300 * 1024));
  assert.equal(applied.at(-1)?.status, "True");
  assert.equal(events.length, 1);
  assert.match(events[0] ?? "", /^StateCapacityAtRisk: state-p-0 holds/);
  const turned = applied.at(-1)?.lastTransitionTime;
  const writes = applied.length;
  // It turned True 45 s ago.
  await watch.observe(p, metrics(0.5 * MiB + 4 * 300 * 1024));
  assert.equal(applied.length, writes, "within a minute of the last write, the same status is not written again");
  now += 15_000;
  await watch.observe(p, metrics(0.5 * MiB + 5 * 300 * 1024));
  assert.equal(applied.length, writes + 1, "its figures, a minute on");
  assert.equal(applied.at(-1)?.lastTransitionTime, turned, "the transition time stays");
  assert.equal(events.length, 1, "one Event per turn");
  assert.equal(p.status?.conditions?.[0]?.type, CAPACITY_CONDITION);
  // 9 passes over 165 s: the PVCs listed once a minute, not once a pass.
  assert.equal(lists, 3);
});

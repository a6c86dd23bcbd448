// The state-volume capacity forecast. Each time the watermark observer reads a windowed pipeline's workers, the
// state bytes each reports (conveyor_runtime_state_bytes, summed over its window tasks) are kept for a while per
// volume; a least-squares line through them gives the growth, and with the volume's capacity, when it fills.
// Before it does, the condition StateCapacityAtRisk says when, and a Warning Event says what to change. The
// condition has a field manager of its own: the reconcile's status applies never carry it.
import type { StreamPipeline } from "./api.ts";
import { parseBytes } from "./topology/quantity.ts";

const STATE_BYTES = "conveyor_runtime_state_bytes";
/** How far back the growth is measured. */
export const HISTORY_MS = 10 * 60_000;
/** The fewest readings, and the shortest span, a growth is drawn from. */
const MIN_SAMPLES = 3;
const MIN_SPAN_MS = 20_000;
/** A volume forecast to fill within this is at risk; so is one this full, however it grows. */
export const HORIZON_MS = 24 * 3_600_000;
const FULL_FRACTION = 0.9;
/** While at risk, the condition's figures are rewritten at most this often. */
const REWRITE_MS = 60_000;
/** Capacities change only on a resize: the PVCs are listed again after this long, or for a worker not seen. */
const VOLUMES_TTL_MS = 60_000;
export const CAPACITY_FIELD_MANAGER = "conveyor-operator-capacity";
export const CAPACITY_CONDITION = "StateCapacityAtRisk";

/** The state bytes one worker reports: the sum over its window tasks' stores. */
export function parseStateBytes(metrics: string): number | undefined {
  let total: number | undefined;
  for (const line of metrics.split("\n")) {
    if (!line.startsWith(`${STATE_BYTES}{`) && !line.startsWith(`${STATE_BYTES} `)) continue;
    const v = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(v)) total = (total ?? 0) + v;
  }
  return total;
}

export interface Reading {
  at: number;
  bytes: number;
}

/** Bytes per second by least squares through the readings; undefined with too few or too close together. */
export function growthOf(readings: readonly Reading[]): number | undefined {
  if (readings.length < MIN_SAMPLES) return undefined;
  const first = readings[0] as Reading;
  const last = readings.at(-1) as Reading;
  if (last.at - first.at < MIN_SPAN_MS) return undefined;
  const n = readings.length;
  let sx = 0;
  let sy = 0;
  let sxx = 0;
  let sxy = 0;
  for (const r of readings) {
    const x = (r.at - first.at) / 1000;
    sx += x;
    sy += r.bytes;
    sxx += x * x;
    sxy += x * r.bytes;
  }
  const d = n * sxx - sx * sx;
  return d === 0 ? undefined : (n * sxy - sx * sy) / d;
}

export interface VolumeForecast {
  volume: string;
  bytes: number;
  capacity: number;
  bytesPerSecond?: number;
  /** when it fills at that growth; absent when it does not grow */
  fullAt?: number;
}

export function forecast(volume: string, readings: readonly Reading[], capacity: number): VolumeForecast {
  const last = readings.at(-1) as Reading;
  const rate = growthOf(readings);
  const out: VolumeForecast = { volume, bytes: last.bytes, capacity, ...(rate !== undefined ? { bytesPerSecond: rate } : {}) };
  if (rate !== undefined && rate > 0) out.fullAt = last.at + (Math.max(0, capacity - last.bytes) / rate) * 1000;
  return out;
}

const mib = (b: number) => `${(b / 1_048_576).toFixed(b < 10 * 1_048_576 ? 2 : 0)} MiB`;
const duration = (ms: number) =>
  ms < 120_000 ? `${Math.round(ms / 1000)} s` : ms < 2 * 3_600_000 ? `${Math.round(ms / 60_000)} min` : `${(ms / 3_600_000).toFixed(1)} h`;

export interface CapacityCondition {
  status: "True" | "False";
  reason: string;
  message: string;
  /** the volumes at risk, for the Event */
  atRisk: VolumeForecast[];
}

/**
 * At risk: a volume forecast to fill within the horizon, or already 90 % full. The message names the soonest,
 * with the rule of thumb for what to change: state grows with input rate x window length (or TTL) x the keys
 * alive in it, so a shorter window or TTL shrinks it in proportion, and a larger size buys time.
 */
export function capacityCondition(forecasts: readonly VolumeForecast[], now: number, horizonMs = HORIZON_MS): CapacityCondition {
  const atRisk = forecasts
    .filter((f) => f.bytes >= FULL_FRACTION * f.capacity || (f.fullAt !== undefined && f.fullAt - now <= horizonMs))
    .sort((a, b) => (a.fullAt ?? now) - (b.fullAt ?? now));
  if (atRisk.length === 0) {
    const growing = forecasts.filter((f) => f.fullAt !== undefined).sort((a, b) => (a.fullAt as number) - (b.fullAt as number))[0];
    return {
      status: "False",
      reason: "CapacitySufficient",
      message: growing
        ? `the soonest to fill, ${growing.volume}, would take ${duration((growing.fullAt as number) - now)} at its growth`
        : "no state volume is growing toward its capacity",
      atRisk,
    };
  }
  const f = atRisk[0] as VolumeForecast;
  const when = f.fullAt !== undefined ? `full in about ${duration(Math.max(0, f.fullAt - now))} (${new Date(f.fullAt).toISOString()})` : "nearly full";
  const growth = f.bytesPerSecond !== undefined && f.bytesPerSecond > 0 ? ` and grows ${mib(f.bytesPerSecond * 60)}/min` : "";
  const others =
    atRisk.length > 1
      ? `; ${atRisk.length - 1} more at risk: ${atRisk
          .slice(1)
          .map((x) => x.volume)
          .join(", ")}`
      : "";
  return {
    status: "True",
    reason: "VolumeFillsSoon",
    message: `${f.volume} holds ${mib(f.bytes)} of ${mib(f.capacity)}${growth}: ${when}${others}. State grows with input rate x window length (or state.ttl) x keys alive: shorten the window or state.ttl, or raise state.storage.size`,
    atRisk,
  };
}

export interface CapacityDeps {
  /** the pipeline's state PVCs, with their capacity (or request, before one is provisioned) */
  stateVolumes(p: StreamPipeline): Promise<{ name: string; capacity?: string; requested?: string }[]>;
  /** server-side apply of this one condition, under CAPACITY_FIELD_MANAGER */
  applyCondition(p: StreamPipeline, condition: { type: string; status: string; reason: string; message: string; lastTransitionTime: string }): Promise<void>;
  event(p: StreamPipeline, reason: string, message: string, dedupeKey: string): Promise<void>;
  now(): number;
}

/** The readings of each volume over HISTORY_MS, and the forecast from them, per pipeline. */
export class CapacityWatch {
  private readonly history = new Map<string, Reading[]>();
  private readonly written = new Map<string, { status: string; reason: string; at: number }>();
  private readonly capacities = new Map<string, { at: number; bytes: Map<string, number | undefined> }>();
  private readonly deps: CapacityDeps;

  constructor(deps: CapacityDeps) {
    this.deps = deps;
  }

  /** Takes one pass's worker metrics (pod name -> text) and writes the condition when it changed. */
  async observe(p: StreamPipeline, scraped: ReadonlyMap<string, string>): Promise<CapacityCondition | undefined> {
    const now = this.deps.now();
    const key = `${p.metadata?.namespace}/${p.metadata?.name}`;
    const volumes = await this.capacitiesOf(
      p,
      key,
      [...scraped.keys()].map((pod) => `state-${pod}`),
      now,
    );
    const forecasts: VolumeForecast[] = [];
    for (const [pod, text] of scraped) {
      const volume = `state-${pod}`;
      const capacity = volumes.get(volume);
      const bytes = parseStateBytes(text);
      if (capacity === undefined || bytes === undefined) continue;
      const id = `${key}/${volume}`;
      const readings = [...(this.history.get(id) ?? []), { at: now, bytes }].filter((r) => r.at > now - HISTORY_MS);
      this.history.set(id, readings);
      forecasts.push(forecast(volume, readings, capacity));
    }
    if (forecasts.length === 0) return undefined;
    const c = capacityCondition(forecasts, now);
    const last = this.written.get(key);
    const current = p.status?.conditions?.find((x) => x.type === CAPACITY_CONDITION);
    const changed = !current || current.status !== c.status || current.reason !== c.reason;
    if (!changed && !(c.status === "True" && now - (last?.at ?? 0) >= REWRITE_MS)) return c;
    const transition = changed ? new Date(now).toISOString() : (current?.lastTransitionTime ?? new Date(now).toISOString());
    await this.deps.applyCondition(p, { type: CAPACITY_CONDITION, status: c.status, reason: c.reason, message: c.message, lastTransitionTime: transition });
    this.written.set(key, { status: c.status, reason: c.reason, at: now });
    if (c.status === "True" && changed) await this.deps.event(p, CAPACITY_CONDITION, c.message, transition);
    return c;
  }

  /** Each volume's capacity in bytes, listed at most once a minute unless a volume is new. */
  private async capacitiesOf(p: StreamPipeline, key: string, wanted: string[], now: number): Promise<Map<string, number | undefined>> {
    const kept = this.capacities.get(key);
    if (kept && now - kept.at < VOLUMES_TTL_MS && wanted.every((v) => kept.bytes.has(v))) return kept.bytes;
    const bytes = new Map((await this.deps.stateVolumes(p)).map((v) => [v.name, parseBytes(v.capacity ?? v.requested ?? "")]));
    this.capacities.set(key, { at: now, bytes });
    return bytes;
  }

  /** Drops what is kept for pipelines no longer observed. */
  retain(keys: ReadonlySet<string>): void {
    for (const id of this.history.keys()) if (!keys.has(id.slice(0, id.lastIndexOf("/")))) this.history.delete(id);
    for (const k of this.written.keys()) if (!keys.has(k)) this.written.delete(k);
    for (const k of this.capacities.keys()) if (!keys.has(k)) this.capacities.delete(k);
  }
}

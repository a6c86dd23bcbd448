// The worker's metrics (prom-client), served on /metrics beside the probes.
import { statfsSync } from "node:fs";
import { getHeapStatistics } from "node:v8";
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export interface RuntimeMetrics {
  registry: Registry;
  recordsIn: Counter;
  recordsOut: Counter;
  filtered: Counter;
  deadLetters: Counter<"step" | "kind">;
  /** from fetch to durable write, per record */
  processing: Histogram;
  /** from the record's timestamp to durable write, per record */
  endToEnd: Histogram;
  commit: Histogram;
  aggregated: Counter<"step">;
  late: Counter<"step" | "action">;
  restoredRecords: Counter<"step" | "partition">;
  restoreClosedSkipped: Counter<"step" | "partition">;
  restoreRetentionSkipped: Counter<"step" | "partition">;
  restoreRemaining: Gauge<"step" | "partition">;
  repartitionPurgedTo: Gauge<"topic" | "partition">;
  repartitionPurgeFailures: Counter;
  refusals: Counter<"topic">;
  segmentsDropped: Counter<"step" | "partition">;
  joinVersionsOverflowed: Counter<"step" | "partition">;
  globalTableEntries: Gauge<"input">;
  globalTableBytes: Gauge<"input">;
  globalTableSkipped: Counter<"input">;
  globalTableReadFailures: Counter<"input">;
  abortedSkipped: Counter;
  lag: Gauge;
  restoring: Gauge;
  stateBytes: Gauge<"step" | "partition">;
  stateMemtableBytes: Gauge<"step" | "partition">;
  stateCacheBytes: Gauge;
  taskWatermark: Gauge<"step" | "partition">;
  sourceWatermark: Gauge<"topic" | "partition">;
  sourceIdle: Gauge<"topic" | "partition">;
}

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function runtimeMetrics(): RuntimeMetrics {
  const registry = new Registry();
  const r = [registry];
  // What the process may use: the V8 heap's limit (NODE_OPTIONS sizes it from the container's memory limit) and
  // that limit as Node reads it from the cgroup (0 when there is none).
  new Gauge({
    name: "conveyor_runtime_heap_limit_bytes",
    help: "The V8 heap's size limit.",
    registers: r,
    collect() {
      this.set(getHeapStatistics().heap_size_limit);
    },
  });
  new Gauge({
    name: "conveyor_runtime_heap_used_bytes",
    help: "The V8 heap in use now.",
    registers: r,
    collect() {
      this.set(getHeapStatistics().used_heap_size);
    },
  });
  new Gauge({
    name: "conveyor_runtime_memory_limit_bytes",
    help: "The container's memory limit, as Node reads it from its cgroup; 0 when unlimited.",
    registers: r,
    collect() {
      const limit = process.constrainedMemory();
      this.set(limit > 0 && limit < Number.MAX_SAFE_INTEGER ? limit : 0);
    },
  });
  return {
    registry,
    recordsIn: new Counter({ name: "conveyor_runtime_records_in_total", help: "Records read from the source topics.", registers: r }),
    recordsOut: new Counter({ name: "conveyor_runtime_records_out_total", help: "Records written to the sink.", registers: r }),
    filtered: new Counter({ name: "conveyor_runtime_records_filtered_total", help: "Records a filter step dropped.", registers: r }),
    deadLetters: new Counter({
      name: "conveyor_runtime_dead_letters_total",
      help: "Records sent to the dead-letter topic, by failing step and kind (parse, eval, encode).",
      labelNames: ["step", "kind"],
      registers: r,
    }),
    processing: new Histogram({
      name: "conveyor_runtime_processing_seconds",
      help: "Time from fetching a record to its results being written.",
      buckets: LATENCY_BUCKETS,
      registers: r,
    }),
    endToEnd: new Histogram({
      name: "conveyor_runtime_end_to_end_seconds",
      help: "Time from a record's timestamp to its results being written.",
      buckets: LATENCY_BUCKETS,
      registers: r,
    }),
    commit: new Histogram({
      name: "conveyor_runtime_commit_seconds",
      help: "Time to write a batch and commit its offsets.",
      buckets: LATENCY_BUCKETS,
      registers: r,
    }),
    aggregated: new Counter({ name: "conveyor_runtime_records_aggregated_total", help: "Records a window step counted.", labelNames: ["step"], registers: r }),
    late: new Counter({
      name: "conveyor_runtime_records_late_total",
      help: "Records whose windows had all closed, by step and what was done (topic, dropped).",
      labelNames: ["step", "action"],
      registers: r,
    }),
    restoredRecords: new Counter({
      name: "conveyor_runtime_restored_records_total",
      help: "Changelog records read to restore state, by window step and task partition.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    repartitionPurgedTo: new Gauge({
      name: "conveyor_runtime_repartition_purged_to_offset",
      help: "The offset below which this worker last purged a repartition partition's committed records (DeleteRecords).",
      labelNames: ["topic", "partition"],
      registers: r,
    }),
    repartitionPurgeFailures: new Counter({
      name: "conveyor_runtime_repartition_purge_failures_total",
      help: "DeleteRecords calls on the repartition topic that failed (tried again at the next interval).",
      registers: r,
    }),
    refusals: new Counter({
      name: "conveyor_runtime_write_refusals_total",
      help: "Produce requests whose records the broker refused although the topic's limits allowed them; each refused record went to the DLQ.",
      labelNames: ["topic"],
      registers: r,
    }),
    restoreRemaining: new Gauge({
      name: "conveyor_runtime_restore_remaining_records",
      help: "Changelog records a restoring task has still to read (offsets up to the end it restores to), by window step and task partition; 0 once restored.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    restoreRetentionSkipped: new Counter({
      name: "conveyor_runtime_restore_retention_skipped_offsets_total",
      help: "Changelog offsets a restore needed that retention or DeleteRecords had removed (below the log start), by window step and task partition.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    restoreClosedSkipped: new Counter({
      name: "conveyor_runtime_restore_closed_windows_skipped_total",
      help: "Changelog records of windows already closed, read in a restore and not stored, by window step and task partition.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    segmentsDropped: new Counter({
      name: "conveyor_runtime_state_segments_dropped_total",
      help: "Range deletes that dropped a window store's closed time segments whole, by window step and task partition.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    joinVersionsOverflowed: new Counter({
      name: "conveyor_runtime_join_versions_overflowed_total",
      help: "Versions of a join's table keys dropped past the most a key keeps (1,000) while the watermark stood still, by join step and task partition.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    globalTableEntries: new Gauge({
      name: "conveyor_runtime_global_table_entries",
      help: "Keys a global input's table holds in this worker's memory.",
      labelNames: ["input"],
      registers: r,
    }),
    globalTableBytes: new Gauge({
      name: "conveyor_runtime_global_table_bytes",
      help: "The encoded size of a global input's keys and values that this worker holds (the heap holds more).",
      labelNames: ["input"],
      registers: r,
    }),
    globalTableSkipped: new Counter({
      name: "conveyor_runtime_global_table_records_skipped_total",
      help: "Records of a global input that could not be decoded or keyed, left out of its table (a warning names each).",
      labelNames: ["input"],
      registers: r,
    }),
    globalTableReadFailures: new Counter({
      name: "conveyor_runtime_global_table_read_failures_total",
      help: "Reads of a global input's topics that failed and are tried again with backoff.",
      labelNames: ["input"],
      registers: r,
    }),
    abortedSkipped: new Counter({
      name: "conveyor_runtime_aborted_records_skipped_total",
      help: "Records of aborted transactions that read_committed reads dropped.",
      registers: r,
    }),
    restoring: new Gauge({ name: "conveyor_runtime_restoring_tasks", help: "Tasks restoring from their changelog.", registers: r }),
    stateCacheBytes: new Gauge({
      name: "conveyor_runtime_state_cache_bytes",
      help: "Bytes the state cache holds (estimated), after the last committed batch; spec.state.cacheSize bounds it between batches.",
      registers: r,
    }),
    stateBytes: new Gauge({
      name: "conveyor_runtime_state_bytes",
      help: "Bytes of each store, as RocksDB estimates them.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    stateMemtableBytes: new Gauge({
      name: "conveyor_runtime_state_memtable_bytes",
      help: "Bytes of each store's writes not yet flushed to disk (native memory, at most 1.5 x 16 MiB a store).",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    taskWatermark: new Gauge({
      name: "conveyor_runtime_task_watermark_ms",
      help: "Each window task's event-time watermark, by window step and partition.",
      labelNames: ["step", "partition"],
      registers: r,
    }),
    lag: new Gauge({
      name: "conveyor_runtime_lag_records",
      help: "Records behind the end of each assigned partition (read_committed), as last measured.",
      labelNames: ["topic", "partition"],
      registers: r,
    }),
    sourceWatermark: new Gauge({
      name: "conveyor_runtime_source_watermark_ms",
      help: "Each assigned source partition's event-time watermark.",
      labelNames: ["topic", "partition"],
      registers: r,
    }),
    sourceIdle: new Gauge({
      name: "conveyor_runtime_source_idle",
      help: "1 while an assigned source partition is idle (no records for idleTimeout: it holds no window back), else 0.",
      labelNames: ["topic", "partition"],
      registers: r,
    }),
  };
}

/**
 * The size of the filesystem the state directory is on, and what is free on it: the state volume's, on a pod
 * (what kubelet_volume_stats_* give, for clusters that do not collect those). A statfs that fails leaves no
 * sample, so a rule or a panel sees the capacity as absent, never as 0.
 */
export function observeStateVolume(m: RuntimeMetrics, stateDir: string): void {
  const read = (gauge: Gauge<"volume">, pick: (s: { blocks: number; bfree: number; bavail: number; bsize: number }) => number) => {
    try {
      gauge.set({ volume: "state" }, pick(statfsSync(stateDir)));
    } catch {
      gauge.remove({ volume: "state" });
    }
  };
  new Gauge({
    name: "conveyor_runtime_state_volume_capacity_bytes",
    help: "Size of the filesystem that holds the state directory (the state volume).",
    labelNames: ["volume"],
    registers: [m.registry],
    collect() {
      read(this, (s) => s.blocks * s.bsize);
    },
  });
  new Gauge({
    name: "conveyor_runtime_state_volume_available_bytes",
    help: "Bytes free to the worker on the filesystem that holds the state directory.",
    labelNames: ["volume"],
    registers: [m.registry],
    collect() {
      read(this, (s) => s.bavail * s.bsize);
    },
  });
}

// Generated from crds/streampipelines.conveyor.dev.yaml by `npm run gen:types`. Do not edit by hand.

/** What the operator observed, written through the status subresource. */
export interface StreamPipelineStatus {
  /** The spec generation this status describes. */
  observedGeneration?: number;
  /** The Kafka consumer group the workers join. */
  consumerGroup?: string;
  /** Worker pods the StatefulSet has. */
  replicas?: number;
  /** Worker pods that are ready. */
  readyReplicas?: number;
  /** Label selector of the worker pods (for the scale subresource). */
  selector?: string;
  /** Total lag of the workers' group, when known: scaling.lag, kept at the top level for tools that read it there. Written in scaling.mode lag only. */
  lag?: number;
  /** The state-schema hash of each stateful step whose state the pipeline keeps, as last accepted. A topology whose step hashes differ is refused (IncompatibleStateChange) until spec.state.resetToken changes. */
  stateSchemas?: Record<string, string>;
  /** The spec.state.resetToken whose state reset was carried out. */
  stateResetToken?: string;
  /** The internal topics the operator created for this pipeline, each with the id Kafka gave it. Only these are deleted with the pipeline, and only while the topic's id is still this one. Absent on a pipeline that ran under an operator before it recorded them: such a pipeline keeps its earlier names (<namespace>.<name>-<step>-...). */
  internalTopics?: {
    name: string;
    /** The topic's id (a Kafka Uuid) when it was created. */
    topicId: string;
  }[];
  /** State volumes of workers a scale-down removed, kept for state.retention.orphanTTL: each is reused if its worker comes back first, and deleted when it expires. */
  orphanedVolumes?: {
    /** The PersistentVolumeClaim. */
    name: string;
    orphanedAt: string;
    expiresAt: string;
  }[];
  /** Each source topic's partitions: how many it has now, and how many it had when the pipeline first read it. Partitions numbered from initialPartitions on were added later (by partition growth or by hand); a worker reads them from their start whatever source.startFrom says, so that no record written to them is skipped. */
  sources?: {
    topic: string;
    /** Partitions now. */
    partitions: number;
    /** Partitions when the pipeline first read the topic. */
    initialPartitions: number;
  }[];
  /** The lag autoscaler's last decision and what it saw (scaling.mode lag only; absent in fixed and external modes). A new decision is made every few seconds while the pipeline runs. */
  scaling?: {
    /** The replicas the operator set the worker StatefulSet to. */
    desired: number;
    /** The replicas the StatefulSet was set to when the decision was made. */
    current: number;
    /** Why: ScaleUp, WakeUp, ScaleDown, ScaleToZero; or, when the replicas stay, Steady, Stabilizing (a scale-down waits out scaling.scaleDownStabilization), HoldRebalance (the group is not yet stable with one member per replica), UnknownGroup, UnknownLag or UnknownRate (a read failed or no rate is measured yet: never a reason to scale down). */
    reason: string;
    /** What bounded desired: maxReplicas, partitions (the most partitions of a topic the group reads), partitionSkew (a partition busier than one worker can drain), or minReplicas (which held it up). */
    cappedBy?: "maxReplicas" | "partitions" | "partitionSkew" | "minReplicas";
    /** Records the group is behind over the source partitions and the internal repartition topic's; absent when the offsets could not be read. */
    lag?: number;
    /** Records per second appended to those partitions; absent until two readings are known. */
    inputRate?: number;
    /** Records per second the group committed over the same interval. */
    consumeRate?: number;
    /** Records per second one worker consumes while it has a backlog, learned from intervals in which every worker was busy; absent until measured (scaling.lagPerReplica stands in). */
    perReplicaRate?: number;
    /** When the autoscaler last changed the replicas. */
    lastScaleTime?: string;
    /** When the offsets behind this decision were read. */
    sampleTime: string;
    /** The reads that failed for this decision; what they would have said counts as unknown, never as zero. */
    errors?: string[];
    /** What the policy carries from one decision to the next, with perReplicaRate and lastScaleTime above, so that a restarted or failed-over operator goes on where it was. */
    state: {
      /** When the autoscaler began to watch; a scale-down waits a full window after it. */
      since: string;
      /** Since when the pipeline has had no input and no lag. */
      idleSince?: string;
      /** The targets recommended within the scale-down stabilization window, oldest first, each kept only while no later one is as high: a scale-down goes to the highest of them. */
      recommendations: {
        at: string;
        desired: number;
      }[];
    };
  };
  /** Event-time progress, for a pipeline with a window step: what its workers' watermark metrics said when the operator last read them (every 15 s while workers are ready; written only when a watermark moved, and kept as last read when the workers stop). */
  watermarks?: {
    /** When the workers were read. */
    observedTime: string;
    /** The lowest window task watermark: every window whose end plus grace is before it has closed. Absent while a task has not yet heard from every source partition. */
    low?: string;
    /** Each source partition a worker reads: its watermark (the highest event time read, less maxOutOfOrderness; absent before the first record) and whether it is idle (no records for idleTimeout, so that it holds no window back). */
    sources?: {
      topic: string;
      partition: number;
      watermark?: string;
      idle: boolean;
    }[];
    /** Each window task (a partition of the repartition topic): its watermark, the lowest of the source partitions' that are not idle; absent until it has heard from every one. */
    tasks?: {
      partition: number;
      watermark?: string;
    }[];
    /** Workers whose metrics could not be read this time, and why; their partitions are missing above until the next read. */
    unread?: string[];
  };
  /** The pipeline's conditions, keyed by type (Ready, Progressing, Degraded, ScalingLimited, StateVolumesResizing, StateCapacityAtRisk). */
  conditions?: PipelineCondition[];
}

export interface PipelineCondition {
  /** Condition type. */
  type: string;
  status: "True" | "False" | "Unknown";
  observedGeneration?: number;
  lastTransitionTime: string;
  /** A CamelCase reason. */
  reason: string;
  message: string;
}

/** What the pipeline reads, computes and writes, and how it runs. */
export interface StreamPipelineSpec {
  /** The Kafka cluster the pipeline reads from and writes to. */
  kafka: KafkaSpec;
  /** The topics the pipeline consumes and how their records are read. */
  source: SourceSpec;
  /** Named inputs besides spec.source, each with its own topics, format, event time and watermark. Their records enter the pipeline at its first step, as the source's do (a union, as Kafka Streams' merge): `topic` tells them apart in CEL. Every input shares the source's startFrom, consumer group and watermark: a window waits for the slowest partition of every input. */
  inputs?: ({
    /** The input's stable ID, a DNS label. */
    name: string;
    /** Its topic names. No topic is read by two inputs, or by an input and the source. */
    topics: string[];
    /** How its record values are decoded, as spec.source.format. Default: "json". */
    format?: "json" | "string" | "bytes";
    /** A global table (Kafka Streams' GlobalKTable): every worker reads all of its partitions, outside the consumer group, and holds its latest value per key in memory, read again from the topic itself at every start. A join step names it and looks a record up by `lookup`, as the table stands when the record is processed, anywhere in the pipeline and with no repartition. For small reference data. Default: false. */
    global?: boolean;
    /** A CEL expression giving its records' event time, as spec.source.eventTime. By default, the Kafka record timestamp. */
    eventTime?: string;
    /** How event time advances on its partitions, as spec.source.watermark. Default: {}. */
    watermark?: {
      /** As spec.source.watermark.maxOutOfOrderness. Default: "30s". */
      maxOutOfOrderness?: string;
      /** As spec.source.watermark.idleTimeout. Default: "1m". */
      idleTimeout?: string;
      /** As spec.source.watermark.maxFutureSkew. Default: "5m". */
      maxFutureSkew?: string;
    };
  })[];
  /** The topology, in order. Each step has a name and exactly one kind: filter, map, flatMap, keyBy, window (with an aggregate) or aggregate alone (a table: one running value per key). Names are stable IDs: state stores and internal topics are derived from them. */
  steps?: StepSpec[];
  /** Where the pipeline writes its results. */
  sink: SinkSpec;
  /** Named sinks besides spec.sink, for route steps: each with its own topic, key and format. */
  sinks?: NamedSinkSpec[];
  /** Where records that fail parsing or evaluation go, with headers that say why. */
  deadLetter?: DeadLetterSpec;
  /** Delivery guarantee and flow control. Default: {}. */
  processing?: ProcessingSpec;
  /** The workers' state stores and volumes. Default: {}. */
  state?: StateSpec;
  /** How the number of workers is decided. Default: {}. */
  scaling?: ScalingSpec;
  /** Number of worker pods in fixed and external modes (the scale subresource writes it). Default: 1. */
  replicas?: number;
  /** Scale the workers to zero and keep state and offsets. Default: false. */
  suspend?: boolean;
  /** Overrides for the worker pods. */
  template?: PodTemplateOverrides;
}

/** Overrides for the worker pods. */
export interface PodTemplateOverrides {
  /** Extra labels and annotations for the worker pods. */
  metadata?: {
    /** Labels added to each worker pod. */
    labels?: Record<string, string>;
    /** Annotations added to each worker pod. */
    annotations?: Record<string, string>;
  };
  /** Runtime image. Default: the operator's configured runtime image. */
  image?: string;
  /** Compute resources of the runtime container. */
  resources?: {
    /** Requested resources (cpu and memory quantities). */
    requests?: Record<string, number | string>;
    /** Resource limits (cpu and memory quantities). */
    limits?: Record<string, number | string>;
  };
  /** Node labels the worker pods must match. */
  nodeSelector?: Record<string, string>;
  /** Tolerations of the worker pods, as in a pod spec. */
  tolerations?: Record<string, unknown>[];
  /** Affinity of the worker pods, as in a pod spec. */
  affinity?: Record<string, unknown>;
  /** PriorityClass of the worker pods. */
  priorityClassName?: string;
  /** ServiceAccount of the worker pods. Default: the namespace's default account. */
  serviceAccountName?: string;
}

/** How the number of workers is decided. Default: {}. */
export interface ScalingSpec {
  /** fixed uses spec.replicas; external lets an HPA or KEDA drive the scale subresource; lag lets Conveyor scale on consumer lag. Default: "fixed". */
  mode?: "fixed" | "external" | "lag";
  /** Fewest workers in lag mode. Default: 1. */
  minReplicas?: number;
  /** Most workers in lag mode. Default: 12. */
  maxReplicas?: number;
  /** A backlog should drain within this. Default: "60s". */
  targetCatchUp?: string;
  /** Lag one worker is assumed to handle until its throughput has been measured. Default: 1000. */
  lagPerReplica?: number;
  /** Scale down only to the highest target seen within this window. Default: "5m". */
  scaleDownStabilization?: string;
  /** With minReplicas 0, workers go to zero after this long with no input and no lag. */
  scaleToZeroAfter?: string;
  /** Growing source topics when their partition count caps parallelism. Default: {}. */
  partitions?: {
    /** Add partitions where that is safe for keyed state. Default: false. */
    autoGrow?: boolean;
    /** The most partitions a source may grow to; also the partition count of internal repartition topics. */
    max?: number;
  };
}

/** The workers' state stores and volumes. Default: {}. */
export interface StateSpec {
  /** A window or table key not updated for this long (processing time) is never read again and is deleted with a changelog tombstone. Unset means no expiry. */
  ttl?: string;
  /** Each worker's state volume. Default: {}. */
  storage?: {
    /** Requested size of each worker's state volume. Default: "1Gi". */
    size?: number | string;
    /** StorageClass of the state volumes. Default is the cluster's default class. */
    storageClassName?: string;
  };
  /** RocksDB block cache per worker. Default: "64Mi". */
  blockCacheSize?: number | string;
  /** The state cache per worker, shared by its tasks: windows are read and written back through it before RocksDB, like Kafka Streams' statestore.cache.max.bytes. It bounds the heap that state takes. Default: "32Mi". */
  cacheSize?: number | string;
  /** What happens to state volumes and internal topics. Default: {}. */
  retention?: {
    /** Retain keeps the volumes of removed workers (warm state); Delete removes them. Default: "Retain". */
    whenScaled?: "Retain" | "Delete";
    /** Delete removes volumes, internal topics and the consumer group with the pipeline; Retain keeps them. Default: "Delete". */
    whenDeleted?: "Retain" | "Delete";
    /** A retained volume of a removed worker is deleted after this long unless the worker comes back. */
    orphanTTL?: string;
  };
  /** Change this value to accept a state-incompatible topology change: the pipeline's state is discarded and rebuilt. Without it, such a change is refused. */
  resetToken?: string;
}

/** Delivery guarantee and flow control. Default: {}. */
export interface ProcessingSpec {
  /** atLeastOnce commits after the sink and state are durable; exactlyOnce uses Kafka transactions. Default: "atLeastOnce". */
  guarantee?: "atLeastOnce" | "exactlyOnce";
  /** How often offsets (and transactions) are committed. Default: "100ms". */
  commitInterval?: string;
  /** Records a task holds in flight before it pauses fetching. Default: 1000. */
  maxInFlight?: number;
  /** A cap on what one worker consumes per second (protects a slow sink). Unset means no cap. */
  maxRecordsPerSecond?: number;
}

/** Where records that fail parsing or evaluation go, with headers that say why. */
export interface DeadLetterSpec {
  /** Dead-letter topic name. */
  topic: string;
}

export interface NamedSinkSpec {
  /** The name route steps send to. */
  name: string;
  /** The topic. */
  topic: string;
  /** A CEL expression for the output key. Default: the record's key. */
  key?: string;
  /** How values are encoded. Default: "json". */
  format?: "json" | "string" | "bytes";
}

/** Where the pipeline writes its results. */
export interface SinkSpec {
  /** Sink topic name. */
  topic: string;
  /** A CEL expression for the output key. Default: the record's key. */
  key?: string;
  /** How values are encoded. Default: "json". */
  format?: "json" | "string" | "bytes";
}

export interface StepSpec {
  /** The step's stable ID, a DNS label. */
  name: string;
  /** A CEL expression over `key`, `value`, `headers`, `topic`, `partition`, `offset` and `timestamp`; records for which it is false are dropped. */
  filter?: string;
  /** A CEL expression whose result becomes the record's new value. */
  map?: string;
  /** A CEL expression giving a list; each element becomes a record. */
  flatMap?: string;
  /** A CEL expression giving the record's new key. Records are re-partitioned by it through an internal topic. */
  keyBy?: string;
  /** An event-time window. Exactly one of tumbling, hopping or session. */
  window?: WindowSpec;
  /** Named aggregations per key and window, or per key alone (a table) when the step has no window. Each is exactly one of count, sum, min, max, avg (a CEL expression over the record), reduce, latest or topN. */
  aggregate?: Record<string, AggregationSpec>;
  /** onWindowClose emits each window once, when the watermark passes its end plus grace; onUpdate emits on every change. */
  emit?: "onWindowClose" | "onUpdate";
  /** For an aggregate without a window: when spec.state.ttl expires a key, write a tombstone (its key and no value) to the sink. The step's results must go straight to the sink. */
  emitTombstones?: boolean;
  /** Sends records to named sinks (spec.sinks) by condition: the first route whose `when` is true takes the record to its sink, and it goes no further; a record no route takes goes on to the next step (Kafka Streams' split().branch(), with the rest as the default branch). */
  route?: {
    /** A CEL expression over the record giving a bool. */
    when: string;
    /** The name of a sink in spec.sinks. */
    to: string;
  }[];
  /** Joins each record with a named input's table on event time: the input's latest value per key as it stood at the record's event time (a stream-table join; the record waits for the watermark to pass its time, so the result never depends on which topic was read first). The record's key is the keyBy's before this step; the input's records are keyed by `key`. The joined record is the record's value (a map) with the table's value under `as`. With `within`, the input is a stream instead (a windowed stream-stream join): each pair of records, one of each side, whose event times are at most `within` apart is joined once. */
  join?: {
    /** The name of an input in spec.inputs: the table side. A Kafka tombstone (a record without a value) deletes its key. */
    input: string;
    /** A CEL expression over the input's record giving its join key, compared with the keyBy's key before this step (or, for a global input, with `lookup`). */
    key: string;
    /** For a global input only, and required there: a CEL expression over the record giving the key to look up in the input's table. */
    lookup?: string;
    /** The field of the joined record that holds the table's value. */
    as: string;
    /** inner gives only records whose key has a table value at their time (with `within`: a record of the input within that time); left gives every record, with null under `as` when there is none; outer (with `within` only) gives the input's unmatched records too, each as a record holding only `as`. Default: "inner". */
    type?: "inner" | "left" | "outer";
    /** A table-table join (Kafka Streams' KTable-KTable join, Flink's regular join): the records reaching this step are a table too, each its key's latest value (null deletes it), and whenever either side of a key changes, on event time, the join of the two latest values comes out, or a tombstone when the change ends a result. The step is the pipeline's last. */
    table?: boolean;
    /** A windowed stream-stream join (Kafka Streams' JoinWindows, Flink's interval join): the input is a stream, and a record joins each of the input's records with the same key whose event time is at most this far before or after its own. Each side's records are kept until the watermark is this far past them. */
    within?: string;
    /** With `within`: how far behind the watermark a record of either side may still come and join; the join's results wait that much longer. Default 0s. */
    grace?: string;
  };
  /** What happens to records that arrive after their window closed (or, for a join, after the watermark passed their time). */
  late?: {
    /** Side topic for late records. */
    topic?: string;
    /** Drop late records (they are counted in metrics). */
    drop?: boolean;
  };
}

export interface AggregationSpec {
  /** Counts records. */
  count?: Record<string, never>;
  /** Sums a CEL expression. */
  sum?: string;
  /** Smallest value of a CEL expression. */
  min?: string;
  /** Largest value of a CEL expression. */
  max?: string;
  /** Mean of a CEL expression. */
  avg?: string;
  /** A custom fold, `acc` is the accumulator and `value` the record's value. */
  reduce?: {
    /** CEL expression for the initial accumulator. */
    init: string;
    /** CEL expression for the next accumulator. */
    expr: string;
  };
  /** The value of the record with the greatest `by` (default: the event time); on equal `by`, the greater value, so that the result does not depend on the order records are read in. */
  latest?: {
    /** CEL expression for the value kept. */
    value: string;
    /** CEL expression ordering the records (a number, string, bytes, timestamp or bool, or a list of those compared in turn). */
    by?: string;
  };
  /** The `limit` values with the greatest `by`, greatest first (ties as for latest): a list. */
  topN?: {
    /** How many values to keep. */
    limit: number;
    /** CEL expression ordering the records (a number, string, bytes, timestamp or bool, or a list of those compared in turn). */
    by: string;
    /** CEL expression for the value kept. Default: the record's value. */
    value?: string;
  };
}

/** An event-time window. Exactly one of tumbling, hopping or session. */
export interface WindowSpec {
  /** Fixed, non-overlapping windows of this size. */
  tumbling?: string;
  /** Windows of `size` starting every `advance`. */
  hopping?: {
    /** Window length. */
    size: string;
    /** Distance between window starts. */
    advance: string;
  };
  /** Windows per key that close after `gap` without records. */
  session?: {
    /** Inactivity gap. */
    gap: string;
  };
  /** How long after a window's end records are still accepted (allowed lateness). Default: "0s". */
  grace?: string;
}

/** The topics the pipeline consumes and how their records are read. */
export interface SourceSpec {
  /** Source topic names. */
  topics: string[];
  /** How record values are decoded. json gives `value` as a map; string as a string; bytes as bytes. Default: "json". */
  format?: "json" | "string" | "bytes";
  /** Where a new consumer group starts. Partitions added later are always read from their start. Default: "latest". */
  startFrom?: "earliest" | "latest";
  /** A CEL expression giving a record's event time (a timestamp, or milliseconds since the epoch). By default, the Kafka record timestamp. */
  eventTime?: string;
  /** How event time advances. Default: {}. */
  watermark?: {
    /** How far behind the highest event time seen on a source partition its records may arrive and still count as on time. Default: "30s". */
    maxOutOfOrderness?: string;
    /** A source partition with no records for this long stops holding the watermark back. Default: "1m". */
    idleTimeout?: string;
    /** How far ahead of the worker's clock an event time may be. A record beyond it, or with an event time windows cannot hold (before the epoch, or past 2^53 ms), goes to the dead-letter topic with kind eventTime and never moves a watermark: one record from the year 3000 would otherwise close every window for good. Default: "5m". */
    maxFutureSkew?: string;
  };
}

/** The Kafka cluster the pipeline reads from and writes to. */
export interface KafkaSpec {
  /** Broker addresses (host:port) used to bootstrap the connection. */
  bootstrapServers: string[];
  /** TLS to the brokers. Certificates come only from Secrets, by reference. */
  tls?: {
    /** Connect with TLS. Default: true. */
    enabled?: boolean;
    /** A Secret key that holds the CA bundle (PEM) the brokers' certificates chain to. */
    caSecretRef?: {
      /** Secret name, in the pipeline's namespace. */
      name: string;
      /** Key in the Secret. Default: "ca.crt". */
      key?: string;
    };
    /** A kubernetes.io/tls Secret with a client certificate (tls.crt, tls.key) for mutual TLS. */
    clientSecretRef?: {
      /** Secret name, in the pipeline's namespace. */
      name: string;
    };
  };
  /** SASL authentication. The credentials come only from a Secret, by reference. */
  sasl?: {
    /** The SASL mechanism. */
    mechanism: "plain" | "scram-sha-256" | "scram-sha-512";
    /** A Secret holding the username and password. */
    secretRef: {
      /** Secret name, in the pipeline's namespace. */
      name: string;
      /** Key of the username. Default: "username". */
      usernameKey?: string;
      /** Key of the password. Default: "password". */
      passwordKey?: string;
    };
  };
}

/** The CRD's defaults for scalar spec fields, by path (`[]` marks a list item), for code that reads a spec the apiserver has not defaulted. */
export const SPEC_DEFAULTS = {
  "kafka.tls.enabled": true,
  "kafka.tls.caSecretRef.key": "ca.crt",
  "kafka.sasl.secretRef.usernameKey": "username",
  "kafka.sasl.secretRef.passwordKey": "password",
  "source.format": "json",
  "source.startFrom": "latest",
  "source.watermark.maxOutOfOrderness": "30s",
  "source.watermark.idleTimeout": "1m",
  "source.watermark.maxFutureSkew": "5m",
  "inputs[].format": "json",
  "inputs[].global": false,
  "inputs[].watermark.maxOutOfOrderness": "30s",
  "inputs[].watermark.idleTimeout": "1m",
  "inputs[].watermark.maxFutureSkew": "5m",
  "steps[].window.grace": "0s",
  "steps[].join.type": "inner",
  "sink.format": "json",
  "sinks[].format": "json",
  "processing.guarantee": "atLeastOnce",
  "processing.commitInterval": "100ms",
  "processing.maxInFlight": 1000,
  "state.storage.size": "1Gi",
  "state.blockCacheSize": "64Mi",
  "state.cacheSize": "32Mi",
  "state.retention.whenScaled": "Retain",
  "state.retention.whenDeleted": "Delete",
  "scaling.mode": "fixed",
  "scaling.minReplicas": 1,
  "scaling.maxReplicas": 12,
  "scaling.targetCatchUp": "60s",
  "scaling.lagPerReplica": 1000,
  "scaling.scaleDownStabilization": "5m",
  "scaling.partitions.autoGrow": false,
  "replicas": 1,
  "suspend": false,
} as const;

// The lag autoscaler's readings: end offsets of the source partitions, the group's committed offsets and the
// group's state, in a handful of batched admin calls, and the rates that two successive readings imply. A read
// that fails leaves its part of the sample undefined and says why: the policy treats that as unknown, never as
// zero, so a broker outage can hold a scale step but never cause a scale-in.
import { Admin } from "@platformatic/kafka";
import { ClientCache, clientOptions, closeErrorLogger, type KafkaConnection } from "../kafka-client.ts";
import { errorMessage } from "../log.ts";
import { deriveRates, type Rates, type ScalingSample } from "./policy.ts";

/** What a pipeline's group reads, and where it starts a partition it has never committed. */
export interface LagSource {
  group: string;
  topics: readonly string[];
  startFrom: "earliest" | "latest";
  /**
   * Each source topic's partition count when the pipeline first read it: a partition numbered from it on was
   * added later, and the workers begin it at its start, whatever startFrom says.
   */
  initialPartitions?: ReadonlyMap<string, number>;
  /** The internal repartition topics among `topics`: their watermark markers are not work waiting. */
  internalTopics?: readonly string[];
}

export interface SampleReading {
  sample: ScalingSample;
  /** Where the group will begin each partition it has never committed, keyed `topic:partition`. */
  startOffsets: Map<string, bigint>;
  /** One line per read that failed, for the status. */
  errors: string[];
}

const READ_COMMITTED = 1;
const LATEST_OFFSET = -1n;
const EARLIEST_OFFSET = -2n;

/**
 * One reading of a pipeline's source partitions and group. It never throws for a broker failure: each read
 * that fails leaves its field undefined and adds a line to `errors`.
 */
export async function readSample(admin: Admin, source: LagSource, now: () => number): Promise<SampleReading> {
  const errors: string[] = [];
  const failed =
    (what: string) =>
    (err: unknown): undefined => {
      errors.push(`${what}: ${errorMessage(err)}`);
      return undefined;
    };
  const topics = source.topics.join(", ");
  const group = describeGroup(admin, source.group).catch(failed(`describing group ${source.group}`));
  const committedRead = committedOffsets(admin, source).catch(failed(`reading the committed offsets of group ${source.group}`));
  const partitions = await partitionsOf(admin, source.topics).catch(failed(`reading the partitions of ${topics}`));
  // inRate is the end offsets' growth over time, so the sample is stamped when they arrive.
  const endRead =
    partitions && (await offsetsAt(admin, partitions, LATEST_OFFSET).then((end) => ({ end, at: now() }), failed(`reading the end offsets of ${topics}`)));
  const endOffsets = endRead?.end;
  let committed = await committedRead;
  if (committed && partitions) for (const p of partitions) if (!committed.has(p)) committed.set(p, undefined);

  const startOffsets = new Map<string, bigint>();
  const uncommitted = committed && partitions ? partitions.filter((p) => committed?.get(p) === undefined) : [];
  const fromStart = uncommitted.filter((key) => source.startFrom === "earliest" || addedLater(key, source));
  if (source.startFrom === "latest") {
    for (const p of uncommitted) {
      const end = endOffsets?.get(p);
      if (end !== undefined && !fromStart.includes(p)) startOffsets.set(p, end);
    }
  }
  if (fromStart.length > 0) {
    const logStart = await offsetsAt(admin, fromStart, EARLIEST_OFFSET).catch(failed(`reading the log start offsets of ${topics}`));
    // Without its start, a never-committed partition's lag would be counted from offset 0, too high once
    // retention has deleted records: unknown is the honest answer.
    if (logStart) for (const [p, offset] of logStart) startOffsets.set(p, offset);
    else committed = undefined;
  }

  const described = await group;
  return {
    sample: {
      at: endRead?.at ?? now(),
      endOffsets,
      committed,
      groupState: described?.state,
      members: described?.members,
      membersWithAssignment: described?.membersWithAssignment,
    },
    startOffsets,
    errors,
  };
}

const partitionKey = (topic: string, partition: number) => `${topic}:${partition}`;

/** A partition added to a source topic after the pipeline first read it. */
function addedLater(key: string, source: LagSource): boolean {
  const { topic, partition } = splitKey(key);
  const initial = source.initialPartitions?.get(topic);
  return initial !== undefined && partition >= initial;
}

function splitKey(key: string): { topic: string; partition: number } {
  const at = key.lastIndexOf(":");
  return { topic: key.slice(0, at), partition: Number(key.slice(at + 1)) };
}

/** Every partition of the topics, as `topic:partition`. */
async function partitionsOf(admin: Admin, topics: readonly string[]): Promise<string[]> {
  // The library caches partition counts; a forced update sees partitions added since.
  const md = await admin.metadata({ topics: [...topics], forceUpdate: true });
  return topics.flatMap((t) => {
    const count = md.topics.get(t)?.partitionsCount;
    if (count === undefined) throw new Error(`the metadata holds no topic ${t}`);
    return Array.from({ length: count }, (_, p) => partitionKey(t, p));
  });
}

/** Offsets at a timestamp (LATEST_OFFSET or EARLIEST_OFFSET) of some partitions, in one call. */
async function offsetsAt(admin: Admin, partitions: readonly string[], timestamp: bigint): Promise<Map<string, bigint>> {
  const byTopic = new Map<string, { partitionIndex: number; timestamp: bigint }[]>();
  for (const key of partitions) {
    const { topic, partition } = splitKey(key);
    byTopic.set(topic, [...(byTopic.get(topic) ?? []), { partitionIndex: partition, timestamp }]);
  }
  // Under read_committed the end is the last stable offset: records of a transaction still open are not yet
  // readable by the workers, so they are not lag.
  const res = await admin.listOffsets({ topics: [...byTopic].map(([name, ps]) => ({ name, partitions: ps })), isolationLevel: READ_COMMITTED });
  const out = new Map<string, bigint>();
  for (const t of res) for (const p of t.partitions) out.set(partitionKey(t.name, p.partitionIndex), p.offset);
  const missing = partitions.filter((p) => !out.has(p));
  if (missing.length > 0) throw new Error(`no offset returned for ${missing.join(", ")}`);
  return out;
}

/** The group's committed offsets on the source topics; a partition it never committed is absent. */
async function committedOffsets(admin: Admin, source: LagSource): Promise<Map<string, bigint | undefined>> {
  // All of the group's offsets, so this read does not wait on the partition counts.
  const res = await admin.listConsumerGroupOffsets({ groups: [source.group] });
  const out = new Map<string, bigint | undefined>();
  for (const t of res.find((g) => g.groupId === source.group)?.topics ?? []) {
    if (!source.topics.includes(t.name)) continue;
    for (const p of t.partitions) if (p.committedOffset >= 0n) out.set(partitionKey(t.name, p.partitionIndex), p.committedOffset);
  }
  return out;
}

interface GroupDescription {
  state: string;
  members: number;
  membersWithAssignment: number | undefined;
}

async function describeGroup(admin: Admin, groupId: string): Promise<GroupDescription> {
  const g = (await admin.describeGroups({ groups: [groupId] })).get(groupId);
  if (!g) throw new Error(`the coordinator did not describe group ${groupId}`);
  const members = [...g.members.values()];
  // The library decodes the classic consumer protocol's assignment, but only for a member that sent
  // subscription metadata; without it no one can tell who holds what.
  const decoded = members.every((m) => m.assignments !== undefined);
  return {
    state: g.state,
    members: members.length,
    membersWithAssignment: decoded ? members.filter((m) => [...(m.assignments?.values() ?? [])].some((a) => a.partitions.length > 0)).length : undefined,
  };
}

export type AdminFactory = (conn: KafkaConnection) => Admin;

/**
 * An Admin for lag reads. Its own client rather than the operator's (kafka-admin.ts), because a failed read
 * must show as unknown within seconds: the library's request timeout is 30 s by default and every retry
 * multiplies it, while a lag read that misses one poll costs little: the next poll comes a few seconds later.
 * The library's `timeout` option is left alone: it only bounds the broker's side of topic calls, none of which
 * are made here.
 */
export function lagAdmin(conn: KafkaConnection, clientId = "conveyor-lag-reader"): Admin {
  return new Admin({
    clientId,
    ...clientOptions(conn),
    connectTimeout: 3_000,
    requestTimeout: 3_000,
    retries: 1,
    retryDelay: 200,
  });
}

/** A pipeline's lag source, and the cluster it lives on. */
export interface LagTarget extends LagSource {
  kafka: KafkaConnection;
}

export interface LagReading extends SampleReading {
  rates: Rates;
  /** The rates of the last reading whose offsets were known, when there was one: what came before these. */
  previousRates?: Rates;
}

interface Previous {
  source: string;
  sample: ScalingSample;
  startOffsets: ReadonlyMap<string, bigint>;
  rates: Rates;
}

/**
 * Reads each pipeline's lag when polled and derives its rates from the last sample whose offsets could be
 * read, so records that arrived during a failed read still count. One Admin per cluster and credentials,
 * shared by the pipelines on it. It keeps no timer: the controller polls it.
 */
export class LagReader {
  private readonly admins: ClientCache<Admin>;
  private readonly previous = new Map<string, Previous>();
  private readonly now: () => number;
  private readonly createAdmin: AdminFactory;

  constructor(opts: { now: () => number; createAdmin?: AdminFactory }) {
    this.now = opts.now;
    this.createAdmin = opts.createAdmin ?? ((conn) => lagAdmin(conn));
    this.admins = new ClientCache((conn) => this.createAdmin(conn), closeErrorLogger("the lag reader's admin"));
  }

  /** Reads the pipeline `key` now; the rates cover the time since its last sample with known offsets. */
  async poll(key: string, target: LagTarget): Promise<LagReading> {
    const { kafka, ...source } = target;
    const reading = await readSample(this.admin(kafka), source, this.now);
    // Another group or other topics make the last sample a reading of something else: a new topic's whole log
    // would look like input of the last interval.
    const identity = JSON.stringify([kafka.bootstrapServers, source.group, [...source.topics].sort()]);
    const prev = this.previous.get(key);
    const before = prev?.source === identity ? prev : undefined;
    // A partition first committed in this interval counts its consumption from where the group began it.
    const startOffsets = new Map([...(before?.startOffsets ?? []), ...reading.startOffsets]);
    const rates = deriveRates(before?.sample, reading.sample, startOffsets, new Set(source.internalTopics ?? []));
    if (reading.sample.endOffsets && reading.sample.committed) {
      this.previous.set(key, { source: identity, sample: reading.sample, startOffsets: reading.startOffsets, rates });
    }
    return { ...reading, rates, ...(before?.rates ? { previousRates: before.rates } : {}) };
  }

  /** Drops what is kept for a pipeline that is gone. */
  forget(key: string): void {
    this.previous.delete(key);
  }

  async close(): Promise<void> {
    await this.admins.close();
  }

  private admin(conn: KafkaConnection): Admin {
    return this.admins.get(conn);
  }
}

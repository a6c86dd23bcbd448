// The workers' partition assignment: by pod ordinal, in contiguous ranges, as Flink gives each subtask index a
// range of key groups. The library's default deals partitions round robin over the members in the order they
// joined, so after any rebalance a worker could get other window tasks than it held, and restore their state
// from the changelog from scratch. Here a worker with the same ordinal and the same number of workers gets the
// same partitions back, so the state on its volume (kept by whenScaled Retain) is the state it needs, and
// restores from its checkpoint. A member id is `<client id>-<uuid>`, and a worker's client id is its pod name,
// `<statefulset>-<ordinal>`.
import type { ClusterMetadata, ExtendedGroupProtocolSubscription, GroupPartitionsAssignments } from "@platformatic/kafka";

const MEMBER_ID = /-(\d+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The pod ordinal in a member id, if its client id ends in one. */
export function ordinalOfMember(memberId: string): number | undefined {
  const m = MEMBER_ID.exec(memberId);
  return m ? Number(m[1]) : undefined;
}

/** Members by ordinal (members without one after, by id): a stable order, whatever order they joined in. */
function byOrdinal(a: string, b: string): number {
  const oa = ordinalOfMember(a) ?? Number.POSITIVE_INFINITY;
  const ob = ordinalOfMember(b) ?? Number.POSITIVE_INFINITY;
  if (oa !== ob) return oa < ob ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Who owns each partition now, as the members say in their subscriptions under the cooperative protocol: only
 * claims made in the newest generation count (a member the group dropped may still claim what it had).
 * Under the eager protocol no member claims anything.
 */
function currentOwners(members: Map<string, ExtendedGroupProtocolSubscription>): Map<string, string> {
  const claims = [...members.values()].filter((m) => (m.ownedPartitions?.length ?? 0) > 0 && (m.generationId ?? -1) >= 0);
  const newest = Math.max(-1, ...claims.map((m) => m.generationId ?? -1));
  const owners = new Map<string, string>();
  for (const m of claims) {
    if (m.generationId !== newest) continue;
    for (const a of m.ownedPartitions ?? []) for (const p of a.partitions) if (!owners.has(`${a.topic}:${p}`)) owners.set(`${a.topic}:${p}`, m.memberId);
  }
  return owners;
}

/**
 * Partition p of a topic with P partitions goes to the member at floor(p * N / P) of the N, in ordinal order.
 * Under the cooperative protocol a partition that another member owns now is left out for this round: its
 * owner revokes it when it gets its assignment without it, and joins again at once, and that next round gives
 * the partition to its member. So no partition is ever owned by two members in one generation, and a member
 * keeps reading the partitions it keeps while the group rebalances.
 */
export function ordinalRangeAssigner(
  _current: string,
  members: Map<string, ExtendedGroupProtocolSubscription>,
  topics: Set<string>,
  metadata: ClusterMetadata,
): GroupPartitionsAssignments[] {
  const ordered = [...members.keys()].sort(byOrdinal);
  const owners = currentOwners(members);
  const out = ordered.map((memberId) => ({ memberId, assignments: new Map<string, { topic: string; partitions: number[] }>() }));
  for (const topic of [...topics].sort()) {
    const count = metadata.topics.get(topic)?.partitionsCount ?? 0;
    for (let p = 0; p < count; p++) {
      const member = out[Math.floor((p * out.length) / count)];
      if (!member) continue;
      const owner = owners.get(`${topic}:${p}`);
      if (owner !== undefined && owner !== member.memberId && members.has(owner)) continue;
      const entry = member.assignments.get(topic) ?? { topic, partitions: [] };
      entry.partitions.push(p);
      member.assignments.set(topic, entry);
    }
  }
  return out;
}

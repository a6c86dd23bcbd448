import assert from "node:assert/strict";
import { test } from "node:test";
import type { ClusterMetadata, ExtendedGroupProtocolSubscription } from "@platformatic/kafka";
import { ordinalOfMember, ordinalRangeAssigner } from "./assignor.ts";

const uuid = (i: number) => `${String(i).padStart(8, "0")}-a458-445b-960d-7c0388b84b25`;
const member = (pod: string, i: number) => `${pod}-${uuid(i)}`;
const metadata = (topics: Record<string, number>) =>
  ({ topics: new Map(Object.entries(topics).map(([t, n]) => [t, { partitionsCount: n }])) }) as unknown as ClusterMetadata;
const members = (ids: string[]) => new Map(ids.map((id) => [id, { memberId: id } as ExtendedGroupProtocolSubscription]));
/** member's pod name -> topic -> partitions */
function assign(ids: string[], topics: Record<string, number>): Record<string, Record<string, number[]>> {
  const out: Record<string, Record<string, number[]>> = {};
  for (const a of ordinalRangeAssigner(ids[0] ?? "", members(ids), new Set(Object.keys(topics)), metadata(topics)))
    out[a.memberId.slice(0, a.memberId.length - 37)] = Object.fromEntries([...a.assignments].map(([t, x]) => [t, x.partitions]));
  return out;
}

test("a member's ordinal is in its client id, the worker's pod name", () => {
  assert.equal(ordinalOfMember(member("warm-1", 7)), 1);
  assert.equal(ordinalOfMember(member("payments-fraud-12", 7)), 12);
  assert.equal(ordinalOfMember(member("quirks", 7)), undefined);
  assert.equal(ordinalOfMember("warm-1"), undefined);
});

test("contiguous ranges by ordinal, whatever order the members joined in", () => {
  const want = { "w-0": { rep: [0, 1], src: [0] }, "w-1": { rep: [2, 3], src: [1] } };
  assert.deepEqual(assign([member("w-0", 1), member("w-1", 2)], { src: 2, rep: 4 }), want);
  assert.deepEqual(assign([member("w-1", 3), member("w-0", 4)], { src: 2, rep: 4 }), want, "joined the other way round");
});

test("scaled 2 -> 1 -> 2, worker 1 gets back the very tasks it held: the state on its volume", () => {
  const before = assign([member("w-0", 1), member("w-1", 2)], { rep: 12 });
  assert.deepEqual(assign([member("w-0", 1)], { rep: 12 })["w-0"], { rep: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] });
  const after = assign([member("w-1", 9), member("w-0", 1)], { rep: 12 });
  assert.deepEqual(after["w-1"], before["w-1"]);
  assert.deepEqual(after["w-1"], { rep: [6, 7, 8, 9, 10, 11] });
});

test("more members than partitions: each partition to one member, spread out; every partition assigned once", () => {
  const got = assign(
    [0, 1, 2, 3].map((i) => member(`w-${i}`, i)),
    { src: 2, rep: 8 },
  );
  assert.deepEqual(got["w-0"], { src: [0], rep: [0, 1] });
  assert.deepEqual(got["w-2"], { src: [1], rep: [4, 5] });
  assert.deepEqual(got["w-3"], { rep: [6, 7] });
  const all = Object.values(got).flatMap((t) => t.rep ?? []);
  assert.deepEqual(
    all.sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
});

test("members without an ordinal (tests, tools) sort by id after the workers", () => {
  const got = assign([member("zz", 1), member("aa", 2), member("w-0", 3)], { rep: 3 });
  assert.deepEqual([got["w-0"], got.aa, got.zz], [{ rep: [0] }, { rep: [1] }, { rep: [2] }]);
});

test("cooperative: a partition another member owns now waits a round; the owner keeps the rest, and the next round moves it", () => {
  const w0 = member("w-0", 1);
  const w1 = member("w-1", 2);
  const w2 = member("w-2", 3);
  const topics = new Set(["rep"]);
  const md = metadata({ rep: 6 });
  const view = (as: ReturnType<typeof ordinalRangeAssigner>) =>
    Object.fromEntries(as.map((a) => [a.memberId.slice(0, a.memberId.length - 37), a.assignments.get("rep")?.partitions ?? []]));
  const sub = (id: string, owned: number[], generationId: number) =>
    [
      id,
      {
        memberId: id,
        version: 3,
        generationId,
        ownedPartitions: owned.length > 0 ? [{ topic: "rep", partitions: owned }] : [],
      } as ExtendedGroupProtocolSubscription,
    ] as const;
  // 2 workers own [0,1,2] and [3,4,5] in generation 7; a third joins.
  const revoke = ordinalRangeAssigner(w0, new Map([sub(w0, [0, 1, 2], 7), sub(w1, [3, 4, 5], 7), sub(w2, [], -1)]), topics, md);
  assert.deepEqual(view(revoke), { "w-0": [0, 1], "w-1": [3], "w-2": [] }, "2 is w-0's and 4, 5 are w-1's: given to nobody this round");
  // They revoked what they lost, and join again owning the rest, in generation 8.
  const next = ordinalRangeAssigner(w0, new Map([sub(w0, [0, 1], 8), sub(w1, [3], 8), sub(w2, [], -1)]), topics, md);
  assert.deepEqual(view(next), { "w-0": [0, 1], "w-1": [2, 3], "w-2": [4, 5] });
  // A claim from an older generation (a member the group dropped) does not hold a partition back.
  const stale = ordinalRangeAssigner(w0, new Map([sub(w0, [0, 1], 8), sub(w1, [2, 3, 4, 5], 6), sub(w2, [], -1)]), topics, md);
  assert.deepEqual(view(stale), { "w-0": [0, 1], "w-1": [2, 3], "w-2": [4, 5] });
});

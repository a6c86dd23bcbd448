import assert from "node:assert/strict";
import { test } from "node:test";
import { ordinalOf, planVolumes, resizeCondition } from "./state-volumes.ts";

const T = Date.parse("2026-01-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();
const MIN = 60_000;

test("a PVC's ordinal comes from the StatefulSet's naming, state-<name>-<n>, and nothing else", () => {
  assert.equal(ordinalOf("state-fraud-0", "fraud"), 0);
  assert.equal(ordinalOf("state-fraud-12", "fraud"), 12);
  assert.equal(ordinalOf("state-fraud-by-user-1", "fraud"), undefined);
  assert.equal(ordinalOf("state-fraud-01", "fraud"), undefined);
  assert.equal(ordinalOf("data-fraud-1", "fraud"), undefined);
});

test("scaled from 3 to 1: the volumes of ordinals 1 and 2 are marked, and expire after the TTL", () => {
  const volumes = [{ name: "state-p-0" }, { name: "state-p-1" }, { name: "state-p-2" }];
  const first = planVolumes(volumes, "p", 1, 10 * MIN, T);
  assert.deepEqual(first.mark, ["state-p-1", "state-p-2"]);
  assert.deepEqual([first.unmark, first.remove], [[], []]);
  assert.deepEqual(first.orphaned[0], { name: "state-p-1", orphanedAt: iso(T), expiresAt: iso(T + 10 * MIN) });
  assert.equal(first.nextExpiryMs, 10 * MIN);

  const marked = [{ name: "state-p-0" }, { name: "state-p-1", orphanedAt: iso(T) }, { name: "state-p-2", orphanedAt: iso(T + 2 * MIN) }];
  const later = planVolumes(marked, "p", 1, 10 * MIN, T + 4 * MIN);
  assert.deepEqual([later.mark, later.remove], [[], []]);
  assert.equal(later.nextExpiryMs, 6 * MIN, "the earliest expiry");
  const expired = planVolumes(marked, "p", 1, 10 * MIN, T + 10 * MIN);
  assert.deepEqual(expired.remove, ["state-p-1"]);
  assert.deepEqual(
    expired.orphaned.map((o) => o.name),
    ["state-p-2"],
  );
  assert.equal(expired.nextExpiryMs, 2 * MIN);
});

test("a worker back before its TTL keeps its volume, and the mark goes", () => {
  const plan = planVolumes([{ name: "state-p-0" }, { name: "state-p-1", orphanedAt: iso(T) }], "p", 2, 10 * MIN, T + 9 * MIN);
  assert.deepEqual(plan, { mark: [], unmark: ["state-p-1"], remove: [], orphaned: [] });
});

test("without a TTL nothing is marked or deleted; a volume being deleted, or of another name, is left alone", () => {
  assert.deepEqual(planVolumes([{ name: "state-p-3" }], "p", 1, undefined, T), { mark: [], unmark: [], remove: [], orphaned: [] });
  const plan = planVolumes([{ name: "state-p-3", orphanedAt: iso(T), deleting: true }, { name: "other-p-3" }], "p", 1, MIN, T + 2 * MIN);
  assert.deepEqual(plan, { mark: [], unmark: [], remove: [], orphaned: [] });
});

test("a mark that cannot be read starts the TTL over, never deletes early", () => {
  const plan = planVolumes([{ name: "state-p-1", orphanedAt: "yesterday" }], "p", 1, MIN, T);
  assert.deepEqual([plan.mark, plan.remove], [["state-p-1"], []]);
});

test("StateVolumesResizing: volumes below the size say why; none, and the condition clears or stays away", () => {
  const pending = resizeCondition(
    [
      { name: "state-p-0", requested: "2Gi", capacity: "1Gi" },
      { name: "state-p-1", requested: "2Gi", capacity: "2Gi" },
    ],
    "2Gi",
    false,
  );
  assert.equal(pending?.status, "True");
  assert.equal(pending?.reason, "ResizePending");
  assert.match(pending?.message ?? "", /state-p-0 \(requests 2Gi, has 1Gi\)/);
  assert.doesNotMatch(pending?.message ?? "", /state-p-1/);

  const refused = resizeCondition([{ name: "state-p-0", requested: "1Gi", capacity: "1Gi" }], "2048Mi", false);
  assert.deepEqual([refused?.status, refused?.reason], ["True", "ExpansionNotAllowed"]);
  assert.match(refused?.message ?? "", /state-p-0 \(requests 1Gi\)/);

  const done = [{ name: "state-p-0", requested: "2Gi", capacity: "2Gi" }];
  assert.deepEqual(resizeCondition(done, "2Gi", true), { status: "False", reason: "Resized", message: "every state volume has 2Gi" });
  assert.equal(resizeCondition(done, "2Gi", false), undefined, "nothing to say when no resize was ever pending");
  assert.equal(resizeCondition([{ name: "state-p-0", requested: "1Gi", deleting: true }], "2Gi", false), undefined, "a volume being deleted does not count");
  assert.equal(resizeCondition([{ name: "state-p-0", requested: "2Gi" }], "2Gi", false), undefined, "a claim not yet bound is provisioned, not resized");
});

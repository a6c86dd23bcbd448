// The workers' state volumes, as pure plans so that what happens to each volume is tested without a cluster.
// - Orphans: with state.retention.whenScaled Retain and an orphanTTL, the operator marks the PVC of a worker
//   that a scale-down removed with the time it was orphaned, and deletes it once the TTL is up. When the
//   ordinal comes back first, its pod mounts the same PVC (a StatefulSet names them by ordinal) and restores
//   from its local checkpoint; the mark goes.
// - Resizes: a larger state.storage.size raises each PVC's request in place, and the condition
//   StateVolumesResizing says which are still below it, and why.
import { parseBytes } from "./topology/quantity.ts";

/** Set on a PVC whose worker a scale-down removed: when that happened. */
export const ORPHANED_AT_ANNOTATION = "conveyor.dev/orphaned-at";

export interface StateVolume {
  name: string;
  /** the annotation's value, if any */
  orphanedAt?: string;
  /** set when the PVC is being deleted already */
  deleting?: boolean;
  /** spec.resources.requests.storage */
  requested?: string;
  /** status.capacity.storage: what the provisioner gave it */
  capacity?: string;
}

export interface VolumePlan {
  /** PVCs to mark as orphaned now */
  mark: string[];
  /** PVCs whose worker is back: the mark goes */
  unmark: string[];
  /** PVCs whose TTL is up */
  remove: string[];
  /** each orphaned PVC that stays, with when it expires */
  orphaned: { name: string; orphanedAt: string; expiresAt: string }[];
  /** in how many ms the next one expires */
  nextExpiryMs?: number;
}

/** The ordinal of `state-<statefulset>-<n>`, or undefined for another PVC. */
export function ordinalOf(pvc: string, statefulSet: string): number | undefined {
  const prefix = `state-${statefulSet}-`;
  if (!pvc.startsWith(prefix)) return undefined;
  const rest = pvc.slice(prefix.length);
  return /^(0|[1-9][0-9]*)$/.test(rest) ? Number(rest) : undefined;
}

/**
 * What to do with the pipeline's state volumes, given the replicas the StatefulSet runs and the TTL. Without a
 * TTL nothing is marked or deleted (Retain keeps volumes for good), but a worker that comes back still loses
 * its mark. A mark that cannot be read is taken as made now: the TTL starts over rather than deleting early.
 */
export function planVolumes(volumes: readonly StateVolume[], statefulSet: string, replicas: number, ttlMs: number | undefined, now: number): VolumePlan {
  const plan: VolumePlan = { mark: [], unmark: [], remove: [], orphaned: [] };
  for (const v of volumes) {
    const ordinal = ordinalOf(v.name, statefulSet);
    if (ordinal === undefined || v.deleting) continue;
    if (ordinal < replicas) {
      if (v.orphanedAt !== undefined) plan.unmark.push(v.name);
      continue;
    }
    if (ttlMs === undefined) continue;
    const at = v.orphanedAt === undefined ? Number.NaN : Date.parse(v.orphanedAt);
    if (Number.isNaN(at)) {
      plan.mark.push(v.name);
      plan.orphaned.push({ name: v.name, orphanedAt: new Date(now).toISOString(), expiresAt: new Date(now + ttlMs).toISOString() });
      plan.nextExpiryMs = Math.min(plan.nextExpiryMs ?? ttlMs, ttlMs);
      continue;
    }
    const left = at + ttlMs - now;
    if (left <= 0) {
      plan.remove.push(v.name);
      continue;
    }
    plan.orphaned.push({ name: v.name, orphanedAt: new Date(at).toISOString(), expiresAt: new Date(at + ttlMs).toISOString() });
    plan.nextExpiryMs = Math.min(plan.nextExpiryMs ?? left, left);
  }
  return plan;
}

export interface VolumeCondition {
  status: "True" | "False";
  reason: string;
  message: string;
}

/**
 * The condition StateVolumesResizing, from the PVCs as they are and the size the spec asks for: True while a
 * volume is below it, naming each one and why (its request was not raised: the StorageClass does not allow
 * expansion; or raised and not yet provisioned); False once every one has it. Undefined when there is
 * nothing to say: no volume below the size and no condition to clear.
 */
export function resizeCondition(volumes: readonly StateVolume[], want: string, had: boolean): VolumeCondition | undefined {
  const wantBytes = parseBytes(want);
  if (wantBytes === undefined) return undefined;
  const notRaised: string[] = [];
  const pending: string[] = [];
  for (const v of volumes) {
    if (v.deleting) continue;
    const requested = v.requested === undefined ? undefined : parseBytes(v.requested);
    const capacity = v.capacity === undefined ? undefined : parseBytes(v.capacity);
    if (requested !== undefined && requested < wantBytes) notRaised.push(`${v.name} (requests ${v.requested})`);
    // A claim not yet bound has no capacity: it is being provisioned at its request, not resized.
    else if (requested !== undefined && capacity !== undefined && capacity < requested) pending.push(`${v.name} (requests ${v.requested}, has ${v.capacity})`);
  }
  if (notRaised.length > 0)
    return {
      status: "True",
      reason: "ExpansionNotAllowed",
      message: `state volumes below ${want} whose request could not be raised, since their StorageClass does not allow expansion: ${notRaised.join(", ")}. New workers get ${want}; to move these, scale their workers away and delete the volumes`,
    };
  if (pending.length > 0)
    return {
      status: "True",
      reason: "ResizePending",
      message: `raised to ${want}, not yet expanded by the provisioner: ${pending.join(", ")}. The workers run on; the volumes grow when the provisioner expands them`,
    };
  return had ? { status: "False", reason: "Resized", message: `every state volume has ${want}` } : undefined;
}

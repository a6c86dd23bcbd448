// A reconcile that finds an object as it wants it writes nothing. Each object the operator applies carries a
// digest of what it applied (an annotation); an apply is skipped when the informer's copy carries the digest of
// the object wanted now and still has every field the apply sets, with the same values. The digest catches what a
// field-by-field look cannot: a field the operator set before and no longer sets, which an apply would remove. The
// field-by-field look catches what the digest cannot: someone else's edit of a field the operator owns.
import { createHash } from "node:crypto";
import type { KubernetesObject } from "@kubernetes/client-node";
import type { StreamPipelineStatus } from "./api.ts";

export const APPLIED_HASH_ANNOTATION = "conveyor.dev/applied-hash";

/** JSON with object keys sorted and undefined values left out: equal values, equal text. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? "null" : canonical(x))).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(",")}}`;
  }
  return v instanceof Date ? JSON.stringify(v.toISOString()) : (JSON.stringify(v) ?? "null");
}

export function digest(v: unknown): string {
  return createHash("sha256").update(canonical(v)).digest("hex").slice(0, 16);
}

/** The object with the digest of itself (less any digest it carries) as an annotation. */
export function withAppliedHash<T extends KubernetesObject>(obj: T): T {
  const { [APPLIED_HASH_ANNOTATION]: _old, ...annotations } = obj.metadata?.annotations ?? {};
  const { annotations: _all, ...metadata } = obj.metadata ?? {};
  const bare = { ...obj, metadata: Object.keys(annotations).length > 0 ? { ...metadata, annotations } : metadata };
  return { ...obj, metadata: { ...obj.metadata, annotations: { ...annotations, [APPLIED_HASH_ANNOTATION]: digest(bare) } } };
}

/**
 * The first place where `have` lacks a field of `want` or holds another value ("" for the whole value), or
 * undefined when it has them all. Objects may have more keys (the apiserver's defaults, others' fields); arrays
 * match element by element and must be as long.
 */
export function firstDifference(have: unknown, want: unknown, path = ""): string | undefined {
  if (want === undefined) return undefined;
  if (Array.isArray(want)) {
    if (!Array.isArray(have) || have.length !== want.length) return path || "/";
    for (let i = 0; i < want.length; i++) {
      const d = firstDifference(have[i], want[i], `${path}[${i}]`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  if (want !== null && typeof want === "object" && !(want instanceof Date)) {
    if (have === null || typeof have !== "object" || Array.isArray(have)) return path || "/";
    for (const [k, w] of Object.entries(want as Record<string, unknown>)) {
      const d = firstDifference((have as Record<string, unknown>)[k], w, `${path}.${k}`);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  return canonical(have) === canonical(want) ? undefined : path || "/";
}

/** Whether an apply of `desired` (with its digest) would leave `cached` as it is. */
export function upToDate(cached: KubernetesObject | undefined, desired: KubernetesObject): boolean {
  if (!cached || cached.metadata?.deletionTimestamp) return false;
  const hash = desired.metadata?.annotations?.[APPLIED_HASH_ANNOTATION];
  if (hash === undefined || cached.metadata?.annotations?.[APPLIED_HASH_ANNOTATION] !== hash) return false;
  return firstDifference(cached, desired) === undefined;
}

type Condition = NonNullable<StreamPipelineStatus["conditions"]>[number];

/** Conditions as a set: the order of a list-map is no part of its value. */
function byType(conditions: readonly Condition[] | undefined): Condition[] | undefined {
  return conditions ? [...conditions].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0)) : undefined;
}

/**
 * Whether the stored status already is `written`, in the fields `written`'s field manager owns: all but those
 * named in `others` (fields of other managers) and the conditions of the types in `otherConditions`.
 */
export function sameStatus(
  stored: StreamPipelineStatus | undefined,
  written: StreamPipelineStatus,
  others: readonly string[],
  otherConditions: readonly string[],
): boolean {
  if (!stored) return false;
  const mine = Object.fromEntries(Object.entries(stored).filter(([k]) => !others.includes(k))) as StreamPipelineStatus;
  const conditions = mine.conditions?.filter((c) => !otherConditions.includes(c.type));
  const a = { ...mine, conditions: byType(conditions?.length ? conditions : undefined) };
  const b = { ...written, conditions: byType(written.conditions?.length ? written.conditions : undefined) };
  return canonical(a) === canonical(b);
}

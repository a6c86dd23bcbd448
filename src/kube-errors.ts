// What client-node's errors carry: the HTTP status of a failed API call.

/** The HTTP status of a failed Kubernetes API call, or undefined for any other error. */
export function statusCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "number" ? code : undefined;
}

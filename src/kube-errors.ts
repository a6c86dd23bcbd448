// What client-node's errors carry: the HTTP status of a failed API call.

/** The HTTP status of a failed Kubernetes API call, or undefined for any other error. */
export function statusCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "number" ? code : undefined;
}

/**
 * How long the apiserver asked a client to wait before it tries again (a 429 from API Priority and Fairness, or a
 * 503), from the Retry-After header or the Status's details.retryAfterSeconds; undefined when it did not say.
 */
export function retryAfterMs(err: unknown): number | undefined {
  const e = err as { headers?: Record<string, string>; body?: unknown } | undefined;
  const header = Number(e?.headers?.["retry-after"] ?? e?.headers?.["Retry-After"]);
  if (Number.isFinite(header) && header >= 0) return header * 1000;
  let body = e?.body;
  // client-node may hand the Status over as JSON text, or as that text encoded once more
  for (let i = 0; i < 2 && typeof body === "string"; i++) {
    try {
      body = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  const seconds = Number((body as { details?: { retryAfterSeconds?: unknown } } | undefined)?.details?.retryAfterSeconds);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

// One connection pool per apiserver for the whole process. client-node 2.0.1 builds a new undici Agent in every
// request's authentication step (KubeConfig.applySecurityAuthentication calls createDispatcher each time), so
// each request opened a TLS connection of its own: in bench:operator's profile of 1,000 pipelines, TLS
// handshakes and their contexts were most of the operator's CPU besides waiting, and each connection's buffers
// stayed resident until its socket closed. Here the Agent is made once per set of connection settings (server,
// proxy, CA, client certificate) and reused, so requests share keep-alive connections as client-go's do. New
// settings (a rotated client certificate in the kubeconfig) get a new Agent; the old one's idle sockets close
// on their keep-alive timeout.
import { createHash } from "node:crypto";
import type { KubeConfig } from "@kubernetes/client-node";

type CreateDispatcher = (cluster: unknown, agentOptions: Record<string, unknown>) => unknown;

const POOLED = Symbol("conveyor.pooledDispatcher");

/** The settings a dispatcher is made from, as a digest: equal settings, one Agent. */
function settingsKey(cluster: unknown, o: Record<string, unknown>): string {
  const c = (cluster ?? {}) as { server?: string; proxyUrl?: string; skipTLSVerify?: boolean };
  const h = createHash("sha256");
  for (const part of [c.server, c.proxyUrl, c.skipTLSVerify, o.ca, o.cert, o.key, o.pfx, o.passphrase, o.rejectUnauthorized, o.servername]) {
    h.update(part === undefined ? "\u0000" : Buffer.isBuffer(part) ? part : String(part));
    h.update("\u0001");
  }
  return h.digest("hex");
}

/** Makes `kc` reuse one undici Agent across requests; returns it. Idempotent. */
export function pooledKubeConfig(kc: KubeConfig): KubeConfig {
  const target = kc as unknown as { createDispatcher: CreateDispatcher; [POOLED]?: true };
  if (target[POOLED]) return kc;
  const create = target.createDispatcher.bind(kc);
  let last: { key: string; dispatcher: unknown } | undefined;
  target.createDispatcher = (cluster, agentOptions) => {
    const key = settingsKey(cluster, agentOptions);
    if (last?.key !== key) last = { key, dispatcher: create(cluster, agentOptions) };
    return last.dispatcher;
  };
  target[POOLED] = true;
  return kc;
}

// How every Kafka client of the project connects: the operator's admin and lag reader, and the runtime's
// consumer, producer, admin and restore readers all take their brokers, SASL and TLS options from here.
import { createHash } from "node:crypto";
import type { ConnectionOptions } from "node:tls";
import { errorMessage, jsonLogger } from "./log.ts";
import type { SaslMechanism } from "./pipeline-config.ts";

/**
 * Credentials that cannot be had: a Secret the spec names is missing or lacks a key, or a file or variable the
 * pod should have from it is empty. The message names the Secret, key, file or variable, never a value.
 */
export class CredentialsError extends Error {
  override name = "CredentialsError";
}

export interface KafkaConnection {
  bootstrapServers: string[];
  sasl?: { mechanism: SaslMechanism; username: string; password: string };
  /** PEM text, not paths */
  tls?: { ca?: string; cert?: string; key?: string };
}

/** The part of a client's options that says where and as whom it connects. */
export interface ClientConnectionOptions {
  bootstrapBrokers: string[];
  sasl?: { mechanism: SaslMechanism; username: string; password: string };
  tls?: ConnectionOptions;
}

export function clientOptions(conn: KafkaConnection): ClientConnectionOptions {
  return {
    bootstrapBrokers: [...conn.bootstrapServers],
    ...(conn.sasl ? { sasl: { mechanism: conn.sasl.mechanism, username: conn.sasl.username, password: conn.sasl.password } } : {}),
    ...(conn.tls ? { tls: { ...conn.tls } } : {}),
  };
}

/** Who connects where: the brokers and the user (or the client certificate), without the secret. */
function identityOf(conn: KafkaConnection): string {
  return JSON.stringify([conn.bootstrapServers, conn.sasl?.mechanism, conn.sasl?.username, conn.tls ? "tls" : "plain", conn.tls?.cert]);
}

/** A digest of the secret part, so that a rotated password or key is a change without keeping it as a key. */
function secretDigest(conn: KafkaConnection): string {
  return createHash("sha256")
    .update(JSON.stringify([conn.sasl?.password, conn.tls?.ca, conn.tls?.key]))
    .digest("hex");
}

/**
 * One client per identity (brokers and user). When the same identity comes with other credentials (a rotated
 * Secret), the old client is closed and a new one made: it never goes on with what was revoked.
 */
export class ClientCache<T extends { close(): Promise<unknown> }> {
  private readonly clients = new Map<string, { digest: string; client: T }>();
  private readonly create: (conn: KafkaConnection) => T;
  private readonly onCloseError: (err: unknown) => void;

  constructor(create: (conn: KafkaConnection) => T, onCloseError: (err: unknown) => void) {
    this.create = create;
    this.onCloseError = onCloseError;
  }

  get(conn: KafkaConnection): T {
    const id = identityOf(conn);
    const digest = secretDigest(conn);
    const had = this.clients.get(id);
    if (had?.digest === digest) return had.client;
    if (had) had.client.close().catch(this.onCloseError);
    const client = this.create(conn);
    this.clients.set(id, { digest, client });
    return client;
  }

  get size(): number {
    return this.clients.size;
  }

  async close(): Promise<void> {
    const all = [...this.clients.values()].map((c) => c.client);
    this.clients.clear();
    await Promise.all(all.map((c) => c.close()));
  }
}

/** Reports a client of replaced credentials that did not close cleanly; the new one is in use either way. */
export function closeErrorLogger(what: string): (err: unknown) => void {
  const log = jsonLogger({ component: "kafka-client" });
  return (err) => log.warn(`closing ${what} of replaced credentials failed`, { error: errorMessage(err) });
}

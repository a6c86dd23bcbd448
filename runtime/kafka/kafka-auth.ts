// The worker's Kafka connection: the brokers from its configuration, the credentials from where the pod put them
// (environment variables from the spec's Secret, files of the spec's Secret volumes). The configuration names
// them only; a value never passes through the ConfigMap.
import { readFileSync } from "node:fs";
import { CredentialsError, type KafkaConnection } from "../../src/kafka-client.ts";
import { KAFKA_PASSWORD_ENV, KAFKA_USERNAME_ENV, type KafkaClientConfig } from "../../src/pipeline-config.ts";

export function connectionFromConfig(
  k: KafkaClientConfig,
  env: NodeJS.ProcessEnv = process.env,
  read: (file: string) => string = (f) => readFileSync(f, "utf8"),
): KafkaConnection {
  const conn: KafkaConnection = { bootstrapServers: [...k.bootstrapServers] };
  if (k.sasl) {
    const username = env[KAFKA_USERNAME_ENV];
    const password = env[KAFKA_PASSWORD_ENV];
    const missing = [username ? "" : KAFKA_USERNAME_ENV, password ? "" : KAFKA_PASSWORD_ENV].filter(Boolean);
    if (missing.length > 0)
      throw new CredentialsError(`SASL ${k.sasl.mechanism} is configured but ${missing.join(" and ")} is empty: the pod has no value from the spec's Secret`);
    conn.sasl = { mechanism: k.sasl.mechanism, username: username as string, password: password as string };
  }
  if (k.tls) {
    const file = (what: string, path: string | undefined): string | undefined => {
      if (path === undefined) return undefined;
      try {
        return read(path);
      } catch (err) {
        throw new CredentialsError(`TLS ${what} ${path} cannot be read: ${(err as Error).message}`);
      }
    };
    const ca = file("CA bundle", k.tls.caFile);
    const cert = file("client certificate", k.tls.certFile);
    const key = file("client key", k.tls.keyFile);
    conn.tls = { ...(ca !== undefined ? { ca } : {}), ...(cert !== undefined ? { cert } : {}), ...(key !== undefined ? { key } : {}) };
  }
  return conn;
}

// SCRAM users on the bed's Kafka, through the AlterUserScramCredentials API (what `kafka-configs --alter
// --add-config SCRAM-SHA-512=[...]` sends): the client computes the salted password, the broker stores it.
import { pbkdf2Sync, randomBytes } from "node:crypto";
import type { ConnectionOptions } from "node:tls";
import { alterUserScramCredentialsV0, Connection, ScramMechanisms } from "@platformatic/kafka";

const ITERATIONS = 4096;

/** The SCRAM-SHA-512 credential of a password, as RFC 5802's Hi(): PBKDF2 with HMAC-SHA-512. */
export function scramSha512Credential(password: string, salt = randomBytes(32)) {
  return { salt, saltedPassword: pbkdf2Sync(password, salt, ITERATIONS, 64, "sha512"), iterations: ITERATIONS };
}

export interface AdminAccess {
  bootstrap: string;
  /** absent on the PLAINTEXT listener, where the bed's clients are ANONYMOUS, a super user */
  sasl?: { username: string; password: string };
  tls?: ConnectionOptions;
}

/** Creates or replaces SCRAM-SHA-512 users (name → password) through one broker. */
export async function upsertScramUsers(access: AdminAccess, users: Record<string, string>): Promise<void> {
  const [host, port] = (access.bootstrap.split(",")[0] ?? "").split(":");
  const conn = new Connection("bed-scram-users", {
    ...(access.tls ? { tls: access.tls } : {}),
    ...(access.sasl ? { sasl: { mechanism: "SCRAM-SHA-512", username: access.sasl.username, password: access.sasl.password } } : {}),
  });
  try {
    await conn.connect(host ?? "", Number(port));
    const upsertions = Object.entries(users).map(([name, password]) => ({
      name,
      mechanism: ScramMechanisms.SCRAM_SHA_512,
      ...scramSha512Credential(password),
    }));
    await alterUserScramCredentialsV0.api.async(conn, [], upsertions);
  } finally {
    await conn.close();
  }
}

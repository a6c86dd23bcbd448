// The bed's secured Kafka listeners, for suites run by `npm test`: SCRAM users, client certificates and ACLs.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Acl, AclOperations, AclPermissionTypes, Admin, type AdminOptions, ResourcePatternTypes, ResourceTypes } from "@platformatic/kafka";
import { upsertScramUsers } from "../env/kafka-users.ts";
import { type CertFiles, issueCert } from "../env/pki.ts";
import { bedEnv } from "./bed.ts";

export interface SecuredKafka {
  sasl: string;
  mtls: string;
  /** the bed CA's certificate (PEM text) */
  ca: string;
  admin: { username: string; password: string };
  caFiles: CertFiles;
  dir: string;
}

export function securedKafka(): SecuredKafka {
  const { state } = bedEnv();
  const sasl = process.env.KAFKA_SASL_BOOTSTRAP;
  const mtls = process.env.KAFKA_MTLS_BOOTSTRAP;
  const caFile = process.env.BED_CA;
  const adminPair = process.env.KAFKA_SASL_ADMIN;
  if (!sasl || !mtls || !caFile || !adminPair)
    throw new Error("no secured Kafka on this bed: KAFKA_SASL_BOOTSTRAP, KAFKA_MTLS_BOOTSTRAP, BED_CA, KAFKA_SASL_ADMIN");
  const colon = adminPair.indexOf(":");
  return {
    sasl,
    mtls,
    ca: readFileSync(caFile, "utf8"),
    admin: { username: adminPair.slice(0, colon), password: adminPair.slice(colon + 1) },
    caFiles: { cert: state.kafkaSecure.ca, key: state.kafkaSecure.caKey },
    dir: join(state.dir, "test-clients"),
  };
}

/** Client options for a SCRAM-SHA-512 login over TLS. */
export function saslClient(k: SecuredKafka, user: { username: string; password: string }): Pick<AdminOptions, "bootstrapBrokers" | "sasl" | "tls"> {
  return {
    bootstrapBrokers: [k.sasl],
    tls: { ca: k.ca },
    sasl: { mechanism: "SCRAM-SHA-512", username: user.username, password: user.password },
  };
}

/** Client options for the SSL listener, with a client certificate or (to show the refusal) without. */
export function mtlsClient(k: SecuredKafka, cert?: { cert: string; key: string }): Pick<AdminOptions, "bootstrapBrokers" | "tls"> {
  return { bootstrapBrokers: [k.mtls], tls: { ca: k.ca, ...(cert ? { cert: cert.cert, key: cert.key } : {}) } };
}

/** A new SCRAM-SHA-512 user with a random password. */
export async function createScramUser(k: SecuredKafka, username: string): Promise<{ username: string; password: string }> {
  const password = randomBytes(18).toString("base64url");
  await upsertScramUsers({ bootstrap: k.sasl, tls: { ca: k.ca }, sasl: k.admin }, { [username]: password });
  return { username, password };
}

/** A client certificate for `cn` (its principal on the SSL listener is User:<cn>), as PEM text. */
export async function clientCert(k: SecuredKafka, cn: string): Promise<{ cert: string; key: string }> {
  const files = await issueCert(k.caFiles, k.dir, cn, { cn, usage: "client" });
  return { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") };
}

export type AclGrant = {
  resource: "topic" | "group" | "transactionalId" | "cluster";
  /** a literal name, or a prefix with `prefix: true` */
  name: string;
  prefix?: boolean;
  operation: keyof typeof AclOperations;
};

/** ALLOW ACLs for `principal` (User:<name>) from any host, created as the super user. */
export async function grant(k: SecuredKafka, principal: string, grants: AclGrant[]): Promise<void> {
  const types = { topic: ResourceTypes.TOPIC, group: ResourceTypes.GROUP, transactionalId: ResourceTypes.TRANSACTIONAL_ID, cluster: ResourceTypes.CLUSTER };
  const creations: Acl[] = grants.map((g) => ({
    resourceType: types[g.resource],
    resourceName: g.resource === "cluster" ? "kafka-cluster" : g.name,
    resourcePatternType: g.prefix ? ResourcePatternTypes.PREFIXED : ResourcePatternTypes.LITERAL,
    principal,
    host: "*",
    operation: AclOperations[g.operation],
    permissionType: AclPermissionTypes.ALLOW,
  }));
  const admin = new Admin({ clientId: "test-acls", ...saslClient(k, k.admin) });
  try {
    await admin.createAcls({ creations });
  } finally {
    await admin.close();
  }
}

// The bed's secured Kafka listeners, as a user of a secured cluster meets them: SASL_SSL with SCRAM-SHA-512 takes
// a right password and refuses a wrong one; the SSL listener refuses a client without a certificate and names a
// client by its certificate's CN; and StandardAuthorizer allows a user only what an ACL grants.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Admin, Consumer, stringDeserializers, stringSerializers } from "@platformatic/kafka";
import { Producer } from "../../runtime/kafka/client.ts";
import { clientAddPartitionsToTxn } from "../../runtime/kafka/txn-api.ts";
import { waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "../support/bed.ts";
import { createTopic, admin as plainAdmin } from "../support/kafka.ts";
import { clientCert, createScramUser, grant, mtlsClient, type SecuredKafka, saslClient, securedKafka } from "../support/kafka-secure.ts";

/** Every message of an error and of the errors it wraps: the library nests the broker's answer. */
function messages(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const nested = (err as Error & { errors?: unknown[] }).errors ?? [];
  const cause = (err as Error & { cause?: unknown }).cause;
  return [err.message, ...nested.map(messages), ...(cause ? [messages(cause)] : [])].join(" / ");
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return messages(err);
  }
  assert.fail("expected the broker to refuse");
}

describe("the bed's secured Kafka listeners", () => {
  let k: SecuredKafka;
  const suffix = uniqueSuffix();
  const topic = `secure-${suffix}`;
  const opened: { close(): Promise<unknown> }[] = [];
  const keep = <T extends { close(): Promise<unknown> }>(c: T): T => {
    opened.push(c);
    return c;
  };

  before(async () => {
    k = securedKafka();
    const a = plainAdmin(bedEnv().bootstrap);
    try {
      await createTopic(a, topic, 1);
    } finally {
      await a.close();
    }
  });
  after(async () => {
    for (const c of opened) await c.close().catch(() => undefined);
  });

  test("SCRAM-SHA-512 over TLS: the super user logs in, a wrong password is refused", async () => {
    const a = keep(new Admin({ clientId: "secure-admin", ...saslClient(k, k.admin), retries: 0 }));
    const md = await a.metadata({ topics: [topic] });
    assert.ok(md.topics.has(topic), "the super user sees the topic");
    const wrong = keep(new Admin({ clientId: "secure-wrong", ...saslClient(k, { username: k.admin.username, password: "not-the-password" }), retries: 0 }));
    const why = await failure(wrong.metadata({ topics: [] }));
    assert.match(why, /authenticat|SASL|credentials/i, `a wrong password is an authentication failure: ${why}`);
  });

  test("a SCRAM user may write a topic only once an ACL grants it", async () => {
    const user = await createScramUser(k, `writer-${suffix}`);
    // The new credential reaches the broker through the metadata log: wait until it logs in.
    const a = keep(new Admin({ clientId: "secure-writer-admin", ...saslClient(k, user), retries: 0 }));
    await waitFor(async () => (await a.metadata({ topics: [] })).brokers.size > 0, { what: `${user.username} to log in`, timeoutMs: 20_000 });
    const producer = keep(new Producer({ clientId: "secure-writer", ...saslClient(k, user), serializers: stringSerializers, retries: 0 }));
    const refused = await failure(producer.send({ messages: [{ topic, value: "before the ACL" }] }));
    assert.match(refused, /authoriz/i, `without an ACL the write is refused: ${refused}`);

    await grant(k, `User:${user.username}`, [
      { resource: "topic", name: topic, operation: "WRITE" },
      { resource: "topic", name: topic, operation: "DESCRIBE" },
    ]);
    const granted = keep(new Producer({ clientId: "secure-writer-2", ...saslClient(k, user), serializers: stringSerializers }));
    await waitFor(
      async () => {
        await granted.send({ messages: [{ topic, value: "after the ACL" }] });
        return true;
      },
      { what: "the write to be allowed once the ACL is in", timeoutMs: 20_000, intervalMs: 250 },
    );
  });

  test("the SSL listener refuses a client without a certificate, and knows one with a certificate as User:<CN>", async () => {
    const anonymous = keep(new Admin({ clientId: "mtls-none", ...mtlsClient(k), retries: 0, timeout: 5_000 }));
    const why = await failure(anonymous.metadata({ topics: [] }));
    assert.ok(why.length > 0, "no certificate, no connection");

    const cn = `reader-${suffix}`;
    const cert = await clientCert(k, cn);
    const group = `secure-group-${suffix}`;
    const noAcl = keep(
      new Consumer({ clientId: "mtls-reader-0", groupId: group, ...mtlsClient(k, cert), deserializers: stringDeserializers, retries: 0, timeout: 5_000 }),
    );
    const refused = await failure(noAcl.consume({ topics: [topic], mode: "earliest", autocommit: false }));
    assert.match(refused, /authoriz/i, `a certificate without an ACL reads nothing: ${refused}`);

    await grant(k, `User:${cn}`, [
      { resource: "topic", name: topic, operation: "READ" },
      { resource: "topic", name: topic, operation: "DESCRIBE" },
      { resource: "group", name: group, operation: "READ" },
    ]);
    const values = await waitFor(
      async () => {
        const c = keep(
          new Consumer({ clientId: "mtls-reader", groupId: group, ...mtlsClient(k, cert), deserializers: stringDeserializers, retries: 0, timeout: 5_000 }),
        );
        const stream = await c.consume({ topics: [topic], mode: "earliest", autocommit: false, maxWaitTime: 500 });
        try {
          for await (const m of stream) return String(m.value);
        } finally {
          await stream.close();
        }
        return undefined;
      },
      { what: `User:${cn} to read the topic once the ACL is in`, timeoutMs: 30_000, intervalMs: 500 },
    );
    assert.equal(values, "after the ACL", "the record the SCRAM user wrote");
  });

  test("quirk: the library's AddPartitionsToTxn (v5) needs CLUSTER_ACTION; pinned to v3 (runtime/kafka/txn-api.ts) a transaction commits under a pipeline's ACLs", async () => {
    const user = await createScramUser(k, `txn-${suffix}`);
    const txnId = `txn-${suffix}`;
    await grant(k, `User:${user.username}`, [
      { resource: "topic", name: topic, operation: "WRITE" },
      { resource: "cluster", name: "kafka-cluster", operation: "IDEMPOTENT_WRITE" },
      { resource: "transactionalId", name: txnId, operation: "WRITE" },
    ]);
    const producer = (pinned: boolean) => {
      const p = new Producer({ clientId: "secure-txn", ...saslClient(k, user), transactionalId: txnId, idempotent: true, acks: -1, retries: 0 });
      keep(p);
      return pinned ? clientAddPartitionsToTxn(p) : p;
    };
    const attempt = async (pinned: boolean) => {
      const tx = await producer(pinned).beginTransaction({ producerId: -1n, producerEpoch: -1 });
      await tx.send({ messages: [{ topic, key: Buffer.from("k"), value: Buffer.from(pinned ? "pinned" : "library") }] });
      await tx.commit();
    };
    const login = keep(new Admin({ clientId: "txn-login", ...saslClient(k, user), retries: 0 }));
    await waitFor(async () => (await login.metadata({ topics: [] })).brokers.size > 0, { what: `${user.username} to log in`, timeoutMs: 20_000 });
    const why = await failure(attempt(false));
    assert.match(why, /Cluster authorization failed/, `the library's v5 is refused without CLUSTER_ACTION: ${why}`);
    await attempt(true);
  });
});

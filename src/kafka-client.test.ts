import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ClientCache, clientOptions, type KafkaConnection } from "./kafka-client.ts";

class FakeClient {
  closed = false;
  readonly conn: KafkaConnection;
  constructor(conn: KafkaConnection) {
    this.conn = conn;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

describe("Kafka clients by cluster and user", () => {
  const alice = (password: string): KafkaConnection => ({
    bootstrapServers: ["k:9093"],
    sasl: { mechanism: "SCRAM-SHA-512", username: "alice", password },
    tls: { ca: "CA" },
  });

  test("one client per cluster and user; a rotated password closes the old client and makes a new one", async () => {
    const errors: unknown[] = [];
    const cache = new ClientCache(
      (conn) => new FakeClient(conn),
      (err) => errors.push(err),
    );
    const first = cache.get(alice("one"));
    assert.equal(cache.get(alice("one")), first, "the same credentials: the same client");
    const bob = cache.get({ ...alice("one"), sasl: { mechanism: "SCRAM-SHA-512", username: "bob", password: "one" } });
    assert.notEqual(bob, first);
    const rotated = cache.get(alice("two"));
    assert.notEqual(rotated, first);
    assert.equal(first.closed, true, "the client of the revoked password is closed");
    assert.equal(rotated.conn.sasl?.password, "two");
    assert.equal(cache.size, 2);
    await cache.close();
    assert.equal(rotated.closed && bob.closed, true);
    assert.deepEqual(errors, []);
  });

  test("client options carry brokers, SASL and TLS as given", () => {
    assert.deepEqual(clientOptions(alice("pw")), {
      bootstrapBrokers: ["k:9093"],
      sasl: { mechanism: "SCRAM-SHA-512", username: "alice", password: "pw" },
      tls: { ca: "CA" },
    });
    assert.deepEqual(clientOptions({ bootstrapServers: ["k:9092"] }), { bootstrapBrokers: ["k:9092"] });
  });
});

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { connectionFromConfig } from "./kafka-auth.ts";

describe("the worker's Kafka credentials", () => {
  const files: Record<string, string> = { "/ca": "CA PEM", "/crt": "CERT PEM", "/key": "KEY PEM" };
  const read = (f: string) => {
    const v = files[f];
    if (v === undefined) throw new Error("ENOENT: no such file");
    return v;
  };

  test("SASL from the environment, TLS from the Secret volumes' files", () => {
    const conn = connectionFromConfig(
      { bootstrapServers: ["k:9093"], sasl: { mechanism: "SCRAM-SHA-512" }, tls: { caFile: "/ca", certFile: "/crt", keyFile: "/key" } },
      { CONVEYOR_KAFKA_SASL_USERNAME: "alice", CONVEYOR_KAFKA_SASL_PASSWORD: "s3cret" },
      read,
    );
    assert.deepEqual(conn, {
      bootstrapServers: ["k:9093"],
      sasl: { mechanism: "SCRAM-SHA-512", username: "alice", password: "s3cret" },
      tls: { ca: "CA PEM", cert: "CERT PEM", key: "KEY PEM" },
    });
  });

  test("TLS with the system's CAs and no client certificate; no credentials at all", () => {
    assert.deepEqual(connectionFromConfig({ bootstrapServers: ["k:9093"], tls: {} }, {}, read), { bootstrapServers: ["k:9093"], tls: {} });
    assert.deepEqual(connectionFromConfig({ bootstrapServers: ["k:9092"] }, {}, read), { bootstrapServers: ["k:9092"] });
  });

  test("a missing variable or file is a CredentialsError naming it, and the message holds no secret", () => {
    assert.throws(
      () => connectionFromConfig({ bootstrapServers: ["k"], sasl: { mechanism: "PLAIN" } }, { CONVEYOR_KAFKA_SASL_USERNAME: "alice" }, read),
      (err: Error) => err.name === "CredentialsError" && /CONVEYOR_KAFKA_SASL_PASSWORD/.test(err.message) && !err.message.includes("alice"),
    );
    assert.throws(
      () => connectionFromConfig({ bootstrapServers: ["k"], tls: { caFile: "/missing" } }, {}, read),
      (err: Error) => err.name === "CredentialsError" && /\/missing/.test(err.message),
    );
  });
});

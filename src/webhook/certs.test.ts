import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, test } from "node:test";
import {
  CA_VALIDITY_DAYS,
  fromSecretData,
  issueServingCert,
  RENEW_BEFORE_DAYS,
  SERVING_VALIDITY_DAYS,
  serviceHosts,
  toSecretData,
  unfitReason,
} from "./certs.ts";

const DAY = 86_400_000;
const now = new Date("2026-11-25T00:00:00Z");
const later = (days: number) => new Date(now.getTime() + days * DAY);
const hosts = [...serviceHosts("conveyor-webhook", "conveyor-system"), "127.0.0.1"];

describe("the webhook's serving certificate", async () => {
  const first = await issueServingCert(hosts, now);

  test("it names every host, is signed by its CA, and serves only as a server", () => {
    const cert = new X509Certificate(first.cert);
    const ca = new X509Certificate(first.caCert);
    for (const h of serviceHosts("conveyor-webhook", "conveyor-system")) assert.equal(cert.checkHost(h, { wildcards: false }), h);
    assert.equal(cert.checkIP("127.0.0.1"), "127.0.0.1");
    assert.ok(cert.verify(ca.publicKey));
    assert.ok(ca.ca, "the CA certificate is a CA");
    assert.ok(!cert.ca, "the serving certificate is not a CA");
    assert.deepEqual(cert.keyUsage, ["1.3.6.1.5.5.7.3.1"], "serverAuth only");
    assert.equal(unfitReason(first, hosts, now), undefined);
  });

  test("it is unfit for another host, near its end, or under a foreign CA", async () => {
    const other = await issueServingCert(["elsewhere"], now);
    const cases: [string, Parameters<typeof unfitReason>, RegExp][] = [
      ["another host", [first, ["other.conveyor-system.svc"], now], /does not name other\.conveyor-system\.svc/],
      ["inside the renewal window", [first, hosts, later(SERVING_VALIDITY_DAYS - RENEW_BEFORE_DAYS + 1)], /^expires /],
      ["before it is valid", [first, hosts, later(-1)], /not valid yet/],
      ["a foreign CA certificate", [{ ...first, caCert: other.caCert, caKey: undefined }, hosts, now], /not signed by the CA/],
      ["a key of another certificate", [{ ...first, key: other.key }, hosts, now], /key does not match/],
      ["a CA key of another CA", [{ ...first, caKey: other.caKey }, hosts, now], /CA key does not match/],
      ["garbage", [{ ...first, cert: "not a certificate" }, hosts, now], /^unreadable/],
    ];
    for (const [name, args, reason] of cases) assert.match(unfitReason(...args) ?? "fit", reason, name);
  });

  test("renewal keeps the CA, so the caBundle the apiserver trusts does not change", async () => {
    const renewed = await issueServingCert(hosts, later(SERVING_VALIDITY_DAYS - 10), { cert: first.caCert, key: first.caKey ?? "" });
    assert.equal(renewed.caCert, first.caCert);
    assert.notEqual(renewed.cert, first.cert);
    assert.equal(unfitReason(renewed, hosts, later(SERVING_VALIDITY_DAYS - 10)), undefined);
  });

  test("a CA near its own end, or unreadable, is replaced", async () => {
    const late = later(CA_VALIDITY_DAYS - SERVING_VALIDITY_DAYS);
    const renewed = await issueServingCert(hosts, late, { cert: first.caCert, key: first.caKey ?? "" });
    assert.notEqual(renewed.caCert, first.caCert);
    assert.equal(unfitReason(renewed, hosts, late), undefined);
    const fresh = await issueServingCert(hosts, now, { cert: first.caCert, key: "junk" });
    assert.notEqual(fresh.caCert, first.caCert);
  });

  test("it round-trips through a kubernetes.io/tls Secret's data", () => {
    const data = toSecretData(first);
    assert.deepEqual(Object.keys(data).sort(), ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    assert.deepEqual(fromSecretData(data), first);
    const { "ca.key": _, ...external } = data;
    assert.deepEqual(fromSecretData(external), { caCert: first.caCert, cert: first.cert, key: first.key });
    assert.equal(fromSecretData({ "tls.crt": data["tls.crt"] ?? "" }), undefined);
    assert.equal(fromSecretData(undefined), undefined);
  });

  test("it needs a host", async () => {
    await assert.rejects(issueServingCert([], now), /at least one host/);
  });
});

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import { CoordinationV1Api, KubeConfig, type V1Lease } from "@kubernetes/client-node";
import { LeaderElector } from "./leader-election.ts";
import { jsonLogger } from "./log.ts";

/** A lease endpoint of a real HTTP server on loopback: it stores one Lease, or stops answering when told. */
class LeaseServer {
  lease: V1Lease | undefined;
  hang = false;
  hung = 0;
  /** hung requests whose client gave up (closed the connection) */
  dropped = 0;
  private rv = 0;
  private readonly server = createServer((req, res) => this.handle(req, res));

  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (this.hang) {
      this.hung++;
      req.socket.on("close", () => this.dropped++);
      return;
    }
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      const send = (code: number, obj: unknown) => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      const notFound = { kind: "Status", apiVersion: "v1", status: "Failure", reason: "NotFound", code: 404 };
      if (req.method === "GET") return this.lease ? send(200, this.lease) : send(404, notFound);
      const patch = JSON.parse(body) as V1Lease;
      if (req.method === "POST") this.lease = { ...patch, metadata: { ...patch.metadata, resourceVersion: String(++this.rv) } };
      else if (req.method === "PATCH" && this.lease)
        this.lease = { ...this.lease, spec: { ...this.lease.spec, ...patch.spec }, metadata: { ...this.lease.metadata, resourceVersion: String(++this.rv) } };
      else return send(404, notFound);
      send(req.method === "POST" ? 201 : 200, this.lease);
    });
  }
}

function api(server: string): CoordinationV1Api {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "loopback", server, skipTLSVerify: true }],
    users: [{ name: "nobody" }],
    contexts: [{ name: "loopback", cluster: "loopback", user: "nobody" }],
    currentContext: "loopback",
  });
  return kc.makeApiClient(CoordinationV1Api);
}

/** Resolves with `p`, or fails the test once `ms` have passed. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Polls `cond` every few ms; fails the test when it is not true within `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("leader election against an apiserver that stops answering", () => {
  const server = new LeaseServer();
  let url = "";
  before(async () => {
    url = await server.start();
  });
  after(() => server.stop());
  beforeEach(() => {
    Object.assign(server, { lease: undefined, hang: false, hung: 0, dropped: 0 });
  });

  test("a candidate's lease call times out, and each is dropped, instead of waiting for ever", { timeout: 10_000 }, async () => {
    assert.throws(
      () => new LeaderElector({ api: api(url), namespace: "ns", name: "l", identity: "a", log: jsonLogger({}, () => {}), requestTimeoutMs: 6_000 }),
      /requestTimeoutMs must be below renewDeadlineMs/,
      "a call may not outlast the renew deadline",
    );
    server.hang = true;
    const warnings: string[] = [];
    const log = jsonLogger({}, (line) => {
      if (line.includes('"lease update failed"')) warnings.push(line);
    });
    const e = new LeaderElector({
      api: api(url),
      namespace: "ns",
      name: "l",
      identity: "a",
      log,
      leaseDurationMs: 1_000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
      requestTimeoutMs: 150,
    });
    const t0 = Date.now();
    void e.run(() => assert.fail("never led, so never lost"));
    try {
      await until(() => warnings.length > 0, 1_000, "the read of the lease to fail on its timeout (150 ms)");
    } finally {
      await e.release();
    }
    assert.ok(Date.now() - t0 < 1_000);
    assert.equal(e.isLeader, false);
    assert.ok(server.hung >= 1);
    await until(() => server.dropped === server.hung, 2_000, "every hung call to be dropped by the client");
  });

  test("a leader whose renewals hang steps down by its renew deadline, and the hung calls are dropped", { timeout: 10_000 }, async () => {
    const e = new LeaderElector({
      api: api(url),
      namespace: "ns",
      name: "l",
      identity: "b",
      log: jsonLogger({}, () => {}),
      leaseDurationMs: 1_000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
      requestTimeoutMs: 250,
    });
    let lostAt = 0;
    const lost = new Promise<void>((resolve) => {
      void within(
        e.run(() => {
          lostAt = Date.now();
          resolve();
        }),
        3_000,
        "becoming leader",
      ).then(() => {
        assert.equal(server.lease?.spec?.holderIdentity, "b");
      });
    });
    await until(() => e.isLeader, 3_000, "leading");
    // Renewals are answered for a while: the leader stays.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(e.isLeader, true, "renewed leases keep it leading");
    server.hang = true;
    const hungAt = Date.now();
    await within(lost, 3_000, "stepping down while every lease call hangs");
    const after = lostAt - hungAt;
    // The last renewal was at most one retry period before the hang; the deadline is 600 ms after it.
    assert.ok(after <= 600 + 150, `stepped down ${after} ms after the apiserver stopped answering`);
    assert.equal(e.isLeader, false);
    await until(() => server.dropped === server.hung, 2_000, "every hung renewal to be dropped");
    assert.ok(server.hung >= 1);
    server.hang = false;
    await e.release();
  });
});

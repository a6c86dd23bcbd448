import assert from "node:assert/strict";
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { V1Pod, V1StatefulSet } from "@kubernetes/client-node";
import type { StreamPipeline } from "./api.ts";
import { refreshWatermarks, type WatermarkStatus } from "./watermark-status.ts";
import { ownedWorkerPods, ScrapeTooLargeError, scrapeMetrics } from "./worker-scrape.ts";

const WORKER = `conveyor_runtime_source_watermark_ms{topic="orders",partition="0"} 1764417600000
conveyor_runtime_source_idle{topic="orders",partition="0"} 0
conveyor_runtime_task_watermark_ms{partition="0"} 1764417600000
`;

/** What a worker's port might do: answer, stream for ever, or say nothing. On loopback only. */
describe("scraping a worker's /metrics", () => {
  const open = new Set<ServerResponse>();
  let streamed = 0;
  let streamClosed = false;
  const server = createServer((req, res) => {
    if (req.url === "/ok") return res.end(WORKER);
    if (req.url === "/endless") {
      // Lines of a valid exposition, without end: a pod that wants the operator's heap.
      res.writeHead(200, { "content-type": "text/plain" });
      const line = `${"conveyor_runtime_records_in_total 1\n".repeat(1_000)}`;
      const pump = () => {
        while (!res.destroyed && res.write(line)) streamed += line.length;
        if (!res.destroyed) res.once("drain", pump);
      };
      res.on("close", () => {
        streamClosed = true;
      });
      return pump();
    }
    if (req.url === "/declared-large") {
      res.writeHead(200, { "content-length": String(64 * 1024 * 1024) });
      return res.write("x");
    }
    if (req.url === "/silent") {
      open.add(res);
      return;
    }
    res.writeHead(404).end();
  });
  let base = "";
  before(async () => {
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const limits = { timeoutMs: 2_000, maxBytes: 256 * 1024 };

  test("an answer within the bounds is read whole", { timeout: 10_000 }, async () => {
    assert.equal(await scrapeMetrics(`${base}/ok`, limits), WORKER);
    await assert.rejects(scrapeMetrics(`${base}/nothing`, limits), /GET \/metrics answered 404/);
  });

  test("an endless body stops at the bound, as a ScrapeTooLargeError, and the connection is dropped", { timeout: 10_000 }, async () => {
    const t0 = Date.now();
    await assert.rejects(scrapeMetrics(`${base}/endless`, limits), (err: unknown) => {
      assert.ok(err instanceof ScrapeTooLargeError);
      assert.match(err.message, /more than 262144 bytes/);
      return true;
    });
    assert.ok(Date.now() - t0 < limits.timeoutMs, "stopped by the size, not the timeout");
    const deadline = Date.now() + 2_000;
    while (!streamClosed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(streamClosed, "the request is dropped, not drained");
    // What the server got into its socket before the drop: the bound plus what the buffers hold, not more.
    assert.ok(streamed < 16 * 1024 * 1024, `the server wrote ${streamed} bytes`);
  });

  test("a declared length past the bound is refused before the body is read", { timeout: 10_000 }, async () => {
    await assert.rejects(scrapeMetrics(`${base}/declared-large`, limits), ScrapeTooLargeError);
  });

  test("a worker that never answers times out", { timeout: 10_000 }, async () => {
    const t0 = Date.now();
    await assert.rejects(scrapeMetrics(`${base}/silent`, { ...limits, timeoutMs: 100 }), /timeout|aborted/i);
    assert.ok(Date.now() - t0 < 1_500);
  });

  test("an oversized worker is named in unread like any scrape error, and the others are read", { timeout: 10_000 }, async () => {
    const p: StreamPipeline = {
      metadata: { name: "p", namespace: "ns" },
      spec: { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["orders"] }, sink: { topic: "out" } },
      status: { readyReplicas: 2 },
    };
    const written: WatermarkStatus[] = [];
    const got = await refreshWatermarks(p, {
      pipelines: () => [p],
      workerPods: async () => [
        { name: "p-0", ip: "127.0.0.1", ready: true },
        { name: "p-1", ip: "127.0.0.1", ready: true },
      ],
      scrape: (pod) => scrapeMetrics(`${base}/${pod.name === "p-0" ? "ok" : "endless"}`, limits),
      applyWatermarks: async (_p, w) => {
        written.push(w);
      },
      now: () => new Date(0),
      warn: () => assert.fail("a scrape error is the worker's, not the pass's"),
    });
    assert.deepEqual(got?.unread, ["p-1: GET /metrics answered more than 262144 bytes"]);
    assert.deepEqual(
      got?.sources?.map((s) => s.partition),
      [0],
      "p-0's partitions are read",
    );
    assert.equal(written.length, 1);
  });
});

describe("the pods a pipeline's watermarks are read from", () => {
  const p: StreamPipeline = {
    metadata: { name: "p", namespace: "ns", uid: "pipeline-uid" },
    spec: { kafka: { bootstrapServers: ["k:9092"] }, source: { topics: ["orders"] }, sink: { topic: "out" } },
  };
  const sts: V1StatefulSet = {
    metadata: {
      name: "p",
      namespace: "ns",
      uid: "sts-uid",
      ownerReferences: [{ apiVersion: "conveyor.dev/v1alpha1", kind: "StreamPipeline", name: "p", uid: "pipeline-uid", controller: true }],
    },
  };
  const pod = (name: string, owner?: { uid: string; kind?: string }, phase = "Running"): V1Pod => ({
    metadata: {
      name,
      namespace: "ns",
      labels: { "app.kubernetes.io/instance": "p" },
      ...(owner ? { ownerReferences: [{ apiVersion: "apps/v1", kind: owner.kind ?? "StatefulSet", name: "p", uid: owner.uid, controller: true }] } : {}),
    },
    status: { phase, podIP: "10.0.0.1", conditions: [{ type: "Ready", status: "True" }] },
  });
  const pods = [
    pod("p-0", { uid: "sts-uid" }),
    pod("lookalike"),
    pod("other-sts-0", { uid: "another-sts-uid" }),
    pod("rs-pod", { uid: "sts-uid", kind: "ReplicaSet" }),
    pod("p-1", { uid: "sts-uid" }, "Pending"),
  ];

  test("only running pods the pipeline's own StatefulSet controls; labels alone are not enough", { timeout: 10_000 }, () => {
    assert.deepEqual(ownedWorkerPods(p, sts, pods), [{ name: "p-0", ready: true, ip: "10.0.0.1" }]);
  });

  test("a StatefulSet that is not the pipeline's own, or none, gives no pods", { timeout: 10_000 }, () => {
    const foreign = { ...sts, metadata: { ...sts.metadata, ownerReferences: [] } };
    assert.deepEqual(ownedWorkerPods(p, foreign, pods), []);
    assert.deepEqual(ownedWorkerPods(p, undefined, pods), []);
    assert.deepEqual(
      ownedWorkerPods({ ...p, metadata: { ...p.metadata, uid: "recreated-uid" } }, sts, pods),
      [],
      "a pipeline created again owns no old StatefulSet",
    );
  });
});

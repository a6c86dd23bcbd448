// When a part of the bed cannot start, the error says which part and why. Nothing passes quietly.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { startControlPlane } from "../env/k8s.ts";
import { startKafka } from "../env/kafka.ts";
import { freePort } from "../env/proc.ts";
import { repoRoot } from "../env/toolchain.ts";

async function occupy(): Promise<{ port: number; server: Server }> {
  const port = await freePort();
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { port, server };
}

describe("bed components that cannot start fail with a reason", () => {
  const dirs: string[] = [];
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), "bed-fail-"));
    dirs.push(d);
    return d;
  };
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test("Kafka on a port that is taken", async () => {
    const { port, server } = await occupy();
    try {
      await assert.rejects(startKafka({ dir: tmp(), ports: [port, await freePort()] }), (err: Error) => {
        assert.match(err.message, /Kafka broker 1 listener/);
        assert.match(err.message, new RegExp(`port 127\\.0\\.0\\.1:${port} is not free \\(EADDRINUSE\\)`));
        return true;
      });
    } finally {
      server.close();
    }
  });

  test("Kafka without Java", async () => {
    await assert.rejects(startKafka({ dir: tmp(), java: "/nonexistent/bin/java" }), (err: Error) => {
      assert.match(err.message, /\/nonexistent\/bin\/java is needed to run the Kafka broker/);
      assert.match(err.message, /ENOENT/);
      return true;
    });
  });

  test("kube-apiserver on a port that is taken", async () => {
    const { port, server } = await occupy();
    try {
      await assert.rejects(startControlPlane({ dir: tmp(), apiserverPort: port }), /kube-apiserver secure port: port 127\.0\.0\.1:\d+ is not free/);
    } finally {
      server.close();
    }
  });

  test("building Kubernetes without Go", () => {
    const res = spawnSync(
      process.execPath,
      ["--input-type=module", "-e", `import { ensureKubernetes } from ${JSON.stringify(join(repoRoot, "test/env/toolchain.ts"))}; await ensureKubernetes();`],
      { encoding: "utf8", env: { PATH: "/usr/bin:/bin", HOME: tmp(), CONVEYOR_CACHE: tmp() } },
    );
    assert.notEqual(res.status, 0);
    assert.match(res.stderr, /go is needed to build Kubernetes and etcd from Go modules, but 'go version' failed \(ENOENT\)/);
  });
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { KubeConfig, RequestContext } from "@kubernetes/client-node";
import { HttpMethod } from "@kubernetes/client-node/dist/gen/http/http.js";
import { pooledKubeConfig } from "./kube-pool.ts";

function kubeConfig(ca = "a CA"): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: "https://127.0.0.1:6443", caData: Buffer.from(ca).toString("base64") }],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return kc;
}

async function dispatcherOf(kc: KubeConfig): Promise<unknown> {
  const ctx = new RequestContext("https://127.0.0.1:6443/api", HttpMethod.GET);
  await kc.applySecurityAuthentication(ctx);
  return ctx.getDispatcher();
}

test("client-node makes a new connection pool for every request; pooled, requests share one", async () => {
  const plain = kubeConfig();
  const a = await dispatcherOf(plain);
  assert.ok(a, "a kubeconfig with a CA gets an Agent");
  // When an upgrade of client-node reuses its Agent, this fails and says kube-pool.ts can go.
  assert.notEqual(a, await dispatcherOf(plain), "client-node 2.0.1 builds an Agent per request");
  const pooled = pooledKubeConfig(kubeConfig());
  const first = await dispatcherOf(pooled);
  assert.equal(await dispatcherOf(pooled), first);
  assert.equal(pooledKubeConfig(pooled), pooled, "pooling twice changes nothing");
  assert.equal(await dispatcherOf(pooled), first);
});

test("other connection settings get a pool of their own", async () => {
  const kc = pooledKubeConfig(kubeConfig("one CA"));
  const first = await dispatcherOf(kc);
  const cluster = kc.getCurrentCluster();
  assert.ok(cluster);
  kc.clusters = [{ ...cluster, caData: Buffer.from("a rotated CA").toString("base64") }];
  const second = await dispatcherOf(kc);
  assert.notEqual(second, first);
  assert.equal(await dispatcherOf(kc), second);
});

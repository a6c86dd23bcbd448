// Kubernetes helpers for suites: clients from the bed's KUBECONFIG, namespaces that clean up after themselves.
import type { TestContext } from "node:test";
import {
  AdmissionregistrationV1Api,
  ApiextensionsV1Api,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  KubernetesObjectApi,
  PolicyV1Api,
  RbacAuthorizationV1Api,
} from "@kubernetes/client-node";
import { statusCode } from "../../src/kube-errors.ts";
import { waitFor } from "../env/proc.ts";
import { bedEnv, uniqueSuffix } from "./bed.ts";

export interface Kube {
  kc: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  custom: CustomObjectsApi;
  rbac: RbacAuthorizationV1Api;
  apiext: ApiextensionsV1Api;
  coord: CoordinationV1Api;
  admission: AdmissionregistrationV1Api;
  policy: PolicyV1Api;
  discovery: DiscoveryV1Api;
  objects: KubernetesObjectApi;
}

export function kubeFrom(kc: KubeConfig): Kube {
  return {
    kc,
    core: kc.makeApiClient(CoreV1Api),
    apps: kc.makeApiClient(AppsV1Api),
    custom: kc.makeApiClient(CustomObjectsApi),
    rbac: kc.makeApiClient(RbacAuthorizationV1Api),
    apiext: kc.makeApiClient(ApiextensionsV1Api),
    coord: kc.makeApiClient(CoordinationV1Api),
    admission: kc.makeApiClient(AdmissionregistrationV1Api),
    policy: kc.makeApiClient(PolicyV1Api),
    discovery: kc.makeApiClient(DiscoveryV1Api),
    objects: KubernetesObjectApi.makeApiClient(kc),
  };
}

export function kube(): Kube {
  const kc = new KubeConfig();
  kc.loadFromFile(bedEnv().kubeconfig);
  return kubeFrom(kc);
}

/** A kube client that authenticates with a bearer token instead of the admin's. */
export function kubeWithToken(token: string): Kube {
  const admin = kube().kc;
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("bed kubeconfig has no cluster");
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [cluster],
    users: [{ name: "sa", token }],
    contexts: [{ name: "sa", cluster: cluster.name, user: "sa" }],
    currentContext: "sa",
  });
  return kubeFrom(kc);
}

export { statusCode };

/** Creates a namespace for one suite, waits for its default ServiceAccount, and deletes it afterwards. */
export async function testNamespace(t: TestContext | { after: (fn: () => Promise<void>) => void }, k: Kube, prefix: string): Promise<string> {
  const name = `${prefix}-${uniqueSuffix()}`.slice(0, 63);
  await k.core.createNamespace({ body: { metadata: { name, labels: { "conveyor.dev/test": "true" } } } });
  t.after(async () => {
    await k.core.deleteNamespace({ name }).catch((err: unknown) => {
      if (statusCode(err) !== 404) throw err;
    });
  });
  await waitFor(
    async () => {
      await k.core.readNamespacedServiceAccount({ name: "default", namespace: name });
      return true;
    },
    { what: `the default ServiceAccount in ${name}`, timeoutMs: 30_000 },
  );
  return name;
}

/** Reasons of the Events recorded about an object, by the operator's component name. */
export async function eventReasons(k: Kube, namespace: string, name: string): Promise<string[]> {
  const list = await k.core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` });
  return list.items.filter((e) => e.source?.component === "conveyor-operator").map((e) => e.reason ?? "");
}

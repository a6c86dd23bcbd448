// The part of the bed's start that runs inside its network namespace and cgroup (test/env/bed.ts runs it there):
// the bed's CA; Kafka with PLAINTEXT, SASL_SSL (SCRAM-SHA-512) and SSL (client certificates) listeners, each on the
// pod network and on 127.0.0.1 for the host forwarder; the control plane with the apiserver on both; the node
// shim; and the bed half of the forwarder. It prints what it started as JSON.
// usage: node test/env/bed-inside.ts <bed dir> <apiserver port> <Kafka host-listener ports: PLAINTEXT SASL_SSL SSL>
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Admin } from "@platformatic/kafka";
import { BED_KAFKA_ADMIN, type InsideState, serializeBedState, startForwarder, startShim } from "./bed.ts";
import { bedCgroupFor } from "./cgroup.ts";
import { type ControlPlane, startControlPlane, stopControlPlane } from "./k8s.ts";
import { type KafkaCluster, startKafka, stopKafka } from "./kafka.ts";
import { upsertScramUsers } from "./kafka-users.ts";
import { BED_GATEWAY, KAFKA_MTLS_POD_PORT, KAFKA_POD_PORT, KAFKA_SASL_POD_PORT } from "./net.ts";
import { issueCert, makeCa } from "./pki.ts";
import { freePort, waitFor } from "./proc.ts";

const [dir, apiserverArg, kafkaHostArg, saslHostArg, mtlsHostArg] = process.argv.slice(2);
const say = (s: string) => process.stderr.write(`[bed] ${s}\n`);

async function main(): Promise<void> {
  if (!dir || !apiserverArg || !kafkaHostArg || !saslHostArg || !mtlsHostArg) {
    throw new Error("usage: bed-inside.ts <bed dir> <apiserver port> <Kafka host-listener ports: PLAINTEXT SASL_SSL SSL>");
  }
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  const [kafkaHost, saslHost, mtlsHost] = [kafkaHostArg, saslHostArg, mtlsHostArg].map(Number) as [number, number, number];
  const caDir = join(dir, "ca");
  const ca = await makeCa(caDir);
  const brokerCert = await issueCert(ca, caDir, "kafka-broker", { cn: "kafka-broker", usage: "server", ips: [BED_GATEWAY, "127.0.0.1"], dns: ["localhost"] });
  const admin = { username: BED_KAFKA_ADMIN, password: randomBytes(18).toString("base64url") };
  const kafka: KafkaCluster = await startKafka({
    dir: join(dir, "kafka"),
    host: BED_GATEWAY,
    ports: [KAFKA_POD_PORT, await freePort()],
    extraListeners: [
      { name: "HOST", host: "127.0.0.1", port: kafkaHost },
      { name: "SASL", host: BED_GATEWAY, port: KAFKA_SASL_POD_PORT, protocol: "SASL_SSL" },
      { name: "SASL_HOST", host: "127.0.0.1", port: saslHost, protocol: "SASL_SSL" },
      { name: "MTLS", host: BED_GATEWAY, port: KAFKA_MTLS_POD_PORT, protocol: "SSL" },
      { name: "MTLS_HOST", host: "127.0.0.1", port: mtlsHost, protocol: "SSL" },
    ],
    security: { ...brokerCert, ca: ca.cert, superUsers: [admin.username] },
  });
  const secure: InsideState["kafkaSecure"] = {
    saslBootstrap: `${BED_GATEWAY}:${KAFKA_SASL_POD_PORT}`,
    saslHostBootstrap: `127.0.0.1:${saslHost}`,
    mtlsBootstrap: `${BED_GATEWAY}:${KAFKA_MTLS_POD_PORT}`,
    mtlsHostBootstrap: `127.0.0.1:${mtlsHost}`,
    ca: ca.cert,
    caKey: ca.key,
    admin,
  };
  let controlPlane: ControlPlane | undefined;
  try {
    // The super user's SCRAM credential, set as ANONYMOUS on PLAINTEXT; then its first SASL login over TLS.
    await upsertScramUsers({ bootstrap: kafka.bootstrap }, { [admin.username]: admin.password });
    await waitFor(() => saslLogin(secure), {
      what: `a SCRAM-SHA-512 login as ${admin.username} at ${secure.saslBootstrap}`,
      timeoutMs: 20_000,
      intervalMs: 250,
    });
    say(
      `Kafka ready at ${kafka.bootstrap} for pods (SASL_SSL ${secure.saslBootstrap}, SSL ${secure.mtlsBootstrap}), 127.0.0.1 through the forwarder (${since()})`,
    );
    controlPlane = await startControlPlane({ dir: join(dir, "k8s"), apiserverPort: Number(apiserverArg), advertiseAddress: BED_GATEWAY, ca });
    say(`Kubernetes control plane ready at ${controlPlane.server}, for pods at https://${BED_GATEWAY}:${controlPlane.port} (${since()})`);
    const shim = await startShim(controlPlane, dir, bedCgroupFor(dir));
    say(`node shim ready, node bed-node-1 (${since()})`);
    const forwarder = await startForwarder("bed", dir, [controlPlane.port, kafkaHost, saslHost, mtlsHost], join(bedCgroupFor(dir), "system"));
    const inside: InsideState = { kafka, controlPlane, shim, kafkaBootstrap: kafka.bootstrap, kafkaSecure: secure, forwarder };
    process.stdout.write(serializeBedState(inside));
  } catch (err) {
    const report = (what: string) => (e: unknown) => say(`could not stop ${what}: ${e instanceof Error ? e.message : String(e)}`);
    if (controlPlane) await stopControlPlane(controlPlane).catch(report("the control plane"));
    await stopKafka(kafka).catch(report("Kafka"));
    throw err;
  }
}

/** True once the super user can log in with SCRAM over TLS and read metadata. */
async function saslLogin(secure: InsideState["kafkaSecure"]): Promise<boolean> {
  const a = new Admin({
    clientId: "bed-ready-sasl",
    bootstrapBrokers: [secure.saslBootstrap],
    retries: 0,
    timeout: 2_000,
    tls: { ca: readFileSync(secure.ca) },
    sasl: { mechanism: "SCRAM-SHA-512", username: secure.admin.username, password: secure.admin.password },
  });
  try {
    // a refusal means not yet (the credential reaches the broker through the metadata log); waitFor reports the last one
    return (await a.metadata({ topics: [] })).brokers.size > 0;
  } finally {
    await a.close().catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    say(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);

// The part of the bed's start that runs inside its network namespace and cgroup (test/env/bed.ts runs it there):
// Kafka with a listener on the pod network and one on 127.0.0.1 for the host forwarder, the control plane with
// the apiserver on both, the node shim, and the bed half of the forwarder. It prints what it started as JSON.
// usage: node test/env/bed-inside.ts <bed dir> <apiserver port> <Kafka host-listener port>
import { join } from "node:path";
import { type InsideState, serializeBedState, startForwarder, startShim } from "./bed.ts";
import { bedCgroupFor } from "./cgroup.ts";
import { type ControlPlane, startControlPlane, stopControlPlane } from "./k8s.ts";
import { type KafkaCluster, startKafka, stopKafka } from "./kafka.ts";
import { BED_GATEWAY, KAFKA_POD_PORT } from "./net.ts";
import { freePort } from "./proc.ts";

const [dir, apiserverArg, kafkaHostArg] = process.argv.slice(2);
const say = (s: string) => process.stderr.write(`[bed] ${s}\n`);

async function main(): Promise<void> {
  if (!dir || !apiserverArg || !kafkaHostArg) throw new Error("usage: bed-inside.ts <bed dir> <apiserver port> <Kafka host-listener port>");
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  const kafkaHost = Number(kafkaHostArg);
  const kafka: KafkaCluster = await startKafka({
    dir: join(dir, "kafka"),
    host: BED_GATEWAY,
    ports: [KAFKA_POD_PORT, await freePort()],
    extraListeners: [{ name: "HOST", host: "127.0.0.1", port: kafkaHost }],
  });
  say(`Kafka ready at ${kafka.bootstrap} for pods, 127.0.0.1:${kafkaHost} through the forwarder (${since()})`);
  let controlPlane: ControlPlane | undefined;
  try {
    controlPlane = await startControlPlane({ dir: join(dir, "k8s"), apiserverPort: Number(apiserverArg), advertiseAddress: BED_GATEWAY });
    say(`Kubernetes control plane ready at ${controlPlane.server}, for pods at https://${BED_GATEWAY}:${controlPlane.port} (${since()})`);
    const shim = await startShim(controlPlane, dir, bedCgroupFor(dir));
    say(`node shim ready, node bed-node-1 (${since()})`);
    const forwarder = await startForwarder("bed", dir, [controlPlane.port, kafkaHost], join(bedCgroupFor(dir), "system"));
    const inside: InsideState = { kafka, controlPlane, shim, kafkaBootstrap: kafka.bootstrap, forwarder };
    process.stdout.write(serializeBedState(inside));
  } catch (err) {
    const report = (what: string) => (e: unknown) => say(`could not stop ${what}: ${e instanceof Error ? e.message : String(e)}`);
    if (controlPlane) await stopControlPlane(controlPlane).catch(report("the control plane"));
    await stopKafka(kafka).catch(report("Kafka"));
    throw err;
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    say(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);

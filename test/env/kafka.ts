// Apache Kafka in KRaft combined mode: one broker, or three for the fault tests; on 127.0.0.1 unless told another address.
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Admin } from "@platformatic/kafka";
import { assertPortFree, BedError, freePort, run, type Started, startProcess, stopProcess, waitFor } from "./proc.ts";
import { ensureKafka } from "./toolchain.ts";

export interface BrokerSpec {
  nodeId: number;
  /** the address of the PLAINTEXT listener, which the brokers also use among themselves */
  host: string;
  port: number;
  controllerPort: number;
  dataDir: string;
  config: string;
  log: string;
  /** the command line that starts it, so that a fault test can restart it as it was */
  cmd: string;
  args: string[];
}

export interface KafkaCluster {
  bootstrap: string;
  brokers: BrokerSpec[];
  pids: Map<number, number>;
}

export interface KafkaOptions {
  dir: string;
  brokers?: 1 | 3;
  /** fixed listener ports (for the port-taken test); free ports otherwise */
  ports?: number[];
  java?: string;
  /** the PLAINTEXT listener's address: 127.0.0.1 by default; the bed's gateway, so that pods reach it */
  host?: string;
  /** more PLAINTEXT listeners of one broker, each advertised as itself (one per network namespace it is reached from) */
  extraListeners?: ExtraListener[];
  security?: KafkaSecurity;
}

export interface ExtraListener {
  /** a listener name, upper case (HOST) */
  name: string;
  host: string;
  port: number;
  /** PLAINTEXT by default; the secured ones need `KafkaOptions.security` */
  protocol?: "PLAINTEXT" | "SASL_SSL" | "SSL";
}

/**
 * A secured broker: SASL_SSL listeners take SCRAM-SHA-512 logins, SSL listeners require a client certificate (its
 * CN is the principal), and Kafka's StandardAuthorizer allows only what an ACL grants. The PLAINTEXT listeners (and
 * the controller's) stay open to every client as ANONYMOUS, a super user, for the tests that do not need security.
 */
export interface KafkaSecurity {
  /** the broker's certificate and key (PEM), and the CA its clients' certificates chain to */
  cert: string;
  key: string;
  ca: string;
  /** principals (without `User:`) allowed everything besides ANONYMOUS */
  superUsers: string[];
}

const READY_TIMEOUT_MS = 60_000;

function securityProperties(b: BrokerSpec, extra: ExtraListener[], sec: KafkaSecurity): string[] {
  const keystore = join(b.dataDir, "..", `broker-${b.nodeId}-keystore.pem`);
  // Kafka's PEM key store is one file: the private key, then the certificate chain.
  writeFileSync(keystore, `${readFileSync(sec.key, "utf8")}${readFileSync(sec.cert, "utf8")}`, { mode: 0o600 });
  const lines = [
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    `super.users=${["ANONYMOUS", ...sec.superUsers].map((u) => `User:${u}`).join(";")}`,
    "allow.everyone.if.no.acl.found=false",
    "ssl.keystore.type=PEM",
    `ssl.keystore.location=${keystore}`,
    "ssl.truststore.type=PEM",
    `ssl.truststore.location=${sec.ca}`,
    // a client certificate's principal is its CN, as `User:<cn>`
    "ssl.principal.mapping.rules=RULE:^CN=([^,]+)(,.*)?$/$1/,DEFAULT",
    "sasl.enabled.mechanisms=SCRAM-SHA-512",
  ];
  for (const l of extra) {
    const n = l.name.toLowerCase();
    if (l.protocol === "SASL_SSL")
      lines.push(`listener.name.${n}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;`);
    if (l.protocol === "SSL") lines.push(`listener.name.${n}.ssl.client.auth=required`);
  }
  return lines;
}

function serverProperties(b: BrokerSpec, voters: string, replicas: number, extra: ExtraListener[], sec: KafkaSecurity | undefined): string {
  // A client is handed the brokers of the listener it connected to, so each listener advertises an address that
  // works where its clients are.
  const advertised = [`PLAINTEXT://${b.host}:${b.port}`, ...extra.map((l) => `${l.name}://${l.host}:${l.port}`)];
  const protocols = [["PLAINTEXT", "PLAINTEXT"], ...extra.map((l) => [l.name, l.protocol ?? "PLAINTEXT"]), ["CONTROLLER", "PLAINTEXT"]];
  return [
    "process.roles=broker,controller",
    `node.id=${b.nodeId}`,
    `controller.quorum.voters=${voters}`,
    `listeners=${[...advertised, `CONTROLLER://127.0.0.1:${b.controllerPort}`].join(",")}`,
    `advertised.listeners=${advertised.join(",")}`,
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=PLAINTEXT",
    `listener.security.protocol.map=${protocols.map(([n, p]) => `${n}:${p}`).join(",")}`,
    ...(sec ? securityProperties(b, extra, sec) : []),
    `log.dirs=${b.dataDir}`,
    "num.partitions=1",
    `default.replication.factor=${replicas}`,
    `offsets.topic.replication.factor=${replicas}`,
    "offsets.topic.num.partitions=10",
    `transaction.state.log.replication.factor=${replicas}`,
    `transaction.state.log.min.isr=${replicas === 1 ? 1 : 2}`,
    "transaction.state.log.num.partitions=10",
    `share.coordinator.state.topic.replication.factor=${replicas}`,
    `share.coordinator.state.topic.min.isr=${replicas === 1 ? 1 : 2}`,
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=false",
    "log.segment.bytes=67108864",
    // Segments below a log start that DeleteRecords moved are freed at the next retention check (5 min by
    // default): often enough here that a test sees the bytes go (runtime-repartition-purge.test.ts).
    "log.retention.check.interval.ms=5000",
    "",
  ].join("\n");
}

const LOG4J = [
  "log4j.rootLogger=INFO, stdout",
  "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
  "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
  "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
  "log4j.logger.kafka.request.logger=WARN",
  "log4j.logger.org.apache.kafka.storage.internals.log=WARN",
  "log4j.logger.kafka.log=WARN",
  "",
].join("\n");

/** Answers once the broker serves metadata with the expected number of brokers. */
async function clusterReady(broker: string, expected: number): Promise<boolean> {
  const admin = new Admin({ clientId: "bed-ready", bootstrapBrokers: [broker], retries: 0, timeout: 2_000 });
  try {
    const md = await admin.metadata({ topics: [] });
    return md.brokers.size >= expected;
  } finally {
    // A probe client that fails to close does not change the answer; the next probe opens a new one.
    await admin.close().catch(() => undefined);
  }
}

/**
 * A KRaft cluster id: 16 random bytes in base64url. Like Kafka's Uuid.randomUuid, it never starts with "-",
 * which the storage tool's argument parser would read as an option (1 id in 64 did).
 */
export function kraftClusterId(): string {
  for (;;) {
    const id = Buffer.from(randomUUID().replaceAll("-", ""), "hex").toString("base64url");
    if (!id.startsWith("-")) return id;
  }
}

export function startBroker(b: BrokerSpec): Started {
  return startProcess({ name: `kafka-${b.nodeId}`, cmd: b.cmd, args: b.args, log: b.log });
}

export async function waitForBroker(cluster: KafkaCluster, b: BrokerSpec): Promise<void> {
  const pid = cluster.pids.get(b.nodeId);
  await waitFor(() => clusterReady(`${b.host}:${b.port}`, cluster.brokers.length), {
    what: `Kafka broker ${b.nodeId} on ${b.host}:${b.port} to answer a metadata request`,
    timeoutMs: READY_TIMEOUT_MS,
    intervalMs: 300,
    process: pid === undefined ? undefined : { name: `kafka broker ${b.nodeId}`, pid, log: b.log },
  });
}

export async function startKafka(opts: KafkaOptions): Promise<KafkaCluster> {
  const count = opts.brokers ?? 1;
  const host = opts.host ?? "127.0.0.1";
  const extra = opts.extraListeners ?? [];
  if (count > 1 && extra.length > 0) throw new BedError("extra Kafka listeners are for a one-broker cluster");
  if (!opts.security && extra.some((l) => (l.protocol ?? "PLAINTEXT") !== "PLAINTEXT")) throw new BedError("a secured Kafka listener needs certificates");
  const java = opts.java ?? "java";
  const lib = await ensureKafka(java);
  const cp = `${lib}/*`;
  rmSync(opts.dir, { recursive: true, force: true });
  mkdirSync(opts.dir, { recursive: true });
  const log4j = join(opts.dir, "log4j.properties");
  writeFileSync(log4j, LOG4J);

  const brokers: BrokerSpec[] = [];
  for (let i = 0; i < count; i++) {
    const port = opts.ports?.[i * 2] ?? (await freePort(host));
    const controllerPort = opts.ports?.[i * 2 + 1] ?? (await freePort());
    await assertPortFree(port, `Kafka broker ${i + 1} listener`, host);
    for (const l of extra) await assertPortFree(l.port, `Kafka broker ${i + 1} ${l.name} listener`, l.host);
    await assertPortFree(controllerPort, `Kafka broker ${i + 1} controller listener`);
    const dataDir = join(opts.dir, `broker-${i + 1}`);
    const heap = count === 1 ? "-Xmx1g" : "-Xmx640m";
    brokers.push({
      nodeId: i + 1,
      host,
      port,
      controllerPort,
      dataDir,
      config: join(opts.dir, `server-${i + 1}.properties`),
      log: join(opts.dir, `broker-${i + 1}.log`),
      cmd: java,
      args: [
        "-Xms256m",
        heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        `-Dlog4j.configuration=file:${log4j}`,
        "-cp",
        cp,
        "kafka.Kafka",
        join(opts.dir, `server-${i + 1}.properties`),
      ],
    });
  }
  const voters = brokers.map((b) => `${b.nodeId}@127.0.0.1:${b.controllerPort}`).join(",");
  const clusterId = kraftClusterId();
  for (const b of brokers) {
    mkdirSync(b.dataDir, { recursive: true });
    writeFileSync(b.config, serverProperties(b, voters, count, extra, opts.security));
    await run(java, ["-cp", cp, `-Dlog4j.configuration=file:${log4j}`, "kafka.tools.StorageTool", "format", "-t", clusterId, "-c", b.config], {
      what: `formatting Kafka storage for broker ${b.nodeId}`,
    }).catch((err: unknown) => {
      throw new BedError(`Kafka broker ${b.nodeId} cannot start: ${err instanceof Error ? err.message : String(err)}`);
    });
  }
  const cluster: KafkaCluster = { bootstrap: brokers.map((b) => `${b.host}:${b.port}`).join(","), brokers, pids: new Map() };
  try {
    for (const b of brokers) cluster.pids.set(b.nodeId, startBroker(b).pid);
    for (const b of brokers) await waitForBroker(cluster, b);
  } catch (err) {
    await stopKafka(cluster);
    throw err;
  }
  return cluster;
}

export async function stopKafka(cluster: KafkaCluster): Promise<void> {
  // Brokers first in reverse order; each gets a clean-shutdown window, then SIGKILL.
  for (const b of [...cluster.brokers].reverse()) {
    const pid = cluster.pids.get(b.nodeId);
    if (pid !== undefined) await stopProcess(pid, 15_000);
    cluster.pids.delete(b.nodeId);
  }
}

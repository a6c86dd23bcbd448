// npm run bed -- up|down|status|exec <command...>|kafka-topics|kafka-console-producer|kafka-console-consumer|kafka-acls|kafka-configs [args...]
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type BedState, bedStatus, defaultBedDir, hostEnv, insideEnv, readBedState, startBed, stopBedState } from "./bed.ts";
import { ensureCgroup } from "./cgroup.ts";
import { placedArgv } from "./proc.ts";
import { ensureAll, ensureKafka } from "./toolchain.ts";

/** Kafka's own command-line tools, from the bed's jars, as Kafka's scripts of the same names run them. */
const KAFKA_TOOLS: Record<string, string> = {
  "kafka-topics": "org.apache.kafka.tools.TopicCommand",
  "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
  "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
  // users (SCRAM credentials) and ACLs for the secured listeners; through PLAINTEXT, whose clients are super users
  "kafka-acls": "org.apache.kafka.tools.AclCommand",
  "kafka-configs": "kafka.admin.ConfigCommand",
};
const USAGE = `usage: npm run bed -- up|down|status
       npm run bed -- exec <command> [args...]     (inside the bed's network namespace)
       npm run bed -- ${Object.keys(KAFKA_TOOLS).join("|")} [args...]   (--bootstrap-server is the bed's)
`;

const [cmd, ...rest] = process.argv.slice(2);

function describe(state: BedState): string {
  return [
    `[bed] running in the background; logs under ${state.dir}; stop it with: npm run bed -- down`,
    `[bed] the lines above work in this shell (the host's network namespace, through a loopback forwarder).`,
    `[bed] pods live on ${state.net.gateway}/16 inside network namespace ${state.net.netns}; they reach Kafka at ${state.kafkaBootstrap}`,
    `[bed]   (put that in a pipeline's spec.kafka.bootstrapServers) and the apiserver at https://${state.net.gateway}:${state.controlPlane.port}.`,
    `[bed] secured Kafka for pods: SASL_SSL (SCRAM-SHA-512) at ${state.kafkaSecure.saslBootstrap}, SSL with client certificates at ${state.kafkaSecure.mtlsBootstrap};`,
    `[bed]   both serve a certificate signed by BED_CA, and allow a user only what an ACL grants (npm run bed -- kafka-acls, kafka-configs).`,
    `[bed] run a command where the pods' addresses are reachable: npm run bed -- exec <command>, e.g. npm run bed -- exec npm run operator`,
  ].join("\n");
}

function envLines(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([k, v]) => `${k}=${v}\n`)
    .join("");
}

async function main(): Promise<number> {
  switch (cmd) {
    case "up": {
      await ensureAll();
      const bed = await startBed();
      process.stdout.write(envLines(hostEnv(bed)));
      process.stderr.write(`${describe(bed)}\n`);
      return 0;
    }
    case "down": {
      const state = readBedState();
      if (!state) {
        process.stderr.write(`[bed] no bed state in ${defaultBedDir()}: nothing to stop\n`);
        return 0;
      }
      await stopBedState(state);
      process.stderr.write("[bed] stopped\n");
      return 0;
    }
    case "status": {
      const state = readBedState();
      if (!state) {
        process.stdout.write(`no bed running (no state in ${defaultBedDir()})\n`);
        return 1;
      }
      const rows = bedStatus(state);
      for (const r of rows) process.stdout.write(`${r.name.padEnd(26)} pid ${String(r.pid).padEnd(8)} ${r.alive ? "running" : "NOT RUNNING"}\n`);
      process.stdout.write(`${envLines(hostEnv(state))}started ${state.startedAt}\n`);
      const inside = insideEnv(state);
      process.stdout.write(
        `inside the bed's namespace ${state.net.netns} (npm run bed -- exec): ${["KAFKA_BOOTSTRAP", "KAFKA_SASL_BOOTSTRAP", "KAFKA_MTLS_BOOTSTRAP"].map((k) => `${k}=${inside[k]}`).join(" ")}\n`,
      );
      return rows.every((r) => r.alive) ? 0 : 1;
    }
    case "exec": {
      const state = readBedState();
      if (!state) {
        process.stderr.write(`[bed] no bed state in ${defaultBedDir()}: start one with npm run bed -- up\n`);
        return 1;
      }
      if (rest.length === 0) {
        process.stderr.write("usage: npm run bed -- exec <command> [args...]\n");
        return 2;
      }
      // In the bed's cgroup too, so that `bed down` takes it with the bed, as it takes the bed's namespace away.
      const cgroup = join(state.net.cgroup, "exec");
      ensureCgroup(cgroup);
      const argv = placedArgv(rest, { netns: state.net.netns, cgroup });
      const res = spawnSync(argv[0] as string, argv.slice(1), { stdio: "inherit", env: { ...process.env, ...insideEnv(state) } });
      if (res.error) {
        process.stderr.write(`[bed] exec ${rest.join(" ")}: ${res.error.message}\n`);
        return 1;
      }
      return res.status ?? 128 + 15;
    }
    default: {
      const tool = KAFKA_TOOLS[cmd ?? ""];
      if (!tool) {
        process.stderr.write(USAGE);
        return 2;
      }
      const state = readBedState();
      if (!state) {
        process.stderr.write(`[bed] no bed state in ${defaultBedDir()}: start one with npm run bed -- up\n`);
        return 1;
      }
      // The host listener's address works here and inside the bed's namespace alike.
      const log4j = join(state.dir, "kafka-tools-log4j.properties");
      writeFileSync(
        log4j,
        "log4j.rootLogger=WARN, stderr\nlog4j.appender.stderr=org.apache.log4j.ConsoleAppender\nlog4j.appender.stderr.Target=System.err\nlog4j.appender.stderr.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\n",
      );
      const args = ["-cp", `${await ensureKafka()}/*`, `-Dlog4j.configuration=file:${log4j}`, tool, "--bootstrap-server", state.kafkaHostBootstrap, ...rest];
      const res = spawnSync("java", args, { stdio: "inherit" });
      if (res.error) {
        process.stderr.write(`[bed] ${cmd}: java could not run: ${res.error.message}\n`);
        return 1;
      }
      return res.status ?? 1;
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[bed] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

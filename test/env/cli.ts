// npm run bed -- up|down|status
import { bedStatus, defaultBedDir, readBedState, startBed, stopBedState } from "./bed.ts";
import { ensureAll } from "./toolchain.ts";

const cmd = process.argv[2];

async function main(): Promise<number> {
  switch (cmd) {
    case "up": {
      await ensureAll();
      const bed = await startBed();
      process.stdout.write(`KUBECONFIG=${bed.kubeconfig}\nKAFKA_BOOTSTRAP=${bed.kafkaBootstrap}\n`);
      process.stderr.write(`[bed] running in the background; logs under ${bed.dir}; stop it with: npm run bed -- down\n`);
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
      process.stdout.write(`KUBECONFIG=${state.kubeconfig}\nKAFKA_BOOTSTRAP=${state.kafkaBootstrap}\nstarted ${state.startedAt}\n`);
      return rows.every((r) => r.alive) ? 0 : 1;
    }
    default:
      process.stderr.write("usage: npm run bed -- up|down|status\n");
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[bed] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

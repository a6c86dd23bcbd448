// npm run soak -- --minutes N: the data-safety soak (test/integration/soak.test.ts) alone, for N minutes, on a
// bed of its own (or the running one with CONVEYOR_REUSE_BED=1), through the same runner as npm test.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { minutes: { type: "string", default: "3" } } });
const minutes = Number(values.minutes);
if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60) {
  process.stderr.write(`--minutes must be a number of minutes between 0 and 1440, not ${JSON.stringify(values.minutes)}\n`);
  process.exit(2);
}
const root = join(import.meta.dirname, "..");
const run = spawnSync(process.execPath, [join(root, "scripts/test.ts"), "test/integration/soak.test.ts"], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, CONVEYOR_SOAK_MINUTES: String(minutes) },
});
process.exit(run.status ?? 1);

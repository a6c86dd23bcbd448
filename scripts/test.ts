// npm test: static checks, then every unit, integration and e2e suite on one shared test bed.
import { spawnSync } from "node:child_process";
import { join } from "node:path";

const root = join(import.meta.dirname, "..");
const bin = (name: string) => join(root, "node_modules/.bin", name);
const t0 = Date.now();

function step(title: string, cmd: string, args: string[]): void {
  const s = Date.now();
  process.stdout.write(`\n== ${title}\n`);
  const res = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  const secs = ((Date.now() - s) / 1000).toFixed(1);
  if (res.status !== 0) {
    process.stdout.write(`== ${title}: FAILED after ${secs} s\n`);
    process.exit(res.status ?? 1);
  }
  process.stdout.write(`== ${title}: ok in ${secs} s\n`);
}

step("lint and format (biome)", bin("biome"), ["ci", "--colors=off", "."]);
step("typecheck (tsc)", bin("tsc"), ["--noEmit", "-p", "."]);
const only = process.argv.slice(2);
step("tests (unit, integration, e2e on the test bed)", process.execPath, [
  "--test",
  "--test-global-setup=test/global-setup.ts",
  "--test-concurrency=1",
  "--test-timeout=900000",
  "--test-reporter=spec",
  "--test-reporter-destination=stdout",
  "--test-reporter=./test/durations-reporter.ts",
  "--test-reporter-destination=stdout",
  ...(only.length > 0 ? only : ["src/**/*.test.ts", "runtime/**/*.test.ts", "scripts/**/*.test.ts", "test/**/*.test.ts"]),
]);
process.stdout.write(`\nnpm test finished in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

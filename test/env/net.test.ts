import assert from "node:assert/strict";
import { test } from "node:test";
import { bedNetFor, inNetns } from "./net.ts";
import { placedArgv } from "./proc.ts";

test("a bed's network names come from its directory: the same dir finds an earlier bed's, another dir never does", () => {
  const a = bedNetFor("/tmp/conveyor-bed");
  assert.deepEqual(bedNetFor("/tmp/./conveyor-bed/"), a, "the resolved path names it");
  const b = bedNetFor("/tmp/conveyor-test-bed");
  assert.notEqual(a.netns, b.netns);
  assert.ok(a.podPrefix.startsWith(`${a.netns}-`), "pod namespaces are found by the bed's prefix");
  assert.ok(!b.podPrefix.startsWith(a.podPrefix) && !a.podPrefix.startsWith(b.podPrefix), "one bed's prefix never matches another's");
  assert.equal(a.gateway, "10.244.0.1");
});

test("a placed command joins its cgroup in a shell, then execs nsenter, which execs the command with its arguments untouched", () => {
  const argv = placedArgv(["node", "x.ts", "it's $HOME"], { cgroup: "/sys/fs/cgroup/bed's", netns: "cvbed-1" });
  assert.deepEqual(argv, [
    "/bin/sh",
    "-c",
    `echo $$ > '/sys/fs/cgroup/bed'\\''s/cgroup.procs' && exec "$@"`,
    "sh",
    ...inNetns("cvbed-1", ["node", "x.ts", "it's $HOME"]),
  ]);
  assert.deepEqual(inNetns("cvbed-1", ["ip", "a"]), ["nsenter", "--net=/run/netns/cvbed-1", "--", "ip", "a"]);
  assert.deepEqual(placedArgv(["ip", "a"], {}), ["ip", "a"], "nowhere in particular: the command as it is");
});

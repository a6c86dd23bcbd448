import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { containerArgv, type ImageTable, lookupImage } from "./images.ts";

const table: ImageTable = {
  "conveyor/runtime": { command: ["node", "runtime/main.ts"], args: ["--default"] },
  "bed/shell:2": { command: ["/bin/sh", "-c"], args: ["sleep infinity"] },
};

describe("the shim's image table", () => {
  const lookups: [string, string | undefined][] = [
    ["conveyor/runtime", "node"],
    ["conveyor/runtime:0.1.0", "node"],
    ["conveyor/runtime@sha256:abc", "node"],
    ["registry.local:5000/conveyor/runtime:1", undefined],
    ["bed/shell:2", "/bin/sh"],
    ["bed/shell:3", undefined],
    ["nginx", undefined],
  ];
  for (const [image, want] of lookups) {
    test(`lookup ${image}`, () => assert.equal(lookupImage(table, image)?.command[0], want));
  }

  const entry = table["conveyor/runtime"];
  const argvs: [string, string[] | undefined, string[] | undefined, string[]][] = [
    ["image defaults", undefined, undefined, ["node", "runtime/main.ts", "--default"]],
    ["args replace CMD", undefined, ["--x"], ["node", "runtime/main.ts", "--x"]],
    ["command replaces ENTRYPOINT and CMD", ["/bin/echo"], undefined, ["/bin/echo"]],
    ["command and args", ["/bin/echo"], ["hi"], ["/bin/echo", "hi"]],
  ];
  for (const [name, command, args, want] of argvs) {
    test(`argv: ${name}`, () => assert.deepEqual(containerArgv(entry ?? { command: [] }, command, args), want));
  }
});

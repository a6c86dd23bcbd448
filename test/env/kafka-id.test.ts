import assert from "node:assert/strict";
import { test } from "node:test";
import { kraftClusterId } from "./kafka.ts";

test("KRaft cluster ids are 22 base64url characters and never start with '-'", () => {
  for (let i = 0; i < 5_000; i++) {
    const id = kraftClusterId();
    assert.match(id, /^[A-Za-z0-9_][A-Za-z0-9_-]{21}$/);
  }
});

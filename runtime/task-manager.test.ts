import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { taskChanges } from "./task-manager.ts";

describe("the task manager's bookkeeping", () => {
  it("keeps the tasks an assignment keeps, closes the revoked ones and opens the new ones", () => {
    assert.deepEqual(taskChanges([0, 1, 2], new Set([1, 2, 3, 4]), true), { close: [0], open: [3, 4] });
  });

  it("closes and opens again every kept task when a generation may have passed", () => {
    // another member may have owned them in between and written their changelogs: they restore from the checkpoint
    assert.deepEqual(taskChanges([2, 0], new Set([0, 2]), false), { close: [0, 2], open: [0, 2] });
  });

  it("opens in partition order, whatever order the assignment named them in", () => {
    assert.deepEqual(taskChanges([], new Set([5, 1, 3]), true), { close: [], open: [1, 3, 5] });
  });

  it("closes everything on an empty assignment", () => {
    assert.deepEqual(taskChanges([4, 3], new Set(), true), { close: [3, 4], open: [] });
  });
});

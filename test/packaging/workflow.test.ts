// The release workflow (.github/workflows/release.yml) runs on GitHub only, so here it is checked: actionlint (with
// shellcheck over its scripts) finds nothing, and it does what the release needs with the project's own pieces:
// `npm run images`, the registry the chart points at, digests kept on push, cosign keyless, an SBOM, a scan.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { load } from "js-yaml";
import { IMAGES, REGISTRY } from "../../scripts/images/spec.ts";
import { actionlintPath, repoRoot } from "../env/toolchain.ts";

const WORKFLOW = join(repoRoot, ".github/workflows/release.yml");

interface Step {
  uses?: string;
  run?: string;
  env?: Record<string, string>;
}
interface Workflow {
  on: { push?: { tags?: string[]; branches?: string[] } };
  permissions: Record<string, string>;
  jobs: Record<string, { permissions: Record<string, string>; env: Record<string, string>; steps: Step[] }>;
}

function shellcheck(): string {
  const res = spawnSync("sh", ["-c", "command -v shellcheck"], { encoding: "utf8" });
  if (res.status !== 0) throw new Error("shellcheck is needed to check the workflow's scripts (Debian: apt-get install shellcheck; .ci/run installs it)");
  return res.stdout.trim();
}

function actionlint(file: string): { status: number | null; out: string } {
  const res = spawnSync(actionlintPath(), [`-shellcheck=${shellcheck()}`, "-color=false", file], { encoding: "utf8" });
  if (res.error) throw new Error(`actionlint could not run (npm test builds it before the bed): ${res.error.message}`);
  return { status: res.status, out: res.stdout + res.stderr };
}

describe("the release workflow", () => {
  const text = readFileSync(WORKFLOW, "utf8");
  const wf = load(text) as Workflow;
  const job = wf.jobs.release;
  const runs = (job?.steps ?? []).flatMap((s) => (s.run ? [s.run] : [])).join("\n");
  const uses = (job?.steps ?? []).flatMap((s) => (s.uses ? [s.uses.split("@")[0]] : []));

  test("actionlint and shellcheck find nothing in it, and do find a planted mistake", () => {
    const clean = actionlint(WORKFLOW);
    assert.equal(clean.status, 0, clean.out);
    const dir = mkdtempSync(join(tmpdir(), "conveyor-actionlint-"));
    try {
      const broken = join(dir, "release.yml");
      writeFileSync(broken, text.replace("for target in operator runtime; do", "for target in operator runtime; do\n            cd $target_dir"));
      const found = actionlint(broken);
      assert.notEqual(found.status, 0, "a script with an unquoted, unset variable must not pass");
      assert.match(found.out, /shellcheck/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("it runs on a version tag only, with no permission but what the job needs", () => {
    assert.deepEqual(wf.on, { push: { tags: ["v*"] } });
    assert.deepEqual(wf.permissions, {});
    assert.deepEqual(job?.permissions, { contents: "read", packages: "write", "id-token": "write" });
  });

  test("it builds with npm run images and pushes each image's built digest to the registry the chart points at", () => {
    assert.match(runs, /npm run images/);
    assert.equal(job?.env.REGISTRY, REGISTRY);
    assert.match(runs, new RegExp(`for target in ${IMAGES.map((i) => i.target).join(" ")}; do`));
    assert.match(runs, /skopeo copy --preserve-digests --digestfile/, "the digest pushed is the digest built, or the push fails");
    assert.match(runs, /if \[ "\$pushed" != "\$built" \]/);
  });

  test("it signs keyless, attests an SBOM, reports a vulnerability scan, and pushes the chart", () => {
    for (const a of [
      "actions/checkout",
      "sigstore/cosign-installer",
      "anchore/sbom-action/download-syft",
      "anchore/scan-action/download-grype",
      "azure/setup-helm",
    ])
      assert.ok(uses.includes(a), `it uses ${a}`);
    assert.match(runs, /cosign sign --yes "\$image"/);
    assert.match(runs, /cosign attest --yes --type spdxjson/);
    assert.match(runs, /"\$GRYPE" "sbom:dist\/\$target.spdx.json" --output table/);
    assert.match(runs, /helm push "dist\/conveyor-\$VERSION.tgz" "\$CHARTS"/);
    assert.match(runs, /cat "dist\/\$target.grype.txt"/, "the scan's findings are printed in the job's log");
  });
});

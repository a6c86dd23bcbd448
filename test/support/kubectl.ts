// The system kubectl against the bed, as a user would type it.
import { spawnSync } from "node:child_process";

export function kubectl(kubeconfig: string, args: string[], input?: string): string {
  const res = spawnSync("kubectl", args, { input, encoding: "utf8", env: { ...process.env, KUBECONFIG: kubeconfig } });
  if (res.error) throw new Error(`kubectl could not run: ${res.error.message}`);
  if (res.status !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${res.stderr}`);
  return res.stdout;
}

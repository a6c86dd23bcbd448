// What a container's process looks like from the node: its user, its root mount, its executable and what it has
// mapped, read from /proc as a runtime's tooling would, to show what the node shim ran.
import { readFileSync, readlinkSync } from "node:fs";

export interface ContainerView {
  uid: number;
  gid: number;
  /** the executable, as the process sees it (inside its root) */
  exe: string;
  /** the host's path of the process's root ("/" for a process not in a root of its own) */
  rootPath: string;
  /** the mount at the process's "/" */
  root: { fstype: string; readOnly: boolean; options: Record<string, string> };
  /** the files it has mapped (shared libraries, native addons), as it sees them */
  mapped: string[];
}

export function containerView(pid: number): ContainerView {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const ids = (name: string) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+)`, "m"))?.[1]);
  // mountinfo: id parent dev root mountpoint options [optional...] - fstype source superoptions
  const rootLine = readFileSync(`/proc/${pid}/mountinfo`, "utf8")
    .split("\n")
    .filter((l) => l.split(" ")[4] === "/")
    .at(-1);
  if (!rootLine) throw new Error(`process ${pid} has no mount at /`);
  const [before, after] = rootLine.split(" - ") as [string, string];
  const [fstype, , superOptions] = after.split(" ") as [string, string, string];
  const options: Record<string, string> = {};
  for (const o of superOptions.split(",")) {
    const eq = o.indexOf("=");
    options[eq < 0 ? o : o.slice(0, eq)] = eq < 0 ? "" : o.slice(eq + 1);
  }
  const mountOptions = (before.split(" ")[5] ?? "").split(",");
  // /proc shows paths from the reader's root: the process's own root is a prefix to take off
  const root = readlinkSync(`/proc/${pid}/root`);
  const inside = (p: string) => (root !== "/" && p.startsWith(`${root}/`) ? p.slice(root.length) : p);
  const mapped = [
    ...new Set(
      readFileSync(`/proc/${pid}/maps`, "utf8")
        .split("\n")
        .map((l) => l.split(/\s+/).slice(5).join(" "))
        .filter((p) => p.startsWith("/"))
        .map(inside),
    ),
  ];
  return {
    uid: ids("Uid"),
    gid: ids("Gid"),
    exe: inside(readlinkSync(`/proc/${pid}/exe`)),
    rootPath: root,
    root: { fstype, readOnly: mountOptions.includes("ro"), options },
    mapped,
  };
}

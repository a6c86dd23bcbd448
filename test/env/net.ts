// The bed's network, laid out as a node with a CNI bridge plugin would have it, but with the node itself in a
// network namespace of the bed's own: the host's namespace gets no address and no route.
//
//   host namespace          bed namespace (cvbed-<id>)                     pod namespaces (cvbed-<id>-<n>)
//   127.0.0.1:<api>  --+    lo 127.0.0.1: etcd, apiserver, Kafka's HOST   lo, and eth0 10.244.x.y/16,
//   127.0.0.1:<kafka> -+--> listener, controller-manager, scheduler       default route via 10.244.0.1
//   (host forwarder,        bridge cvbr0 10.244.0.1/16: the apiserver,    (one per pod: its own ports)
//    unix sockets)          Kafka's pod listener, the shim's probes
//                           <--- veth cvp<n> ---> eth0 of each pod
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { resolve } from "node:path";
import { BedError } from "./proc.ts";

/** The pod network; the bed namespace's bridge holds the first address, and pods get the rest. */
export const POD_CIDR = "10.244.0.0/16";
export const POD_PREFIX_LENGTH = 16;
/** the bridge's address in the bed namespace: the pods' gateway, and where they reach the apiserver and Kafka */
export const BED_GATEWAY = "10.244.0.1";
export const BRIDGE = "cvbr0";
/** Kafka's pod-network listener: the bed namespace is the bed's alone, so the well-known port is always free there. */
export const KAFKA_POD_PORT = 9092;
/** Kafka's SASL_SSL (SCRAM-SHA-512) and SSL (client certificate required) listeners on the pod network */
export const KAFKA_SASL_POD_PORT = 9093;
export const KAFKA_MTLS_POD_PORT = 9094;
const NETNS_DIR = "/run/netns";

export interface BedNet {
  /** the bed namespace's name under /run/netns */
  netns: string;
  /** pod namespaces are named `<podPrefix><n>` */
  podPrefix: string;
  gateway: string;
}

/** Names derived from the bed's directory, so that a later `up` in the same directory finds an earlier one's leftovers. */
export function bedNetFor(dir: string): BedNet {
  const id = createHash("sha256").update(resolve(dir)).digest("hex").slice(0, 10);
  return { netns: `cvbed-${id}`, podPrefix: `cvbed-${id}-`, gateway: BED_GATEWAY };
}

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

/** The argv that runs a command inside a named network namespace (nsenter execs it: the pid stays the same). */
export function inNetns(name: string, argv: string[]): string[] {
  return ["nsenter", `--net=${netnsPath(name)}`, "--", ...argv];
}

export function ip(args: string[], what: string): string {
  const res = spawnSync("ip", args, { encoding: "utf8" });
  if (res.error || res.status !== 0) {
    throw new BedError(`${what}: 'ip ${args.join(" ")}' failed (the bed needs root and iproute2): ${res.error?.message ?? res.stderr.trim()}`);
  }
  return res.stdout;
}

export function netnsExists(name: string): boolean {
  return existsSync(netnsPath(name));
}

/** Creates the bed namespace with its loopback up and the pods' bridge; an earlier one of the same name goes first. */
export function createBedNet(net: BedNet): void {
  removeBedNet(net);
  ip(["netns", "add", net.netns], "creating the bed's network namespace");
  const n = ["-n", net.netns];
  ip([...n, "link", "set", "lo", "up"], "bringing up the bed namespace's loopback");
  ip([...n, "link", "add", BRIDGE, "type", "bridge"], "creating the pods' bridge");
  ip([...n, "addr", "add", `${net.gateway}/${POD_PREFIX_LENGTH}`, "dev", BRIDGE], "addressing the pods' bridge");
  ip([...n, "link", "set", BRIDGE, "up"], "bringing up the pods' bridge");
}

/** The bed's namespaces that exist now: its own and every pod's. */
export function bedNamespaces(net: BedNet): string[] {
  if (!existsSync(NETNS_DIR)) return [];
  return readdirSync(NETNS_DIR).filter((n) => n === net.netns || n.startsWith(net.podPrefix));
}

/** Deletes the pods' namespaces, then the bed's: their links, addresses and routes go with them. */
export function removeBedNet(net: BedNet): void {
  const names = bedNamespaces(net).sort((a, b) => (a === net.netns ? 1 : b === net.netns ? -1 : a.localeCompare(b)));
  for (const name of names) ip(["netns", "del", name], `deleting network namespace ${name}`);
}

/** A pod's own namespace, joined to the bridge by a veth pair: eth0 inside with the pod's address, cvp<n> on the bridge. */
export function createPodNet(net: BedNet, n: number, address: string): string {
  const name = `${net.podPrefix}${n}`;
  const veth = `cvp${n}`;
  if (netnsExists(name)) ip(["netns", "del", name], `deleting a stale pod namespace ${name}`);
  // The bed-side end may be left from a pod whose namespace went without the shim (a killed shim).
  spawnSync("ip", ["-n", net.netns, "link", "del", veth], { stdio: "ignore" });
  ip(["netns", "add", name], `creating the network namespace of pod ${address}`);
  try {
    ip(["-n", net.netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name], `creating the veth pair of pod ${address}`);
    ip(["-n", net.netns, "link", "set", veth, "master", BRIDGE, "up"], `joining pod ${address} to the bridge`);
    const p = ["-n", name];
    ip([...p, "link", "set", "lo", "up"], `bringing up the loopback of pod ${address}`);
    ip([...p, "addr", "add", `${address}/${POD_PREFIX_LENGTH}`, "dev", "eth0"], `addressing pod ${address}`);
    ip([...p, "link", "set", "eth0", "up"], `bringing up eth0 of pod ${address}`);
    ip([...p, "route", "add", "default", "via", net.gateway], `routing pod ${address} through the gateway`);
  } catch (err) {
    removePodNet(name);
    throw err;
  }
  return name;
}

/** Deleting the namespace deletes eth0, and with it the veth's other end on the bridge. */
export function removePodNet(name: string): void {
  if (netnsExists(name)) ip(["netns", "del", name], `deleting pod namespace ${name}`);
}

export interface HostNetView {
  addresses: string[];
  routes: string[];
}

interface IpAddrJson {
  ifname: string;
  addr_info?: { local: string; prefixlen: number }[];
}
interface IpRouteJson {
  dst: string;
  dev?: string;
  gateway?: string;
  type?: string;
}

/**
 * Every address and route of a network namespace (by default the caller's), as "dev address/len" and
 * "type dst via gateway dev", from `ip -j`, for before-and-after comparisons.
 */
export function netView(nsPath?: string): HostNetView {
  const run = (args: string[]) => {
    const argv = nsPath ? ["nsenter", `--net=${nsPath}`, "--", "ip", ...args] : ["ip", ...args];
    const res = spawnSync(argv[0] as string, argv.slice(1), { encoding: "utf8" });
    if (res.error || res.status !== 0) throw new BedError(`'${argv.join(" ")}' failed: ${res.error?.message ?? res.stderr.trim()}`);
    return JSON.parse(res.stdout) as unknown;
  };
  const addrs = run(["-j", "addr"]) as IpAddrJson[];
  const routes = [...(run(["-j", "route", "show", "table", "all"]) as IpRouteJson[]), ...(run(["-j", "-6", "route", "show", "table", "all"]) as IpRouteJson[])];
  return {
    addresses: addrs.flatMap((a) => (a.addr_info ?? []).map((i) => `${a.ifname} ${i.local}/${i.prefixlen}`)).sort(),
    routes: routes.map((r) => [r.type ?? "unicast", r.dst, r.gateway ? `via ${r.gateway}` : "", r.dev ? `dev ${r.dev}` : ""].join(" ").trim()).sort(),
  };
}

/** The route an older bed added in the host's namespace (it made the pod range local on lo); removed if found. */
export function removeLegacyPodRoute(): boolean {
  const res = spawnSync("ip", ["route", "show", "table", "local", "type", "local", POD_CIDR], { encoding: "utf8" });
  if (res.status !== 0 || !res.stdout.includes("dev lo")) return false;
  ip(["route", "del", "local", POD_CIDR, "dev", "lo", "table", "local"], "removing the pod route an older bed left on the host");
  return true;
}

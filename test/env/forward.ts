// A loopback forwarder across network namespaces, through unix sockets (a path on the filesystem is reachable
// from every namespace). Two halves, each a process of its own:
//   host: listens on 127.0.0.1:<port> in the namespace it runs in and connects to <dir>/<port>.sock
//   bed:  listens on <dir>/<port>.sock and connects to 127.0.0.1:<port> in the namespace it runs in
// so that 127.0.0.1:<port> means the same service on both sides (a kubeconfig or an advertised Kafka listener
// works in both).
// usage: node test/env/forward.ts host|bed <socket dir> <port>...
import { existsSync, rmSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";

export const FORWARDER_READY = "forwarder ready";

export function socketPath(dir: string, port: number): string {
  return join(dir, `${port}.sock`);
}

function log(msg: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), msg, ...fields })}\n`);
}

/** Pipes two sockets both ways; an error or end on either side closes both. */
function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", close);
  b.on("error", close);
  a.on("close", close);
  b.on("close", close);
}

function listen(server: Server, target: Parameters<Server["listen"]>[0]): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(target, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

async function main(): Promise<void> {
  const [mode, dir, ...ports] = process.argv.slice(2);
  if ((mode !== "host" && mode !== "bed") || !dir || ports.length === 0) {
    process.stderr.write("usage: forward.ts host|bed <socket dir> <port>...\n");
    process.exit(2);
  }
  const servers: Server[] = [];
  for (const p of ports.map(Number)) {
    const sock = socketPath(dir, p);
    const server = createServer((inbound) => {
      const outbound = mode === "host" ? connect(sock) : connect({ host: "127.0.0.1", port: p });
      splice(inbound, outbound);
    });
    server.on("error", (err) => log("listener failed", { port: p, error: err.message }));
    if (mode === "host") await listen(server, { host: "127.0.0.1", port: p });
    else {
      if (existsSync(sock)) rmSync(sock);
      await listen(server, sock);
    }
    servers.push(server);
  }
  log(FORWARDER_READY, { mode, ports });
  const stop = () => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    log("forwarder failed", { error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  });
}

// The worker's probe endpoints.
import { createServer, type Server } from "node:http";

export interface Probes {
  ready(): boolean;
  healthy(): boolean;
}

export function startProbeServer(host: string, port: number, probes: Probes): Promise<Server> {
  const server = createServer((req, res) => {
    const ok = req.url === "/readyz" ? probes.ready() : req.url === "/healthz" ? probes.healthy() : undefined;
    if (ok === undefined) {
      res.writeHead(404).end("not found\n");
      return;
    }
    res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok\n" : "not ready\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

// The worker's probe and metrics endpoints.
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";

export interface Probes {
  ready(): boolean;
  healthy(): boolean;
}

export function startProbeServer(host: string, port: number, probes: Probes, registry?: Registry): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/metrics" && registry) {
      registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
      return;
    }
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

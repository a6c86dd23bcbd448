// The validating webhook's HTTPS endpoint and its certificate. Every replica serves it, leader or not: the
// Service sends reviews to any ready pod. The certificate lives in a Secret in the operator's namespace:
// - mode "self": the operator issues it (its own CA), keeps it renewed, and writes the CA into the
//   ValidatingWebhookConfiguration's caBundle, so no cert-manager is needed;
// - mode "external": cert-manager (or anyone) writes the Secret and injects the caBundle; the operator only
//   reads it.
// Both modes re-read the Secret every refresh interval and swap the serving certificate without a restart.
import { createServer, type Server } from "node:https";
import type { AdmissionregistrationV1Api, CoreV1Api, V1Secret } from "@kubernetes/client-node";
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { OperatorConfig } from "../children.ts";
import { statusCode } from "../kube-errors.ts";
import { errorMessage, type Logger } from "../log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import { review, VALIDATE_PATH } from "./admission.ts";
import { fromSecretData, issueServingCert, type ServingCert, toSecretData, unfitReason } from "./certs.ts";

export interface WebhookOptions {
  host: string;
  port: number;
  certMode: "self" | "external";
  /** the Secret that holds the certificate, in `namespace` */
  secretName: string;
  namespace: string;
  /** the names the apiserver dials: the Service's DNS names, or an address for a URL webhook */
  hosts: string[];
  /** the ValidatingWebhookConfiguration whose caBundle mode "self" keeps */
  configName?: string;
  core: CoreV1Api;
  admission: AdmissionregistrationV1Api;
  log: Logger;
  metrics: OperatorMetrics;
  /** the operator's settings the review applies (the image allowlist) */
  config?: OperatorConfig;
  refreshMs?: number;
  now?: () => Date;
}

const MAX_BODY_BYTES = 3 * 1024 * 1024; // the apiserver's own request limit
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

export class Webhook {
  private server?: Server;
  private current?: ServingCert;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly now: () => Date;
  private readonly o: WebhookOptions;

  constructor(o: WebhookOptions) {
    this.o = o;
    this.now = o.now ?? (() => new Date());
    if (o.certMode === "self" && !o.configName) throw new Error("a self-managed webhook certificate needs the ValidatingWebhookConfiguration's name");
  }

  /** True once it listens with a certificate. */
  get serving(): boolean {
    return this.server?.listening === true;
  }

  /** The CA that clients must trust, once known. */
  get caCert(): string | undefined {
    return this.current?.caCert;
  }

  /**
   * Gets a certificate (retrying with capped backoff: the Secret may not exist yet, or the apiserver may be
   * away), then listens. Resolves once serving; the refresh loop runs until stop().
   */
  async start(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      try {
        await this.refresh();
        break;
      } catch (err) {
        const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempt);
        this.o.log.warn("webhook certificate not ready; retrying", { error: errorMessage(err), retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    if (this.stopped || !this.current) return;
    const cert = this.current;
    const server = createServer({ cert: cert.cert, key: cert.key, minVersion: "TLSv1.2" }, (req, res) => {
      if (req.method !== "POST" || req.url?.split("?")[0] !== VALIDATE_PATH) {
        res.writeHead(404).end("not found\n");
        return;
      }
      const end = this.o.metrics.webhookDuration.startTimer();
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) req.destroy(new Error("request body too large"));
        else chunks.push(c);
      });
      req.on("error", (err) => this.o.log.warn("webhook request failed", { error: errorMessage(err) }));
      req.on("end", () => {
        try {
          const { review: answer, verdict } = review(JSON.parse(Buffer.concat(chunks).toString("utf8")), this.o.config);
          this.o.metrics.webhookReviews.inc({ verdict });
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
        } catch (err) {
          // The apiserver applies the failure policy to a non-200 answer.
          this.o.metrics.webhookReviews.inc({ verdict: "error" });
          this.o.log.warn("bad admission review", { error: errorMessage(err) });
          res.writeHead(400, { "content-type": "text/plain" }).end(`${errorMessage(err)}\n`);
        }
        end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    this.server = server;
    this.o.log.info("webhook serving", { host: this.o.host, port: this.o.port, path: VALIDATE_PATH, certMode: this.o.certMode });
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.refresh().then(
        () => this.schedule(),
        (err: unknown) => {
          this.o.log.warn("webhook certificate refresh failed; serving the current one", { error: errorMessage(err) });
          this.schedule();
        },
      );
    }, this.o.refreshMs ?? 60_000);
    this.timer.unref();
  }

  /** Reads (and in mode "self" issues or renews) the certificate, swaps it in, and keeps the caBundle right. */
  async refresh(): Promise<void> {
    const cert = this.o.certMode === "self" ? await this.ensureSecret() : await this.readExternalSecret();
    if (this.current?.cert !== cert.cert || this.current?.key !== cert.key) {
      this.server?.setSecureContext({ cert: cert.cert, key: cert.key, minVersion: "TLSv1.2" });
      if (this.current) this.o.log.info("webhook serving certificate swapped");
    }
    this.current = cert;
    if (this.o.certMode === "self") await this.ensureCaBundle(cert.caCert);
  }

  private async readSecret(): Promise<V1Secret | undefined> {
    this.o.metrics.kubeRequests.inc({ call: "readWebhookSecret" });
    try {
      return await this.o.core.readNamespacedSecret({ name: this.o.secretName, namespace: this.o.namespace });
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw err;
    }
  }

  private async readExternalSecret(): Promise<ServingCert> {
    const secret = await this.readSecret();
    const cert = fromSecretData(secret?.data);
    const where = `Secret ${this.o.namespace}/${this.o.secretName}`;
    if (!cert) throw new Error(`${where} is missing or lacks tls.crt, tls.key or ca.crt; is cert-manager issuing it?`);
    const why = unfitReason(cert, this.o.hosts, this.now());
    // cert-manager renews on its own schedule; an unfit certificate is reported, and served until it does.
    if (why) this.o.log.warn("the webhook certificate from cert-manager is unfit", { secret: where, reason: why });
    return cert;
  }

  /** The stored certificate when it still fits; otherwise a new one, written with optimistic concurrency. */
  private async ensureSecret(): Promise<ServingCert> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const secret = await this.readSecret();
      const stored = fromSecretData(secret?.data);
      const why = stored ? unfitReason(stored, this.o.hosts, this.now()) : "no certificate stored yet";
      if (stored && why === undefined) return stored;
      const ca = stored?.caKey ? { cert: stored.caCert, key: stored.caKey } : undefined;
      const issued = await issueServingCert(this.o.hosts, this.now(), ca);
      try {
        if (secret) {
          this.o.metrics.kubeRequests.inc({ call: "writeWebhookSecret" });
          await this.o.core.replaceNamespacedSecret({
            name: this.o.secretName,
            namespace: this.o.namespace,
            body: { ...secret, type: "kubernetes.io/tls", data: toSecretData(issued) },
          });
        } else {
          this.o.metrics.kubeRequests.inc({ call: "writeWebhookSecret" });
          await this.o.core.createNamespacedSecret({
            namespace: this.o.namespace,
            body: {
              metadata: { name: this.o.secretName, namespace: this.o.namespace, ownerReferences: await this.configOwner() },
              type: "kubernetes.io/tls",
              data: toSecretData(issued),
            },
          });
        }
      } catch (err) {
        // Another replica wrote it first: take theirs on the next pass.
        if (statusCode(err) === 409) continue;
        throw err;
      }
      this.o.log.info("issued the webhook serving certificate", { reason: why, caRenewed: issued.caCert !== stored?.caCert });
      return issued;
    }
    throw new Error(`Secret ${this.o.namespace}/${this.o.secretName} kept changing under us`);
  }

  /** The Secret belongs to the webhook configuration: uninstalling the configuration collects it. */
  private async configOwner() {
    this.o.metrics.kubeRequests.inc({ call: "readWebhookConfiguration" });
    const cfg = await this.o.admission.readValidatingWebhookConfiguration({ name: this.o.configName ?? "" });
    return [
      { apiVersion: "admissionregistration.k8s.io/v1", kind: "ValidatingWebhookConfiguration", name: cfg.metadata?.name ?? "", uid: cfg.metadata?.uid ?? "" },
    ];
  }

  private async ensureCaBundle(caCert: string): Promise<void> {
    const name = this.o.configName ?? "";
    this.o.metrics.kubeRequests.inc({ call: "readWebhookConfiguration" });
    const cfg = await this.o.admission.readValidatingWebhookConfiguration({ name });
    const bundle = Buffer.from(caCert).toString("base64");
    const ops = (cfg.webhooks ?? []).flatMap((w, i) =>
      w.clientConfig.caBundle === bundle
        ? []
        : [
            { op: "test", path: `/webhooks/${i}/name`, value: w.name },
            { op: "add", path: `/webhooks/${i}/clientConfig/caBundle`, value: bundle },
          ],
    );
    if (ops.length === 0) return;
    this.o.metrics.kubeRequests.inc({ call: "patchWebhookConfiguration" });
    await this.o.admission.patchValidatingWebhookConfiguration({ name, body: ops }, setHeaderOptions("Content-Type", PatchStrategy.JsonPatch));
    this.o.log.info("wrote the webhook CA into the caBundle", { configuration: name, webhooks: ops.length / 2 });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
  }
}

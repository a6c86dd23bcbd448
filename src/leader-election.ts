// Leader election through a coordination.k8s.io Lease, so that two operator replicas are safe: only the
// holder reconciles. As in client-go, a lease counts as expired by the time this process last saw it change,
// not by the holder's clock; a leader that cannot renew within renewDeadline steps down. Every lease call has
// a timeout, and a leader's calls end at its renew deadline: an apiserver that accepts the connection and
// never answers cannot keep a leader leading.
import { type ConfigurationOptions, type CoordinationV1Api, PatchStrategy, setHeaderOptions, type V1Lease } from "@kubernetes/client-node";
import { abortOptions } from "./kube-abort.ts";
import { statusCode } from "./kube-errors.ts";
import { errorMessage, type Logger } from "./log.ts";

/** Why the work of a leadership term ends: the reason of its AbortSignal, and the error of each call it ends. */
export class LeadershipLostError extends Error {
  override name = "LeadershipLostError";
  constructor(message = "leadership lost: this operator no longer holds the lease") {
    super(message);
  }
}

export interface LeaderElectionOptions {
  api: CoordinationV1Api;
  namespace: string;
  name: string;
  identity: string;
  log: Logger;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** the longest one lease call may take; below renewDeadlineMs, so that a renewal can be tried again in time */
  requestTimeoutMs?: number;
  now?: () => number;
}

const merge = (opt: ConfigurationOptions) => setHeaderOptions("Content-Type", PatchStrategy.MergePatch, opt);

function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export class LeaderElector {
  private readonly o: Required<Omit<LeaderElectionOptions, "api" | "log">> & Pick<LeaderElectionOptions, "api" | "log">;
  private observed?: { holder: string; renewTime: string; at: number };
  private lastRenew = 0;
  private leading = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;

  constructor(opts: LeaderElectionOptions) {
    // Tighter than client-go's 15 s / 10 s / 2 s: a standby takes over within about 11 s of a leader's death.
    this.o = { leaseDurationMs: 8_000, renewDeadlineMs: 6_000, retryPeriodMs: 1_500, requestTimeoutMs: 2_000, now: () => Date.now(), ...opts };
    if (this.o.requestTimeoutMs >= this.o.renewDeadlineMs) throw new Error("requestTimeoutMs must be below renewDeadlineMs");
    if (this.o.renewDeadlineMs >= this.o.leaseDurationMs) throw new Error("renewDeadlineMs must be below leaseDurationMs");
  }

  /** How long a leader has left to renew; undefined when not leading. */
  private untilDeadline(): number | undefined {
    return this.leading ? this.lastRenew + this.o.renewDeadlineMs - this.o.now() : undefined;
  }

  /** The options of one lease call: its timeout, and for a leader no later than the renew deadline. */
  private call(): ConfigurationOptions {
    const left = this.untilDeadline();
    const ms = Math.max(1, Math.min(this.o.requestTimeoutMs, left ?? Number.POSITIVE_INFINITY));
    return abortOptions(AbortSignal.timeout(ms));
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Resolves once this process holds the lease; onLost runs if it later loses it. It may run again after a loss. */
  run(onLost: () => void): Promise<void> {
    this.stopped = false;
    return new Promise((resolve) => {
      const lose = () => {
        this.leading = false;
        this.o.log.error("lost leadership: could not renew the lease in time", { renewDeadlineMs: this.o.renewDeadlineMs });
        onLost();
      };
      const tick = async () => {
        if (this.stopped) return;
        if ((this.untilDeadline() ?? 1) <= 0) return lose();
        // The renewTime written is this attempt's start: the deadline counts from there, never from the answer.
        const attempt = this.o.now();
        try {
          const held = await this.tryAcquireOrRenew(attempt);
          if (held) this.lastRenew = attempt;
          if (held && !this.leading) {
            this.leading = true;
            this.o.log.info("became leader", { lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity });
            resolve();
          }
        } catch (err) {
          this.o.log.warn("lease update failed", { lease: `${this.o.namespace}/${this.o.name}`, error: errorMessage(err) });
        }
        if (this.stopped) return;
        const left = this.untilDeadline();
        if (left !== undefined && left <= 0) return lose();
        // A leader whose renewals fail looks again no later than its deadline, and steps down on the dot.
        this.timer = setTimeout(tick, Math.min(this.o.retryPeriodMs, left ?? Number.POSITIVE_INFINITY));
      };
      void tick();
    });
  }

  private async tryAcquireOrRenew(now: number): Promise<boolean> {
    const { api, namespace, name, identity } = this.o;
    let lease: V1Lease;
    try {
      lease = await api.readNamespacedLease({ name, namespace }, this.call());
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
      try {
        await api.createNamespacedLease(
          {
            namespace,
            body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name, namespace }, spec: { holderIdentity: identity } },
          },
          this.call(),
        );
      } catch (createErr) {
        // Another replica created it first: it holds the lease.
        if (statusCode(createErr) === 409) return false;
        throw createErr;
      }
      lease = await api.readNamespacedLease({ name, namespace }, this.call());
      return this.write(lease, 0, now);
    }
    const holder = lease.spec?.holderIdentity ?? "";
    const renewTime = String(lease.spec?.renewTime ?? "");
    if (!this.observed || this.observed.holder !== holder || this.observed.renewTime !== renewTime) {
      this.observed = { holder, renewTime, at: now };
    }
    if (holder === identity) return this.write(lease, lease.spec?.leaseTransitions ?? 0, now);
    const expired = holder === "" || now - this.observed.at > this.o.leaseDurationMs;
    if (!expired) return false;
    this.o.log.info("taking over an expired lease", { previousHolder: holder });
    return this.write(lease, (lease.spec?.leaseTransitions ?? 0) + 1, now);
  }

  /** Writes this process as holder, guarded by the resourceVersion read: a concurrent writer makes it fail. */
  private async write(lease: V1Lease, transitions: number, now: number): Promise<boolean> {
    const { api, namespace, name, identity } = this.o;
    const takeover = lease.spec?.holderIdentity !== identity;
    try {
      await api.patchNamespacedLease(
        {
          name,
          namespace,
          body: {
            metadata: { resourceVersion: lease.metadata?.resourceVersion },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: Math.ceil(this.o.leaseDurationMs / 1000),
              renewTime: microTime(now),
              leaseTransitions: transitions,
              ...(takeover ? { acquireTime: microTime(now) } : {}),
            },
          },
        },
        merge(this.call()),
      );
      return true;
    } catch (err) {
      if (statusCode(err) === 409) return false;
      throw err;
    }
  }

  /** Stops renewing and, if leading, releases the lease so that another replica takes over at once. */
  async release(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    const { api, namespace, name } = this.o;
    const lease = await api.readNamespacedLease({ name, namespace }, this.call());
    if (lease.spec?.holderIdentity !== this.o.identity) return;
    await api.patchNamespacedLease(
      { name, namespace, body: { metadata: { resourceVersion: lease.metadata?.resourceVersion }, spec: { holderIdentity: "", leaseDurationSeconds: 1 } } },
      merge(this.call()),
    );
  }
}

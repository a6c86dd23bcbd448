// Ending client-node requests with an AbortSignal: a deadline for one call, or the end of a leadership term for
// every call a client makes. The signal ends the request and the reading of its answer; one that has aborted
// already fails the request before it is sent.
import { type ConfigurationOptions, type KubeConfig, Observable, type RequestContext, type ResponseContext } from "@kubernetes/client-node";

/** Per-call options (the Object-style API's second argument) that end the call when `signal` aborts. */
export function abortOptions(signal: AbortSignal, opt?: ConfigurationOptions): ConfigurationOptions {
  const middleware = {
    pre: (request: RequestContext) => {
      request.setSignal(signal);
      return new Observable(Promise.resolve(request));
    },
    post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
  };
  return { ...opt, middleware: [...(opt?.middleware ?? []), middleware], middlewareMergeStrategy: "append" };
}

/**
 * `kc`, but every client it makes ends each of its requests when `signal` aborts. Per-call options cannot do
 * this for KubernetesObjectApi, whose calls take no middleware; every client applies its KubeConfig's
 * authentication to each request, so that is where the signal goes in.
 */
export function abortableKubeConfig(kc: KubeConfig, signal: AbortSignal): KubeConfig {
  const out = Object.create(kc) as KubeConfig;
  out.applySecurityAuthentication = async (request: RequestContext) => {
    await kc.applySecurityAuthentication(request);
    request.setSignal(signal);
  };
  return out;
}

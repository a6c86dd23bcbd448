// The validating admission webhook's decision: the same topology compiler the reconcile uses, run at apply, so
// that `kubectl apply` of a broken expression fails at once with the field, the step and the column.
import type { StreamPipeline } from "../api.ts";
import { defaultOperatorConfig, type OperatorConfig } from "../children.ts";
import { type CompileResult, describeCompileError, formatCompileError } from "../topology/compile.ts";
import { validatePipeline } from "../validate.ts";

export const VALIDATE_PATH = "/validate-streampipeline";

interface AdmissionRequest {
  uid: string;
  operation?: string;
  name?: string;
  namespace?: string;
  object?: StreamPipeline;
}

export interface AdmissionReview {
  apiVersion: string;
  kind: string;
  request?: AdmissionRequest;
  response?: AdmissionResponse;
}

interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  status?: {
    code: number;
    reason: string;
    message: string;
    details?: { name: string; group: string; kind: string; causes: { type: string; field: string; message: string }[] };
  };
}

export type Verdict = "allowed" | "denied";

/** The answer to one AdmissionReview, and whether it let the object in. */
export function review(body: unknown, config: OperatorConfig = defaultOperatorConfig): { review: AdmissionReview; verdict: Verdict } {
  const req = (body as AdmissionReview | undefined)?.request;
  if (!req?.uid) throw new Error("not an AdmissionReview: request.uid is missing");
  const answer = (response: Omit<AdmissionResponse, "uid">): { review: AdmissionReview; verdict: Verdict } => ({
    review: { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: req.uid, ...response } },
    verdict: response.allowed ? "allowed" : "denied",
  });
  const p = req.object;
  // Deletes carry no object; nothing else is registered, but an unexpected request is let through rather than
  // blocking what the webhook was not asked to judge.
  if (!p?.spec) return answer({ allowed: true });
  const meta = { namespace: p.metadata?.namespace ?? req.namespace ?? "", name: p.metadata?.name ?? req.name ?? p.metadata?.generateName ?? "" };
  let compiled: CompileResult;
  try {
    compiled = validatePipeline(p.spec, meta, config);
  } catch (err) {
    return answer({
      allowed: false,
      status: { code: 400, reason: "BadRequest", message: `the topology could not be checked: ${err instanceof Error ? err.message : String(err)}` },
    });
  }
  if (compiled.ok) return answer({ allowed: true });
  const messages = compiled.errors.map(formatCompileError);
  return answer({
    allowed: false,
    status: {
      code: 422,
      reason: "Invalid",
      message: `StreamPipeline ${meta.namespace}/${meta.name}: the topology does not compile: ${messages.join("; ")}`,
      // kubectl shows these as `The StreamPipeline "x" is invalid: <field>: <message>`, as it does the schema's.
      details: {
        name: meta.name,
        group: "conveyor.dev",
        kind: "StreamPipeline",
        causes: compiled.errors.map((e) => ({ type: "FieldValueInvalid", field: e.field, message: describeCompileError(e) })),
      },
    },
  });
}

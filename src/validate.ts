// What a pipeline must pass before it runs, at apply (the webhook) and at reconcile alike: its topology
// compiles, and the operator's policy allows its image.
import type { StreamPipelineSpec } from "./api.ts";
import { imageAllowed, type OperatorConfig } from "./children.ts";
import { type CompileError, type CompileResult, compile, type PipelineMeta } from "./topology/compile.ts";

export function imageErrors(spec: StreamPipelineSpec, config: OperatorConfig): CompileError[] {
  const image = spec.template?.image;
  if (image === undefined || imageAllowed(image, config)) return [];
  const allowed = [config.runtimeImage, ...config.allowedImages.map((p) => `${p}*`)].join(", ");
  return [{ field: "spec.template.image", message: `image ${image} is not allowed: this operator runs ${allowed} (its allowedImages setting)` }];
}

export function validatePipeline(spec: StreamPipelineSpec, meta: PipelineMeta, config: OperatorConfig): CompileResult {
  const compiled = compile(spec, meta);
  const policy = imageErrors(spec, config);
  if (!compiled.ok) return { ok: false, errors: [...compiled.errors, ...policy] };
  return policy.length > 0 ? { ok: false, errors: policy } : compiled;
}

// The Node flags the operator runs with, wherever it runs: `npm run operator`, the image's entrypoint, the bed's
// image table, the suites and the demo. A test checks that package.json and the Dockerfile say the same.
// V8 sizes its young generation by the machine's memory, up to three 16 MiB semi-spaces: resident memory that an
// operator whose garbage is a few reconciles' worth never needs (48 MiB less at start). And it lets the old
// generation grow to several times the live data before a full collection; 1.5 times keeps the peak near what
// is live, for a few seconds more CPU in a burst. bench:operator at 1,000 pipelines: peak RSS 297 MiB with the
// first flag alone, 216 MiB with both; CPU 36 s and 42 s over the run.

export const OPERATOR_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=2", "--heap-growing-percent=50"];

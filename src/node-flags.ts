// The Node flags the operator runs with, wherever it runs: `npm run operator`, the image's entrypoint, the bed's
// image table, the suites and the demo. A test checks that package.json and the Dockerfile say the same.
// V8 sizes its young generation by the machine's memory, up to three 16 MiB semi-spaces: resident memory that an
// operator whose garbage is a few reconciles' worth never needs (49 MiB less at start, measured in the README).

export const OPERATOR_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=2"];

// `npm run images`: builds the operator and runtime images into dist/images (an OCI layout and one archive per
// image for `docker load`), without a container engine. See scripts/images/build.ts.
// Options: --out DIR (instead of dist/images); --offline (reach no registry: the Debian root and the
// dependencies from the caches an earlier build filled).
import { parseArgs } from "node:util";
import { buildImages } from "./images/build.ts";

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
try {
  const { values } = parseArgs({ options: { out: { type: "string" }, offline: { type: "boolean" } } });
  const result = await buildImages({ ...(values.out ? { out: values.out } : {}), offline: values.offline ?? false });
  for (const l of result.layers) process.stdout.write(`layer  ${l.cached ? "cached" : "built "}  ${l.what}\n`);
  for (const i of result.images) {
    process.stdout.write(`${i.ref}\n  digest  ${i.digest}\n  size    ${mb(i.compressedBytes)} compressed, ${mb(i.unpackedBytes)} unpacked\n`);
    if (i.archive) process.stdout.write(`  archive ${i.archive}\n`);
  }
  process.stdout.write(`OCI layout ${result.layout}; built in ${result.seconds.toFixed(1)} s\n`);
} catch (err) {
  process.stderr.write(`images: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

// Kubernetes quantities as the CRD admits them ("64Mi", "1G", "512", "1.5Gi"), as a number of bytes.
const SUFFIX: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const QUANTITY = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|)$/;

/** Bytes, rounded down, or undefined for what is not a byte quantity (a milli suffix, an exponent, a sign). */
export function parseBytes(q: string | number): number | undefined {
  if (typeof q === "number") return Number.isInteger(q) && q >= 0 ? q : undefined;
  const m = QUANTITY.exec(q);
  if (!m) return undefined;
  return Math.floor(Number(m[1]) * (SUFFIX[m[2] as string] ?? Number.NaN));
}

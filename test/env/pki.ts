// The bed's certificates, made with openssl: one CA for the bed, which signs the apiserver's serving certificate,
// the Kafka broker's, and the client certificates that tests and users issue for mutual TLS.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run } from "./proc.ts";

export interface CertFiles {
  /** PEM certificate */
  cert: string;
  /** PEM private key, unencrypted PKCS#8 (what Kafka's PEM key store and Node's TLS both read) */
  key: string;
}

export interface CertRequest {
  /** the subject's common name: a client certificate's CN is its Kafka principal on the bed */
  cn: string;
  ips?: string[];
  dns?: string[];
  usage: "server" | "client";
  days?: number;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run("openssl", args, { cwd, what: "making bed certificates with openssl" });
}

/** A new self-signed CA in `dir` (ca.crt, ca.key). */
export async function makeCa(dir: string, cn = "conveyor-bed-ca"): Promise<CertFiles> {
  mkdirSync(dir, { recursive: true });
  await openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "ca.key"], dir);
  await openssl(["req", "-x509", "-new", "-key", "ca.key", "-subj", `/CN=${cn}`, "-days", "7", "-out", "ca.crt"], dir);
  return { cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
}

/** The subject's common name must be a plain name: it goes into an openssl -subj argument. */
function checkName(what: string, v: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v)) throw new Error(`${what} ${JSON.stringify(v)}: letters, digits, '.', '_' and '-' only`);
}

/** A certificate for `req`, signed by `ca`, written as `<dir>/<name>.crt` and `<dir>/<name>.key`. */
export async function issueCert(ca: CertFiles, dir: string, name: string, req: CertRequest): Promise<CertFiles> {
  checkName("certificate name", name);
  checkName("common name", req.cn);
  mkdirSync(dir, { recursive: true });
  const sans = [...(req.ips ?? []).map((a) => `IP:${a}`), ...(req.dns ?? []).map((d) => `DNS:${d}`)];
  const ext = [
    "[ext]",
    "basicConstraints=CA:FALSE",
    "keyUsage=digitalSignature,keyEncipherment",
    `extendedKeyUsage=${req.usage === "server" ? "serverAuth" : "clientAuth"}`,
    ...(sans.length > 0 ? [`subjectAltName=${sans.join(",")}`] : []),
    "",
  ];
  writeFileSync(join(dir, `${name}.ext.cnf`), ext.join("\n"));
  await openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", `${name}.key`], dir);
  await openssl(["req", "-new", "-key", `${name}.key`, "-subj", `/CN=${req.cn}`, "-out", `${name}.csr`], dir);
  await openssl(
    [
      ...["x509", "-req", "-in", `${name}.csr`, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial"],
      ...["-days", String(req.days ?? 7), "-extfile", `${name}.ext.cnf`, "-extensions", "ext", "-out", `${name}.crt`],
    ],
    dir,
  );
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

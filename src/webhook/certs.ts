// The webhook's serving certificate, when the operator manages it (no cert-manager): a long-lived CA of its own
// and a serving certificate it signs for the webhook Service's DNS names. Renewing the serving certificate keeps
// the CA, so the caBundle the apiserver trusts does not change, and every replica's certificate stays trusted
// while another one renews.
// @peculiar/x509 resolves its ASN.1 classes through tsyringe, which needs the Reflect metadata API first.
import "reflect-metadata";
import { createPrivateKey, webcrypto, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const DAY_MS = 86_400_000;
export const CA_VALIDITY_DAYS = 3650;
export const SERVING_VALIDITY_DAYS = 365;
/** A certificate this close to its end is renewed. */
export const RENEW_BEFORE_DAYS = 30;

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** The Secret's keys: kubernetes.io/tls's two, cert-manager's ca.crt, and the CA key that only we keep. */
export interface ServingCert {
  caCert: string;
  /** absent when the certificate comes from cert-manager */
  caKey?: string;
  cert: string;
  key: string;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString("base64").replace(/.{1,64}/g, "$&\n")}-----END PRIVATE KEY-----\n`;
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = createPrivateKey(pem).export({ type: "pkcs8", format: "der" });
  return webcrypto.subtle.importKey("pkcs8", der, ALGORITHM, true, ["sign"]);
}

function serial(): string {
  // Positive, 16 random bytes: RFC 5280 wants at most 20 octets and no sign bit.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return Buffer.from(bytes).toString("hex");
}

async function newCa(now: Date): Promise<{ cert: string; key: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"])) as CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: "CN=conveyor-webhook-ca",
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + CA_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: ca.toString("pem"), key: await keyPem(keys.privateKey) };
}

/**
 * A serving certificate for `hosts` (DNS names or IP addresses), signed by the given CA, or by a new one when
 * there is none or it is near its own end.
 */
export async function issueServingCert(hosts: string[], now: Date, ca?: { cert: string; key: string }): Promise<ServingCert> {
  if (hosts.length === 0) throw new Error("a serving certificate needs at least one host name");
  const usableCa = ca && caUsable(ca, now) ? ca : await newCa(now);
  const caCert = new x509.X509Certificate(usableCa.cert);
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${hosts[0]}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + SERVING_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: await importKey(usableCa.key),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(hosts.map((h) => (isIP(h) ? { type: "ip", value: h } : { type: "dns", value: h }))),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { caCert: usableCa.cert, caKey: usableCa.key, cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}

/** A CA is kept while it reads, matches its key and outlives the certificate it would sign. */
function caUsable(ca: { cert: string; key: string }, now: Date): boolean {
  try {
    return new X509Certificate(ca.cert).checkPrivateKey(createPrivateKey(ca.key)) && daysLeft(ca.cert, now) > RENEW_BEFORE_DAYS + SERVING_VALIDITY_DAYS;
  } catch {
    return false; // unreadable: a new CA replaces it
  }
}

function daysLeft(pem: string, now: Date): number {
  return (new Date(new X509Certificate(pem).validTo).getTime() - now.getTime()) / DAY_MS;
}

/** Why a stored certificate cannot serve `hosts` until the renewal point, or undefined when it can. */
export function unfitReason(c: ServingCert, hosts: string[], now: Date): string | undefined {
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(c.cert);
    ca = new X509Certificate(c.caCert);
    if (!cert.checkPrivateKey(createPrivateKey(c.key))) return "the key does not match the certificate";
    if (c.caKey !== undefined && !ca.checkPrivateKey(createPrivateKey(c.caKey))) return "the CA key does not match the CA certificate";
  } catch (err) {
    return `unreadable: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (!cert.verify(ca.publicKey)) return "not signed by the CA";
  if (new Date(cert.validFrom).getTime() > now.getTime()) return "not valid yet";
  if (daysLeft(c.cert, now) < RENEW_BEFORE_DAYS) return `expires ${cert.validTo}`;
  if (daysLeft(c.caCert, now) < RENEW_BEFORE_DAYS) return `the CA expires ${ca.validTo}`;
  const missing = hosts.filter((h) => (isIP(h) ? cert.checkIP(h) : cert.checkHost(h, { wildcards: false })) === undefined);
  if (missing.length > 0) return `does not name ${missing.join(", ")}`;
  return undefined;
}

/** The webhook Service's names, as the apiserver dials them. */
export function serviceHosts(service: string, namespace: string): string[] {
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

const SECRET_KEYS = { caCert: "ca.crt", caKey: "ca.key", cert: "tls.crt", key: "tls.key" } as const;

export function toSecretData(c: ServingCert): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [field, key] of Object.entries(SECRET_KEYS)) {
    const value = c[field as keyof ServingCert];
    if (value !== undefined) data[key] = Buffer.from(value).toString("base64");
  }
  return data;
}

/** The certificate a Secret holds, or undefined when a key it needs is missing. */
export function fromSecretData(data: Record<string, string> | undefined): ServingCert | undefined {
  const get = (key: string) => (data?.[key] === undefined ? undefined : Buffer.from(data[key], "base64").toString("utf8"));
  const caCert = get(SECRET_KEYS.caCert);
  const cert = get(SECRET_KEYS.cert);
  const key = get(SECRET_KEYS.key);
  if (!caCert || !cert || !key) return undefined;
  const caKey = get(SECRET_KEYS.caKey);
  return { caCert, cert, key, ...(caKey ? { caKey } : {}) };
}

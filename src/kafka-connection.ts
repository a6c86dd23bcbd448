// A pipeline's Kafka connection: its spec.kafka with the values of the Secrets it names. The operator and the
// `conveyor` command both connect this way; the values go to the Kafka client only, never to logs or status.
import type { CoreV1Api, V1Secret } from "@kubernetes/client-node";
import type { StreamPipeline } from "./api.ts";
import { SPEC_DEFAULTS } from "./api-types.gen.ts";
import { referencedSecrets } from "./children.ts";
import { CredentialsError, type KafkaConnection } from "./kafka-client.ts";
import { statusCode } from "./kube-errors.ts";
import { enabledTls, SASL_MECHANISMS } from "./pipeline-config.ts";

/** Reads the Secrets a pipeline's kafka spec names, each once, and checks that each has the keys the workers need. */
export async function readSecrets(core: CoreV1Api, p: StreamPipeline, onRead: () => void = () => {}): Promise<Map<string, V1Secret>> {
  const namespace = p.metadata?.namespace ?? "";
  const out = new Map<string, V1Secret>();
  for (const [name, keys] of referencedSecrets(p)) {
    onRead();
    const s = await core.readNamespacedSecret({ name, namespace }).catch((err: unknown) => {
      if (statusCode(err) === 404) throw new CredentialsError(`secret ${namespace}/${name} does not exist`);
      throw err;
    });
    const lacking = keys.filter((k) => s.data?.[k] === undefined);
    if (lacking.length > 0) throw new CredentialsError(`secret ${namespace}/${name} has no key ${lacking.map((k) => `"${k}"`).join(", ")}`);
    out.set(name, s);
  }
  return out;
}

/** The pipeline's Kafka connection with the values of its Secrets. They go to the Kafka client only, never to logs or status. */
export async function connectionFor(core: CoreV1Api, p: StreamPipeline, onRead: () => void = () => {}): Promise<KafkaConnection> {
  const secrets = await readSecrets(core, p, onRead);
  const value = (name: string, key: string) => Buffer.from(secrets.get(name)?.data?.[key] ?? "", "base64").toString("utf8");
  const k = p.spec.kafka;
  const conn: KafkaConnection = { bootstrapServers: [...k.bootstrapServers] };
  if (k.sasl) {
    const ref = k.sasl.secretRef;
    conn.sasl = {
      mechanism: SASL_MECHANISMS[k.sasl.mechanism],
      username: value(ref.name, ref.usernameKey ?? SPEC_DEFAULTS["kafka.sasl.secretRef.usernameKey"]),
      password: value(ref.name, ref.passwordKey ?? SPEC_DEFAULTS["kafka.sasl.secretRef.passwordKey"]),
    };
  }
  const tls = enabledTls(k);
  if (tls) {
    conn.tls = {
      ...(tls.caSecretRef ? { ca: value(tls.caSecretRef.name, tls.caSecretRef.key ?? SPEC_DEFAULTS["kafka.tls.caSecretRef.key"]) } : {}),
      ...(tls.clientSecretRef ? { cert: value(tls.clientSecretRef.name, "tls.crt"), key: value(tls.clientSecretRef.name, "tls.key") } : {}),
    };
  }
  return conn;
}

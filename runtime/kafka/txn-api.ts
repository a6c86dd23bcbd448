// @platformatic/kafka 2.12 sends AddPartitionsToTxn at the highest version the broker offers, v5 on Kafka 4.
// Versions 4 and up are the brokers' own (KIP-890: a partition leader verifies a transaction with the
// coordinator), and an authorizer lets them through only with CLUSTER_ACTION on the cluster: under exactly the
// ACLs a pipeline's user needs, every exactly-once worker failed its first transaction ("Cluster authorization
// failed"). Clients use v3, as Kafka's own producer does; so does this one. (test/integration/kafka-secure.test.ts
// shows the library's choice failing and this one passing.)
import { addPartitionsToTxnV3, kGetApi, type Producer } from "@platformatic/kafka";

type ApiCallback = (error: Error | null, api?: unknown) => void;
type GetApi = (name: string, callback: ApiCallback) => void;

/** Makes `producer` add partitions to its transactions with the clients' version of AddPartitionsToTxn. */
export function clientAddPartitionsToTxn<P extends Producer<Buffer, Buffer, Buffer, Buffer>>(producer: P): P {
  // kGetApi: the library's own hook for protocol APIs, which it exports.
  const target = producer as unknown as Record<symbol, GetApi>;
  const original = (target[kGetApi] as GetApi).bind(producer);
  target[kGetApi] = (name, callback) =>
    original(name, (error, api) => {
      if (error || name !== "AddPartitionsToTxn") {
        callback(error, api);
        return;
      }
      callback(null, addPartitionsToTxnV3.api);
    });
  return producer;
}

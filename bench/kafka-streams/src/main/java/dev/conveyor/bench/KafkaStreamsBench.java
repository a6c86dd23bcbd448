package dev.conveyor.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.LogAndContinueExceptionHandler;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams side of bench/runtime.ts: the bench's two pipelines (see specFor() there) as a Kafka Streams
 * application with one stream thread, run until it is stopped (SIGTERM). On the way out it prints one line,
 * {@code STATS {"in":..,"out":..,"malformed":..,"dropped":..}}, on stdout.
 *
 * <ul>
 *   <li>stateless: keep the records whose value.amount is above 10, write {"user", "amount"} of each, key unchanged.
 *   <li>windowed: re-key by value.user (a repartition topic, named after "by-user"), tumbling one-minute windows on
 *       the event time value.ts with 30 s of grace, count and sum of value.amount, final results only (suppressed
 *       until the window closes), {"key", "windowStart", "windowEnd", "count", "total"} to the sink; late records are
 *       dropped.
 * </ul>
 *
 * A value that is not a JSON object is skipped (counted as malformed), as is, in the windowed topology, one
 * without an integral value.ts.
 */
public final class KafkaStreamsBench {
  static final String USAGE =
      """
      usage: java -jar conveyor-bench-kafka-streams-all.jar --bootstrap-servers HOST:PORT[,HOST:PORT...]
                  --topology stateless|windowed --guarantee at_least_once|exactly_once_v2
                  --source TOPIC --sink TOPIC --application-id ID --state-dir DIR
      Runs the bench's pipeline as a Kafka Streams application (one stream thread, commit interval 100 ms) until it
      is stopped; then prints STATS {"in":N,"out":N,"malformed":N,"dropped":N} on stdout. --help adds the topologies.
      """;

  static final List<String> OPTIONS =
      List.of("bootstrap-servers", "topology", "guarantee", "source", "sink", "application-id", "state-dir");

  static final ObjectMapper MAPPER = new ObjectMapper();

  /** Records read from the source, written to the sink, and values that did not parse. */
  static final AtomicLong IN = new AtomicLong();
  static final AtomicLong OUT = new AtomicLong();
  static final AtomicLong MALFORMED = new AtomicLong();

  private KafkaStreamsBench() {}

  public static void main(final String[] argv) throws InterruptedException {
    if (List.of(argv).contains("--help") || List.of(argv).contains("-h")) {
      System.out.print(USAGE);
      System.out.println();
      System.out.print("stateless " + stateless("SOURCE", "SINK").describe());
      System.out.print("windowed " + windowed("SOURCE", "SINK").describe());
      return;
    }
    final Map<String, String> args;
    try {
      args = parse(argv);
    } catch (final IllegalArgumentException e) {
      System.err.println(e.getMessage());
      System.err.print(USAGE);
      System.exit(2);
      return;
    }

    final String topologyName = args.get("topology");
    final Topology topology =
        switch (topologyName) {
          case "stateless" -> stateless(args.get("source"), args.get("sink"));
          case "windowed" -> windowed(args.get("source"), args.get("sink"));
          default -> throw new IllegalStateException(topologyName);
        };

    final KafkaStreams streams = new KafkaStreams(topology, config(args));
    final CountDownLatch finished = new CountDownLatch(1);
    final AtomicBoolean stopping = new AtomicBoolean(false);
    streams.setUncaughtExceptionHandler(
        e -> {
          System.err.println("kafka streams failed: " + e);
          e.printStackTrace();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) finished.countDown();
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  stopping.set(true);
                  // Before close(): the task metrics go with the tasks.
                  printStats(streams);
                  streams.close(Duration.ofSeconds(8));
                  finished.countDown();
                },
                "bench-shutdown"));
    streams.start();
    finished.await();
    if (!stopping.get()) {
      // Not stopped by a signal: the stream thread died. The exit tells the bench at once.
      System.err.println("kafka streams stopped by itself, in state " + streams.state());
      System.exit(1);
    }
  }

  /** {@code --name value} pairs; every option is required. */
  static Map<String, String> parse(final String[] argv) {
    if (argv.length == 0) throw new IllegalArgumentException("no arguments");
    final Map<String, String> out = new LinkedHashMap<>();
    for (int i = 0; i < argv.length; i++) {
      final String a = argv[i];
      if (!a.startsWith("--") || !OPTIONS.contains(a.substring(2))) {
        throw new IllegalArgumentException("unknown argument: " + a);
      }
      if (i + 1 >= argv.length) throw new IllegalArgumentException(a + " needs a value");
      out.put(a.substring(2), argv[++i]);
    }
    final List<String> missing = OPTIONS.stream().filter(o -> !out.containsKey(o)).map(o -> "--" + o).toList();
    if (!missing.isEmpty()) throw new IllegalArgumentException("missing: " + String.join(", ", missing));
    if (!List.of("stateless", "windowed").contains(out.get("topology"))) {
      throw new IllegalArgumentException("--topology must be stateless or windowed, not " + out.get("topology"));
    }
    if (!List.of(StreamsConfig.AT_LEAST_ONCE, StreamsConfig.EXACTLY_ONCE_V2).contains(out.get("guarantee"))) {
      throw new IllegalArgumentException("--guarantee must be at_least_once or exactly_once_v2, not " + out.get("guarantee"));
    }
    return out;
  }

  static Properties config(final Map<String, String> args) {
    final Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("application-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap-servers"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args.get("guarantee"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    // The bench's pipelines commit every 100 ms too.
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
    // One broker.
    p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // A value that does not parse is skipped, not fatal.
    p.put(StreamsConfig.DESERIALIZATION_EXCEPTION_HANDLER_CLASS_CONFIG, LogAndContinueExceptionHandler.class);
    return p;
  }

  static Topology stateless(final String source, final String sink) {
    final StreamsBuilder b = new StreamsBuilder();
    final Serde<JsonNode> json = new JsonSerde();
    b.stream(source, Consumed.with(Serdes.String(), json).withName("source"))
        .peek((k, v) -> IN.incrementAndGet(), Named.as("count-in"))
        .filter((k, v) -> v.path("amount").isNumber() && v.path("amount").doubleValue() > 10, Named.as("big"))
        .mapValues(
            v -> {
              final ObjectNode o = MAPPER.createObjectNode();
              o.set("user", v.get("user"));
              o.set("amount", v.get("amount"));
              return (JsonNode) o;
            },
            Named.as("shape"))
        .peek((k, v) -> OUT.incrementAndGet(), Named.as("count-out"))
        .to(sink, Produced.with(Serdes.String(), json).withName("sink"));
    return b.build();
  }

  static Topology windowed(final String source, final String sink) {
    final StreamsBuilder b = new StreamsBuilder();
    final Serde<JsonNode> json = new JsonSerde();
    final KStream<String, JsonNode> in =
        b.stream(source, Consumed.with(Serdes.String(), json).withTimestampExtractor(new EventTime()).withName("source"));
    in.peek((k, v) -> IN.incrementAndGet(), Named.as("count-in"))
        .groupBy((k, v) -> v.path("user").asText(), Grouped.with("by-user", Serdes.String(), json))
        .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMinutes(1), Duration.ofSeconds(30)))
        .aggregate(
            () -> Agg.ZERO,
            (key, v, agg) -> new Agg(agg.count() + 1, agg.total() + v.path("amount").asLong()),
            Named.as("per-minute"),
            Materialized.<String, Agg, WindowStore<Bytes, byte[]>>as("per-minute")
                .withKeySerde(Serdes.String())
                .withValueSerde(new AggSerde()))
        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()).withName("on-window-close"))
        .toStream(Named.as("results"))
        .map((w, agg) -> KeyValue.pair(w.key(), result(w, agg)), Named.as("shape"))
        .peek((k, v) -> OUT.incrementAndGet(), Named.as("count-out"))
        .to(sink, Produced.with(Serdes.String(), json).withName("sink"));
    return b.build();
  }

  static JsonNode result(final Windowed<String> w, final Agg agg) {
    final ObjectNode o = MAPPER.createObjectNode();
    o.put("key", w.key());
    o.put("windowStart", w.window().start());
    o.put("windowEnd", w.window().end());
    o.put("count", agg.count());
    o.put("total", agg.total());
    return o;
  }

  /** One line on stdout; "dropped" is Kafka Streams' dropped-records-total over the tasks: late and malformed records. */
  static void printStats(final KafkaStreams streams) {
    double dropped = 0;
    try {
      for (final var m : streams.metrics().values()) {
        if (m.metricName().name().equals("dropped-records-total") && m.metricValue() instanceof Number n) {
          dropped += n.doubleValue();
        }
      }
    } catch (final RuntimeException e) {
      System.err.println("could not read the metrics: " + e);
    }
    System.out.printf(
        "STATS {\"in\":%d,\"out\":%d,\"malformed\":%d,\"dropped\":%d}%n",
        IN.get(), OUT.get(), MALFORMED.get(), (long) dropped);
    System.out.flush();
  }

  /** The count and the sum of a window, as the store keeps them: two longs. */
  record Agg(long count, long total) {
    static final Agg ZERO = new Agg(0, 0);
  }

  static final class AggSerde implements Serde<Agg> {
    @Override
    public Serializer<Agg> serializer() {
      return (topic, agg) -> agg == null ? null : ByteBuffer.allocate(16).putLong(agg.count()).putLong(agg.total()).array();
    }

    @Override
    public Deserializer<Agg> deserializer() {
      return (topic, data) -> {
        if (data == null) return null;
        final ByteBuffer b = ByteBuffer.wrap(data);
        return new Agg(b.getLong(), b.getLong());
      };
    }
  }

  /** JSON objects as Jackson trees; anything else (a null value too) fails to deserialize, and the exception handler skips it. */
  static final class JsonSerde implements Serde<JsonNode> {
    @Override
    public Serializer<JsonNode> serializer() {
      return (topic, node) -> {
        if (node == null) return null;
        try {
          return MAPPER.writeValueAsBytes(node);
        } catch (final IOException e) {
          throw new SerializationException("cannot write JSON", e);
        }
      };
    }

    @Override
    public Deserializer<JsonNode> deserializer() {
      return (topic, data) -> {
        // A tombstone is not a record of the bench's kind either.
        if (data == null) {
          MALFORMED.incrementAndGet();
          throw new SerializationException("no value");
        }
        final JsonNode node;
        try {
          node = MAPPER.readTree(data);
        } catch (final IOException e) {
          MALFORMED.incrementAndGet();
          throw new SerializationException("not JSON", e);
        }
        if (node == null || !node.isObject()) {
          MALFORMED.incrementAndGet();
          throw new SerializationException("not a JSON object");
        }
        return node;
      };
    }
  }

  /** The event time value.ts; a record without one gets -1, which Kafka Streams drops (and counts as dropped). */
  static final class EventTime implements TimestampExtractor {
    @Override
    public long extract(final ConsumerRecord<Object, Object> record, final long partitionTime) {
      if (record.value() instanceof JsonNode v) {
        final JsonNode ts = v.path("ts");
        if (ts.isIntegralNumber() && ts.canConvertToLong()) return ts.asLong();
      }
      MALFORMED.incrementAndGet();
      return -1;
    }
  }
}

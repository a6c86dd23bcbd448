// What Conveyor's two images hold: one description that `npm run images` builds from and that the Dockerfile is
// checked against (test/packaging/dockerfile.test.ts), so that the two ways to build them cannot drift.
import { OPERATOR_NODE_FLAGS } from "../../src/node-flags.ts";

/** The Debian release under everything: the same as the Dockerfile's `node:24-bookworm-slim` build stages. */
export const DEBIAN = {
  suite: "bookworm",
  release: "12",
  /** main, its stable updates, and its security updates: a production base takes all three */
  sources: [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
  ],
  /**
   * What Node needs and nothing else (its binary links libc, libm, libdl, libpthread, libstdc++ and libgcc_s):
   * no shell, no package manager, no compiler. Their dependencies (gcc-12-base) come with them.
   */
  packages: ["libc6", "libgcc-s1", "libstdc++6"],
  /** what the extracted packages and mmdebstrap leave that nothing in the image reads: docs, translations, tooling */
  remove: [
    "dev",
    "etc/apt",
    "etc/dpkg",
    "etc/fstab",
    "etc/hostname",
    "etc/resolv.conf",
    "usr/share/doc",
    "usr/share/gcc",
    "usr/share/gdb",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/locale",
    "usr/share/man",
    "var/cache/apt",
    "var/lib/apt",
    "var/log/apt",
  ],
} as const;

/** The user both images run as: distroless's "nonroot", numeric so that runAsNonRoot can verify it. */
export const USER = { uid: 65532, gid: 65532, name: "nonroot", home: "/home/nonroot" } as const;

export const PASSWD = `root:x:0:0:root:/root:/sbin/nologin\n${USER.name}:x:${USER.uid}:${USER.gid}:${USER.name}:${USER.home}:/sbin/nologin\n`;
export const GROUP = `root:x:0:\n${USER.name}:x:${USER.gid}:\n`;

/**
 * mmdebstrap's extract hook: dpkg's record of each package, one file each as distroless keeps them, so that SBOM
 * tools and scanners see what the image holds ($1 is the root being made).
 */
export const STATUS_HOOK =
  'mkdir -p "$1/var/lib/dpkg/status.d" && for d in "$1"/var/cache/apt/archives/*.deb; do p=$(dpkg-deb -f "$d" Package); { dpkg-deb -f "$d"; echo "Status: install ok installed"; } > "$1/var/lib/dpkg/status.d/$p"; done';

export const WORKDIR = "/app";

/** Node's binary, from the npm registry's `node` package (this checkout's devDependency, node_modules/node/bin/node). */
export const NODE_BINARY = "/usr/local/bin/node";

export const ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NODE_ENV=production"] as const;

/**
 * Production dependencies, as `npm ci --omit=dev --ignore-scripts` installs them, less what no platform of ours
 * loads: RocksDB's C++ sources (the linux-x64 prebuild is what runs), its zipped prebuilds and the macOS one.
 */
export const DEPS_PRUNE = [
  "node_modules/@nxtedition/rocksdb/deps",
  "node_modules/@nxtedition/rocksdb/prebuilds.zip",
  "node_modules/@nxtedition/rocksdb/prebuilds/darwin-arm64",
] as const;

/** Files of the checkout an image holds (tests left out, as .dockerignore leaves them out of the build context). */
export const EXCLUDE = /\.test\.ts$/;

/**
 * Where the release workflow (.github/workflows/release.yml) publishes the images, and so the names the chart,
 * the operator's default runtime image, the bed and `docker load` know them by. A fork that publishes elsewhere
 * changes it here, in charts/conveyor/values.yaml and in src/children.ts (a test holds the three together).
 */
export const REGISTRY = "ghcr.io/conveyor-dev/conveyor";

export interface ImageSpec {
  /** the Dockerfile's target, and the tag in the OCI layout */
  target: "operator" | "runtime";
  /** the repository the bed, the chart and `docker load` know it by */
  name: string;
  title: string;
  description: string;
  entrypoint: string[];
  /** paths of the checkout copied under WORKDIR, in this order */
  files: string[];
}

export const IMAGES: readonly ImageSpec[] = [
  {
    target: "operator",
    name: `${REGISTRY}/operator`,
    title: "Conveyor operator",
    description: "Runs StreamPipeline resources on Kubernetes: the controller, the admission webhook and the autoscaler.",
    entrypoint: ["node", ...OPERATOR_NODE_FLAGS, "src/main.ts"],
    files: ["package.json", "src", "crds"],
  },
  {
    target: "runtime",
    name: `${REGISTRY}/runtime`,
    title: "Conveyor runtime",
    description: "A Conveyor pipeline worker: the topology on RocksDB state, exactly-once through Kafka transactions.",
    entrypoint: ["node", "runtime/main.ts"],
    files: ["package.json", "src", "runtime"],
  },
];

export const LABELS = {
  "org.opencontainers.image.source": "https://github.com/conveyor-dev/conveyor",
  "org.opencontainers.image.licenses": "Apache-2.0",
  "org.opencontainers.image.vendor": "Conveyor",
} as const;

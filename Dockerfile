# syntax=docker/dockerfile:1
# Conveyor images for Docker or BuildKit: `--target operator` and `--target runtime`. They describe the same images
# that `npm run images` builds without a container engine (scripts/images/spec.ts), and
# test/packaging/dockerfile.test.ts keeps the two the same: the Debian release and packages, the user, Node's
# version, the production dependencies, the files, the entrypoints and the labels.
# Node 24 runs the TypeScript sources directly (type stripping), so there is no build output to drift. No shell,
# package manager or compiler in what runs: a Debian root of libc6, libgcc-s1 and libstdc++6, and Node.

# The Debian root, extracted from Debian's packages by mmdebstrap, as `npm run images` extracts it.
FROM debian:bookworm-slim AS root
RUN apt-get update && apt-get install -y --no-install-recommends mmdebstrap && rm -rf /var/lib/apt/lists/*
RUN mmdebstrap --mode=root --variant=extract --include=libc6,libgcc-s1,libstdc++6 \
      --extract-hook='mkdir -p "$1/var/lib/dpkg/status.d" && for d in "$1"/var/cache/apt/archives/*.deb; do p=$(dpkg-deb -f "$d" Package); { dpkg-deb -f "$d"; echo "Status: install ok installed"; } > "$1/var/lib/dpkg/status.d/$p"; done' \
      --format=directory bookworm /rootfs \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main"
WORKDIR /rootfs
RUN rm -rf dev etc/apt etc/dpkg etc/fstab etc/hostname etc/resolv.conf usr/share/gcc usr/share/gdb usr/share/info usr/share/lintian usr/share/locale usr/share/man var/cache/apt var/lib/apt var/log/apt \
 && find usr/share/doc -mindepth 2 -not -name copyright -delete \
 && find var/lib/dpkg -mindepth 1 -maxdepth 1 -not -name status.d -exec rm -rf {} + \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > etc/group \
 && mkdir -p home/nonroot tmp && chown 65532:65532 home/nonroot && chmod 1777 tmp

# Node from the official build of the version package.json's devDependencies pin (the npm registry's `node`
# package ships the same binary), and the production dependencies.
FROM node:24.21.0-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/@nxtedition/rocksdb/deps node_modules/@nxtedition/rocksdb/prebuilds.zip node_modules/@nxtedition/rocksdb/prebuilds/darwin-arm64

FROM scratch AS base
COPY --from=root /rootfs/ /
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
COPY --from=deps /app/node_modules /app/node_modules
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin NODE_ENV=production
LABEL org.opencontainers.image.source="https://github.com/conveyor-dev/conveyor" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Conveyor" \
      org.opencontainers.image.base.name="debian:bookworm"
WORKDIR /app
COPY package.json ./
COPY src ./src
USER 65532:65532

FROM base AS operator
COPY crds ./crds
LABEL org.opencontainers.image.title="Conveyor operator" \
      org.opencontainers.image.description="Runs StreamPipeline resources on Kubernetes: the controller, the admission webhook and the autoscaler."
ENTRYPOINT ["node", "--max-semi-space-size=2", "--heap-growing-percent=50", "src/main.ts"]

FROM base AS runtime
COPY runtime ./runtime
LABEL org.opencontainers.image.title="Conveyor runtime" \
      org.opencontainers.image.description="A Conveyor pipeline worker: the topology on RocksDB state, exactly-once through Kafka transactions."
ENTRYPOINT ["node", "runtime/main.ts"]

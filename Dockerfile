# syntax=docker/dockerfile:1
# Conveyor images: `--target operator` and `--target runtime`. Node 24 runs the TypeScript sources directly
# (type stripping), exactly as the npm scripts do, so there is no separate build output to drift.
# Both run as a non-root user with an exec-form entrypoint (no shell needed); pods add a read-only root.

FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24-bookworm-slim AS base
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY src ./src
USER 65532:65532

FROM base AS operator
COPY crds ./crds
ENTRYPOINT ["node", "--max-semi-space-size=2", "--heap-growing-percent=50", "src/main.ts"]

FROM base AS runtime
COPY runtime ./runtime
ENTRYPOINT ["node", "runtime/main.ts"]

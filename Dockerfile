# syntax=docker/dockerfile:1
# Node 24 is the current LTS (Node 20 reached end of life on 2026-04-30). `.ci/node-major.sh` runs the test suite
# on the major named here, and `.ci/container.sh` builds and smoke-tests this file, so changing it is tested.
# Build stage: compiles the service (not the tests, benchmark or fault suite, and without source maps) with the
# dev dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json tsconfig.production.json ./
COPY app.ts server.ts worker.ts ./
COPY plugins plugins
COPY routes routes
COPY schemas schemas
COPY db db
COPY lib lib
COPY scripts/migrate.ts scripts/migrate.ts
COPY migrations migrations
RUN npm run build:production

# Production dependencies only. Optional packages (the embedded PostgreSQL binaries) are left out:
# the image always uses DATABASE_URL.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:24-bookworm-slim
# Kept equal to package.json's version by .ci/container.sh; SOURCE_URL names the repository the image is built from.
ARG VERSION=0.1.0
ARG SOURCE_URL=https://example.invalid/triggers-api
LABEL org.opencontainers.image.title="triggers-api" \
      org.opencontainers.image.description="Triggers API: event ingestion over HTTP into PostgreSQL, with an inbox, leases and signed webhook delivery" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="UNLICENSED" \
      org.opencontainers.image.version="${VERSION}"
# A heap cap keeps memory predictable: without one V8 sizes the heap from the host's memory and collects lazily
# (measured: ingest soak RSS 146 -> 327 MB in 120 s uncapped, level at ~190 MB with a 160 MB cap, same
# throughput). Raise it for many concurrent large batches.
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 NODE_OPTIONS=--max-old-space-size=256
# Listening on 0.0.0.0, the server refuses to start without an admin token (otherwise anyone could create API
# keys): pass it at run time, never in the image, e.g.
#   docker run -e DATABASE_URL=... -e ADMIN_TOKEN="$(openssl rand -base64 32)" -p 3000:3000 triggers-api
# (or -e ALLOW_OPEN_KEY_CREATION=true for a throwaway demo: keys can then be created by anyone, free tier only).
# Recommended too: WEBHOOK_SECRET_KEYS (signing secrets encrypted at rest), STATS_TOKEN, and TRUST_PROXY set to
# your proxies' addresses when behind a load balancer. The worker (node dist/worker.js) needs none of them but
# WEBHOOK_SECRET_KEYS.
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules node_modules
COPY --from=build --chown=root:root /app/dist dist
COPY package.json ./
# The built-in unprivileged user; the application files stay owned by root and read-only to it.
USER node
EXPOSE 3000
# Liveness only (the process answers HTTP): a database outage must not get healthy API containers restarted.
# Orchestrators route traffic on readiness instead, GET /health/ready (503 while the database does not answer);
# see docs/operations.md (Health probes).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# No init process (tini): node is PID 1 and both entry points handle SIGTERM and SIGINT themselves (close-with-grace),
# and neither starts child processes that would need reaping.
# Migrations run at start-up (under an advisory lock); SIGTERM closes connections and the pool cleanly.
CMD ["node", "dist/server.js"]

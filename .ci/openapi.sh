#!/usr/bin/env bash
# CI: the OpenAPI document as code generators see it. Builds, starts the server, saves its live /openapi.json,
# lints it with Redocly (recommended rules and the justified exceptions of redocly.yaml: no error and no warning
# may remain), generates the TypeScript types with openapi-typescript, type-checks examples/client/example.ts
# against them and runs it against the server. A change to the API that breaks the document or the typed client
# fails here.
# The server uses DATABASE_URL when set, else an embedded PostgreSQL of its own (removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
# Two free ports at once, held together while asked for: asked one after the other, the kernel can answer the same
# port twice (the embedded PostgreSQL then took the server's port once).
free_ports () { node -e "const net=require('net');const a=net.createServer().listen(0,'127.0.0.1',()=>{const b=net.createServer().listen(0,'127.0.0.1',()=>{console.log(a.address().port,b.address().port);a.close();b.close()})})"; }

echo "== openapi: build"
npm run build >/dev/null

read -r port postgres_port < <(free_ports)
embedded_dir=.data/postgres-openapi-ci
server_log=$(mktemp)
server_pid=""
cleanup () {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$embedded_dir" "$server_log"
}
trap cleanup EXIT

echo "== openapi: start the server"
EMBEDDED_POSTGRES_DIR=$embedded_dir EMBEDDED_POSTGRES_PORT=$postgres_port PORT=$port LOG_LEVEL=warn WEBHOOK_WORKER=off \
  node dist/server.js >"$server_log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$server_log"; echo "the server did not start"; exit 1; }
base_url="http://127.0.0.1:$port"

echo "== openapi: save the live document and generate its types"
examples/client/generate.sh "$base_url"

echo "== openapi: redocly lint (recommended rules, exceptions in redocly.yaml and .redocly.lint-ignore.yaml)"
npx --no-install redocly lint
# lint fails on errors only; a warning that no exception justifies must fail too.
npx --no-install redocly lint --format=json 2>/dev/null | node -e '
  let text = ""
  process.stdin.on("data", (chunk) => { text += chunk }).on("end", () => {
    const { totals } = JSON.parse(text)
    console.log(`redocly: ${totals.errors} errors, ${totals.warnings} warnings, ${totals.ignored} ignored as justified`)
    if (totals.errors + totals.warnings > 0) process.exit(1)
  })'

echo "== openapi: type-check and run the typed client example"
rm -rf examples/client/dist
npx --no-install tsc -p examples/client
node examples/client/dist/example.js "$base_url"
echo "OpenAPI document linted clean; typed client type-checked and ran"

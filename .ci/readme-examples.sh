#!/usr/bin/env bash
# CI: runs the documentation's examples as written. In each file (README.md, and every docs/*.md that has any),
# every ```sh block right after a `<!-- readme-example -->` line is taken, in order, into one bash script
# (errexit, nounset, pipefail). Each file's script runs on its own, against a fresh production server
# (node dist/server.js, after `npm run build`) on a fresh database, started the way the README says (ADMIN_TOKEN,
# WEBHOOK_ALLOW_PRIVATE_URLS=true): a page's examples must not depend on another page's. The only change made to
# the text: the server's address 127.0.0.1:3000, and the example receivers' ports 4000-4009 (in
# `127.0.0.1:40NN` and `listen(40NN`), become free ports.
# An error status fails the run: every curl in those blocks must use -f (`curl -fsS`), unless it checks the
# status itself with -w '%{http_code}' (where the page expects an error). A failure names the file and line of
# the block that failed. A file's script that runs longer than EXAMPLE_TIMEOUT_SECONDS is stopped and fails.
# Usage: [PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres] [README_DB=triggers_readme] \
#   [EXAMPLE_TIMEOUT_SECONDS=300] .ci/readme-examples.sh [FILE.md ...]   (default: README.md and docs/*.md)
set -euo pipefail
cd "$(dirname "$0")/.."

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
README_DB=${README_DB:-triggers_readme}
EXAMPLE_TIMEOUT_SECONDS=${EXAMPLE_TIMEOUT_SECONDS:-300}
marker='<!-- readme-example -->'
free_port () { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

if [ $# -gt 0 ]; then
  files=("$@")
else
  files=(README.md)
  for file in docs/*.md; do
    if grep -qxF "$marker" "$file"; then files+=("$file"); fi
  done
fi

work=$(mktemp -d)
server_pid=""
examples_pid=""
cleanup () {
  if [ -n "$examples_pid" ]; then kill -- "-$examples_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  psql "$PG_ADMIN_URL" -qc "drop database if exists $README_DB with (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Writes the script of one file's marked blocks to stdout: each block preceded by a line saying where it is (for
# the failure message), ports rewritten. Fails, naming file:line, on a marker without a ```sh block after it, an
# unterminated block, a curl that would let an error status pass, or a file without marked blocks.
cat >"$work/extract.mjs" <<'JS'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

const [file, marker, serverPort] = process.argv.slice(2)
const fail = (line, message) => { console.error(`${file}:${line}: ${message}`); process.exit(1) }
const lines = readFileSync(file, 'utf8').split('\n')
const blocks = []
for (let i = 0; i < lines.length; i++) {
  if (lines[i].trim() !== marker) continue
  if (lines[i + 1] !== '```sh') fail(i + 1, 'the marker must be followed by a ```sh block')
  const end = lines.indexOf('```', i + 2)
  if (end < 0) fail(i + 2, 'unterminated block')
  const body = lines.slice(i + 2, end)
  const bad = body.findIndex((text) => /\bcurl\b/.test(text) && !/\bcurl -fsS\b/.test(text) && !text.includes('%{http_code}'))
  if (bad >= 0) fail(i + 3 + bad, `a curl without -fsS or a status check: ${body[bad].trim()}`)
  blocks.push({ line: i + 3, body: body.join('\n') })
  i = end
}
if (blocks.length === 0) fail(1, `no ${marker} blocks`)

const freePort = () => new Promise((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => { const { port } = server.address(); server.close(() => resolve(port)) })
})
const receiverPorts = new Map()
for (const { body } of blocks) {
  for (const [, port] of body.matchAll(/(?:127\.0\.0\.1:|listen\()(400\d)\b/g)) {
    if (!receiverPorts.has(port)) receiverPorts.set(port, await freePort())
  }
}
for (const { line, body } of blocks) {
  const where = `${file}:${line}`
  console.log(`example_at ${where}`)
  console.log(body
    .replaceAll('127.0.0.1:3000', `127.0.0.1:${serverPort}`)
    .replace(/(127\.0\.0\.1:|listen\()(400\d)\b/g, (_, before, port) => before + receiverPorts.get(port)))
}
console.error(`marked blocks: ${blocks.length}`)
JS

start_server () {
  PGOPTIONS=--client-min-messages=warning psql "$PG_ADMIN_URL" -qc "drop database if exists $README_DB with (force)" -c "create database $README_DB" >/dev/null
  env -u REDIS_URL -u STATS_TOKEN -u METRICS_TOKEN -u WEBHOOK_WORKER \
    DATABASE_URL="${PG_ADMIN_URL%/*}/$README_DB" PORT="$port" LOG_LEVEL=warn \
    ADMIN_TOKEN="$admin_token" WEBHOOK_ALLOW_PRIVATE_URLS=true node dist/server.js >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$work/server.log"; echo "FAIL: the server did not start"; exit 1; }
}

# Stops the server; fails (returns 1) when it did not stop cleanly or logged errors.
stop_server () {
  local status=0
  kill -TERM "$server_pid"
  wait "$server_pid" || { cat "$work/server.log"; echo "FAIL: the server did not stop cleanly" >&2; status=1; }
  server_pid=""
  if grep -q '"level":5[0-9]' "$work/server.log"; then cat "$work/server.log"; echo "FAIL: the server logged errors" >&2; status=1; fi
  return "$status"
}

admin_token=$(node -e "console.log(require('crypto').randomBytes(24).toString('base64url'))")
passed=()
failed=()
for file in "${files[@]}"; do
  echo "== $file: its examples against a fresh production server"
  port=$(free_port)
  rm -rf "$work/run" "$work/example-at" && mkdir "$work/run"
  if ! node "$work/extract.mjs" "$file" "$marker" "$port" >"$work/examples.body"; then
    failed+=("$file"); continue
  fi
  {
    echo 'set -euo pipefail'
    # example_at FILE:LINE starts a block: remembered for the failure message (here and, on a timeout, in a file).
    echo "example_at () { EXAMPLE_AT=\$1; echo \"\$1\" >'$work/example-at'; echo; echo \"-- \$1\"; }"
    echo "trap 'echo \"FAIL: the example at \$EXAMPLE_AT (exit \$?)\" >&2' ERR"
    cat "$work/examples.body"
  } >"$work/run/examples.sh"

  start_server
  # Its own session, so that whatever the examples leave running in the background (receivers) is stopped
  # with it; timeout signals that whole session if the examples hang.
  (cd "$work/run" && ADMIN_TOKEN=$admin_token exec setsid timeout -k 5 "$EXAMPLE_TIMEOUT_SECONDS" bash examples.sh) &
  examples_pid=$!
  status=0
  wait "$examples_pid" || status=$?
  kill -- "-$examples_pid" 2>/dev/null || true
  examples_pid=""
  echo
  if [ "$status" -eq 124 ]; then
    echo "FAIL: the example at $(cat "$work/example-at" 2>/dev/null || echo "$file") did not finish within $EXAMPLE_TIMEOUT_SECONDS s" >&2
  fi
  if [ "$status" -ne 0 ]; then
    echo "== server log (last 30 lines)"; tail -n 30 "$work/server.log"
    stop_server || true
    failed+=("$file")
    continue
  fi
  if stop_server; then passed+=("$file"); echo "== $file: passed"; else failed+=("$file"); fi
done

echo
echo "Examples passed: ${passed[*]:-none}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAIL: the examples of ${failed[*]}"
  exit 1
fi
echo "All documentation examples passed"

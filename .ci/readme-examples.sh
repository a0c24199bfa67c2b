#!/usr/bin/env bash
# CI: runs the README's walkthrough as written. Every ```sh block right after a `<!-- readme-example -->` line is
# taken, in order, into one bash script (errexit, nounset, pipefail) and run against a fresh production server
# (node dist/server.js, after `npm run build`) on a fresh database, started the way the README says
# (ADMIN_TOKEN, WEBHOOK_ALLOW_PRIVATE_URLS=true). The only change made to the text: the README's ports
# (127.0.0.1:3000 for the server; 127.0.0.1:4000 and listen(4000 for the example webhook receiver) become free ones.
# An error status fails the run: every curl in those blocks must use -f (`curl -fsS`), unless it checks the
# status itself with -w '%{http_code}' (where the README expects an error).
# Usage: [PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres] [README_DB=triggers_readme] .ci/readme-examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
README_DB=${README_DB:-triggers_readme}
free_port () { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

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

echo "== the README's walkthrough against a fresh production server"
port=$(free_port)
receiver_port=$(free_port)
# The marked blocks, each introduced by a line that says which block it is (for the failure message).
node -e '
const lines = require("fs").readFileSync("README.md", "utf8").split("\n")
const blocks = []
for (let i = 0; i < lines.length; i++) {
  if (lines[i].trim() !== "<!-- readme-example -->") continue
  if (lines[i + 1] !== "```sh") { console.error(`README.md:${i + 1}: the marker must be followed by a \`\`\`sh block`); process.exit(1) }
  const end = lines.indexOf("```", i + 2)
  if (end < 0) { console.error(`README.md:${i + 2}: unterminated block`); process.exit(1) }
  blocks.push({ line: i + 3, body: lines.slice(i + 2, end) })
  i = end
}
if (blocks.length === 0) { console.error("no <!-- readme-example --> blocks in README.md"); process.exit(1) }
for (const { line, body } of blocks) {
  const bad = body.find((text) => /\bcurl\b/.test(text) && !/\bcurl -fsS\b/.test(text) && !text.includes("%{http_code}"))
  if (bad !== undefined) { console.error(`README.md:${line}: a curl without -fsS or a status check: ${bad}`); process.exit(1) }
  console.log(`README_LINE=${line}; echo; echo "-- README.md:${line}"`)
  console.log(body.join("\n").replaceAll("127.0.0.1:3000", "127.0.0.1:" + process.argv[1]).replace(/(127\.0\.0\.1:|listen\()4000\b/g, "$1" + process.argv[2]))
}
console.error(`${blocks.length} README blocks`)
' "$port" "$receiver_port" >"$work/examples.body"
{
  echo 'set -euo pipefail'
  echo "trap 'echo \"FAIL: the README block at README.md:\$README_LINE (exit \$?)\" >&2' ERR"
  cat "$work/examples.body"
} >"$work/examples.sh"

psql "$PG_ADMIN_URL" -qc "drop database if exists $README_DB with (force)" -c "create database $README_DB" >/dev/null
admin_token=$(node -e "console.log(require('crypto').randomBytes(24).toString('base64url'))")
env -u REDIS_URL -u STATS_TOKEN -u WEBHOOK_WORKER \
  DATABASE_URL="${PG_ADMIN_URL%/*}/$README_DB" PORT="$port" LOG_LEVEL=warn \
  ADMIN_TOKEN="$admin_token" WEBHOOK_ALLOW_PRIVATE_URLS=true node dist/server.js >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$work/server.log"; echo "FAIL: the server did not start"; exit 1; }

# Its own session, so whatever the examples leave running in the background (the receiver) is stopped with it.
(cd "$work" && ADMIN_TOKEN=$admin_token exec setsid bash examples.sh) &
examples_pid=$!
if ! wait "$examples_pid"; then
  examples_pid_done=$examples_pid; examples_pid=""; kill -- "-$examples_pid_done" 2>/dev/null || true
  echo "== server log"; tail -n 30 "$work/server.log"
  exit 1
fi
kill -- "-$examples_pid" 2>/dev/null || true
examples_pid=""
echo
kill -TERM "$server_pid"
wait "$server_pid" || { cat "$work/server.log"; echo "FAIL: the server did not stop cleanly"; exit 1; }
server_pid=""
if grep -q '"level":5[0-9]' "$work/server.log"; then cat "$work/server.log"; echo "FAIL: the server logged errors"; exit 1; fi
echo "README examples passed"

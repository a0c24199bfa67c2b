#!/usr/bin/env bash
# `npm run docs:api [-- BASE_URL]`: renders the OpenAPI document of a running server into one self-contained HTML
# page, docs/api-reference.html (ignored by git: it is generated, and the server's /openapi.json and /docs are
# the live versions). BASE_URL defaults to http://127.0.0.1:3000, where `npm start` listens.
set -euo pipefail
cd "$(dirname "$0")/.."

base_url=${1:-http://127.0.0.1:3000}
output=docs/api-reference.html
document=$(mktemp --suffix=.json)
trap 'rm -f "$document"' EXIT

if ! curl -fsS "$base_url/openapi.json" -o "$document"; then
  echo "No OpenAPI document at $base_url/openapi.json: start the server (npm start) or pass its address." >&2
  exit 1
fi
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  npx --no-install redocly build-docs "$document" --output "$output" --title 'Triggers API reference' --inlineBundle
echo "Wrote $output from $base_url/openapi.json"

#!/usr/bin/env bash
# Saves the OpenAPI document of a running server and generates TypeScript types from it:
#   examples/client/openapi.json  the live document (GET /openapi.json)
#   examples/client/schema.d.ts   its types for openapi-fetch (openapi-typescript; input and output in redocly.yaml)
# Usage: examples/client/generate.sh [BASE_URL]   (default http://127.0.0.1:3000, as `npm start` listens)
set -euo pipefail
cd "$(dirname "$0")/../.."
base_url=${1:-http://127.0.0.1:3000}
curl -fsS "$base_url/openapi.json" -o examples/client/openapi.json
# Default options, as a new user would run it: request bodies with defaults are inline in the document, so their
# defaulted properties stay optional. openapi-typescript lints the document too, but without
# .redocly.lint-ignore.yaml, so it repeats the one justified warning (GET /health).
npx --no-install openapi-typescript

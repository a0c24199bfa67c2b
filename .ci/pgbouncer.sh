#!/usr/bin/env bash
# The whole suite through PgBouncer in transaction mode (Debian's package, 1.18 on bookworm), as a service behind a
# managed pooler runs: DATABASE_URL is the pooler, DATABASE_DIRECT_URL the server itself (LISTEN, migrations).
# Usage: .ci/pgbouncer.sh [tap arguments]. Needs the machine's PostgreSQL (trust auth) and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_HOST=${PGBOUNCER_SERVER_HOST:-127.0.0.1}
PG_PORT=${PGBOUNCER_SERVER_PORT:-5432}
PG_USER=${PGBOUNCER_USER:-postgres}
DATABASE=${PGBOUNCER_DATABASE:-test}
PORT=${PGBOUNCER_PORT:-6432}
REDIS=${REDIS_URL:-redis://127.0.0.1:6379}

if ! command -v pgbouncer >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y pgbouncer >/dev/null
fi
# Debian's package only has the binary under /usr/sbin, which is not on every PATH.
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

dir=$(mktemp -d)
pid_file="$dir/pgbouncer.pid"
stop_pooler () {
  if [ -s "$pid_file" ]; then kill -INT "$(cat "$pid_file")" 2>/dev/null || true; fi
  for _ in $(seq 1 50); do [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$dir"
}
trap stop_pooler EXIT

# Trust, as the machine's PostgreSQL: the user must still be listed. The server pool is kept well under the
# server's max_connections (shared with other users of the machine); clients beyond it queue in PgBouncer.
printf '"%s" ""\n' "$PG_USER" > "$dir/userlist.txt"
cat > "$dir/pgbouncer.ini" <<INI
[databases]
$DATABASE = host=$PG_HOST port=$PG_PORT dbname=$DATABASE
; Any other database (tests create databases of their own) on the same server, under its own name.
* = host=$PG_HOST port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 40
logfile = $dir/pgbouncer.log
pidfile = $pid_file
INI

# PgBouncer refuses to run as root; -u switches to an unprivileged user (which must read the folder).
run_as=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres "$dir"
  run_as=(-u postgres)
fi
"$PGBOUNCER" -d "${run_as[@]}" "$dir/pgbouncer.ini"
for _ in $(seq 1 50); do
  psql -qAt -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$DATABASE" -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done
echo "PgBouncer $("$PGBOUNCER" --version | head -1 | awk '{print $2}') on 127.0.0.1:$PORT, pool_mode=transaction, in front of $PG_HOST:$PG_PORT/$DATABASE"

DATABASE_URL="postgres://$PG_USER@127.0.0.1:$PORT/$DATABASE" \
DATABASE_DIRECT_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DATABASE" \
DATABASE_PREPARED_STATEMENTS=${DATABASE_PREPARED_STATEMENTS:-false} \
REDIS_URL=$REDIS \
  node dist/scripts/test.js "$@"

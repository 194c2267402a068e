#!/usr/bin/env bash
# The PostgreSQL backend's tests against a real server: installs PostgreSQL
# from Debian's packages if missing, starts a throwaway cluster in a
# temporary directory (Unix socket only, no TCP port), runs the tests with the
# `postgres` feature, and stops the cluster whatever happens.
#
# Usage: .ci/postgres.sh [extra cargo test arguments]
#
# The tests that need a server are `#[ignore]`d (a plain `cargo test` shows
# them as skipped); here they run, with `--include-ignored`.
set -euo pipefail
cd "$(dirname "$0")/.."

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

PGBIN="$(find_bin || true)"
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "== installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y postgresql
    PGBIN="$(find_bin)"
fi
echo "== PostgreSQL: $("$PGBIN/postgres" --version)"

# initdb and pg_ctl refuse to run as root: run them as `postgres` when root.
if [ "$(id -u)" = 0 ]; then
    AS_PG="runuser -u postgres --"
    DB_USER=postgres
else
    AS_PG=""
    DB_USER="$(id -un)"
fi

PGTMP="$(mktemp -d /tmp/tokenvault-pg.XXXXXX)"
if [ -n "$AS_PG" ]; then
    chown postgres:postgres "$PGTMP"
fi
chmod 700 "$PGTMP"
PGDATA="$PGTMP/data"
PG_CTL="$AS_PG $PGBIN/pg_ctl -D $PGDATA -l $PGTMP/server.log -w -t 60"

cleanup() {
    $PG_CTL stop -m immediate >/dev/null 2>&1 || true
    rm -rf "$PGTMP"
}
trap cleanup EXIT

$AS_PG "$PGBIN/initdb" -D "$PGDATA" -U "$DB_USER" --auth=trust -E UTF8 >"$PGTMP/initdb.log"
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$PGTMP'
max_connections = 300
EOF
$PG_CTL start >/dev/null

export TOKENVAULT_PG_URL="host=$PGTMP user=$DB_USER dbname=postgres"
# The outage test stops and starts the server with this (plus `stop`/`start`).
export TOKENVAULT_PG_CTL="$PG_CTL"
# Here a missing server is an error, not a skipped test.
export TOKENVAULT_PG_REQUIRED=1

echo "== cargo test --features postgres --test postgres"
cargo test --features postgres --test postgres "$@" -- --include-ignored --nocapture
# The PostgreSQL tests of other files (each `#[ignore]`d as needing a
# server): only the ignored ones, the rest ran in the plain pass.
echo "== cargo test --features postgres (PostgreSQL tests of other files)"
cargo test --features postgres --test lifecycle --test lifecycle_scopes --test token_reads "$@" -- --ignored --nocapture

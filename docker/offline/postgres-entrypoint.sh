#!/bin/sh
# First start of the server (command `postgres`, empty PGDATA): initdb with POSTGRES_USER/POSTGRES_PASSWORD
# (or POSTGRES_PASSWORD_FILE), create
# POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql and *.sh on a server that listens on
# the Unix socket only, stop it. Every start: exec the server, listening on all addresses,
# password (scram) required over TCP.
set -eu
# POSTGRES_PASSWORD_FILE (a swarm secret) stands for POSTGRES_PASSWORD, as in the official image.
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
fi
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set on the first start}"
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C \
        --auth-local=trust --auth-host=scram-sha-256 > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start > /dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname=postgres -c "CREATE DATABASE \"$db\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sql) echo "postgres-entrypoint: running $f"; psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname="$db" -f "$f" ;;
            *.sh) echo "postgres-entrypoint: running $f"; . "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    echo "postgres-entrypoint: database initialised"
fi
exec "$@"

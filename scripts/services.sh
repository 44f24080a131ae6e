#!/usr/bin/env bash
# Starts / stops the real services the test suite uses: PostgreSQL, Redis and an S3
# endpoint (moto's server). Everything lives under .services/ and listens on loopback.
# `start` writes .services/env with the URLs the tests read.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.services"
PG_PORT=${TP_TEST_PG_PORT:-55432}
REDIS_PORT=${TP_TEST_REDIS_PORT:-56379}
S3_PORT=${TP_TEST_S3_PORT:-55000}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
# PostgreSQL runs as the postgres user, who may not be able to enter the project's folder
# (a fresh clone in a private temp dir): its data lives in a folder of its own under /tmp.
pgdir="/tmp/tp-test-postgres-$PG_PORT"

as_pg() {  # PostgreSQL refuses to run as root
  if [ "$(id -u)" = 0 ]; then (cd / && su postgres -s /bin/bash -c "$*"); else bash -c "$*"; fi
}

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "service on port $1 did not start" >&2; return 1
}

start() {
  mkdir -p "$dir"
  stop >/dev/null 2>&1 || true
  # PostgreSQL
  rm -rf "$pgdir"; mkdir -p "$pgdir"; chmod 700 "$pgdir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$pgdir"; fi
  as_pg "$pgbin/initdb -D '$pgdir/data' -A trust -U postgres >'$pgdir/initdb.log' 2>&1"
  as_pg "$pgbin/pg_ctl -D '$pgdir/data' -l '$pgdir/server.log' -o \"-p $PG_PORT -k '$pgdir' -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off\" -w start >/dev/null"
  "$pgbin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres tp_test
  # Redis
  mkdir -p "$dir/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
  wait_port "$REDIS_PORT"
  # S3 endpoint
  nohup "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  wait_port "$S3_PORT"
  cat >"$dir/env" <<ENV
export TP_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/tp_test
export TP_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export TP_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
ENV
  echo "services up: postgres :$PG_PORT, redis :$REDIS_PORT, s3 :$S3_PORT"
}

stop() {
  if [ -f "$pgdir/data/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl -D '$pgdir/data' -m immediate stop >/dev/null" || true
  fi
  rm -rf "$pgdir"
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true; rm -f "$dir/redis/redis.pid"
  fi
  if [ -f "$dir/moto.pid" ]; then
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true; rm -f "$dir/moto.pid"
  fi
  rm -f "$dir/env"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

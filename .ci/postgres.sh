#!/usr/bin/env bash
# A throwaway PostgreSQL on a Unix socket, for the tests that check that the
# session database works on PostgreSQL unchanged (tests/db/test_postgres.py).
#   postgres.sh start   prints the URL to use; prints nothing if it cannot
#                       (not root, no apt-get...): those tests then skip
#   postgres.sh stop D  stops the server whose socket folder is D
set -u
bin_dir() { dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)"; }

case "${1:-}" in
start)
  [ "$(id -u)" = 0 ] || exit 0
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    command -v apt-get >/dev/null || exit 0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/dev/null 2>&1 || exit 0
  fi
  bin=$(bin_dir)
  dir=$(mktemp -d /tmp/cortexloop-pg.XXXXXX)
  chown postgres "$dir"
  su postgres -c "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null 2>&1 || exit 0
  su postgres -c "$bin/pg_ctl -D $dir/data -o '-k $dir -c listen_addresses=' -l $dir/log start -w" >/dev/null 2>&1 || exit 0
  su postgres -c "$bin/createdb -h $dir cortexloop_test" >/dev/null 2>&1 || exit 0
  echo "postgresql+psycopg://postgres@/cortexloop_test?host=$dir"
  ;;
stop)
  su postgres -c "$(bin_dir)/pg_ctl -D $2/data stop -m fast" >/dev/null 2>&1
  rm -rf "$2"
  ;;
*)
  echo "usage: $0 start | stop DIR" >&2
  exit 2
  ;;
esac

# Source me (bash): make sure PostgreSQL and Redis answer for the test suite, and export
# DATABASE_URL / REDIS_URL pointing at them. In order of preference:
#   1. the servers at DATABASE_URL / REDIS_URL, when they are set;
#   2. the default local ports (127.0.0.1:5432 as user postgres, 127.0.0.1:6379);
#   3. throwaway servers started under var/test-services/ from the installed binaries
#      (installing Debian's postgresql / redis-server first when missing and running as root);
#   4. otherwise stop with one message that says what to install.
# Call test_services_stop (make traps it on EXIT) to stop the throwaway servers again.
# Also installs Debian's chromium for the browser tests when missing and running as root.

_ts_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_ts_py=${VENV:-$_ts_root/.venv}/bin/python
_ts_dir=$_ts_root/var/test-services
_ts_pg_port=${TEST_PG_PORT:-54329}
_ts_redis_port=${TEST_REDIS_PORT:-63799}
_ts_started_pg=""
_ts_started_redis=""
_ts_apt_updated=""

_ts_say() { echo "==> $*" >&2; }
_ts_is_root() { [ "$(id -u)" -eq 0 ]; }
# A URL fit for logs: the password (if any) masked.
_ts_mask() { sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#' <<<"$1"; }

_ts_fail() {
    echo >&2
    echo "make test: $*" >&2
    echo >&2
    exit 1
}

_ts_apt_install() {
    _ts_is_root && command -v apt-get >/dev/null || return 1
    _ts_say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "$@" >/dev/null 2>&1; then
        [ -n "$_ts_apt_updated" ] || { apt-get update -qq >/dev/null 2>&1 || true; _ts_apt_updated=1; }
        apt-get install -y -qq "$@" >/dev/null 2>&1 || return 1
    fi
}

# True when a PostgreSQL server answers at URL (checked against its 'postgres' database:
# the test database itself is created by pytest-django).
_ts_pg_answers() {
    "$_ts_py" - "$1" <<'PY' 2>/dev/null
import sys
import psycopg
try:
    psycopg.connect(sys.argv[1], dbname="postgres", connect_timeout=3).close()
except Exception:
    sys.exit(1)
PY
}

_ts_redis_answers() {
    "$_ts_py" - "$1" <<'PY' 2>/dev/null
import sys
import redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=2, socket_timeout=2).ping()
except Exception:
    sys.exit(1)
PY
}

_ts_pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null && command -v pg_ctl >/dev/null && dirname "$(command -v initdb)"
}

# Run a command as the postgres user when we are root (initdb refuses to run as root).
_ts_as_pg() {
    if _ts_is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

_ts_start_pg() {
    local bindir=$1 data=$_ts_dir/pg
    mkdir -p "$_ts_dir"
    if _ts_is_root; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        if ! (cd / && runuser -u postgres -- test -x "$_ts_dir") 2>/dev/null; then
            # the checkout is not reachable by the postgres user (e.g. under /root)
            data=${TMPDIR:-/tmp}/modelops-test-pg
        fi
        mkdir -p "$data" && chown postgres "$data" && chmod 700 "$data"
    else
        mkdir -p "$data"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        _ts_as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$_ts_dir/initdb.log" 2>&1 \
            || _ts_fail "initdb failed, see $_ts_dir/initdb.log"
    fi
    _ts_say "starting a throwaway PostgreSQL on 127.0.0.1:$_ts_pg_port ($data)"
    _ts_as_pg "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 \
        -o "-p $_ts_pg_port -k $data -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
        || _ts_fail "PostgreSQL did not start, see $data/server.log"
    _ts_started_pg=$bindir
    _ts_pg_data=$data
}

_ts_start_redis() {
    local data=$_ts_dir/redis
    mkdir -p "$data"
    _ts_say "starting a throwaway Redis on 127.0.0.1:$_ts_redis_port ($data)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$_ts_redis_port" --save "" \
        --appendonly no --dir "$data" --pidfile "$data/redis.pid" --logfile "$data/redis.log" \
        >/dev/null || _ts_fail "redis-server did not start, see $data/redis.log"
    for _ in $(seq 50); do
        _ts_redis_answers "redis://127.0.0.1:$_ts_redis_port/0" && break
        sleep 0.1
    done
    _ts_started_redis=1
}

test_services_stop() {
    if [ -n "$_ts_started_pg" ]; then
        _ts_as_pg "$_ts_started_pg/pg_ctl" -D "$_ts_pg_data" -m fast -w stop >/dev/null 2>&1 || true
        _ts_started_pg=""
    fi
    if [ -n "$_ts_started_redis" ] && [ -f "$_ts_dir/redis/redis.pid" ]; then
        kill "$(cat "$_ts_dir/redis/redis.pid")" 2>/dev/null || true
        _ts_started_redis=""
    fi
}

_ts_missing=()

# --- PostgreSQL ---
if [ -n "${DATABASE_URL:-}" ]; then
    case "$DATABASE_URL" in
        postgres://*|postgresql://*) ;;
        *) _ts_fail "DATABASE_URL must point at PostgreSQL for make test (got ${DATABASE_URL%%:*}://...); unset it to use a local server, or run 'make test-fast' for the SQLite pass." ;;
    esac
    _ts_pg_answers "$DATABASE_URL" \
        || _ts_fail "no PostgreSQL answers at DATABASE_URL=$(_ts_mask "$DATABASE_URL"); start it, or unset DATABASE_URL to use a local one."
else
    _ts_default_pg="postgres://postgres@127.0.0.1:5432/modelops"
    if _ts_pg_answers "$_ts_default_pg"; then
        export DATABASE_URL=$_ts_default_pg
    else
        _ts_bindir=$(_ts_pg_bindir || true)
        if [ -z "$_ts_bindir" ] && _ts_apt_install postgresql; then
            _ts_bindir=$(_ts_pg_bindir || true)
        fi
        if [ -n "$_ts_bindir" ]; then
            _ts_start_pg "$_ts_bindir"
            export DATABASE_URL="postgres://postgres@127.0.0.1:$_ts_pg_port/modelops"
        else
            _ts_missing+=("PostgreSQL (Debian: apt-get install postgresql)")
        fi
    fi
fi

# --- Redis ---
if [ -n "${REDIS_URL:-}" ]; then
    _ts_redis_answers "$REDIS_URL" \
        || _ts_fail "no Redis answers at REDIS_URL=$(_ts_mask "$REDIS_URL"); start it, or unset REDIS_URL to use a local one."
else
    if _ts_redis_answers "redis://127.0.0.1:6379/15"; then
        export REDIS_URL="redis://127.0.0.1:6379/15"
    else
        command -v redis-server >/dev/null || _ts_apt_install redis-server || true
        if command -v redis-server >/dev/null; then
            _ts_start_redis
            export REDIS_URL="redis://127.0.0.1:$_ts_redis_port/15"
        else
            _ts_missing+=("Redis (Debian: apt-get install redis-server)")
        fi
    fi
fi

if [ ${#_ts_missing[@]} -gt 0 ]; then
    test_services_stop
    _ts_fail "the test suite needs PostgreSQL and Redis. Missing: $(IFS=';'; echo "${_ts_missing[*]}" | sed 's/;/; /g').
Install them (as root: apt-get install -y postgresql redis-server), start them on the default
ports, or point DATABASE_URL / REDIS_URL at running servers; 'make test-fast' runs the SQLite pass."
fi

# --- Chromium for the browser tests ---
_ts_chromium=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ ! -x "$_ts_chromium" ]; then
    _ts_apt_install chromium || true
fi
if [ ! -x "$_ts_chromium" ]; then
    _ts_say "no Chromium at $_ts_chromium: browser tests will be skipped (as root: apt-get install -y chromium)"
fi

_ts_say "tests use DATABASE_URL=$(_ts_mask "$DATABASE_URL") REDIS_URL=$(_ts_mask "$REDIS_URL")"

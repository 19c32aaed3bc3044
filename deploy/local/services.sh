#!/usr/bin/env bash
# Installs (if missing) and starts the real services Tally's distributed backends use, on
# loopback only: PostgreSQL 15, ClickHouse (Debian's 18.16) and tansu (a Kafka-protocol broker),
# plus the sellers' databases of the tests: a second PostgreSQL cluster, a second ClickHouse server
# and a MariaDB, each on its own port (Tally refuses its own stores as sources, so sources must be
# other instances); and headless Chromium with chromedriver for the browser tests.
# Idempotent: `start` twice leaves one of each running. Waits on real readiness probes, then
# prints `export TALLY_…=…` lines for `eval`. `stop` stops what `start` started, by pid.
#
#   eval "$(deploy/local/services.sh start)"
#   deploy/local/services.sh stop
#
# State (data, logs, pid files) lives in $TALLY_SERVICES_DIR (default ~/.cache/tally-services).
set -euo pipefail

STATE="${TALLY_SERVICES_DIR:-$HOME/.cache/tally-services}"
HERE="$(cd "$(dirname "$0")" && pwd)"
KAFKA_PORT="${TALLY_KAFKA_PORT:-9092}"
CH_HTTP_PORT="${TALLY_CLICKHOUSE_PORT:-8123}"
PG_USER=tally PG_PASSWORD=tally PG_DB=tally
SOURCE_PG_PORT="${TALLY_SOURCE_PG_PORT:-5433}"
SOURCE_USER=seller SOURCE_PASSWORD=seller-pw-7f3a9c SOURCE_DB=seller
SOURCE_CH_PORT="${TALLY_SOURCE_CLICKHOUSE_PORT:-8124}"
SOURCE_MY_PORT="${TALLY_SOURCE_MARIADB_PORT:-3307}"

log() { echo "services: $*" >&2; }

wait_for() { # description, seconds, command...
    local what=$1 secs=$2; shift 2
    for _ in $(seq 1 $((secs * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$what did not become ready in ${secs}s"; return 1
}

apt_install() {
    log "installing $*"
    if [ ! -f "$STATE/.apt-updated" ]; then
        apt-get update -qq >&2 && touch "$STATE/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Starts a daemon in its own session (so the caller's process group can end without it) that
# writes its own pid before exec'ing, so the pid file names the service itself.
launch() { # pidfile, logfile, command...
    local pidfile=$1 logfile=$2; shift 2
    rm -f "$pidfile"
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" >"$logfile" 2>&1 </dev/null &
    for _ in $(seq 1 50); do [ -s "$pidfile" ] && return 0; sleep 0.1; done
    log "could not start $1"; return 1
}

start_postgres() {
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
    [ -n "$version" ] || { log "no PostgreSQL cluster found after install"; return 1; }
    pg_ctlcluster "$version" main start >/dev/null 2>&1 || true
    wait_for postgres 30 pg_isready -h 127.0.0.1 -q
    su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 ||
        su postgres -c "psql -qc \"CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD' CREATEDB\"" >&2
    su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1 ||
        su postgres -c "psql -qc \"CREATE DATABASE $PG_DB OWNER $PG_USER\"" >&2
    echo "$version" > "$STATE/postgres.version"
}

# The seller's PostgreSQL: cluster "sources" of the same version, on its own port.
start_source_postgres() {
    local version
    version=$(cat "$STATE/postgres.version")
    if ! pg_lsclusters -h | awk '{print $2}' | grep -qx sources; then
        pg_createcluster "$version" sources -p "$SOURCE_PG_PORT" >/dev/null 2>&1 ||
            { log "could not create the sources cluster"; return 1; }
    fi
    pg_ctlcluster "$version" sources start >/dev/null 2>&1 || true
    wait_for "source postgres" 30 pg_isready -h 127.0.0.1 -p "$SOURCE_PG_PORT" -q
    local psql="psql -p $SOURCE_PG_PORT -qtA"
    su postgres -c "$psql -c \"SELECT 1 FROM pg_roles WHERE rolname='$SOURCE_USER'\"" | grep -q 1 ||
        su postgres -c "$psql -c \"CREATE ROLE $SOURCE_USER LOGIN CREATEDB\"" >&2
    # A distinctive password, so tests can prove it is stored nowhere in clear.
    su postgres -c "$psql -c \"ALTER ROLE $SOURCE_USER PASSWORD '$SOURCE_PASSWORD'\"" >&2
    su postgres -c "$psql -c \"SELECT 1 FROM pg_database WHERE datname='$SOURCE_DB'\"" | grep -q 1 ||
        su postgres -c "$psql -c \"CREATE DATABASE $SOURCE_DB OWNER $SOURCE_USER\"" >&2
}

# One ClickHouse server: name (its state dir), HTTP port, native port, interserver port.
run_clickhouse() {
    local name=$1 http=$2 tcp=$3 inter=$4
    command -v clickhouse-server >/dev/null || apt_install clickhouse-server clickhouse-client
    local dir="$STATE/$name"
    mkdir -p "$dir/data" "$dir/log"
    if curl -sf "http://127.0.0.1:$http/ping" >/dev/null 2>&1; then
        log "$name already answers on :$http"
    elif ! alive "$dir/pid"; then
        # The package cannot start its service here: run it from a copy of its config with the
        # paths moved under the state dir, its own ports and IPv4 loopback only.
        sed -e "s#/var/lib/clickhouse/#$dir/data/#g" \
            -e "s#/var/log/clickhouse-server/#$dir/log/#g" \
            -e "s#<listen_host>::1</listen_host>##" \
            -e "s#<http_port>8123</http_port>#<http_port>$http</http_port>#" \
            -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
            -e "s#<https_port>8443</https_port>##" \
            -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$inter</interserver_http_port>#" \
            /etc/clickhouse-server/config.xml > "$dir/config.xml"
        cp /etc/clickhouse-server/users.xml "$dir/users.xml"
        (cd "$dir" && launch "$dir/pid" "$dir/log/stdout.log" clickhouse-server --config-file="$dir/config.xml")
    fi
    wait_for "$name" 60 curl -sf "http://127.0.0.1:$http/ping"
}

start_clickhouse() { run_clickhouse clickhouse "$CH_HTTP_PORT" 9000 9009; }

# A seller's ClickHouse: a second server with its own data and ports (Tally refuses its own
# analytics store as a source).
start_source_clickhouse() { run_clickhouse clickhouse-source "$SOURCE_CH_PORT" 9001 9010; }

# A seller's MariaDB (Debian's package), its own data dir, loopback only. It runs as the
# invoking user: the state dir may sit under a home the mysql user cannot enter.
start_source_mariadb() {
    command -v mariadbd >/dev/null || apt_install mariadb-server
    local dir="$STATE/mariadb"
    mkdir -p "$dir"
    if mariadb-admin --protocol=tcp -h 127.0.0.1 -P "$SOURCE_MY_PORT" -u root ping >/dev/null 2>&1; then
        log "mariadb already answers on :$SOURCE_MY_PORT"
    elif ! alive "$dir/pid"; then
        if [ ! -d "$dir/data/mysql" ]; then
            mkdir -p "$dir/data"
            mariadb-install-db --user=root --datadir="$dir/data" --auth-root-authentication-method=normal \
                --skip-test-db >"$dir/install.log" 2>&1 || { log "mariadb-install-db failed"; return 1; }
        fi
        launch "$dir/pid" "$dir/mariadb.log" mariadbd --no-defaults --user=root --datadir="$dir/data" \
            --bind-address=127.0.0.1 --port="$SOURCE_MY_PORT" --socket="$dir/mariadb.sock" \
            --pid-file="$dir/data/mariadbd.pid" --skip-name-resolve
    fi
    wait_for mariadb 60 mariadb-admin --protocol=tcp -h 127.0.0.1 -P "$SOURCE_MY_PORT" -u root ping
    mariadb --protocol=tcp -h 127.0.0.1 -P "$SOURCE_MY_PORT" -u root -e "
        CREATE DATABASE IF NOT EXISTS $SOURCE_DB;
        CREATE USER IF NOT EXISTS '$SOURCE_USER'@'%' IDENTIFIED BY '$SOURCE_PASSWORD';
        GRANT ALL ON $SOURCE_DB.* TO '$SOURCE_USER'@'%';" >&2
}

tansu_bin() {
    if [ -n "${TANSU_BIN:-}" ]; then echo "$TANSU_BIN"; return; fi
    if command -v tansu >/dev/null; then command -v tansu; return; fi
    # The prebuilt binary in shared/bin, beside the project or beside any of its parents.
    local dir="$HERE/../.."
    while [ "$(cd "$dir" && pwd)" != / ]; do
        dir="$dir/.."
        if [ -x "$dir/shared/bin/tansu" ]; then echo "$(cd "$dir" && pwd)/shared/bin/tansu"; return; fi
    done
    log "building tansu 0.6.0 (≈ 20 CPU-minutes)"
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql >&2
    command -v tansu
}

start_tansu() {
    local dir="$STATE/tansu" bin
    bin=$(tansu_bin)
    mkdir -p "$dir"
    if "$bin" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1; then
        log "a broker already answers on :$KAFKA_PORT"
    elif ! alive "$dir/pid"; then
        # tansu keeps group state (even members of killed processes) in its sqlite file:
        # TALLY_FRESH_BROKER=1 (set by scripts/test.sh) starts from empty storage.
        if [ "${TALLY_FRESH_BROKER:-0}" = 1 ]; then rm -f "$dir"/tansu.db*; fi
        # sqlite storage (memory storage mis-serves resumed consumer groups) with a relative path
        # (an absolute sqlite path is doubled in 0.6.0).
        (cd "$dir" && launch "$dir/pid" "$dir/broker.log" "$bin" broker \
            --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
            --storage-engine sqlite://tansu.db)
    fi
    wait_for tansu 30 "$bin" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT"
}

stop_pid() {
    if alive "$1"; then
        kill "$(cat "$1")" 2>/dev/null || true
        for _ in $(seq 1 100); do alive "$1" || break; sleep 0.1; done
        alive "$1" && kill -9 "$(cat "$1")" 2>/dev/null || true
    fi
    rm -f "$1"
}

# Headless Chromium and its WebDriver for the browser tests (each test starts its own
# chromedriver on a free port and ends it).
install_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null \
        || apt_install chromium chromium-driver
}

case "${1:-}" in
    start)
        mkdir -p "$STATE"
        start_postgres
        start_source_postgres
        start_clickhouse
        start_source_clickhouse
        start_source_mariadb
        start_tansu
        install_browser
        echo "export TALLY_TEST_CHROMEDRIVER=$(command -v chromedriver)"
        echo "export TALLY_TEST_CHROMIUM=$(command -v chromium)"
        echo "export TALLY_LOG_URL=kafka://127.0.0.1:$KAFKA_PORT"
        echo "export TALLY_ANALYTICS_URL=http://127.0.0.1:$CH_HTTP_PORT"
        echo "export TALLY_METADATA_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$PG_DB"
        echo "export TALLY_TEST_SOURCE_POSTGRES=postgres://$SOURCE_USER:$SOURCE_PASSWORD@127.0.0.1:$SOURCE_PG_PORT/$SOURCE_DB"
        echo "export TALLY_TEST_SOURCE_MARIADB=mysql://$SOURCE_USER:$SOURCE_PASSWORD@127.0.0.1:$SOURCE_MY_PORT/$SOURCE_DB"
        echo "export TALLY_TEST_SOURCE_CLICKHOUSE=http://127.0.0.1:$SOURCE_CH_PORT"
        ;;
    tansu-bin)
        tansu_bin
        ;;
    stop)
        stop_pid "$STATE/tansu/pid"
        stop_pid "$STATE/clickhouse/pid"
        stop_pid "$STATE/clickhouse-source/pid"
        stop_pid "$STATE/mariadb/pid"
        if [ -f "$STATE/postgres.version" ]; then
            pg_ctlcluster "$(cat "$STATE/postgres.version")" sources stop >/dev/null 2>&1 || true
            pg_ctlcluster "$(cat "$STATE/postgres.version")" main stop >/dev/null 2>&1 || true
        fi
        log "stopped"
        ;;
    *)
        echo "usage: $0 start|stop|tansu-bin" >&2
        exit 2
        ;;
esac

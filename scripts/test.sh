#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every unit, conformance and
# end-to-end test, twice over the backends: embedded (redb log, DuckDB, SQLite) and
# distributed (Kafka protocol via tansu, ClickHouse, Postgres), on real servers that
# deploy/local/services.sh installs and starts on loopback. A service that cannot start fails
# the run: nothing is skipped.
#
# Everything builds in the release profile only, so the bundled DuckDB is compiled once
# (≈ 28 min cold on 2 cores); the target dir defaults to a cache outside the clone so later
# runs are warm. Set TALLY_KEEP_SERVICES=1 to leave the services running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo build (release profile, tests included)"
cargo test --release --workspace --no-run

echo "== starting Postgres, ClickHouse, the Kafka-protocol broker and the sellers' test databases (deploy/local/services.sh)"
urls=$(TALLY_FRESH_BROKER=1 bash deploy/local/services.sh start)
if [ "${TALLY_KEEP_SERVICES:-0}" != 1 ]; then
    trap 'bash deploy/local/services.sh stop' EXIT
fi
eval "$urls"
# The tests get the services under TALLY_TEST_* names, so nothing else picks them up by accident.
export TALLY_TEST_KAFKA="${TALLY_LOG_URL#kafka://}"
export TALLY_TEST_CLICKHOUSE="$TALLY_ANALYTICS_URL"
export TALLY_TEST_POSTGRES="$TALLY_METADATA_URL"
export TALLY_TEST_TANSU_BIN
TALLY_TEST_TANSU_BIN=$(bash deploy/local/services.sh tansu-bin)
export TALLY_TEST_REQUIRE_SERVICES=1
unset TALLY_LOG_URL TALLY_ANALYTICS_URL TALLY_METADATA_URL

echo "== cargo test: unit and conformance (every backend), end-to-end on embedded backends"
TALLY_E2E_BACKENDS=embedded cargo test --release --workspace
echo "== cargo test: end-to-end on Kafka + ClickHouse + Postgres"
# One test at a time: the multi-process tests start up to five processes each, which is too
# much side by side on 2 cores.
TALLY_E2E_BACKENDS=distributed cargo test --release --test e2e -- --test-threads=1

echo "== dropping the end-to-end tests' ClickHouse databases and Postgres schemas"
# Each distributed e2e test makes its own namespace (e2e_<pid>_<hash>); on a machine whose
# services persist they would pile up run after run (each with a dozen tables and views).
for db in $(curl -sS "$TALLY_TEST_CLICKHOUSE/" --data-binary "SHOW DATABASES" | grep '^e2e_' || true); do
    curl -sS "$TALLY_TEST_CLICKHOUSE/" --data-binary "DROP DATABASE IF EXISTS $db"
done
for schema in $(psql "$TALLY_TEST_POSTGRES" -qtAc "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'e2e\_%'"); do
    PGOPTIONS='--client-min-messages=warning' psql "$TALLY_TEST_POSTGRES" -qc "DROP SCHEMA IF EXISTS $schema CASCADE"
done

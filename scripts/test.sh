#!/usr/bin/env bash
# Runs every test: unit tests of each crate, the whole-system tests that
# start a real nats-server and all seven services against SQLite and PostgreSQL,
# and the static check of deploy/ (tests/tests/deploy.rs).
#
# Then the hostile-input suites (scripts/suites.sh; docs/security.md).
#
# The web client's test drives Debian's Chromium with playwright-core
# (scripts/install-browser.sh installs both, with apt and npm).
#
# PostgreSQL is taken from TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres). Outside CI, PostgreSQL tests
# are skipped with a message when no server answers; with CI=true they fail.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-tools.sh
scripts/install-browser.sh
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all --check
else
  echo "test: rustfmt is not installed (rustup component add rustfmt); formatting not checked"
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
else
  echo "test: clippy is not installed (rustup component add clippy); lints not checked"
fi
# The whole-system tests start some services as processes of their own.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
# Hostile-input suites against running systems of their own (WebSocket
# conformance, HTTP API fuzzing, cargo fuzz targets), each bounded in time.
scripts/suites.sh

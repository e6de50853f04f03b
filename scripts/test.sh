#!/usr/bin/env bash
# Runs every test: unit tests of each crate, and the whole-system tests that
# start a real nats-server and all five services against SQLite and PostgreSQL.
#
# PostgreSQL is taken from TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres). Outside CI, PostgreSQL tests
# are skipped with a message when no server answers; with CI=true they fail.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/install-tools.sh
scripts/check-deploy.sh
cargo test --workspace --locked "$@"

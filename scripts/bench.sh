#!/usr/bin/env bash
# Runs the benchmarks with an optimised build. Results are printed; the ones
# worth keeping are recorded in docs/benchmarks.md with the machine they ran on.
#   scripts/bench.sh ingest [--messages N] [--conversations C]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-tools.sh
exec cargo run --release --quiet -p chat-bench -- "${@:-ingest}"

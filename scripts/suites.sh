#!/usr/bin/env bash
# The hostile-input suites (docs/security.md says what each covers), each
# bounded in time and each failing the run on a finding:
#   ws-conformance  Autobahn WebSocket cases (kosoku) against a running gateway,
#                   compared with tests/suites/ws_conformance_expected.txt
#   http-fuzz       schemathesis against a running gateway, from docs/openapi.yaml
#   cargo-fuzz      the fuzz targets in fuzz/ for FUZZ_SECONDS each
# The first two start a system of their own (scripts/with-stack.sh). Needs the
# service binaries (cargo build --workspace --bins) and scripts/install-tools.sh.
#
#   scripts/suites.sh                       # all three
#   scripts/suites.sh http-fuzz             # one
#
# With CI=true a missing tool fails the run; otherwise that suite is skipped
# with a message.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(ws-conformance http-fuzz cargo-fuzz)
python=.tools/venv/bin/python

in_ci() { case "${CI:-}" in ""|0|false) return 1 ;; *) return 0 ;; esac; }

passed=()
failed=()
skipped=()
run() { # name, time limit in seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "suites: $name (at most ${limit}s)"
  local started=$SECONDS
  if timeout --kill-after=15 "$limit" "$@"; then
    passed+=("$name")
  else
    local status=$?
    [ "$status" -eq 124 ] && echo "suites: $name did not finish within ${limit}s" >&2
    failed+=("$name")
  fi
  echo "suites: $name took $((SECONDS - started))s"
}

python_tools() {
  if "$python" -c "import kosoku, schemathesis" 2>/dev/null; then
    return 0
  fi
  if in_ci; then
    echo "suites: kosoku or schemathesis is missing: run scripts/install-tools.sh" >&2
    failed+=("$1")
  else
    echo "suites: $1 skipped: kosoku or schemathesis is missing (scripts/install-tools.sh installs them)"
    skipped+=("$1")
  fi
  return 1
}

for suite in "${suites[@]}"; do
  case "$suite" in
    ws-conformance)
      python_tools "$suite" && run "$suite" 240 scripts/with-stack.sh "$python" tests/suites/ws_conformance.py
      ;;
    http-fuzz)
      # Generous sign-up and login limits, so the fuzzer reaches past 429.
      python_tools "$suite" && AUTH_REGISTER_RATE_PER_ADDRESS=100000/1 AUTH_LOGIN_RATE_PER_ADDRESS=100000/1 \
        run "$suite" 240 scripts/with-stack.sh tests/suites/http_fuzz.sh
      ;;
    cargo-fuzz)
      # The first build of the targets (libFuzzer, the gateway instrumented)
      # is most of this limit; later runs reuse it.
      run "$suite" 1200 scripts/fuzz.sh
      ;;
    *)
      echo "suites: unknown suite $suite (ws-conformance, http-fuzz, cargo-fuzz)" >&2
      exit 2
      ;;
  esac
done

echo "suites: passed: ${passed[*]:-none}; failed: ${failed[*]:-none}; skipped: ${skipped[*]:-none}"
echo "suites: ${#passed[@]} passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]

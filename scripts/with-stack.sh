#!/usr/bin/env bash
# Runs a command against a whole system of its own: the pinned nats-server and
# the seven service binaries (as scripts/run.sh starts them), on free ports and
# SQLite files in a temporary folder, so it cannot clash with a running
# stack or another run. Stops everything and removes the folder afterwards;
# exits with the command's status.
#
#   scripts/with-stack.sh COMMAND [ARGS...]
#
# The command sees GATEWAY_URL (http://127.0.0.1:<port>) and STACK_LOGS (the
# services' logs, printed in part when the command fails), and for admin (the
# operators' API) STACK_ADMIN_ADDR (127.0.0.1:<port>) and STACK_ADMIN_TOKEN (an
# operator token made for this run; none when ADMIN_OPERATORS is given). The
# binaries must be built (`cargo build --workspace --bins`); PROFILE=release
# picks those, BIN_DIR=<folder> any other build.
# Extra environment for the services passes through (e.g. rate limits).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ $# -ge 1 ] || { echo "usage: scripts/with-stack.sh COMMAND [ARGS...]" >&2; exit 2; }

profile="${PROFILE:-dev}"
if [ -n "${BIN_DIR:-}" ]; then
  bin="$BIN_DIR"
else
  target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  bin="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"
fi
for service in auth history presence notification media admin gateway; do
  [ -x "$bin/$service" ] || { echo "with-stack: $bin/$service is missing: run cargo build --workspace --bins" >&2; exit 1; }
done
[ -x .tools/bin/nats-server ] || { echo "with-stack: nats-server is missing: run scripts/install-tools.sh" >&2; exit 1; }

data="$(mktemp -d "${TMPDIR:-/tmp}/chat-stack.XXXXXX")"

# Ports the kernel hands out now; nothing else asks for them in between.
read -r nats_port auth_port history_port presence_port notification_port media_port admin_port gateway_port < <(python3 -c '
import socket
held = [socket.socket() for _ in range(8)]
for s in held:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in held))
')

source scripts/lib/system.sh
SYSTEM_LOG_PREFIX=with-stack
status=1
stop() {
  trap - INT TERM EXIT
  stop_system
  if [ "$status" -ne 0 ]; then
    for log in "$data"/logs/*.log; do
      echo "---- with-stack: last lines of $(basename "$log")" >&2
      tail -n 15 "$log" >&2 || true
    done
  fi
  rm -rf "$data"
  exit "$status"
}
trap stop EXIT
trap 'status=130; exit 130' INT TERM

# Each run has its own databases and listeners (metrics on any free port).
unset AUTH_DATABASE_URL HISTORY_DATABASE_URL MEDIA_DATABASE_URL MEDIA_STORE ADMIN_DATABASE_URL NATS_MONITOR_PORT
export GATEWAY_METRICS_ADDR=127.0.0.1:0 AUTH_METRICS_ADDR=127.0.0.1:0 HISTORY_METRICS_ADDR=127.0.0.1:0
export PRESENCE_METRICS_ADDR=127.0.0.1:0 NOTIFICATION_METRICS_ADDR=127.0.0.1:0 MEDIA_METRICS_ADDR=127.0.0.1:0
export ADMIN_METRICS_ADDR=127.0.0.1:0
# An operator of this run's own (only the token's SHA-256 goes to admin).
admin_token=""
if [ -z "${ADMIN_OPERATORS:-}" ]; then
  admin_token="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  export ADMIN_OPERATORS="stack:$(printf %s "$admin_token" | sha256sum | cut -d' ' -f1)"
fi
start_system "$bin" "$data" "$nats_port" "$auth_port" "$history_port" "$presence_port" "$notification_port" "$media_port" "$admin_port" "$gateway_port"

export GATEWAY_URL="http://127.0.0.1:$gateway_port" STACK_LOGS="$data/logs" STACK_ADMIN_ADDR="127.0.0.1:$admin_port"
[ -z "$admin_token" ] || export STACK_ADMIN_TOKEN="$admin_token"
set +e
"$@"
status=$?
set -e

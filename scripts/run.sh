#!/usr/bin/env bash
# Runs the whole system on this machine: nats-server (JetStream) and the five
# services, with SQLite files under data/. Ctrl-C stops everything cleanly.
#
#   scripts/run.sh                 # http://127.0.0.1:8080
#   GATEWAY_PORT=9000 scripts/run.sh
#   PROFILE=release scripts/run.sh # optimised build
#
# Ports (all on 127.0.0.1): gateway 8080, NATS 14222 (monitoring 18222),
# gRPC auth 50051, history 50052, presence 50053, notification 50054.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

profile="${PROFILE:-dev}"
gateway_port="${GATEWAY_PORT:-8080}"
nats_port="${NATS_PORT:-14222}"
nats_monitor_port="${NATS_MONITOR_PORT:-18222}"
data="${DATA_DIR:-$root/data}"
logs="$data/logs"

scripts/install-tools.sh
echo "run: building the services ($profile profile)..."
cargo build --profile "$profile" --bins --quiet
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")"

mkdir -p "$data/jetstream" "$logs"
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping..."
  # Services first (the gateway closes sockets with 1001), NATS last.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "run: stopped"
}
trap stop EXIT
trap 'exit 0' INT TERM

start() { # name, command...
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_port() { # name, port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run: $1 did not start; see $logs/$1.log" >&2
  tail -n 20 "$logs/$1.log" >&2 || true
  exit 1
}

start nats .tools/bin/nats-server -a 127.0.0.1 -p "$nats_port" -m "$nats_monitor_port" -js -sd "$data/jetstream"
wait_port nats "$nats_port"

export NATS_URL="nats://127.0.0.1:$nats_port"
export AUTH_GRPC_ADDR=127.0.0.1:50051 HISTORY_GRPC_ADDR=127.0.0.1:50052
export PRESENCE_GRPC_ADDR=127.0.0.1:50053 NOTIFICATION_GRPC_ADDR=127.0.0.1:50054
export AUTH_GRPC_URL=127.0.0.1:50051 HISTORY_GRPC_URL=127.0.0.1:50052
export PRESENCE_GRPC_URL=127.0.0.1:50053 NOTIFICATION_GRPC_URL=127.0.0.1:50054
export AUTH_DATABASE_URL="${AUTH_DATABASE_URL:-sqlite://$data/auth.db}"
export HISTORY_DATABASE_URL="${HISTORY_DATABASE_URL:-sqlite://$data/history.db}"
export GATEWAY_HTTP_ADDR="127.0.0.1:$gateway_port"

start auth "$bin/auth";                 wait_port auth 50051
start history "$bin/history";           wait_port history 50052
start presence "$bin/presence";         wait_port presence 50053
start notification "$bin/notification"; wait_port notification 50054
start gateway "$bin/gateway";           wait_port gateway "$gateway_port"

echo
echo "  Chat backend is up."
echo "  HTTP API and WebSocket:  http://127.0.0.1:$gateway_port   (ws://127.0.0.1:$gateway_port/v1/ws)"
echo "  gRPC (grpcurl -plaintext): auth :50051, history :50052, presence :50053, notification :50054"
echo "  Logs: $logs/   Data: $data/"
echo "  Ctrl-C stops everything."
echo

# Stay up until Ctrl-C, or until any process exits on its own.
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "run: a process exited unexpectedly; see $logs/" >&2
      exit 1
    fi
  done
  sleep 1
done

#!/usr/bin/env bash
# Runs the whole system on this machine: nats-server (JetStream) and the six
# services, with SQLite files under data/. Ctrl-C stops everything cleanly.
#
#   scripts/run.sh                 # http://127.0.0.1:8080
#   GATEWAY_PORT=9000 scripts/run.sh
#   PROFILE=release scripts/run.sh # optimised build
#
# Ports (all on 127.0.0.1): gateway 8080, NATS 14222 (monitoring 18222),
# gRPC auth 50051, history 50052, presence 50053, notification 50054, media 50055.
# Attachments are kept in data/media (MEDIA_STORE=s3://<bucket> for S3).
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

source scripts/lib/system.sh
SYSTEM_LOG_PREFIX=run
stop() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping..."
  stop_system
  echo "run: stopped"
}
trap stop EXIT
trap 'exit 0' INT TERM

NATS_MONITOR_PORT="$nats_monitor_port" start_system "$bin" "$data" "$nats_port" 50051 50052 50053 50054 50055 "$gateway_port"

echo
echo "  Chat backend is up."
echo "  HTTP API and WebSocket:  http://127.0.0.1:$gateway_port   (ws://127.0.0.1:$gateway_port/v1/ws)"
echo "  gRPC (grpcurl -plaintext): auth :50051, history :50052, presence :50053, notification :50054, media :50055"
echo "  Logs: $logs/   Data: $data/"
echo "  Ctrl-C stops everything."
echo

# Stay up until Ctrl-C, or until any process exits on its own.
while system_running; do
  sleep 1
done
echo "run: a process exited unexpectedly; see $logs/" >&2
exit 1

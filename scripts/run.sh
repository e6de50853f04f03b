#!/usr/bin/env bash
# Runs the whole system on this machine: nats-server (JetStream) and the seven
# services, with SQLite files under data/. Ctrl-C stops everything cleanly.
#
#   scripts/run.sh                 # http://127.0.0.1:8080
#   GATEWAY_PORT=9000 scripts/run.sh
#   PROFILE=release scripts/run.sh # optimised build
#
# Ports (all on 127.0.0.1): gateway 8080, NATS 14222 (monitoring 18222),
# gRPC auth 50051, history 50052, presence 50053, notification 50054, media 50055,
# admin 50056 (the operators' API; docs/operations.md, "Administration").
# Attachments are kept in data/media (MEDIA_STORE=s3://<bucket> for S3).
# Admin has one operator, "local", whose token is made once and kept in
# data/admin-operator-token (mode 0600); admin is given only its SHA-256.
# Set ADMIN_OPERATORS yourself to use your own operators instead.
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

admin_note=""
if [ -z "${ADMIN_OPERATORS:-}" ]; then
  admin_token="$data/admin-operator-token"
  mkdir -p "$data"
  if [ ! -s "$admin_token" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$admin_token")
  fi
  chmod 600 "$admin_token"
  ADMIN_OPERATORS="local:$(tr -d '[:space:]' <"$admin_token" | sha256sum | cut -d' ' -f1)"
  export ADMIN_OPERATORS
  admin_note="operator token in $admin_token, e.g. .tools/bin/grpcurl -plaintext -H \"authorization: Bearer \$(cat $admin_token)\" -d '{\"query\":\"a\"}' 127.0.0.1:50056 chat.admin.v1.AdminService/FindUsers"
fi

NATS_MONITOR_PORT="$nats_monitor_port" start_system "$bin" "$data" "$nats_port" 50051 50052 50053 50054 50055 50056 "$gateway_port"

echo
echo "  Chat backend is up."
echo "  HTTP API and WebSocket:  http://127.0.0.1:$gateway_port   (ws://127.0.0.1:$gateway_port/v1/ws)"
echo "  gRPC (grpcurl -plaintext): auth :50051, history :50052, presence :50053, notification :50054, media :50055"
echo "  Admin (operators' gRPC :50056): ${admin_note:-operators from your ADMIN_OPERATORS}"
echo "  Logs: $logs/   Data: $data/"
echo "  Ctrl-C stops everything."
echo

# Stay up until Ctrl-C, or until any process exits on its own.
while system_running; do
  sleep 1
done
echo "run: a process exited unexpectedly; see $logs/" >&2
exit 1

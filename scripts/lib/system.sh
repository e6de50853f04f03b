# Starting and stopping the whole system (nats-server and the seven services),
# shared by scripts/run.sh and scripts/with-stack.sh. Source it; it defines:
#   start_system BIN DATA NATS_PORT AUTH HISTORY PRESENCE NOTIFICATION MEDIA ADMIN GATEWAY
#       starts everything in order, each waited for on its port, logs in
#       DATA/logs/<name>.log, JetStream in DATA/jetstream; exports the
#       services' addresses and database URLs unless already set (admin's
#       operators are the caller's ADMIN_OPERATORS: unset, admin refuses
#       every call)
#   stop_system
#       stops them in reverse order (the gateway closes its sockets first,
#       NATS goes last) and waits for each
# Messages start with $SYSTEM_LOG_PREFIX (default "system").

system_pids=()

system_start_process() { # name, command...
  local name=$1
  shift
  # A session of its own: a Ctrl-C reaches only the script, whose stop_system
  # then stops the processes in order instead of all at once.
  setsid "$@" >"$SYSTEM_LOGS/$name.log" 2>&1 &
  system_pids+=($!)
}

system_wait_port() { # name, port
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "${SYSTEM_LOG_PREFIX:-system}: $1 did not start; see $SYSTEM_LOGS/$1.log" >&2
  tail -n 20 "$SYSTEM_LOGS/$1.log" >&2 || true
  exit 1
}

start_system() { # bin, data, nats port, auth, history, presence, notification, media, admin, gateway ports
  local bin=$1 data=$2 nats=$3 auth=$4 history=$5 presence=$6 notification=$7 media=$8 admin=$9 gateway=${10}
  SYSTEM_LOGS="$data/logs"
  mkdir -p "$data/jetstream" "$SYSTEM_LOGS"
  system_start_process nats "${NATS_SERVER:-.tools/bin/nats-server}" -a 127.0.0.1 -p "$nats" ${NATS_MONITOR_PORT:+-m "$NATS_MONITOR_PORT"} -js -sd "$data/jetstream"
  system_wait_port nats "$nats"

  export NATS_URL="nats://127.0.0.1:$nats"
  export AUTH_GRPC_ADDR="127.0.0.1:$auth" AUTH_GRPC_URL="127.0.0.1:$auth"
  export HISTORY_GRPC_ADDR="127.0.0.1:$history" HISTORY_GRPC_URL="127.0.0.1:$history"
  export PRESENCE_GRPC_ADDR="127.0.0.1:$presence" PRESENCE_GRPC_URL="127.0.0.1:$presence"
  export NOTIFICATION_GRPC_ADDR="127.0.0.1:$notification" NOTIFICATION_GRPC_URL="127.0.0.1:$notification"
  export MEDIA_GRPC_ADDR="127.0.0.1:$media" MEDIA_GRPC_URL="127.0.0.1:$media"
  export ADMIN_GRPC_ADDR="127.0.0.1:$admin"
  export AUTH_DATABASE_URL="${AUTH_DATABASE_URL:-sqlite://$data/auth.db}"
  export HISTORY_DATABASE_URL="${HISTORY_DATABASE_URL:-sqlite://$data/history.db}"
  export MEDIA_DATABASE_URL="${MEDIA_DATABASE_URL:-sqlite://$data/media.db}"
  export MEDIA_STORE="${MEDIA_STORE:-$data/media}"
  export ADMIN_DATABASE_URL="${ADMIN_DATABASE_URL:-sqlite://$data/admin.db}"
  export GATEWAY_HTTP_ADDR="127.0.0.1:$gateway"

  system_start_process auth "$bin/auth";                 system_wait_port auth "$auth"
  system_start_process history "$bin/history";           system_wait_port history "$history"
  system_start_process presence "$bin/presence";         system_wait_port presence "$presence"
  system_start_process notification "$bin/notification"; system_wait_port notification "$notification"
  system_start_process media "$bin/media";               system_wait_port media "$media"
  system_start_process admin "$bin/admin";               system_wait_port admin "$admin"
  system_start_process gateway "$bin/gateway";           system_wait_port gateway "$gateway"
}

stop_system() {
  # One at a time, each waited for: the gateway drains while NATS is still up.
  for ((i=${#system_pids[@]}-1; i>=0; i--)); do
    kill -TERM "${system_pids[$i]}" 2>/dev/null || true
    wait "${system_pids[$i]}" 2>/dev/null || true
  done
}

# True while every process started is still running.
system_running() {
  for pid in "${system_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || return 1
  done
}

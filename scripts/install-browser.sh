#!/usr/bin/env bash
# Installs what the browser test of the web client needs:
#   Chromium and Node.js from Debian's packages (apt; as root or with sudo),
#   playwright-core (pinned in tests/browser/package-lock.json) into
#   tests/browser/node_modules. No browser is downloaded by npm.
# Safe to run again: it does nothing when everything is present.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$root/tests/browser"

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
  source "$root/scripts/lib/apt.sh"
  apt_install install-browser "${missing[@]}"
fi

wanted="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dependencies"]["playwright-core"])' "$browser_dir/package.json")"
installed="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
  "$browser_dir/node_modules/playwright-core/package.json" 2>/dev/null || true)"
if [ "$installed" != "$wanted" ]; then
  echo "install-browser: installing playwright-core $wanted into tests/browser/node_modules"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null | head -n 1), node $(node --version), playwright-core $wanted"

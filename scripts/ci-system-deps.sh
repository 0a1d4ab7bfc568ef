#!/usr/bin/env bash
# System packages the test suite needs beyond Python: headless Chromium and its WebDriver, for the
# browser test of the web page (tests/test_serve_browser.py), and the PostgreSQL server, which the
# shared-storage test of `loralab tune` starts in a temp folder (tests/test_tune.py; Debian puts
# initdb and pg_ctl in /usr/lib/postgresql/*/bin). Run as root by .ci/run before setup.
# Idempotent and quiet: does nothing when the packages are already installed.
set -euo pipefail

PACKAGES=(chromium chromium-driver postgresql)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "ci-system-deps: ${missing[*]} not installed; run this script as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >/tmp/ci-system-deps.log 2>&1; then
  echo "ci-system-deps: apt-get install ${missing[*]} failed; last lines of /tmp/ci-system-deps.log:" >&2
  tail -n 20 /tmp/ci-system-deps.log >&2
  exit 1
fi
command -v chromium >/dev/null && command -v chromedriver >/dev/null || {
  echo "ci-system-deps: chromium or chromedriver not on PATH after installing ${missing[*]}" >&2
  exit 1
}
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || {
  echo "ci-system-deps: no /usr/lib/postgresql/*/bin/initdb after installing ${missing[*]}" >&2
  exit 1
}

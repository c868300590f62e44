#!/usr/bin/env bash
# System packages the test suite needs beyond pip: Debian's chromium for the web UI browser test.
# Playwright drives it through executable_path=/usr/bin/chromium (no browser download).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the web UI test (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "warning: chromium is not installed and cannot be installed here; the web UI browser test will be skipped" >&2
fi

#!/usr/bin/env bash
# System packages the test suite needs beyond pip: Debian's chromium for the web UI browser test, and a
# CJK font (fonts-wqy-zenhei) so the Chinese interface renders as text, not boxes, in its screenshots.
# Playwright drives it through executable_path=/usr/bin/chromium (no browser download).
set -euo pipefail
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
if ! { command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh family | grep -q .; }; then
  packages+=(fonts-wqy-zenhei)
fi
if [ "${#packages[@]}" = "0" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${packages[*]} for the web UI test (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
else
  echo "warning: ${packages[*]} not installed and cannot be installed here; the web UI browser test is skipped" \
       "without chromium, and Chinese text shows as boxes without a CJK font" >&2
fi

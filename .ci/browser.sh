#!/usr/bin/env bash
# The host app's story in headless Chromium (host-app/browser/tests/browser.rs).
# Installs Debian's chromium and chromium-driver when missing, then runs the
# test; screenshots of each page stay in target/tmp/host-app-browser/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "== installing chromium and chromium-driver"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver
fi
chromium --version || true
chromedriver --version || true

echo "== browser test (host app)"
cargo test -p tokenvault-host-app-browser

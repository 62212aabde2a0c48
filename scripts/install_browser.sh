#!/usr/bin/env bash
# Debian's Chromium for the demo browser tests (Playwright drives it; nothing is downloaded from a CDN).
# Does nothing when a Chromium is already there; without root/sudo or apt-get it says so and the browser
# tests skip (CI sets FT_REQUIRE_BROWSER=1, which turns that skip into a failure).
set -uo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "${CHROMIUM:-}" ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
if command -v apt-get >/dev/null && $SUDO true 2>/dev/null; then
    echo "installing Debian chromium for the demo browser tests..."
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null &&
        exit 0
fi
echo "no Chromium and no way to install it here: the browser tests will be skipped (apt-get install chromium)" >&2
exit 0

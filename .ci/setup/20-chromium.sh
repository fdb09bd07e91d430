# shellcheck shell=bash
# Sourced by .ci/run: makes sure headless Chromium is there for the browser
# tests of the web app (tests/web_browser_test.ts), installing Debian's
# `chromium` with apt-get when it is missing (no browser download by the
# tests themselves), and exports where it is:
#   CHROMIUM_PATH   e.g. /usr/bin/chromium
# Nothing may skip in CI: without a browser the browser tests fail.
export HUB_TEST_REQUIRE_BROWSER=1

hub_find_chromium() {
  local candidate
  for candidate in "${CHROMIUM_PATH:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

hub_chromium_setup() {
  local path
  if ! path=$(hub_find_chromium); then
    echo "chromium: not found, installing with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null ||
      return 1
    path=$(hub_find_chromium) || return 1
  fi
  export CHROMIUM_PATH="$path"
  echo "chromium: $CHROMIUM_PATH ($("$CHROMIUM_PATH" --version 2>/dev/null | head -n 1))"
}

hub_chromium_setup

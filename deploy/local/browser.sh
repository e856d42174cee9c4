#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test (tests/integration/test_dashboard.py).
# Run with --help for usage.

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
CHROMEDRIVER_BIN="${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}"

usage() {
    cat <<USAGE
Usage: $(basename "$0") COMMAND

Debian's chromium and chromium-driver, which the dashboard's browser test drives
through Selenium. Nothing is downloaded but the Debian packages.

Commands:
  install   Install chromium and chromium-driver with apt-get (as root, or through
            sudo). Does nothing if both are installed.
  status    Show the installed versions. Exit 0 installed, 3 missing.

Environment:
  CHROMIUM_BIN       Browser program (default: /usr/bin/chromium)
  CHROMEDRIVER_BIN   WebDriver program (default: /usr/bin/chromedriver)
USAGE
}

installed() {
    [[ -x "$CHROMIUM_BIN" && -x "$CHROMEDRIVER_BIN" ]]
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

cmd_install() {
    if installed; then
        info "Chromium already installed ($("$CHROMIUM_BIN" --version 2>/dev/null || echo "$CHROMIUM_BIN"))"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "automatic install needs apt-get (Debian, Ubuntu); install chromium and chromium-driver yourself, or set CHROMIUM_BIN and CHROMEDRIVER_BIN" 1
    [[ "$(id -u)" == 0 ]] || command -v sudo >/dev/null 2>&1 ||
        die "installing Chromium needs root: run '$0 install' as root, or install sudo" 1
    info "Installing chromium and chromium-driver with apt-get..."
    as_root apt-get update -q || die "apt-get update failed (see above)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver ||
        die "apt-get install chromium chromium-driver failed (see above)"
    installed || die "the packages are installed but $CHROMIUM_BIN or $CHROMEDRIVER_BIN is missing; set CHROMIUM_BIN and CHROMEDRIVER_BIN"
    ok "Chromium installed ($("$CHROMIUM_BIN" --version 2>/dev/null))"
}

cmd_status() {
    if installed; then
        info "$("$CHROMIUM_BIN" --version 2>/dev/null); $("$CHROMEDRIVER_BIN" --version 2>/dev/null | head -1)"
        return 0
    fi
    info "Chromium: not installed (run $0 install)"
    return 3
}

case "${1:-}" in
    "" | -h | --help | help) usage ;;
    install) cmd_install ;;
    status) cmd_status ;;
    *)
        printf "Error: unknown command '%s' (expected install or status)\n" "$1" >&2
        exit 2
        ;;
esac

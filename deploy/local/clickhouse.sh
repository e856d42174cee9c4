#!/usr/bin/env bash
# Start, stop and inspect a local ClickHouse server for Touchpoint.
# Run with --help for usage.

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") COMMAND

Run a local ClickHouse server (Debian's clickhouse-server package) with its own
configuration, data and logs under \$TOUCHPOINT_HOME, on loopback only. The system
service and /etc/clickhouse-server are not used.

Commands:
  install       Install clickhouse-server and clickhouse-client with apt-get
                (as root, or through sudo). Does nothing if already installed.
  start         Start the server and wait until it answers. Does nothing if already
                running. Needs the server installed (see CLICKHOUSE_AUTO_INSTALL).
  stop          Stop the server (SIGTERM, then SIGKILL after CLICKHOUSE_STOP_TIMEOUT).
  status        Show whether it runs. Exit 0 running, 3 stopped, 4 running but not
                answering.
  logs [-f]     Show the end of the server logs (-f: follow them).
  reset         DESTRUCTIVE: stop the server and delete all its databases and tables.

Environment:
  TOUCHPOINT_HOME           Data and logs folder (default: <repo>/.touchpoint)
  CLICKHOUSE_TCP_PORT       Native protocol port on 127.0.0.1 (default: 9000)
  CLICKHOUSE_HTTP_PORT      HTTP port on 127.0.0.1 (default: 8123)
  CLICKHOUSE_START_TIMEOUT  Seconds to wait for the server to answer (default: 60)
  CLICKHOUSE_STOP_TIMEOUT   Seconds to wait for a clean shutdown (default: 30)
  CLICKHOUSE_AUTO_INSTALL   1: 'start' runs 'install' first when needed (default: 0)
  CLICKHOUSE_SERVER_BIN     Server program (default: /usr/sbin/clickhouse-server)

Files:
  \$TOUCHPOINT_HOME/clickhouse/data/         databases and tables
  \$TOUCHPOINT_HOME/clickhouse/config.xml    generated at each start from
  \$TOUCHPOINT_HOME/clickhouse/users.xml     deploy/local/clickhouse/*.xml.in
  \$TOUCHPOINT_HOME/logs/clickhouse-server.log      server log (warnings and errors)
  \$TOUCHPOINT_HOME/logs/clickhouse-server.err.log  errors only
  \$TOUCHPOINT_HOME/logs/clickhouse-stdout.log      console output of the last start
  \$TOUCHPOINT_HOME/run/clickhouse.pid       pid of the running server
EOF
}

TEMPLATE_DIR="$TP_LOCAL_DIR/clickhouse"

load_settings() {
    HOME_DIR="$(tp_home)"
    TCP_PORT="$(tp_port CLICKHOUSE_TCP_PORT "${CLICKHOUSE_TCP_PORT:-9000}")"
    HTTP_PORT="$(tp_port CLICKHOUSE_HTTP_PORT "${CLICKHOUSE_HTTP_PORT:-8123}")"
    ((TCP_PORT != HTTP_PORT)) || die "CLICKHOUSE_TCP_PORT and CLICKHOUSE_HTTP_PORT are both $TCP_PORT; they must differ" 2
    START_TIMEOUT="$(tp_seconds CLICKHOUSE_START_TIMEOUT "${CLICKHOUSE_START_TIMEOUT:-60}")"
    STOP_TIMEOUT="$(tp_seconds CLICKHOUSE_STOP_TIMEOUT "${CLICKHOUSE_STOP_TIMEOUT:-30}")"
    AUTO_INSTALL="${CLICKHOUSE_AUTO_INSTALL:-0}"
    [[ "$AUTO_INSTALL" == 0 || "$AUTO_INSTALL" == 1 ]] || die "CLICKHOUSE_AUTO_INSTALL must be 0 or 1, got '$AUTO_INSTALL'" 2
    SERVER_BIN="${CLICKHOUSE_SERVER_BIN:-/usr/sbin/clickhouse-server}"

    CH_DIR="$HOME_DIR/clickhouse"
    DATA_DIR="$CH_DIR/data"
    TMP_DIR="$CH_DIR/tmp"
    USER_FILES_DIR="$CH_DIR/user_files"
    FORMAT_SCHEMA_DIR="$CH_DIR/format_schemas"
    CONFIG="$CH_DIR/config.xml"
    LOG_DIR="$HOME_DIR/logs"
    SERVER_LOG="$LOG_DIR/clickhouse-server.log"
    ERR_LOG="$LOG_DIR/clickhouse-server.err.log"
    STDOUT_LOG="$LOG_DIR/clickhouse-stdout.log"
    RUN_DIR="$HOME_DIR/run"
    PIDFILE="$RUN_DIR/clickhouse.pid"
    # Part of the server's command line only when it runs from this TOUCHPOINT_HOME.
    PROCESS_MARK="--config-file=$CONFIG"
}

installed() {
    [[ -x "$SERVER_BIN" ]]
}

package_version() {
    dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null || true
}

# Run a command as root: directly, or through sudo (cmd_install checked one works).
as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    else
        sudo "$@"
    fi
}

cmd_install() {
    if installed; then
        info "ClickHouse server already installed ($SERVER_BIN, $(package_version))"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "automatic install needs apt-get (Debian, Ubuntu); install clickhouse-server and clickhouse-client yourself, or set CLICKHOUSE_SERVER_BIN" 1
    [[ "$(id -u)" == 0 ]] || command -v sudo >/dev/null 2>&1 ||
        die "installing ClickHouse needs root: run '$0 install' as root, or install sudo" 1
    info "Installing clickhouse-server and clickhouse-client with apt-get..."
    as_root apt-get update -q || die "apt-get update failed (see above)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server clickhouse-client ||
        die "apt-get install clickhouse-server clickhouse-client failed (see above)"
    installed || die "the clickhouse-server package is installed but $SERVER_BIN is missing; set CLICKHOUSE_SERVER_BIN to its server program"
    stop_system_service
    ok "ClickHouse server installed ($SERVER_BIN, $(package_version))"
}

# On machines whose init system allows it, the Debian package starts its own service
# on ports 9000/8123 with /etc/clickhouse-server. We run our own server, so stop that
# one (only right after installing it: one a person set up earlier is left alone).
# Not through /etc/init.d: its "stop" ends every clickhouse-server on the machine.
stop_system_service() {
    local pids
    pids="$(pgrep -u clickhouse -f -- '/etc/clickhouse-server/config.xml' 2>/dev/null || true)"
    [[ -n "$pids" ]] || return 0
    info "Stopping the system clickhouse-server service that the package started (Touchpoint runs its own)..."
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        as_root systemctl stop clickhouse-server ||
            warn "could not stop the system clickhouse-server service; it may hold ports 9000/8123"
        info "It starts again at boot; to prevent that: sudo systemctl disable clickhouse-server"
    else
        # shellcheck disable=SC2086  # one pid per word
        as_root kill -TERM $pids ||
            warn "could not stop the system clickhouse-server (pid $pids); it may hold ports 9000/8123"
    fi
}

server_ready() {
    if command -v curl >/dev/null 2>&1; then
        [[ "$(curl -s --max-time 2 "http://127.0.0.1:$HTTP_PORT/ping" 2>/dev/null)" == "Ok." ]]
    else
        clickhouse-client --host 127.0.0.1 --port "$TCP_PORT" -q 'SELECT 1' >/dev/null 2>&1
    fi
}

# Version reported by the running server, or nothing.
server_version() {
    if command -v curl >/dev/null 2>&1; then
        curl -s --max-time 2 "http://127.0.0.1:$1/?query=SELECT%20version()" 2>/dev/null || true
    fi
}

# Ports the running server was started with (from the generated config).
running_port() {
    sed -n "s|.*<$1>\([0-9]*\)</$1>.*|\1|p" "$CONFIG" 2>/dev/null
}

render_config() {
    render_template "$TEMPLATE_DIR/config.xml.in" "$CONFIG" \
        LOG_DIR="$(xml_escape "$LOG_DIR")" \
        DATA_DIR="$(xml_escape "$DATA_DIR")" \
        TMP_DIR="$(xml_escape "$TMP_DIR")" \
        USER_FILES_DIR="$(xml_escape "$USER_FILES_DIR")" \
        FORMAT_SCHEMA_DIR="$(xml_escape "$FORMAT_SCHEMA_DIR")" \
        TCP_PORT="$TCP_PORT" HTTP_PORT="$HTTP_PORT"
    render_template "$TEMPLATE_DIR/users.xml.in" "$CH_DIR/users.xml"
}

# The last error this start logged (err log lines past $1), without its timestamp.
start_error() {
    [[ -f "$ERR_LOG" ]] || return 0
    tail -n "+$(($1 + 1))" -- "$ERR_LOG" | grep '<Error>' | tail -n 1 |
        sed 's/.*<Error> //' | cut -c 1-400 || true
}

# Errors logged by this start: the err log's lines past $1, else the console output.
print_start_errors() {
    local skip="$1" new=""
    [[ -f "$ERR_LOG" ]] && new="$(tail -n "+$((skip + 1))" -- "$ERR_LOG" | tail -n 30)"
    {
        if [[ -n "$new" ]]; then
            printf -- '--- last 30 lines of %s ---\n%s\n---\n' "$ERR_LOG" "$new"
        else
            printf -- '--- last 30 lines of %s ---\n' "$STDOUT_LOG"
            tail -n 30 -- "$STDOUT_LOG" 2>/dev/null || true
            printf -- '---\n'
        fi
    } >&2
}

cmd_start() {
    local pid rc started_at err_lines=0 running_tcp running_http reason
    if ! installed; then
        if [[ "$AUTO_INSTALL" == 1 ]]; then
            cmd_install
        else
            die "ClickHouse server not installed: run deploy/local/clickhouse.sh install (or set CLICKHOUSE_AUTO_INSTALL=1)" 2
        fi
    fi
    ensure_dirs "$HOME_DIR" "$RUN_DIR"
    take_lock "$RUN_DIR/clickhouse.lock"
    pid="$(running_pid "$PIDFILE" "$PROCESS_MARK")"
    if [[ -n "$pid" ]]; then
        running_tcp="$(running_port tcp_port)" running_http="$(running_port http_port)"
        info "ClickHouse already running (pid $pid) on 127.0.0.1:${running_tcp:-$TCP_PORT} (HTTP ${running_http:-$HTTP_PORT})"
        if [[ -n "$running_tcp" && ("$running_tcp" != "$TCP_PORT" || "$running_http" != "$HTTP_PORT") ]]; then
            warn "it listens on $running_tcp/$running_http, not on CLICKHOUSE_TCP_PORT=$TCP_PORT/CLICKHOUSE_HTTP_PORT=$HTTP_PORT: run '$0 stop' first to change the ports"
        fi
        return 0
    fi

    require_free_port CLICKHOUSE_TCP_PORT "$TCP_PORT" ClickHouse
    require_free_port CLICKHOUSE_HTTP_PORT "$HTTP_PORT" ClickHouse
    ensure_dirs "$CH_DIR" "$DATA_DIR" "$TMP_DIR" "$USER_FILES_DIR" "$FORMAT_SCHEMA_DIR" "$LOG_DIR"
    render_config
    [[ -f "$ERR_LOG" ]] && err_lines="$(wc -l <"$ERR_LOG")"

    rotate_log "$STDOUT_LOG"
    progress "Starting ClickHouse server on 127.0.0.1:$TCP_PORT (HTTP $HTTP_PORT)..."
    started_at="$SECONDS"
    # The server runs in the foreground; setsid + nohup let it outlive this script and a
    # Ctrl-C in the caller's terminal. 9>&- keeps the start/stop lock from being inherited.
    # It runs from its config folder so nothing lands in the caller's directory.
    (cd "$CH_DIR" && exec setsid nohup "$SERVER_BIN" --config-file="$CONFIG" \
        >>"$STDOUT_LOG" 2>&1 </dev/null 9>&-) &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    rc=0
    wait_until "$START_TIMEOUT" "$pid" server_ready || rc=$?
    case "$rc" in
        0)
            ok "ClickHouse $(server_version "$HTTP_PORT") ready on 127.0.0.1:$TCP_PORT (HTTP $HTTP_PORT, pid $pid, $((SECONDS - started_at))s)"
            ;;
        2)
            rm -f -- "$PIDFILE"
            print_start_errors "$err_lines"
            reason="$(start_error "$err_lines")"
            die "ClickHouse did not start: ${reason:-the server exited} (logs: $ERR_LOG, $STDOUT_LOG)"
            ;;
        *)
            print_start_errors "$err_lines"
            stop_pid ClickHouse "$pid" "$STOP_TIMEOUT" >&2
            rm -f -- "$PIDFILE"
            die "ClickHouse did not start: no answer on 127.0.0.1:$HTTP_PORT after ${START_TIMEOUT}s (raise CLICKHOUSE_START_TIMEOUT if the machine is slow; logs: $ERR_LOG)"
            ;;
    esac
}

cmd_stop() {
    local pid
    [[ -d "$RUN_DIR" ]] && take_lock "$RUN_DIR/clickhouse.lock"
    pid="$(running_pid "$PIDFILE" "$PROCESS_MARK")"
    if [[ -z "$pid" ]]; then
        info "ClickHouse not running"
        return 0
    fi
    stop_pid ClickHouse "$pid" "$STOP_TIMEOUT"
    rm -f -- "$PIDFILE"
}

cmd_status() {
    local pid tcp http version
    pid="$(running_pid "$PIDFILE" "$PROCESS_MARK")"
    if [[ -z "$pid" ]]; then
        if installed; then
            printf 'ClickHouse: %sstopped%s\n' "$TP_RED" "$TP_RESET"
        else
            printf 'ClickHouse: %sstopped%s (server not installed: run deploy/local/clickhouse.sh install)\n' "$TP_RED" "$TP_RESET"
        fi
        printf '  ports:    127.0.0.1:%s, HTTP %s (CLICKHOUSE_TCP_PORT, CLICKHOUSE_HTTP_PORT)\n' "$TCP_PORT" "$HTTP_PORT"
        printf '  version:  %s\n' "$(package_version)"
        printf '  data:     %s\n' "$DATA_DIR"
        return 3
    fi
    tcp="$(running_port tcp_port)" http="$(running_port http_port)"
    tcp="${tcp:-$TCP_PORT}" http="${http:-$HTTP_PORT}"
    version="$(server_version "$http")"
    if [[ -n "$version" ]]; then
        printf 'ClickHouse: %srunning%s (pid %s) on 127.0.0.1:%s (HTTP %s)\n' "$TP_GREEN" "$TP_RESET" "$pid" "$tcp" "$http"
    else
        printf 'ClickHouse: %srunning but not answering%s (pid %s) on 127.0.0.1:%s (HTTP %s): starting, or see %s\n' \
            "$TP_YELLOW" "$TP_RESET" "$pid" "$tcp" "$http" "$ERR_LOG"
    fi
    printf '  version:  %s\n' "${version:-$(package_version)}"
    printf '  data:     %s\n' "$DATA_DIR"
    printf '  log:      %s\n' "$SERVER_LOG"
    [[ -n "$version" ]] || return 4
}

cmd_reset() {
    cmd_stop
    if [[ -d "$DATA_DIR" || -d "$TMP_DIR" ]]; then
        rm -rf -- "$DATA_DIR" "$TMP_DIR"
        info "Deleted ClickHouse data in $DATA_DIR; the next start begins empty."
    else
        info "No ClickHouse data to delete in $DATA_DIR."
    fi
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        "" | -h | --help | help)
            usage
            return 0
            ;;
    esac
    shift
    load_settings
    case "$cmd" in
        install | start | stop | status | reset)
            (($# == 0)) || usage_error "'$cmd' takes no arguments, got: $*"
            "cmd_$cmd"
            ;;
        logs)
            (($# <= 1)) || usage_error "'logs' takes at most one option (-f)"
            [[ $# == 0 || "$1" == -f || "$1" == --follow ]] || usage_error "unknown option for logs: $1"
            show_logs "$@" "$SERVER_LOG" "$STDOUT_LOG"
            ;;
        *) usage_error "unknown command '$cmd' (expected install, start, stop, status, logs or reset)" ;;
    esac
}

main "$@"

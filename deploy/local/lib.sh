# shellcheck shell=bash
# Shared helpers for the local-services scripts (kafka.sh, clickhouse.sh, services.sh).
#
# Sourced, never run. It sets strict mode, resolves TOUCHPOINT_HOME and offers pid-file
# handling, port checks, a readiness wait loop and messages. Colours only on a terminal.

set -euo pipefail
# Bash 5.2 makes "&" in ${var//pattern/replacement} mean "the match"; templates may
# hold paths with "&", so keep the replacement literal.
shopt -u patsub_replacement 2>/dev/null || true

TP_LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
TP_REPO_DIR="$(cd "$TP_LOCAL_DIR/../.." && pwd -P)"

# ---------------------------------------------------------------------------- messages

# shellcheck disable=SC2034  # used by the scripts that source this file
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
    TP_GREEN=$'\e[32m' TP_RED=$'\e[31m' TP_YELLOW=$'\e[33m' TP_RESET=$'\e[0m'
else
    TP_GREEN='' TP_RED='' TP_YELLOW='' TP_RESET=''
fi
if [[ -t 2 && -z "${NO_COLOR:-}" ]]; then
    TP_ERR_RED=$'\e[31m' TP_ERR_YELLOW=$'\e[33m' TP_ERR_RESET=$'\e[0m'
else
    TP_ERR_RED='' TP_ERR_YELLOW='' TP_ERR_RESET=''
fi

info() { printf '%s\n' "$*"; }
# A message that wait_until's progress dots continue on a terminal (elsewhere, a line).
progress() {
    if [[ -t 1 ]]; then printf '%s' "$*"; else printf '%s\n' "$*"; fi
}
ok() { printf '%s%s%s\n' "$TP_GREEN" "$*" "$TP_RESET"; }
warn() { printf '%sWarning:%s %s\n' "$TP_ERR_YELLOW" "$TP_ERR_RESET" "$*" >&2; }
# Print "Error: ..." on stderr and exit; the exit code is the optional second argument.
die() {
    printf '%sError:%s %s\n' "$TP_ERR_RED" "$TP_ERR_RESET" "$1" >&2
    exit "${2:-1}"
}
usage_error() {
    printf 'Error: %s\n' "$1" >&2
    printf "Run '%s --help' for usage.\n" "$(basename "$0")" >&2
    exit 2
}

# ---------------------------------------------------------------------------- settings

# Absolute TOUCHPOINT_HOME: the variable if set (relative to the current directory),
# else <repo>/.touchpoint. The folder itself is created only by commands that write.
tp_home() {
    local home="${TOUCHPOINT_HOME:-$TP_REPO_DIR/.touchpoint}"
    [[ "$home" == /* ]] || home="$PWD/$home"
    # One spelling per folder: the path is part of the servers' command lines, which is
    # how a running server is recognised.
    if command -v realpath >/dev/null 2>&1; then
        home="$(realpath -m -- "$home")"
    else
        while [[ "$home" == */ && "$home" != / ]]; do home="${home%/}"; done
    fi
    printf '%s\n' "$home"
}

# Validate that variable $1 (value $2) is a TCP port; print it.
tp_port() {
    local name="$1" value="$2"
    if ! [[ "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
        die "$name must be a TCP port (1-65535), got '$value'" 2
    fi
    printf '%s\n' "$((10#$value))"
}

# Validate that variable $1 (value $2) is a whole number of seconds; print it.
tp_seconds() {
    local name="$1" value="$2"
    if ! [[ "$value" =~ ^[0-9]+$ ]] || ((value < 1)); then
        die "$name must be a whole number of seconds (1 or more), got '$value'" 2
    fi
    printf '%s\n' "$((10#$value))"
}

# Create folders owned by the user running the script. A server started from here runs
# as that user, and a folder left behind by another user (say, an earlier 'sudo') would
# make it fail later with a less clear message.
ensure_dirs() {
    local dir owner me
    me="$(id -u)"
    for dir in "$@"; do
        mkdir -p -- "$dir" || die "cannot create folder $dir"
        owner="$(stat -c %u -- "$dir")"
        if [[ "$owner" != "$me" ]]; then
            if [[ "$me" == 0 ]]; then
                chown -R "$me:$(id -g)" -- "$dir"
            else
                die "folder $dir belongs to uid $owner, not to you ($(id -un)): fix with 'sudo chown -R $(id -un) $dir' or use another TOUCHPOINT_HOME"
            fi
        fi
    done
}

# Copy template $1 to $2, replacing each @KEY@ by the value given as KEY=value arguments.
render_template() {
    local src="$1" dest="$2" text pair key value
    shift 2
    text="$(<"$src")"
    for pair in "$@"; do
        key="${pair%%=*}" value="${pair#*=}"
        text="${text//@"$key"@/"$value"}"
    done
    if [[ "$text" =~ @[A-Z_]+@ ]]; then
        die "template $src still has placeholder ${BASH_REMATCH[0]} after rendering"
    fi
    printf '%s\n' "$text" >"$dest.tmp"
    mv -f -- "$dest.tmp" "$dest"
}

# Escape a value for an XML text node.
xml_escape() {
    local s="$1"
    s="${s//&/&amp;}" s="${s//</&lt;}" s="${s//>/&gt;}"
    printf '%s\n' "$s"
}

# --------------------------------------------------------------------------- processes

# Is process $1 alive and is $2 part of its command line? Checking the command line
# keeps a recycled pid from being taken for our server (and from being signalled).
pid_matches() {
    local pid="$1" needle="$2" cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    else
        cmdline="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
    fi
    [[ "$cmdline" == *"$needle"* ]]
}

# Print the pid of our running server, or nothing. $1 is the pid file, $2 a string
# unique to our server's command line (its config path). A stale pid file is removed;
# a server found without a pid file (say, the run folder was deleted) is adopted.
running_pid() {
    local pidfile="$1" needle="$2" pid="" proc
    if [[ -f "$pidfile" ]]; then
        pid="$(<"$pidfile")"
        if pid_matches "$pid" "$needle"; then
            printf '%s\n' "$pid"
            return 0
        fi
        rm -f -- "$pidfile"
    fi
    if [[ -d /proc ]]; then
        for proc in /proc/[0-9]*; do
            pid="${proc#/proc/}"
            [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
            # Only servers (java, clickhouse) carry our config path as an argument.
            case "$(cat "$proc/comm" 2>/dev/null)" in
                java | clickhouse*) ;;
                *) continue ;;
            esac
            if pid_matches "$pid" "$needle"; then
                mkdir -p -- "$(dirname "$pidfile")"
                printf '%s\n' "$pid" >"$pidfile"
                printf '%s\n' "$pid"
                return 0
            fi
        done
    fi
    return 0
}

# Stop process $2 (display name $1): SIGTERM, wait up to $3 seconds, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" timeout="$3" waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    printf 'Stopping %s (pid %s)...' "$name" "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= timeout * 5)); then
            printf ' still running after %ss, sending SIGKILL.' "$timeout"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    printf ' stopped.\n'
}

# --------------------------------------------------------------------------------- ports

# Does something accept connections on 127.0.0.1:$1?
port_open() {
    timeout 2 bash -c ": >/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Describe what listens on port $1, best effort ("" when unknown).
port_owner() {
    local line
    command -v ss >/dev/null 2>&1 || return 0
    line="$(ss -ltnpH "sport = :$1" 2>/dev/null | head -n 1)" || return 0
    if [[ "$line" =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
        printf '%s pid %s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    fi
}

# Fail unless port $2 is free; $1 names the variable that sets it, $3 the service.
require_free_port() {
    local var="$1" port="$2" service="$3" owner
    if port_open "$port"; then
        owner="$(port_owner "$port")"
        die "cannot start $service: port $port on 127.0.0.1 is already in use${owner:+ (by $owner)}; stop that process or set $var to a free port" 1
    fi
}

# Poll until "$check" succeeds (return 0), process $pid dies (return 2) or $timeout
# seconds pass (return 1). On a terminal, prints a dot every few seconds after the
# message that progress() left open, and ends that line.
wait_until() {
    local timeout="$1" pid="$2" check="$3" start now last_dot
    start="$SECONDS" last_dot="$SECONDS"
    while true; do
        if "$check"; then
            [[ -t 1 ]] && printf '\n'
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            [[ -t 1 ]] && printf '\n'
            return 2
        fi
        now="$SECONDS"
        if ((now - start >= timeout)); then
            [[ -t 1 ]] && printf '\n'
            return 1
        fi
        if [[ -t 1 ]] && ((now - last_dot >= 3)); then
            printf '.'
            last_dot="$now"
        fi
        sleep 0.5
    done
}

# Take an exclusive lock for this service in $1 so two scripts (say, make and the CLI)
# never start or stop it at the same time. Held until the script exits; fd 9 must be
# closed for the server we launch (9>&-), or the server would hold the lock.
take_lock() {
    local lockfile="$1"
    command -v flock >/dev/null 2>&1 || return 0
    mkdir -p -- "$(dirname "$lockfile")"
    exec 9>"$lockfile"
    flock -w 180 9 || die "another command is still starting or stopping this service (lock $lockfile)"
}

# Move $1 to $1.1 (one previous copy kept), so each start has a log of its own.
rotate_log() {
    [[ -s "$1" ]] && mv -f -- "$1" "$1.1"
    return 0
}

# Show log files: the last lines, or follow them with -f/--follow.
show_logs() {
    local follow=0 lines="${LINES_TO_SHOW:-50}" existing=() f
    if [[ "${1:-}" == "-f" || "${1:-}" == "--follow" ]]; then
        follow=1
        shift
    fi
    for f in "$@"; do
        [[ -f "$f" ]] && existing+=("$f")
    done
    if ((${#existing[@]} == 0)); then
        info "No log yet (looked for: $*)."
        return 0
    fi
    if ((follow)); then
        exec tail -n "$lines" -F -- "${existing[@]}"
    fi
    tail -n "$lines" -- "${existing[@]}"
}

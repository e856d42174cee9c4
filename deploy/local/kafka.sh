#!/usr/bin/env bash
# Start, stop and inspect a local single-node Kafka broker (KRaft) for Touchpoint.
# Run with --help for usage.

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") COMMAND

Run a local single-node Apache Kafka broker (KRaft: broker and controller in one
process, loopback only). Jars come from Maven Central on first use; data and logs
live under \$TOUCHPOINT_HOME.

Commands:
  start         Fetch the jars if needed, format storage on first use, start the
                broker and wait until it serves. Does nothing if already running.
  stop          Stop the broker (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT).
  status        Show whether it runs. Exit 0 running, 3 stopped, 4 running but not
                answering on its port.
  logs [-f]     Show the end of the broker log (-f: follow it).
  reset         DESTRUCTIVE: stop the broker and delete all its data (topics,
                messages, consumer offsets). The next start formats fresh storage.

Environment:
  TOUCHPOINT_HOME        Data and logs folder (default: <repo>/.touchpoint)
  KAFKA_VERSION          Kafka version to fetch and run (default: $KAFKA_DEFAULT_VERSION)
  KAFKA_PORT             Broker port on 127.0.0.1 (default: 9092)
  KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1 (default: 9093)
  KAFKA_HEAP             Maximum Java heap, -Xmx (default: 1g)
  KAFKA_START_TIMEOUT    Seconds to wait for the broker to serve (default: 90)
  KAFKA_STOP_TIMEOUT     Seconds to wait for a clean shutdown (default: 30)
  JAVA_HOME              Java 17+ to use (default: java on PATH)

Files:
  \$TOUCHPOINT_HOME/kafka/lib/                jars (refetched when KAFKA_VERSION changes)
  \$TOUCHPOINT_HOME/kafka/data/               topic data and KRaft metadata
  \$TOUCHPOINT_HOME/kafka/server.properties   generated at each start from
                                             deploy/local/kafka/server.properties.in
  \$TOUCHPOINT_HOME/logs/kafka.log            broker log (previous start: kafka.log.1)
  \$TOUCHPOINT_HOME/run/kafka.pid             pid of the running broker
EOF
}

KAFKA_DEFAULT_VERSION=4.4.0
TEMPLATE_DIR="$TP_LOCAL_DIR/kafka"

load_settings() {
    HOME_DIR="$(tp_home)"
    VERSION="${KAFKA_VERSION:-$KAFKA_DEFAULT_VERSION}"
    [[ "$VERSION" =~ ^[0-9A-Za-z.+-]+$ ]] || die "KAFKA_VERSION '$VERSION' is not a version (e.g. $KAFKA_DEFAULT_VERSION)" 2
    PORT="$(tp_port KAFKA_PORT "${KAFKA_PORT:-9092}")"
    CONTROLLER_PORT="$(tp_port KAFKA_CONTROLLER_PORT "${KAFKA_CONTROLLER_PORT:-9093}")"
    ((PORT != CONTROLLER_PORT)) || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT are both $PORT; they must differ" 2
    HEAP="${KAFKA_HEAP:-1g}"
    [[ "$HEAP" =~ ^[0-9]+[kKmMgG]?$ ]] || die "KAFKA_HEAP must be a Java heap size such as 512m or 1g, got '$HEAP'" 2
    START_TIMEOUT="$(tp_seconds KAFKA_START_TIMEOUT "${KAFKA_START_TIMEOUT:-90}")"
    STOP_TIMEOUT="$(tp_seconds KAFKA_STOP_TIMEOUT "${KAFKA_STOP_TIMEOUT:-30}")"

    KAFKA_DIR="$HOME_DIR/kafka"
    LIB_DIR="$KAFKA_DIR/lib"
    LIB_STAMP="$KAFKA_DIR/lib.stamp"
    DATA_DIR="$KAFKA_DIR/data"
    CONFIG="$KAFKA_DIR/server.properties"
    LOG_DIR="$HOME_DIR/logs"
    LOG="$LOG_DIR/kafka.log"
    RUN_DIR="$HOME_DIR/run"
    PIDFILE="$RUN_DIR/kafka.pid"
    # Part of the broker's command line only when it runs from this TOUCHPOINT_HOME.
    PROCESS_MARK="kafka.Kafka $CONFIG"
}

java_bin() {
    if [[ -n "${JAVA_HOME:-}" ]]; then
        [[ -x "$JAVA_HOME/bin/java" ]] || die "JAVA_HOME is $JAVA_HOME but $JAVA_HOME/bin/java does not exist"
        printf '%s\n' "$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        command -v java
    else
        die "Java 17 or newer is required to run Kafka: install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    fi
}

check_java() {
    local first major
    JAVA="$(java_bin)"
    first="$("$JAVA" -version 2>&1 | head -n 1)"
    if [[ "$first" =~ \"([0-9]+)(\.([0-9]+))? ]]; then
        major="${BASH_REMATCH[1]}"
        [[ "$major" == 1 ]] && major="${BASH_REMATCH[3]}"
        ((major >= 17)) || die "Kafka $VERSION needs Java 17 or newer, but $JAVA is Java $major: install a newer JDK or set JAVA_HOME"
    fi
}

# The stamp names the version and the pom it was resolved from, so changing either
# refetches.
wanted_stamp() {
    printf 'kafka.version=%s pom=%s\n' "$VERSION" "$(cksum <"$TEMPLATE_DIR/pom.xml" | cut -d' ' -f1)"
}

installed_version() {
    if [[ -f "$LIB_STAMP" ]]; then
        sed -n 's/^kafka\.version=\([^ ]*\).*/\1/p' "$LIB_STAMP"
    fi
}

fetch_jars() {
    local wanted tmp fetch_log
    wanted="$(wanted_stamp)"
    if [[ -d "$LIB_DIR" && -f "$LIB_STAMP" && "$(<"$LIB_STAMP")" == "$wanted" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed once to fetch the Kafka jars: install it (Debian: apt-get install maven)"
    if [[ -d "$LIB_DIR" ]]; then
        info "Fetching Kafka $VERSION jars from Maven Central (version or pom changed)..."
    else
        info "Fetching Kafka $VERSION jars from Maven Central (first run only)..."
    fi
    tmp="$KAFKA_DIR/lib.fetching"
    fetch_log="$LOG_DIR/kafka-fetch.log"
    rm -rf -- "$tmp"
    # Into a side folder first: an interrupted fetch never leaves a half lib/ behind.
    if ! mvn -q -B -Dstyle.color=never -f "$TEMPLATE_DIR/pom.xml" \
        -Dkafka.version="$VERSION" \
        dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$fetch_log" 2>&1; then
        # Maven's first error block says what went wrong; the rest is its generic advice.
        # (-q still prints colour resets, hence the sed.)
        sed 's/\x1b\[[0-9;]*m//g' "$fetch_log" | awk '/^\[ERROR\] *$/ { exit } NF' | tail -n 20 >&2 || true
        rm -rf -- "$tmp"
        die "could not fetch Kafka $VERSION jars with Maven (full output: $fetch_log); check KAFKA_VERSION and that Maven Central is reachable"
    fi
    [[ -n "$(compgen -G "$tmp/kafka_2.13-*.jar")" ]] || die "Maven finished but no kafka_2.13 jar is in $tmp (see $fetch_log)"
    rm -rf -- "$LIB_DIR"
    mv -- "$tmp" "$LIB_DIR"
    printf '%s\n' "$wanted" >"$LIB_STAMP"
}

kafka_java() {
    "$JAVA" -cp "$LIB_DIR/*" "$@"
}

format_storage() {
    local cluster_id out
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka-format.log")" ||
        die "could not create a Kafka cluster id (see $LOG_DIR/kafka-format.log)"
    info "Formatting Kafka storage in $DATA_DIR (cluster id $cluster_id)..."
    if ! out="$(kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" --standalone 2>&1)"; then
        printf '%s\n' "$out" >>"$LOG_DIR/kafka-format.log"
        printf '%s\n' "$out" | tail -n 30 >&2
        die "could not format Kafka storage in $DATA_DIR (see $LOG_DIR/kafka-format.log)"
    fi
    printf '%s\n' "$out" >>"$LOG_DIR/kafka-format.log"
}

# 256 MiB to start with, or all of KAFKA_HEAP when that is smaller (the JVM refuses an
# initial heap above the maximum).
initial_heap() {
    local n="${HEAP%[kKmMgG]}" unit="${HEAP##*[0-9]}" mib
    case "$unit" in
        k | K) mib=$((n / 1024)) ;;
        m | M) mib=$n ;;
        g | G) mib=$((n * 1024)) ;;
        *) mib=$((n / 1048576)) ;;
    esac
    if ((mib >= 256)); then echo 256m; else echo "$HEAP"; fi
}

# Ready when this start logged "Kafka Server started" (the log is rotated at each start)
# and the broker port accepts connections.
broker_ready() {
    grep -q 'Kafka Server started' "$LOG" 2>/dev/null && port_open "$PORT"
}

# Port the running broker was started with (from the generated config).
running_port() {
    sed -n 's|^advertised\.listeners=PLAINTEXT://[^:]*:\([0-9]*\).*|\1|p' "$CONFIG" 2>/dev/null
}

cmd_start() {
    local pid started_at rc running_on reason
    ensure_dirs "$HOME_DIR" "$RUN_DIR"
    take_lock "$RUN_DIR/kafka.lock"
    pid="$(running_pid "$PIDFILE" "$PROCESS_MARK")"
    if [[ -n "$pid" ]]; then
        running_on="$(running_port)"
        info "Kafka already running (pid $pid) on 127.0.0.1:${running_on:-$PORT}"
        if [[ -n "$running_on" && "$running_on" != "$PORT" ]]; then
            warn "it listens on $running_on, not on KAFKA_PORT=$PORT: run '$0 stop' first to change the port"
        fi
        return 0
    fi

    check_java
    require_free_port KAFKA_PORT "$PORT" Kafka
    require_free_port KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT" Kafka
    ensure_dirs "$HOME_DIR" "$KAFKA_DIR" "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
    fetch_jars
    render_template "$TEMPLATE_DIR/server.properties.in" "$CONFIG" \
        PORT="$PORT" CONTROLLER_PORT="$CONTROLLER_PORT" DATA_DIR="$DATA_DIR"
    format_storage

    rotate_log "$LOG"
    progress "Starting Kafka $VERSION on 127.0.0.1:$PORT..."
    started_at="$SECONDS"
    # setsid + nohup: the broker outlives this script and a Ctrl-C in the caller's
    # terminal. 9>&- keeps the start/stop lock from being inherited.
    setsid nohup "$JAVA" -Xms"$(initial_heap)" -Xmx"$HEAP" \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$TEMPLATE_DIR/log4j2.yaml" \
        -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG" \
        >>"$LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    rc=0
    wait_until "$START_TIMEOUT" "$pid" broker_ready || rc=$?
    case "$rc" in
        0)
            ok "Kafka $VERSION ready on 127.0.0.1:$PORT (pid $pid, $((SECONDS - started_at))s)"
            ;;
        2)
            rm -f -- "$PIDFILE"
            print_log_tail
            reason="$(grep -E ' (ERROR|FATAL) |^Error' "$LOG" 2>/dev/null | tail -n 1 | cut -c 1-400 || true)"
            die "Kafka did not start: ${reason:-the process exited} (log: $LOG)"
            ;;
        *)
            print_log_tail
            stop_pid Kafka "$pid" "$STOP_TIMEOUT" >&2
            rm -f -- "$PIDFILE"
            die "Kafka did not start: not serving on 127.0.0.1:$PORT after ${START_TIMEOUT}s (raise KAFKA_START_TIMEOUT if the machine is slow; log: $LOG)"
            ;;
    esac
}

print_log_tail() {
    {
        printf -- '--- last 30 lines of %s ---\n' "$LOG"
        tail -n 30 -- "$LOG" 2>/dev/null || true
        printf -- '---\n'
    } >&2
}

cmd_stop() {
    local pid
    [[ -d "$RUN_DIR" ]] && take_lock "$RUN_DIR/kafka.lock"
    pid="$(running_pid "$PIDFILE" "$PROCESS_MARK")"
    if [[ -z "$pid" ]]; then
        info "Kafka not running"
        return 0
    fi
    stop_pid Kafka "$pid" "$STOP_TIMEOUT"
    rm -f -- "$PIDFILE"
}

cmd_status() {
    local pid port version
    pid="$(running_pid "$PIDFILE" "$PROCESS_MARK")"
    version="$(installed_version)"
    if [[ -z "$pid" ]]; then
        printf 'Kafka: %sstopped%s\n' "$TP_RED" "$TP_RESET"
        printf '  port:     127.0.0.1:%s (KAFKA_PORT)\n' "$PORT"
        printf '  version:  %s\n' "${version:-$VERSION (not fetched yet)}"
        printf '  data:     %s\n' "$DATA_DIR"
        return 3
    fi
    port="$(running_port)"
    port="${port:-$PORT}"
    if port_open "$port"; then
        printf 'Kafka: %srunning%s (pid %s) on 127.0.0.1:%s\n' "$TP_GREEN" "$TP_RESET" "$pid" "$port"
    else
        printf 'Kafka: %srunning but not answering%s (pid %s) on 127.0.0.1:%s: starting, or see %s\n' \
            "$TP_YELLOW" "$TP_RESET" "$pid" "$port" "$LOG"
    fi
    printf '  version:  %s\n' "${version:-unknown}"
    printf '  data:     %s\n' "$DATA_DIR"
    printf '  log:      %s\n' "$LOG"
    port_open "$port" || return 4
}

cmd_reset() {
    cmd_stop
    if [[ -d "$DATA_DIR" ]]; then
        rm -rf -- "$DATA_DIR"
        info "Deleted Kafka data in $DATA_DIR; the next start formats fresh storage."
    else
        info "No Kafka data to delete in $DATA_DIR."
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
        start | stop | status | reset)
            (($# == 0)) || usage_error "'$cmd' takes no arguments, got: $*"
            "cmd_$cmd"
            ;;
        logs)
            (($# <= 1)) || usage_error "'logs' takes at most one option (-f)"
            [[ $# == 0 || "$1" == -f || "$1" == --follow ]] || usage_error "unknown option for logs: $1"
            show_logs "$@" "$LOG"
            ;;
        *) usage_error "unknown command '$cmd' (expected start, stop, status, logs or reset)" ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# Start, stop and inspect Touchpoint's local services (Kafka, ClickHouse) together.
# Run with --help for usage.

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: $(basename "$0") start|stop|status [kafka|clickhouse|all]

Manage Touchpoint's local services together; each one is also run by its own script
(kafka.sh, clickhouse.sh in this folder), which has more commands (logs, reset).

With 'all' (the default) the services are those named in TOUCHPOINT_SERVICES, or
else Kafka and, when its server is installed, ClickHouse: a ClickHouse server that
is not installed is skipped with a note. A service named explicitly (as argument or
in TOUCHPOINT_SERVICES) is required: if it cannot start, the command fails.

Commands:
  start    Start the services (each does nothing if already running).
  stop     Stop the services.
  status   Show each service. Exit 0 when all are running, else the first
           non-zero status (3: stopped).

Environment:
  TOUCHPOINT_SERVICES   Services meant by 'all', comma- or space-separated
                        (default: kafka,clickhouse)
  TOUCHPOINT_HOME       Data and logs folder (default: <repo>/.touchpoint)
  Each service's own variables (KAFKA_PORT, CLICKHOUSE_TCP_PORT, ...): see
  kafka.sh --help and clickhouse.sh --help.
EOF
}

KNOWN_SERVICES=(kafka clickhouse)

# Print the services to manage, one per line, and whether they were named explicitly.
select_services() {
    local target="$1" list name known
    if [[ "$target" != all ]]; then
        printf '%s explicit\n' "$target"
        return 0
    fi
    if [[ -z "${TOUCHPOINT_SERVICES:-}" ]]; then
        printf '%s\n' "kafka explicit" "clickhouse optional"
        return 0
    fi
    list="${TOUCHPOINT_SERVICES//,/ }"
    for name in $list; do
        for known in "${KNOWN_SERVICES[@]}"; do
            if [[ "$name" == "$known" ]]; then
                printf '%s explicit\n' "$name"
                continue 2
            fi
        done
        die "TOUCHPOINT_SERVICES names unknown service '$name' (known: ${KNOWN_SERVICES[*]})" 2
    done
}

clickhouse_installed() {
    [[ -x "${CLICKHOUSE_SERVER_BIN:-/usr/sbin/clickhouse-server}" ]]
}

run_service() {
    local name="$1" command="$2"
    "$TP_LOCAL_DIR/$name.sh" "$command" </dev/null
}

main() {
    local command="${1:-}" target="${2:-all}" name mode rc=0 status_rc services entry
    local -a entries
    case "$command" in
        "" | -h | --help | help)
            usage
            return 0
            ;;
        start | stop | status) ;;
        *) usage_error "unknown command '$command' (expected start, stop or status)" ;;
    esac
    (($# <= 2)) || usage_error "too many arguments: $*"
    case "$target" in
        kafka | clickhouse | all) ;;
        *) usage_error "unknown service '$target' (expected kafka, clickhouse or all)" ;;
    esac

    services="$(select_services "$target")"
    mapfile -t entries <<<"$services"
    for entry in "${entries[@]}"; do
        read -r name mode <<<"$entry"
        [[ -n "$name" ]] || continue
        if [[ "$command" != stop && "$name" == clickhouse && "$mode" == optional ]] &&
            ! clickhouse_installed && [[ "${CLICKHOUSE_AUTO_INSTALL:-0}" != 1 ]]; then
            info "ClickHouse: skipped (server not installed; to use it: deploy/local/clickhouse.sh install)"
            continue
        fi
        case "$command" in
            start | stop)
                # set -e: the first service that fails to start or stop ends the run.
                run_service "$name" "$command"
                ;;
            status)
                status_rc=0
                run_service "$name" status || status_rc=$?
                ((rc != 0 || status_rc == 0)) || rc="$status_rc"
                ;;
        esac
    done
    return "$rc"
}

main "$@"

#!/usr/bin/env bash
# Run the live test files while busy-loop processes occupy the CPU cores.
#
# The live tests drive the loopback exchange's clock in lockstep with the client (it moves to
# the next candle close only when the client has seen every closed candle and waits), so they
# must pass however slow the machine is. This script proves it: it starts BUSY processes that
# spin (default: one per core, 2 here), runs the live tests beside them, stops the spinners by
# their process ids whatever happens, and prints pytest's summary and the wall time.
#
# Usage: benchmarks/stress_live_tests.sh [-n BUSY] [-r ROUNDS] [pytest args or test files...]
#   -n BUSY    busy-loop processes (default: the number of cores)
#   -r ROUNDS  run the tests this many times in a row (default 1)
# Exit status: 0 when every round passed, else the first failing pytest status.
set -euo pipefail
cd "$(dirname "$0")/.."

busy=$(nproc)
rounds=1
while getopts "n:r:" opt; do
    case $opt in
        n) busy=$OPTARG ;;
        r) rounds=$OPTARG ;;
        *) echo "usage: $0 [-n BUSY] [-r ROUNDS] [pytest args...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    set -- tests/integration/test_live_feed.py tests/integration/test_live_broker.py \
        tests/integration/test_live_cli.py tests/integration/test_live_model_ops.py \
        tests/integration/test_live_sentiment.py tests/integration/test_live_store.py \
        tests/integration/test_binance_server.py
fi

spinners=()
stop_spinners() {
    for pid in "${spinners[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${spinners[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_spinners EXIT INT TERM

for _ in $(seq 1 "$busy"); do
    python3 -c "while True: pass" &
    spinners+=("$!")
done
echo "stress: ${#spinners[@]} busy-loop process(es) (pids ${spinners[*]}) on $(nproc) core(s)"

status=0
for round in $(seq 1 "$rounds"); do
    started=$(date +%s)
    set +e
    PYTHONPATH=$PWD python3 -m pytest -q -p no:benchmark -p no:cacheprovider "$@"
    rc=$?
    set -e
    echo "stress: round $round/$rounds: pytest exit $rc after $(($(date +%s) - started)) s"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
    fi
done
exit "$status"

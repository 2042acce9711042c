#!/usr/bin/env bash
# Autobahn|Testsuite cases (run by kosoku, a runner of the Autobahn case files) against
# aleph_tx's WebSocket server (echo, compression off and on, limits raised to
# 64 MiB for the 9.x size cases) and its client (fuzzing-server mode).
#
#   bench/ws_conformance.sh [OUTDIR]        # default OUTDIR: $TMPDIR/aleph_tx_ws_conformance
#
# Environment: PYTHON (default: python3, or /work/venv/bin/python if present),
# KOSOKU (default: kosoku on PATH, or next to PYTHON), CASES (kosoku -i glob,
# default every case), PARALLEL (default 2). Prints one summary line per run and
# exits non-zero if any case FAILED. Needs `pip install kosoku`.
# The compressed runs (12.x/13.x) take several minutes on 2 cores.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
OUT="${1:-${TMPDIR:-/tmp}/aleph_tx_ws_conformance}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /work/venv/bin/python ]]; then PYTHON=/work/venv/bin/python; else PYTHON=python3; fi
fi
KOSOKU="${KOSOKU:-$(command -v kosoku || echo "$(dirname "$PYTHON")/kosoku")}"
PARALLEL="${PARALLEL:-2}"
CASES="${CASES:-*}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

summarize() {  # summarize NAME DIR
    "$PYTHON" - "$1" "$2" <<'EOF'
import collections, glob, json, sys
name, folder = sys.argv[1], sys.argv[2]
counts = collections.Counter()
failed = []
for path in glob.glob(f"{folder}/*case*.json"):
    with open(path) as f:
        case = json.load(f)
    counts[case["behavior"]] += 1
    if case["behavior"] == "FAILED" or case.get("behaviorClose") == "FAILED":
        failed.append(case.get("id"))
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
line = ", ".join(f"{counts.get(k, 0)} {k}" for k in order)
print(f"{name}: {sum(counts.values())} cases: {line}" + (f" -- failed: {sorted(failed)}" if failed else ""))
sys.exit(1 if failed or not counts else 0)
EOF
}

start_echo() {  # start_echo FLAGS... ; sets PORT
    local log="$OUT/server.log"
    "$PYTHON" "$HERE/ws_echo_server.py" aleph 0 --big "$@" >"$log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        PORT="$(awk '/^PORT/{print $2}' "$log")"
        [[ -n "$PORT" ]] && return 0
        sleep 0.2
    done
    echo "the echo server did not start" >&2
    return 1
}

status=0
for mode in plain compression; do
    flags=()
    [[ $mode == compression ]] && flags=(--compression)
    start_echo "${flags[@]}"
    timeout 1800 "$KOSOKU" -m fuzzingclient -p "$PARALLEL" -i "$CASES" -o "$OUT/server-$mode" "127.0.0.1:$PORT" \
        >"$OUT/server-$mode.log" 2>&1 || true
    kill "${PIDS[-1]}" 2>/dev/null || true
    summarize "server ($mode)" "$OUT/server-$mode" || status=1
done

for mode in plain compression; do
    flags=()
    [[ $mode == compression ]] && flags=(--compression)
    port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    timeout 1800 "$KOSOKU" -m fuzzingserver -i "$CASES" -o "$OUT/client-$mode" "127.0.0.1:$port" \
        >"$OUT/client-$mode.log" 2>&1 &
    PIDS+=($!)
    sleep 1
    timeout 1800 "$PYTHON" "$HERE/ws_fuzz_client.py" "127.0.0.1:$port" "${flags[@]}" >"$OUT/client-$mode.driver.log" 2>&1 || true
    wait "${PIDS[-1]}" 2>/dev/null || true
    summarize "client ($mode)" "$OUT/client-$mode" || status=1
done
exit $status

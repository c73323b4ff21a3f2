#!/usr/bin/env bash
# Benchmark: how much `taskspy gil` sampling (100 Hz and 1000 Hz) slows a CPU-bound CPython 3.14
# process. Run by hand (root, or CAP_SYS_PTRACE), not in CI; takes ~2 minutes with the defaults:
#
#   bash benches/gil_overhead.sh                 # Markdown to stdout, progress to stderr
#   bash benches/gil_overhead.sh --write         # also replace the "gil" section of docs/benchmarks.md
#   bash benches/gil_overhead.sh --rounds 10 --phase 5
#
# Environment: TASKSPY_BIN (skip the build, use this binary), TASKSPY_CACHE (see scripts/provision.sh).
# Every other option is passed to benches/gil_overhead.py (see `python3 benches/gil_overhead.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/provision.sh >&2
CACHE=${TASKSPY_CACHE:-$HOME/.cache/taskspy}
TSV=$CACHE/interpreters.tsv
PY=$(awk -F'\t' '$4 == "debian" && $2 ~ /^3\.14\./ { print $3; exit }' "$TSV")
[[ -n $PY && -x $PY ]] || { echo "gil_overhead.sh: no CPython 3.14 in $TSV" >&2; exit 1; }
command -v taskset >/dev/null || { echo "gil_overhead.sh: taskset (util-linux) is needed" >&2; exit 1; }

if [[ -n ${TASKSPY_BIN:-} ]]; then
    BIN=$TASKSPY_BIN
else
    cargo build --release --quiet >&2
    BIN=target/release/taskspy
fi
# Measure a private copy: other people rebuilding target/ during the run cannot swap the binary.
WORK=$(mktemp -d /tmp/taskspy-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cp "$BIN" "$WORK/taskspy"

"$PY" benches/gil_overhead.py --python "$PY" --taskspy "$WORK/taskspy" \
    --command "bash benches/gil_overhead.sh${*:+ $*}" "$@"

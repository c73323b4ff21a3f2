#!/usr/bin/env bash
# Benchmark: taskspy vs CPython's `python3.14 -m asyncio pstree` vs py-spy on 1k/10k/100k parked
# asyncio tasks (CPython 3.14). Run by hand (root, or CAP_SYS_PTRACE), not in CI:
#
#   bash benches/tasks.sh                 # Markdown to stdout, progress to stderr
#   bash benches/tasks.sh --write         # also replace the "tasks" section of docs/benchmarks.md
#   bash benches/tasks.sh --runs 3 --sizes 1000,10000
#   bash benches/tasks.sh --ft --write    # the same on the free-threaded 3.14t (section tasks-ft)
#
# Environment: TASKSPY_BIN (skip the build, use this binary), TASKSPY_CACHE (see scripts/provision.sh).
# Every other option is passed to benches/tasks.py (see `python3 benches/tasks.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/provision.sh >&2
CACHE=${TASKSPY_CACHE:-$HOME/.cache/taskspy}
TSV=$CACHE/interpreters.tsv
SECTION=tasks
FLAG=
if [[ ${1:-} == --ft ]]; then
    shift
    SECTION=tasks-ft
    FLAG=" --ft"
    PY=$(awk -F'\t' '$4 == "freethreaded" && $5 == "-" { print $3; exit }' "$TSV")
    [[ -n $PY && -x $PY ]] || { echo "tasks.sh: no free-threaded CPython in $TSV (scripts/provision.sh builds one)" >&2; exit 1; }
else
    PY=$(awk -F'\t' '$4 == "debian" && $2 ~ /^3\.14\./ { print $3; exit }' "$TSV")
    [[ -n $PY && -x $PY ]] || { echo "tasks.sh: no CPython 3.14 in $TSV" >&2; exit 1; }
fi
PYSPY=$CACHE/venv-tools/bin/py-spy
PYSPY_ARGS=()
if [[ -x $PYSPY ]]; then PYSPY_ARGS=(--py-spy "$PYSPY"); else echo "tasks.sh: py-spy missing, skipped" >&2; fi

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

[[ $SECTION == tasks ]] || PYSPY_ARGS=()   # py-spy cannot read free-threaded builds
"$PY" benches/tasks.py --python "$PY" --taskspy "$WORK/taskspy" "${PYSPY_ARGS[@]}" --section "$SECTION" \
    --command "bash benches/tasks.sh$FLAG${*:+ $*}" "$@"

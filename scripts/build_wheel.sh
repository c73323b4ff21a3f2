#!/usr/bin/env bash
# Build the Python wheel that carries the `taskspy` binary (maturin, bindings = "bin") into
# target/wheels/ and print its path as the last line of stdout.
#
# Idempotent: when a wheel for the current Cargo.toml version exists and is newer than every input
# (Cargo.toml, Cargo.lock, pyproject.toml, README.md, build.rs, src/, python_layouts/, the demo
# fixture), nothing is built. Uses cargo's normal target/ directory, so a previous
# `cargo build --release` is reused. No network beyond what cargo needs for missing crates.
#
# Environment:
#   MATURIN         maturin to use (default: the one scripts/provision.sh installs, else PATH)
#   TASKSPY_CACHE   provision cache root (default ~/.cache/taskspy)
#   FORCE=1         rebuild even when the wheel is up to date
#
# Exit status: 0 built or up to date; 3 maturin not found (callers may treat as "skip"); other
# non-zero: the build failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
log() { echo "build_wheel: $*" >&2; }

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE=${TASKSPY_CACHE:-$HOME/.cache/taskspy}
if [[ -z ${MATURIN:-} ]]; then
    if [[ -x $CACHE/venv-tools/bin/maturin ]]; then
        MATURIN=$CACHE/venv-tools/bin/maturin
    else
        MATURIN=$(command -v maturin || true)
    fi
fi
if [[ -z $MATURIN ]] || ! "$MATURIN" --version >/dev/null 2>&1; then
    log "maturin not found (run scripts/provision.sh, or set MATURIN=/path/to/maturin)"
    exit 3
fi

# The version is defined in Cargo.toml only ([package] version); maturin reads it from there too.
VERSION=$(sed -n '/^\[package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' Cargo.toml | head -n1)
[[ -n $VERSION ]] || { log "cannot read [package] version from Cargo.toml"; exit 1; }

WHEELS=$ROOT/target/wheels
mkdir -p "$WHEELS"
# One build at a time (parallel test runs share target/).
exec 9>>"$WHEELS/.build.lock"
flock 9

newest_wheel() {
    ls -t "$WHEELS"/taskspy-"$VERSION"-py3-none-*.whl 2>/dev/null | head -n1 || true
}

inputs=(Cargo.toml Cargo.lock pyproject.toml README.md build.rs src python_layouts fixtures/asyncio_service.py)
wheel=$(newest_wheel)
if [[ -n $wheel && ${FORCE:-} != 1 ]]; then
    changed=$(find "${inputs[@]}" -newer "$wheel" -print -quit 2>/dev/null || true)
    if [[ -z $changed ]]; then
        log "up to date: $wheel"
        echo "$wheel"
        exit 0
    fi
    log "rebuilding: $changed is newer than $(basename "$wheel")"
fi

# Old taskspy wheels would make "the wheel" ambiguous.
rm -f "$WHEELS"/taskspy-*.whl
start=$(date +%s)
log "$("$MATURIN" --version): building (release)"
"$MATURIN" build --release --manifest-path "$ROOT/Cargo.toml" --out "$WHEELS" >&2
wheel=$(newest_wheel)
[[ -n $wheel ]] || { log "maturin finished but no taskspy-$VERSION wheel is in $WHEELS"; exit 1; }
log "built $(basename "$wheel") in $(( $(date +%s) - start )) s"
echo "$wheel"

#!/usr/bin/env bash
# The whole test suite, as the README and .ci/run call it: provision interpreters and tools
# (idempotent, cached under ${TASKSPY_CACHE:-~/.cache/taskspy}), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision.sh
rm -f target/taskspy-coverage*.txt
cargo test --workspace --all-targets 2>&1
echo
echo "== interpreter coverage =="
cat target/taskspy-coverage*.txt 2>/dev/null || echo "coverage: no integration coverage file was written"

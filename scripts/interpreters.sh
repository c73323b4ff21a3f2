#!/usr/bin/env bash
# Print where scripts/provision.sh put its results, for tests and humans:
#   interpreters.sh            path of interpreters.tsv (label, version, python, kind, extra env or "-")
#   interpreters.sh --py-spy   path of the py-spy binary (comparison oracle)
#   interpreters.sh --cache    the cache root
# Exit status 1 when the requested file does not exist (run scripts/provision.sh first).
set -euo pipefail
CACHE=${TASKSPY_CACHE:-$HOME/.cache/taskspy}
case ${1:-} in
    "") path=$CACHE/interpreters.tsv ;;
    --py-spy) path=$CACHE/venv-tools/bin/py-spy ;;
    --cache) path=$CACHE ;;
    *) echo "usage: $0 [--py-spy|--cache]" >&2; exit 2 ;;
esac
echo "$path"
[[ -e $path ]]

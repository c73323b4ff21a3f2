#!/usr/bin/env bash
# Run a command the way a container runs it: new PID and mount namespaces and its own root
# filesystem (a tmpfs assembled from bind mounts), so the target's paths and thread ids differ
# from the host's. Used by tests/workers.rs; needs root (unshare, mount, chroot).
#
#   container.sh --bind SRC:DST ... --link NAME:TARGET ... -- CMD ARGS...
#
# DST and NAME are paths inside the new root. The command becomes PID 1 of the new namespace.
set -euo pipefail
binds=() links=()
while (($#)); do
    case $1 in
        --bind) binds+=("$2"); shift 2 ;;
        --link) links+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "container.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
(($#)) || { echo "container.sh: no command" >&2; exit 2; }
ctr=$(mktemp -d /tmp/taskspy-ctr.XXXXXX)
export CTR=$ctr
# Everything below happens in the new mount namespace: the host never sees these mounts, and
# they vanish with the namespace (the empty directory is left for the caller to remove).
exec unshare --pid --mount --fork --propagation private bash -c '
    set -euo pipefail
    mount -t tmpfs -o mode=755 taskspy-ctr "$CTR"
    n=$1; shift
    for ((i = 0; i < n; i++)); do
        spec=$1; shift
        src=${spec%%:*} dst=$CTR${spec#*:}
        if [[ -d $src ]]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; : >"$dst"; fi
        mount --rbind "$src" "$dst"
    done
    n=$1; shift
    for ((i = 0; i < n; i++)); do
        spec=$1; shift
        ln -s "${spec#*:}" "$CTR${spec%%:*}"
    done
    mkdir -p "$CTR/proc" "$CTR/tmp" "$CTR/dev"
    mount -t proc proc "$CTR/proc"
    for d in null zero urandom random; do : >"$CTR/dev/$d"; mount --bind "/dev/$d" "$CTR/dev/$d"; done
    exec chroot "$CTR" "$@"
' container "${#binds[@]}" "${binds[@]}" "${#links[@]}" "${links[@]}" "$@"

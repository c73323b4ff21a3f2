#!/usr/bin/env bash
# Provision every interpreter and tool the taskspy test suite needs (Debian 12 / bookworm, x86_64, root).
#
# Idempotent and cached under ${TASKSPY_CACHE:-$HOME/.cache/taskspy}; a rerun with a complete cache
# does no network access and takes well under 2 s. Steps:
#   1. apt: patchelf, tmux, gcc, gdb (gcore), zstd, lz4, time, prometheus (+ promtool), curl
#      (installed only when missing).
#   2. pyenv interpreters already on the machine ($(pyenv root)/versions, else ~/.pyenv/versions).
#   3. Debian unstable CPython 3.13/3.14/3.15 from binary .debs, via a private apt configuration
#      (the archive address is read from this machine's apt sources, never hard-coded), unpacked
#      with `dpkg -x` into one private root per version: $CACHE/debian/3.X/root. The interpreter
#      is patched (patchelf) to use the root's own loader and libraries, so it runs directly
#      (/proc/PID/exe is the python binary) with no environment variables.
#   4. py-spy (comparison oracle), maturin and jsonschema (validates docs/snapshot.schema.json
#      in the tests) in a venv: $CACHE/venv-tools.
#   4b. gunicorn + uvicorn (worker-tree tests) per minor version: $CACHE/servers/3.X.
#   3b. free-threaded python3.14t built from ../shared/cpython/Python-3.14.7.tar.xz (or
#      $TASKSPY_CPYTHON_SRC) when present: $CACHE/ft/<sha>/prefix (skip with TASKSPY_NO_FT=1).
#   5. $CACHE/interpreters.tsv: label, version, python path, kind, extra env ("-" = none).
#
# Environment:
#   TASKSPY_CACHE          cache root (default ~/.cache/taskspy)
#   TASKSPY_REFRESH=1      re-download Debian unstable interpreters (newer versions) and re-check tools
#   TASKSPY_NO_DEBIAN=1    skip step 3
#   TASKSPY_DEBIAN_MIRROR  Debian archive URI to use instead of the one in the apt sources
#
# Exit status: 0 also when optional parts are skipped (Debian unstable or py-spy unreachable:
# a "provision: SKIP ..." line says why, and tests skip). Non-zero only for broken states:
# the cache is not writable, or no interpreter at all was found.
set -euo pipefail

START_NS=$(date +%s%N)
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE=${TASKSPY_CACHE:-$HOME/.cache/taskspy}
DEB_DIR=$CACHE/debian
TSV=$CACHE/interpreters.tsv
ARCH=x86_64-linux-gnu
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Bump when the Debian recipe (package set, patching) changes: existing roots are rebuilt.
DEB_RECIPE=1
DEB_MINORS=(13 14 15)
DEB_PER_VERSION=(python3.@-minimal libpython3.@-minimal libpython3.@-stdlib libpython3.@-dev python3.@-venv)
DEB_SHARED=(libc6 libgcc-s1 zlib1g libexpat1 libzstd1 libffi8 libssl3t64 python3-pip-whl python3-setuptools-whl
    # Libraries the stdlib's extension modules link against (_bz2, _lzma, _sqlite3, readline, _curses,
    # _uuid, _dbm): without them the host's (older) copies would be used, or none.
    libbz2-1.0 liblzma5 libsqlite3-0 libreadline8t64 libncursesw6 libtinfo6 libuuid1 libdb5.3t64 libmpdec4)

log() { echo "provision: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { echo $(( ($(date +%s%N) - START_NS) / 1000000 )); }

mkdir -p "$CACHE" || die "cannot create cache directory $CACHE"
[[ -w $CACHE ]] || die "cache directory $CACHE is not writable"
CACHE=$(cd "$CACHE" && pwd -P)
DEB_DIR=$CACHE/debian
TSV=$CACHE/interpreters.tsv

# One provisioning at a time (parallel CI jobs sharing a cache).
exec 9>>"$CACHE/.provision.lock"
flock 9

# Print "X.Y.Z" (sys.version's first word, e.g. 3.15.0a3) of a python binary, or fail.
py_version() {
    env -u PYTHONHOME -u PYTHONPATH -u PYTHONSTARTUP "$1" -S -c 'import sys; print(sys.version.split()[0])' 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# 1. apt packages
# ---------------------------------------------------------------------------------------------
is_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]; }

missing=()
for p in patchelf tmux gcc gdb zstd lz4 time prometheus curl; do
    is_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$CACHE/apt.log" 2>&1; then
        log "WARNING: apt-get could not install ${missing[*]}: $(grep -E '^(E|W):' "$CACHE/apt.log" | head -n1)"
    fi
    for p in "${missing[@]}"; do
        is_installed "$p" || log "WARNING: $p is still not installed (tests that need it will skip)"
    done
fi

# ---------------------------------------------------------------------------------------------
# 2. pyenv interpreters
# ---------------------------------------------------------------------------------------------
ROWS=()          # tsv rows
SUPPORTED=()     # versions for the summary
UNSUPPORTED=()

add_row() { # label version path kind env
    ROWS+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"$'\t'"$5")
    if [[ $4 == pyenv-unsupported ]]; then UNSUPPORTED+=("$2"); else SUPPORTED+=("$2"); fi
}

PYENV_ROOT_DIR=
if command -v pyenv >/dev/null 2>&1; then
    PYENV_ROOT_DIR=$(pyenv root 2>/dev/null || true)
fi
[[ -n $PYENV_ROOT_DIR && -d $PYENV_ROOT_DIR/versions ]] || PYENV_ROOT_DIR=${PYENV_ROOT:-$HOME/.pyenv}
[[ -d $PYENV_ROOT_DIR/versions ]] || PYENV_ROOT_DIR=$HOME/.pyenv

declare -A SEEN=()
if [[ -d $PYENV_ROOT_DIR/versions ]]; then
    while IFS= read -r dir; do
        name=${dir##*/}
        [[ $name =~ ^([0-9]+)\.([0-9]+) ]] || continue   # skip pypy-*, miniconda-*, ...
        mm=${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
        py=
        for cand in "$dir/bin/python$mm" "$dir/bin/python${BASH_REMATCH[1]}" "$dir/bin/python"; do
            [[ -x $cand ]] && { py=$(readlink -f "$cand"); break; }
        done
        [[ -n $py ]] || { log "WARNING: pyenv $name has no bin/python$mm"; continue; }
        [[ -z ${SEEN[$py]:-} ]] || continue                # aliases (symlinked version dirs)
        SEEN[$py]=1
        ver=$(py_version "$py") || { log "WARNING: pyenv $name: $py does not run"; continue; }
        kind=pyenv
        # taskspy supports 3.8+; older ones are "unsupported version" targets.
        if ((${BASH_REMATCH[1]} < 3 || (${BASH_REMATCH[1]} == 3 && ${BASH_REMATCH[2]} < 8))); then
            kind=pyenv-unsupported
        fi
        add_row "pyenv-$name" "$ver" "$py" "$kind" -
    done < <(find "$PYENV_ROOT_DIR/versions" -mindepth 1 -maxdepth 1 \( -type d -o -type l \) | sort -V)
else
    log "SKIP pyenv: no $PYENV_ROOT_DIR/versions"
fi

# ---------------------------------------------------------------------------------------------
# 3. Debian unstable interpreters
# ---------------------------------------------------------------------------------------------
# The first "deb" URI serving suite $1, from the host's apt sources (deb822 and one-line format).
host_debian_uri() {
    local suite=$1 f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        uri=$(awk -v suite="$suite" '
            function reset() { isdeb = 0; hassuite = 0; enabled = 1; uri = "" }
            function flush() { if (isdeb && hassuite && enabled && uri != "") { print uri; done = 1; exit } reset() }
            BEGIN { reset() }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            { key = tolower($1) }
            key == "types:"   { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
            key == "uris:"    { uri = $2 }
            key == "suites:"  { for (i = 2; i <= NF; i++) if ($i == suite) hassuite = 1 }
            key == "enabled:" { if (tolower($2) == "no") enabled = 0 }
            END { if (!done) flush() }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        uri=$(awk -v suite="$suite" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite || $(i + 1) == suite "/") { print $i; exit }
            }' "$f")
        [[ -n $uri ]] && { echo "$uri"; return 0; }
    done
    return 1
}

APTD=$DEB_DIR/apt
declare -A DEB_REPORTED=()   # versions whose skip was already logged this run
APT_OPTS=()
apt_private_setup() { # uri
    mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial" "$APTD/state"
    : >"$APTD/status"
    printf 'deb [arch=amd64 signed-by=%s] %s unstable main\n' "$KEYRING" "$1" >"$APTD/sources.list"
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APTD/sources.list"
        -o Dir::Etc::SourceParts=/nonexistent
        -o Dir::Etc::Preferences=/nonexistent
        -o Dir::Etc::PreferencesParts=/nonexistent
        -o "Dir::State=$APTD/state"
        -o "Dir::State::Lists=$APTD/lists"
        -o "Dir::State::status=$APTD/status"
        -o "Dir::Cache=$APTD/cache"
        -o Dir::Cache::pkgcache=pkgcache.bin
        -o Dir::Cache::srcpkgcache=srcpkgcache.bin
        -o APT::Architecture=amd64
        -o APT::Architectures::=amd64
        -o Acquire::Check-Valid-Until=false
        -o Acquire::Languages=none
        -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
        -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false
        -o Acquire::http::Timeout=30
        -o Acquire::Retries=2
        -o APT::Update::Error-Mode=any
        -o Debug::NoLocking=true
    )
}

# "pkg version" for each package the private index offers (absent packages are left out).
apt_candidates() {
    apt-cache "${APT_OPTS[@]}" policy "$@" 2>/dev/null | awk '
        /^[^ \t].*:$/ { pkg = substr($0, 1, length($0) - 1); next }
        $1 == "Candidate:" && $2 != "(none)" { print pkg, $2 }'
}

# Stamp line for one version: "recipe root-path debian-version python-version".
deb_stamp_ok() { # minor
    local d=$DEB_DIR/3.$1 line
    [[ -f $d/stamp ]] || return 1
    read -r line <"$d/stamp" || return 1
    [[ $line == "$DEB_RECIPE $d/root "* ]] || return 1
    [[ -x $d/root/usr/bin/python3.$1 ]]
}

find_loader() { # root
    local l
    for l in "$1/usr/lib/$ARCH/ld-linux-x86-64.so.2" "$1/lib/$ARCH/ld-linux-x86-64.so.2" \
             "$1/usr/lib64/ld-linux-x86-64.so.2" "$1/lib64/ld-linux-x86-64.so.2"; do
        [[ -f $l && ! -L $l ]] && { echo "$l"; return 0; }
    done
    find "$1" -name 'ld-linux-x86-64.so.2' -type f -print -quit | grep . || return 1
}

# Unpack, patch and verify one version from the downloaded .debs. Prints the python version.
deb_build_version() { # minor debver
    local x=$1 debver=$2 d=$DEB_DIR/3.$1 root py ld p deb f ver prefix pipv wheel
    root=$d/root
    py=$root/usr/bin/python3.$x
    rm -rf "$d"
    mkdir -p "$root"
    # (Called in a condition, so set -e is off here: every step checks its status.)
    cp -al "$DEB_DIR/base/." "$root/" || return 1     # shared libraries: hard links, not copies
    for p in "${DEB_PER_VERSION[@]}"; do
        p=${p//@/$x}
        deb=$(compgen -G "$DEB_DIR/debs/${p}_*.deb" | head -n1 || true)
        [[ -n $deb ]] || { log "debian 3.$x: $p was not downloaded (not in unstable?)"; continue; }
        dpkg -x "$deb" "$root" || { log "debian 3.$x: dpkg -x $deb failed"; return 1; }
    done
    [[ -f $py && ! -L $py ]] || { log "debian 3.$x: no usr/bin/python3.$x after unpacking"; return 1; }
    ld=$(find_loader "$root") || { log "debian 3.$x: no ld-linux-x86-64.so.2 in $root"; return 1; }
    patchelf --set-interpreter "$ld" --force-rpath \
        --set-rpath "$root/usr/lib/$ARCH:$root/lib/$ARCH" "$py" || { log "debian 3.$x: patchelf failed"; return 1; }
    # ensurepip takes its wheels from sysconfig's WHEEL_PKG_DIR: point it into the root.
    for f in "$root/usr/lib/python3.$x"/_sysconfig*; do
        [[ -f $f ]] || continue
        # 'WHEEL_PKG_DIR': '/usr/share/python-wheels/',  (.py)   "WHEEL_PKG_DIR": "/usr/share/python-wheels/",  (.json)
        sed -i -E "s#(WHEEL_PKG_DIR['\"]: *['\"])/usr/share/python-wheels#\\1$root/usr/share/python-wheels#" "$f" || return 1
    done
    # Verify: runs, finds its stdlib from its own location (no PYTHONHOME), asyncio importable.
    read -r ver prefix < <(env -u PYTHONHOME -u PYTHONPATH "$py" -c \
        'import sys, asyncio, threading, _asyncio; print(sys.version.split()[0], sys.prefix)') \
        || { log "debian 3.$x: $py does not run / import asyncio"; return 1; }
    [[ $prefix == "$root/usr" ]] || { log "debian 3.$x: sys.prefix is $prefix, expected $root/usr"; return 1; }
    # Verify: a venv with pip from the root's own wheel (not the host's).
    wheel=$(compgen -G "$root/usr/share/python-wheels/pip-*.whl" | head -n1 || true)
    if ! env -u PYTHONHOME -u PYTHONPATH "$py" -m venv "$d/venv" >"$d/venv.log" 2>&1; then
        log "debian 3.$x: 'python3.$x -m venv' failed (see $d/venv.log)"; return 1
    fi
    pipv=$("$d/venv/bin/python" -m pip --version 2>/dev/null | awk '{print $2}') || true
    [[ -n $pipv ]] || { log "debian 3.$x: pip does not run in the venv"; return 1; }
    if [[ -n $wheel && ${wheel##*/pip-} != "$pipv"-* ]]; then
        log "debian 3.$x: venv got pip $pipv, not the root's ${wheel##*/}"; return 1
    fi
    echo "$DEB_RECIPE $root $debver $ver pip-$pipv" >"$d/stamp"
    echo "$ver"
}

provision_debian() {
    local x need=() uri pkgs=() p ver
    for x in "${DEB_MINORS[@]}"; do
        if [[ ${TASKSPY_REFRESH:-} == 1 ]] || ! deb_stamp_ok "$x"; then
            [[ -f $DEB_DIR/3.$x/skipped && ${TASKSPY_REFRESH:-} != 1 ]] || need+=("$x")
        fi
    done
    if ((${#need[@]})); then
        command -v patchelf >/dev/null || { log "SKIP debian-unstable: patchelf is not installed"; return 0; }
        uri=${TASKSPY_DEBIAN_MIRROR:-$(host_debian_uri bookworm || true)}
        [[ -n $uri ]] || { log "SKIP debian-unstable: no 'deb ... bookworm' source in /etc/apt/sources.list{,.d}"; return 0; }
        [[ -r $KEYRING ]] || { log "SKIP debian-unstable: $KEYRING missing (debian-archive-keyring)"; return 0; }
        log "debian-unstable: fetching the index of ${uri%/} unstable (wanted: ${need[*]/#/3.})"
        apt_private_setup "$uri"
        if ! apt-get "${APT_OPTS[@]}" -q update >"$APTD/update.log" 2>&1; then
            log "SKIP debian-unstable: apt-get update of $uri unstable failed: $(grep -E '^(E|W):' "$APTD/update.log" | head -n1)"
            return 0
        fi
        log "debian-unstable: index fetched [at $(now_ms) ms]"
        declare -A cand=()
        for x in "${need[@]}"; do
            for p in "${DEB_PER_VERSION[@]}"; do pkgs+=("${p//@/$x}"); done
        done
        pkgs+=("${DEB_SHARED[@]}")
        while read -r p ver; do cand[$p]=$ver; done < <(apt_candidates "${pkgs[@]}")
        local want=() todo=()
        for x in "${need[@]}"; do
            if [[ -z ${cand[python3.$x-minimal]:-} ]]; then
                log "SKIP debian 3.$x: python3.$x is not in unstable (anymore)"
                DEB_REPORTED[$x]=1
                rm -rf "$DEB_DIR/3.$x"; mkdir -p "$DEB_DIR/3.$x"; echo "not in unstable" >"$DEB_DIR/3.$x/skipped"
                continue
            fi
            todo+=("$x")
            for p in "${DEB_PER_VERSION[@]}"; do
                p=${p//@/$x}
                if [[ -n ${cand[$p]:-} ]]; then want+=("$p"); else log "debian 3.$x: no package $p in unstable, skipped"; fi
            done
        done
        ((${#todo[@]})) || return 0
        for p in "${DEB_SHARED[@]}"; do
            if [[ -n ${cand[$p]:-} ]]; then want+=("$p"); else log "debian: no package $p in unstable, skipped"; fi
        done
        rm -rf "$DEB_DIR/debs" "$DEB_DIR/base"
        mkdir -p "$DEB_DIR/debs" "$DEB_DIR/base"
        if ! (cd "$DEB_DIR/debs" && apt-get "${APT_OPTS[@]}" -q download "${want[@]}" >"$APTD/download.log" 2>&1); then
            log "SKIP debian-unstable: apt-get download failed: $(grep -E '^(E|W):' "$APTD/download.log" | head -n1)"
            return 0
        fi
        for p in "${DEB_SHARED[@]}"; do
            local deb
            deb=$(compgen -G "$DEB_DIR/debs/${p}_*.deb" | head -n1 || true)
            [[ -z $deb ]] || dpkg -x "$deb" "$DEB_DIR/base" \
                || { log "SKIP debian-unstable: dpkg -x $deb failed"; return 0; }
        done
        local failed=0
        for x in "${todo[@]}"; do
            rm -f "$DEB_DIR/3.$x/skipped"
            if ver=$(deb_build_version "$x" "${cand[python3.$x-minimal]}"); then
                log "debian 3.$x: python $ver (${cand[python3.$x-minimal]}) ready in $DEB_DIR/3.$x/root [at $(now_ms) ms]"
            else
                log "SKIP debian 3.$x: build failed (see messages above; TASKSPY_REFRESH=1 retries)"
                echo "build failed" >"$DEB_DIR/3.$x/skipped"
                failed=1
                DEB_REPORTED[$x]=1
            fi
        done
        # The index is stale by the next refresh anyway; the .debs are kept only to debug a failure.
        rm -rf "$DEB_DIR/base" "$APTD/lists" "$APTD/cache"
        ((failed)) || rm -rf "$DEB_DIR/debs"
    fi
}

if [[ ${TASKSPY_NO_DEBIAN:-} == 1 ]]; then
    log "SKIP debian-unstable: TASKSPY_NO_DEBIAN=1"
else
    provision_debian
fi
for x in "${DEB_MINORS[@]}"; do
    if ! deb_stamp_ok "$x"; then
        [[ -f $DEB_DIR/3.$x/skipped && -z ${DEB_REPORTED[$x]:-} ]] && log "SKIP debian 3.$x: $(cat "$DEB_DIR/3.$x/skipped") (cached; TASKSPY_REFRESH=1 retries)"
        continue
    fi
    py=$DEB_DIR/3.$x/root/usr/bin/python3.$x
    if ver=$(py_version "$py"); then
        add_row "debian-$ver" "$ver" "$py" debian -
    else
        log "WARNING: $py no longer runs; rerun with TASKSPY_REFRESH=1"
        rm -f "$DEB_DIR/3.$x/stamp"
    fi
done

# ---------------------------------------------------------------------------------------------
# 3b. Free-threaded CPython 3.14 (python3.14t), built from the source tarball the machine provides
# ---------------------------------------------------------------------------------------------
# From ../shared/cpython/Python-3.14.7.tar.xz (next to the project) or $TASKSPY_CPYTHON_SRC, into
# $CACHE/ft/<tarball sha256 prefix>/prefix; about 10 minutes on 2 cores, once. The same binary is
# listed twice: GIL off (the default) and with PYTHON_GIL=1. Nothing of it enters the repository.
FT_SRC=${TASKSPY_CPYTHON_SRC:-}
if [[ -z $FT_SRC ]]; then
    for cand in "$(dirname "$0")/../../shared/cpython/Python-3.14.7.tar.xz" /work/shared/cpython/Python-3.14.7.tar.xz; do
        [[ -f $cand ]] && { FT_SRC=$(cd "$(dirname "$cand")" && pwd -P)/${cand##*/}; break; }
    done
fi
provision_ft() {
    local src=$1 sum dir prefix py work log
    sum=$(sha256sum "$src" | cut -c1-16)
    dir=$CACHE/ft/$sum
    prefix=$dir/prefix
    py=$(compgen -G "$prefix/bin/python3.*t" | head -n1 || true)
    if [[ -f $dir/stamp && -n $py && -x $py ]]; then
        echo "$py"; return 0
    fi
    [[ -f $dir/failed && ${TASKSPY_REFRESH:-} != 1 ]] && { log "SKIP free-threaded: earlier build failed (see $dir/build.log; TASKSPY_REFRESH=1 retries)"; return 1; }
    log "free-threaded: building CPython from ${src##*/} with --disable-gil (about 10 minutes, once)"
    rm -rf "$dir"; mkdir -p "$dir"
    work=$dir/src; log=$dir/build.log
    mkdir -p "$work"
    if ! { tar -xJf "$src" -C "$work" --strip-components=1 \
            && (cd "$work" && ./configure --disable-gil --prefix="$prefix" --with-ensurepip=no \
                && make -j"$(nproc)" && make install); } >"$log" 2>&1; then
        log "SKIP free-threaded: build failed (last lines of $log:)"; tail -n 5 "$log" >&2
        touch "$dir/failed"; return 1
    fi
    rm -rf "$work"
    py=$(compgen -G "$prefix/bin/python3.*t" | head -n1 || true)
    [[ -n $py ]] || { log "SKIP free-threaded: no python3.*t after make install"; touch "$dir/failed"; return 1; }
    "$py" -c 'import sys; assert not sys._is_gil_enabled()' || { log "SKIP free-threaded: $py runs with the GIL"; touch "$dir/failed"; return 1; }
    echo "$sum" >"$dir/stamp"
    echo "$py"
}
if [[ ${TASKSPY_NO_FT:-} == 1 ]]; then
    log "SKIP free-threaded: TASKSPY_NO_FT=1"
elif [[ -z $FT_SRC ]]; then
    log "SKIP free-threaded: no CPython source (../shared/cpython/Python-3.14.7.tar.xz or TASKSPY_CPYTHON_SRC)"
elif ftpy=$(provision_ft "$FT_SRC"); then
    if ver=$(py_version "$ftpy"); then
        add_row "ft-${ver}t" "${ver}t" "$ftpy" freethreaded -
        add_row "ft-${ver}t+gil" "${ver}t+gil" "$ftpy" freethreaded PYTHON_GIL=1
    fi
fi

# ---------------------------------------------------------------------------------------------
# 4. py-spy (and maturin) in $CACHE/venv-tools
# ---------------------------------------------------------------------------------------------
TOOLS=$CACHE/venv-tools
PYSPY_VER=
tools_ok() {
    PYSPY_VER=$("$TOOLS/bin/py-spy" --version 2>/dev/null | awk '{print $2}') && [[ -n $PYSPY_VER ]] \
        && "$TOOLS/bin/maturin" --version >/dev/null 2>&1 \
        && "$TOOLS/bin/python" -c 'import jsonschema' >/dev/null 2>&1
}
if ! tools_ok || [[ ${TASKSPY_REFRESH:-} == 1 ]]; then
    hostpy=/usr/bin/python3
    [[ -x $hostpy ]] || hostpy=$(command -v python3 || true)
    if [[ -z $hostpy ]]; then
        log "SKIP py-spy: no python3 on this machine"
    else
        log "tools: installing py-spy, maturin and jsonschema into $TOOLS"
        [[ -x $TOOLS/bin/pip ]] || { rm -rf "$TOOLS"; "$hostpy" -m venv "$TOOLS" >&2; }
        if ! "$TOOLS/bin/pip" install -q --disable-pip-version-check --retries 1 --timeout 30 \
                --upgrade py-spy maturin jsonschema >"$CACHE/venv-tools.log" 2>&1; then
            log "tools: pip install failed: $(grep -m1 -E 'ERROR' "$CACHE/venv-tools.log" || true)"
        fi
        tools_ok || { log "SKIP py-spy: not available (see $CACHE/venv-tools.log)"; PYSPY_VER=; }
        [[ -z $PYSPY_VER ]] || log "tools: py-spy $PYSPY_VER, $("$TOOLS/bin/maturin" --version) [at $(now_ms) ms]"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 4b. Real servers for the worker-tree tests (gunicorn, uvicorn): pure-Python wheels installed per
#     minor version into $CACHE/servers/3.X (put on PYTHONPATH by the tests), with the tools
#     venv's pip. Markers are evaluated by pip for the host python, not the target: the
#     backports older targets need (typing_extensions) are named explicitly.
# ---------------------------------------------------------------------------------------------
SERVERS_SPEC="gunicorn uvicorn typing_extensions"
if [[ -x $TOOLS/bin/pip ]]; then
    declare -A minors_seen=()
    for v in "${SUPPORTED[@]}"; do
        m=$(echo "$v" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
        [[ -n ${minors_seen[$m]:-} ]] && continue
        minors_seen[$m]=1
        d=$CACHE/servers/$m
        [[ -f $d/.stamp && $(cat "$d/.stamp") == "$SERVERS_SPEC" && ${TASKSPY_REFRESH:-} != 1 ]] && continue
        rm -rf "$d.tmp"
        if "$TOOLS/bin/pip" install -q --disable-pip-version-check --retries 1 --timeout 30 --target "$d.tmp" \
                --python-version "$m" --implementation cp --only-binary=:all: $SERVERS_SPEC \
                >"$CACHE/servers-$m.log" 2>&1; then
            rm -rf "$d" && mv "$d.tmp" "$d" && echo "$SERVERS_SPEC" >"$d/.stamp"
            log "servers: $(ls "$d" | grep -E '^(gunicorn|uvicorn)-' | sed 's/.dist-info//' | tr '\n' ' ')for $m"
        else
            log "SKIP servers for $m: pip failed (see $CACHE/servers-$m.log)"
        fi
    done
fi

# ---------------------------------------------------------------------------------------------
# 5. interpreters.tsv (rewritten only when it changes)
# ---------------------------------------------------------------------------------------------
((${#ROWS[@]})) || die "no interpreter found (pyenv: $PYENV_ROOT_DIR/versions; Debian unstable: skipped)"
if ! cmp -s <(printf '%s\n' "${ROWS[@]}") "$TSV"; then
    tmp=$(mktemp "$TSV.XXXXXX")
    chmod 644 "$tmp"
    printf '%s\n' "${ROWS[@]}" >"$tmp"
    mv "$tmp" "$TSV"
    log "wrote $TSV"
fi

summary="provision: ${#SUPPORTED[@]} interpreters (${SUPPORTED[*]})"
((${#UNSUPPORTED[@]})) && summary+=" + ${#UNSUPPORTED[@]} unsupported (${UNSUPPORTED[*]})"
summary+=", py-spy ${PYSPY_VER:-MISSING} [$(now_ms) ms]"
echo "$summary"

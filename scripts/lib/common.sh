# shellcheck shell=bash
# Shared helpers for scripts/*: messages, repository paths, process checks.
# Sourced, never run. Callers run under `set -euo pipefail`.

# Repository root (scripts/lib/ is two levels below it).
BASCULE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { printf '%s\n' "$*" >&2; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# The daemon binary: $BASCULE_BIN, else the release build, else the debug build.
bascule_bin() {
    if [ -n "${BASCULE_BIN:-}" ]; then
        [ -x "$BASCULE_BIN" ] || die "BASCULE_BIN=$BASCULE_BIN is not executable"
        printf '%s\n' "$BASCULE_BIN"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$BASCULE_ROOT/target}
    local b
    for b in "$target/release/bascule" "$target/debug/bascule"; do
        if [ -x "$b" ]; then printf '%s\n' "$b"; return; fi
    done
    die "no bascule binary: run 'cargo build --release' (or set BASCULE_BIN)"
}

# True when PID names a live (not zombie) process.
pid_alive() {
    local pid=$1 stat state
    read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
    state=${stat##*) }
    state=${state%% *}
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# True when PID is alive and its command line contains MARK: guards every kill
# against a recycled PID (we only ever kill what we started).
pid_is() {
    local pid=$1 mark=$2 cmdline
    pid_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$mark"* ]]
}

# Reads a pidfile; prints the PID if it is alive and carries MARK.
pidfile_pid() {
    local file=$1 mark=$2 pid
    [ -s "$file" ] || return 1
    pid=$(head -n1 "$file" | tr -dc 0-9)
    [ -n "$pid" ] || return 1
    pid_is "$pid" "$mark" || return 1
    printf '%s\n' "$pid"
}

# Sends SIGTERM (plus SIGCONT, a stopped process never handles SIGTERM), waits
# up to TIMEOUT_S, then SIGKILL. Returns once the process is gone.
stop_pid() {
    local pid=$1 timeout_s=${2:-5} i
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout_s * 20; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.05
    done
    say "pid $pid ignored SIGTERM for ${timeout_s}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.05
    done
}

# Takes down every lab (/tmp/bascule-lab-*) whose owner process is gone: the labs
# of tests killed on their deadline, which could not run `lab down` themselves.
# Labs without an owner.pid, or whose owner lives, are left alone (another run's).
sweep_labs() {
    local dir prefix owner
    for dir in /tmp/bascule-lab-*; do
        [ -f "$dir/.bascule-lab" ] && [ -f "$dir/owner.pid" ] || continue
        owner=$(cat "$dir/owner.pid" 2>/dev/null || true)
        [[ $owner =~ ^[0-9]+$ ]] || continue
        kill -0 "$owner" 2>/dev/null && continue
        prefix=${dir#/tmp/bascule-lab-}
        say "sweeping lab $prefix (owner $owner is gone)"
        LAB_PREFIX=$prefix LAB_DIR=$dir timeout 120 "$BASCULE_ROOT/scripts/lab" down >/dev/null 2>&1 ||
            say "sweeping lab $prefix failed"
    done
}

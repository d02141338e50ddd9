# shellcheck shell=bash
# Debian packages bascule, its lab and its tests need, and how to install them.
# Sourced by scripts/setup (demo) and scripts/test. Sourced, never run.

# The lab: namespaces and veths (iproute2), unshare/nsenter/mount/setsid
# (util-linux, mount), pgrep/kill (procps), the null-modem relay (python3).
DEPS_LAB=(iproute2 util-linux mount procps python3)
# Building the daemon (a C linker for Rust; curl + certificates to fetch rustup
# when cargo is missing).
DEPS_BUILD=(build-essential pkg-config curl ca-certificates)
# Benchmarks' short modes (scripts/bench-*): load generators.
# Heartbeat 3 and keepalived are the side-by-side references the benchmarks report ratios against.
DEPS_BENCH=(stress-ng fio heartbeat keepalived)
# The replicated disk: NBD clients the conformance tests drive (nbdinfo, nbdcopy,
# nbdfuse from libnbd-bin; qemu-io from qemu-utils), FUSE for nbdfuse, nbdkit as
# a plain NBD server for the block-device tests, Debian's nbd-server as the
# benchmark's reference, e2fsprogs for the guide's mkfs.ext3.
DEPS_DISK=(libnbd-bin qemu-utils fuse3 nbdkit nbd-server e2fsprogs)

# Prints the packages among "$@" that are not installed.
deps_missing() {
    local p status
    for p in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || printf '%s\n' "$p"
    done
}

# Installs the missing packages among "$@"; runs `apt-get update` only when
# something is missing (a fresh box has empty package lists).
deps_install() {
    local missing
    missing=$(deps_missing "$@")
    [ -n "$missing" ] || return 0
    [ "$(id -u)" = 0 ] || die "missing packages ($(echo $missing)): run as root to install them"
    command -v apt-get >/dev/null || die "missing packages ($(echo $missing)) and no apt-get"
    say "installing: $(echo $missing)"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Makes `cargo` available: PATH, then ~/.cargo/bin, else installs a minimal
# stable toolchain with rustup (Debian 12's rustc is older than rust-version).
ensure_cargo() {
    if command -v cargo >/dev/null; then return 0; fi
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
        return 0
    fi
    say "cargo not found: installing the stable Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
}

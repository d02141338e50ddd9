# shellcheck shell=bash
# scripts/lib/bench-common.sh: what scripts/bench-detection, bench-timeliness and
# bench-footprint share: mode flags, the work dir and its cleanup trap, a two-node
# pair of bascule daemons in network namespaces, and the reporting helpers.
#
# Invariants: every process we start ourselves is recorded in BENCH_PIDS; the EXIT trap
# kills exactly those PIDs (and their descendants), then `scripts/lab down` stops what
# the lab started (bascule daemons, the null-modem relay) and deletes its namespaces.
# Traffic stays inside the lab's namespaces. Nothing opens /dev/ttyS0 (the VM console:
# the lab bind-mounts a pty over it inside each node's mount namespace).

set -euo pipefail

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_PY=(/usr/bin/python3 "$BENCH_REPO/scripts/lib/bench.py")
# shellcheck source=scripts/lib/heartbeat3.sh
source "$BENCH_REPO/scripts/lib/heartbeat3.sh"

BENCH_MODE=full
BENCH_PIDS=()
BENCH_LAB_UP=0
# The lab script; BENCH_LAB overrides it (e.g. to try another branch's lab).
BENCH_LAB=${BENCH_LAB:-$BENCH_REPO/scripts/lab}
BENCH_FAILED=0
# Lab prefix unique to this run (lab rule: 1-8 chars [a-z0-9]), so a bench never
# collides with another lab, a test or another bench.
BENCH_NS="bb$(($$ % 100000))"

bench_usage() {
	echo "usage: $0 [--short] [--no-heartbeat] [--keep]" >&2
	echo "  --short         the CI mode: a few trials / a few seconds" >&2
	echo "  --no-heartbeat  skip the Heartbeat 3 side (bascule only)" >&2
	echo "  --no-bascule    skip the bascule side (Heartbeat 3 only)" >&2
	echo "  --keep          keep the work dir (logs, configs) for inspection" >&2
	exit 2
}

BENCH_HEARTBEAT=1
BENCH_BASCULE=1
BENCH_KEEP=0
bench_parse_args() {
	while (($#)); do
		case $1 in
		--short) BENCH_MODE=short ;;
		--no-heartbeat) BENCH_HEARTBEAT=0 ;;
		--no-bascule) BENCH_BASCULE=0 ;;
		--keep) BENCH_KEEP=1 ;;
		*) bench_usage ;;
		esac
		shift
	done
}

# bench_init NAME: root check (SKIP otherwise), work dir, trap, bascule binary.
bench_init() {
	if [[ $(id -u) -ne 0 ]]; then
		echo "SKIP: $1 needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces)"
		exit 0
	fi
	BENCH_WORK=$(mktemp -d "/tmp/bench-$1.XXXXXX")
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	((BENCH_BASCULE)) && bench_find_bascule
	if ((BENCH_HEARTBEAT)) && ! hb3_available; then
		echo "note: Heartbeat 3 not installed (apt-get install heartbeat): bascule side only"
		BENCH_HEARTBEAT=0
	fi
}

bench_find_bascule() {
	BASCULE_BIN=${BASCULE_BIN:-}
	if [[ -z $BASCULE_BIN ]]; then
		local target=${CARGO_TARGET_DIR:-$BENCH_REPO/target}
		(cd "$BENCH_REPO" && cargo build --release --quiet --bin bascule) >&2
		BASCULE_BIN=$target/release/bascule
	fi
	[[ -x $BASCULE_BIN ]] || {
		echo "bench: no bascule binary at $BASCULE_BIN" >&2
		exit 1
	}
}

bench_cleanup() {
	local rc=$? pid ns
	set +e
	for pid in "${BENCH_PIDS[@]}"; do
		bench_kill_tree "$pid"
	done
	local keep=0 node
	((BENCH_KEEP)) || ((rc != 0)) && keep=1
	if ((BENCH_LAB_UP)); then
		# `lab down` deletes the lab dir: save the daemons' logs and configs first.
		if ((keep)); then
			for node in debian1 debian2; do
				mkdir -p "$BENCH_WORK/lab-saved/$node"
				cp -a "$LAB_DIR/$node/log" "$LAB_DIR/$node/etc" "$BENCH_WORK/lab-saved/$node/" 2>/dev/null
			done
		fi
		"$BENCH_LAB" down >/dev/null 2>&1
	fi
	if ((keep)); then
		echo "bench: work dir kept: $BENCH_WORK" >&2
	else
		rm -rf "$BENCH_WORK"
	fi
	exit "$rc"
}

# bench_kill_tree PID: SIGKILL PID and its descendants (all started by us).
bench_kill_tree() {
	local pids
	pids=$(hb3_descendants "$1" 2>/dev/null) || return 0
	# shellcheck disable=SC2086
	[[ -n $pids ]] && kill -9 $pids 2>/dev/null
	return 0
}

# bench_forget PID: drop PID from BENCH_PIDS (it was killed on purpose).
bench_forget() {
	local keep=() pid
	for pid in "${BENCH_PIDS[@]}"; do
		[[ $pid == "$1" ]] || keep+=("$pid")
	done
	BENCH_PIDS=("${keep[@]}")
}

# ---- the lab (scripts/lab) -------------------------------------------------------

# bench_lab_up: the project's namespace lab (debian1, debian2, crossover eth1, paced
# null-modem) under $BENCH_WORK/lab; `lab down` in the EXIT trap stops what it started.
bench_lab_up() {
	export LAB_PREFIX=$BENCH_NS LAB_DIR=$BENCH_WORK/lab BASCULE_BIN
	BENCH_LAB_UP=1
	"$BENCH_LAB" up
	bench_lab_broadcast debian1 10.0.0.1/8
	bench_lab_broadcast debian2 10.0.0.2/8
}

# bench_lab_broadcast NODE ADDR: give eth1's address its broadcast address when the lab
# left it unset, as Debian's ifupdown does on a real host. Heartbeat 3's `bcast eth1`
# sends to the interface's broadcast address: without one, its heartbeats never leave
# the node. No-op when the address already has a brd.
bench_lab_broadcast() {
	local ns
	ns=$(lab_ns "$1")
	if ! ip -n "$ns" -4 addr show dev eth1 | grep -q " brd "; then
		ip -n "$ns" addr del "$2" dev eth1
		ip -n "$ns" addr add "$2" brd + dev eth1
	fi
}

lab() { "$BENCH_LAB" "$@"; }
lab_ns() { printf '%s-%s\n' "$BENCH_NS" "$1"; }
# The daemon's stderr (every catalogue line, ISO timestamp first), appended across restarts.
lab_log() { printf '%s/%s/log/daemon.log\n' "$LAB_DIR" "$1"; }

# ---- bascule pair, driven through the lab -------------------------------------------

# bascule_config VARIANT KEY=VALUE...: the lab's guide ha.cf/authkeys on both nodes.
bascule_config() {
	lab config debian1 "$@" >/dev/null
	lab config debian2 "$@" >/dev/null
}

# bascule_start NODE: start through the lab; sets BASCULE_PID[NODE].
declare -A BASCULE_PID=()
bascule_start() {
	BASCULE_PID[$1]=$(lab start "$1")
}

# bascule_kill NODE: kill -9 the daemon (nothing else: links stay up) and wait it out.
bascule_kill() {
	local pid=${BASCULE_PID[$1]}
	kill -9 "$pid" 2>/dev/null || true
	while [[ -e /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
		sleep 0.005
	done
}

# bascule_json NODE EXPR: a field of `bascule status --json` (EXPR in Python, j = object).
bascule_json() {
	lab status "$1" --json 2>/dev/null | /usr/bin/python3 -c \
		"import json,sys; j=json.load(sys.stdin); print($2)"
}

# bascule_wait_alive NODE TIMEOUT_S: NODE's status shows its peer Alive.
bascule_wait_alive() {
	local deadline=$((SECONDS + $2)) state=
	while ((SECONDS < deadline)); do
		state=$(bascule_json "$1" "j['peer']['state']" || true)
		[[ $state == Alive ]] && return 0
		sleep 0.05
	done
	echo "bench: $1 does not see its peer Alive after $2 s (last state: ${state:-none}); log: $(lab_log "$1")" >&2
	return 1
}

# bascule_pair_start VARIANT KEY=VALUE...: configure, start both, both see the other Alive.
bascule_pair_start() {
	bascule_config "$@"
	bascule_start debian1
	bascule_start debian2
	bascule_wait_alive debian1 20
	bascule_wait_alive debian2 20
}

bascule_pair_stop() {
	lab stop debian1 >/dev/null 2>&1 || true
	lab stop debian2 >/dev/null 2>&1 || true
}

# ---- Heartbeat 3 pair ------------------------------------------------------------

# hb_pair_start HA_CF_TEXT: both nodes in the lab's namespaces; returns once each hears
# the other ("Link PEER:eth1 up") and has finished its initial resource acquisition
# (Heartbeat waits ~10 s for it): steady state. Once in a while (seen 1 start in ~10
# here) a freshly started pair never hears each other; a second start always did.
hb_pair_start() {
	local attempt
	for attempt in 1 2; do
		hb_pair_start_once "$1" && return 0
		echo "bench: heartbeat pair did not come up (attempt $attempt), restarting it" >&2
		hb_pair_stop
	done
	return 1
}

hb_pair_start_once() {
	local cf=$1 node peer log
	for node in debian1 debian2; do
		hb3_node_prepare "$BENCH_WORK/hb3" "$node" "$cf"
		hb3_node_start "$BENCH_WORK/hb3" "$node" "$(lab_ns "$node")"
		BENCH_PIDS+=("${HB3_PID[$node]}")
	done
	for node in debian1 debian2; do
		peer=debian2
		[[ $node == debian2 ]] && peer=debian1
		log=$BENCH_WORK/hb3/$node/log/ha.log
		hb3_wait_log "$log" "Link $peer:eth1 up" 15 || return 1
		hb3_wait_log "$log" "Initial resource acquisition complete" 60 || return 1
	done
}

hb_pair_stop() {
	local node
	for node in debian1 debian2; do
		hb3_node_stop "${HB3_PID[$node]}"
		bench_forget "${HB3_PID[$node]}"
	done
}

# ---- reporting -----------------------------------------------------------------

# bench_field JSON EXPR: a field of a JSON object (EXPR in Python, j = the object).
bench_field() {
	/usr/bin/python3 -c "import json,sys; j=json.loads(sys.argv[1]); print($2)" "$1"
}

# bench_verdict NAME VALUE GOAL [SLACK]: PASS if VALUE <= GOAL. In full mode a FAIL
# sets BENCH_FAILED. In short (CI) mode only VALUE > SLACK x GOAL (default 2) fails:
# a loaded CI machine must not flake, but a regression by a wide margin must show.
bench_verdict() {
	local name=$1 value=$2 goal=$3 slack=${4:-2} verdict
	if [[ $value == None || -z $value ]]; then
		verdict=FAIL
		BENCH_FAILED=1
	elif awk -v v="$value" -v g="$goal" 'BEGIN { exit !(v <= g) }'; then
		verdict=PASS
	elif [[ $BENCH_MODE == short ]] && awk -v v="$value" -v g="$goal" -v s="$slack" 'BEGIN { exit !(v <= s * g) }'; then
		verdict="MISS (short mode tolerates up to ${slack}x goal)"
	else
		verdict=FAIL
		BENCH_FAILED=1
	fi
	printf '%-52s %10s  goal <= %-8s %s\n' "$name" "$value" "$goal" "$verdict"
}

# bench_ratio A B -> A/B with 2 decimals, or "n/a".
bench_ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "None" || b == "None" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'
}

bench_finish() {
	if ((BENCH_FAILED)); then
		echo "RESULT: FAIL"
		exit 1
	fi
	echo "RESULT: PASS"
}

# shellcheck shell=bash
# scripts/lib/bench-common.sh: what scripts/bench-detection, bench-timeliness and
# bench-footprint share: mode flags, the work dir and its cleanup trap, a two-node
# pair of bascule daemons in network namespaces, and the reporting helpers.
#
# Invariants: every process we start is recorded in BENCH_PIDS and every namespace in
# BENCH_NETNS; the EXIT trap kills exactly those PIDs (and their descendants) and
# deletes exactly those namespaces. Traffic stays on the veth pair between our
# namespaces. Nothing opens /dev/ttyS0 (the VM console).

set -euo pipefail

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_PY=(/usr/bin/python3 "$BENCH_REPO/scripts/lib/bench.py")
# shellcheck source=scripts/lib/heartbeat3.sh
source "$BENCH_REPO/scripts/lib/heartbeat3.sh"

BENCH_MODE=full
BENCH_PIDS=()
BENCH_NETNS=()
BENCH_FAILED=0
# Namespace prefix unique to this run, so a bench never collides with the lab or tests.
BENCH_NS="bn$$"

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
	for ns in "${BENCH_NETNS[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	if ((BENCH_KEEP)) || ((rc != 0)); then
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

# bench_netns_up: namespaces $BENCH_NS-debian1/2 joined by veth eth1 (10.0.0.1/2/8).
bench_netns_up() {
	BENCH_NETNS+=("$BENCH_NS-debian1" "$BENCH_NS-debian2")
	hb3_netns_up "$BENCH_NS"
}

# ---- bascule pair ----------------------------------------------------------------

# bascule_prepare NODE HA_CF_TEXT: config dir (guide's files, our ha.cf with the
# logfile moved into the work dir), run dir and state dir under $BENCH_WORK/bascule/NODE.
bascule_prepare() {
	local node=$1 dir=$BENCH_WORK/bascule/$1
	mkdir -p "$dir/etc" "$dir/run" "$dir/state"
	printf '%s\n' "$2" | sed "s|^logfile .*|logfile $dir/ha.log|" >"$dir/etc/ha.cf"
	printf '%s\n' "$HB3_AUTHKEYS" >"$dir/etc/authkeys"
	chmod 0600 "$dir/etc/authkeys"
	: >"$dir/ha.log"
}

# bascule_start NODE NETNS -> sets BASCULE_PID[NODE]; stderr in .../NODE/stderr.log.
declare -A BASCULE_PID=()
bascule_start() {
	local node=$1 dir=$BENCH_WORK/bascule/$1
	ip netns exec "$2" "$BASCULE_BIN" --config-dir "$dir/etc" --node "$node" \
		--run-dir "$dir/run" --state-dir "$dir/state" run \
		</dev/null >>"$dir/stderr.log" 2>&1 &
	BASCULE_PID[$node]=$!
	BENCH_PIDS+=("$!")
}

# bascule_kill NODE: kill -9, reap, forget.
bascule_kill() {
	local pid=${BASCULE_PID[$1]}
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	bench_forget "$pid"
}

# bascule_status NODE: `bascule status --json` of NODE (control socket in its run dir).
bascule_status() {
	"$BASCULE_BIN" --run-dir "$BENCH_WORK/bascule/$1/run" status --json
}

# bascule_json NODE EXPR: a field of the status JSON, EXPR in Python (j = the object).
bascule_json() {
	bascule_status "$1" 2>/dev/null | /usr/bin/python3 -c \
		"import json,sys; j=json.load(sys.stdin); print($2)"
}

# bascule_wait_alive NODE TIMEOUT_S: NODE's status shows its peer Alive.
bascule_wait_alive() {
	local deadline=$((SECONDS + $2)) state
	while ((SECONDS < deadline)); do
		state=$(bascule_json "$1" "j['peer']['state']" || true)
		[[ $state == Alive ]] && return 0
		sleep 0.05
	done
	echo "bench: $1 does not see its peer Alive after $2 s (last state: ${state:-none})" >&2
	return 1
}

# bascule_pair_start HA_CF_TEXT: both nodes, each sees the other Alive (or exit 1).
bascule_pair_start() {
	local node
	for node in debian1 debian2; do
		bascule_prepare "$node" "$1"
		bascule_start "$node" "$BENCH_NS-$node"
	done
	bascule_wait_alive debian1 20
	bascule_wait_alive debian2 20
}

bascule_pair_stop() {
	bascule_kill debian1
	bascule_kill debian2
}

# ---- Heartbeat 3 pair ------------------------------------------------------------

# hb_pair_start KEEPALIVE_MS WARNTIME_MS DEADTIME_MS INITDEAD_MS MEDIA_LINE...
# Both nodes in our namespaces; returns once each has finished its initial resource
# acquisition (Heartbeat waits ~10 s for it), i.e. steady state.
hb_pair_start() {
	local cf node
	cf=$(hb3_ha_cf "$@")
	for node in debian1 debian2; do
		hb3_node_prepare "$BENCH_WORK/hb3" "$node" "$cf"
		hb3_node_start "$BENCH_WORK/hb3" "$node" "$BENCH_NS-$node"
		BENCH_PIDS+=("${HB3_PID[$node]}")
	done
	for node in debian1 debian2; do
		hb3_wait_log "$BENCH_WORK/hb3/$node/log/ha.log" "Initial resource acquisition complete" 60 || {
			echo "bench: heartbeat on $node did not reach steady state (see $BENCH_WORK/hb3/$node)" >&2
			return 1
		}
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

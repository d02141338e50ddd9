# shellcheck shell=bash
# scripts/lib/heartbeat3.sh: run Debian's Heartbeat 3 (package `heartbeat`) as the
# reference daemon of the benchmarks, two nodes in network namespaces.
#
# Sourced by scripts/bench-*. Heartbeat takes its node name from `uname -n` and keeps
# its state in fixed paths, so each node gets (see docs/LAB-NOTES "Reference daemons"):
#   - the network namespace it is given (eth1 = the crossover link);
#   - its own UTS namespace (hostname debian1 / debian2);
#   - its own mount namespace with private /etc/ha.d, /var/lib/heartbeat (a shared one
#     gives both nodes the same uuid) and /var/log, and a fresh tmpfs on /run holding
#     /run/heartbeat/{ccm,crm,dopd} and /run/crm (hacluster:haclient, 0750), and
#     /run/resource-agents (without it the OCF IPaddr of haresources fails to start).
# It runs `heartbeat -f` (foreground), so the PID we record is the master control
# process; its children (FIFO reader, read/write child per medium) are its descendants.
#
# Nothing here touches the host's /etc/ha.d or starts the host's heartbeat service.
# Namespaces: hb3_netns_up creates two netns joined by a veth pair named eth1 on both
# sides; use it only when the project lab (scripts/lab) is not providing the nodes.

HB3_BIN=${HB3_BIN:-/usr/libexec/heartbeat/heartbeat}
# The guide's authkeys (section 3.1), verbatim.
HB3_AUTHKEYS='auth 1
1 md5 "Icimonsupermotdepasse"'
# Node addresses on the crossover link, as in the guide.
declare -A HB3_ADDR=([debian1]=10.0.0.1/8 [debian2]=10.0.0.2/8)
# PID of each node's heartbeat master control process (set by hb3_node_start).
declare -A HB3_PID=()

hb3_available() {
	[[ -x $HB3_BIN ]] && getent passwd hacluster >/dev/null && getent group haclient >/dev/null
}

# hb3_ha_cf KEEPALIVE_MS WARNTIME_MS DEADTIME_MS INITDEAD_MS MEDIA_LINE...
# The guide's ha.cf (section 3.1) with the benchmark's timers and media.
hb3_ha_cf() {
	local keepalive_ms=$1 warntime_ms=$2 deadtime_ms=$3 initdead_ms=$4
	shift 4
	cat <<EOF
node debian1 debian2
logfile /var/log/ha.log
logfacility local0

auto_failback off

keepalive ${keepalive_ms}ms
warntime ${warntime_ms}ms
deadtime ${deadtime_ms}ms
initdead ${initdead_ms}ms

udpport 694
EOF
	printf '%s\n' "$@"
}

# hb3_node_prepare BASE NODE HA_CF_TEXT
# Builds BASE/NODE/{ha.d,lib,log}: a copy of the package's /etc/ha.d (harc, rc.d,
# resource.d) with our ha.cf, authkeys and an empty haresources; a copy of the
# package's /var/lib/heartbeat skeleton (ownership kept); an empty log dir.
hb3_node_prepare() {
	local base=$1 node=$2 ha_cf=$3 dir=$1/$2
	rm -rf "$dir"
	mkdir -p "$dir/log"
	cp -a /etc/ha.d "$dir/ha.d"
	cp -a /var/lib/heartbeat "$dir/lib"
	rm -f "$dir/lib/hb_uuid" "$dir/lib/hostcache" "$dir/lib/delhostcache"
	printf '%s\n' "$ha_cf" >"$dir/ha.d/ha.cf"
	printf '%s\n' "$HB3_AUTHKEYS" >"$dir/ha.d/authkeys"
	chmod 0600 "$dir/ha.d/authkeys"
	: >"$dir/ha.d/haresources"
}

# hb3_node_start BASE NODE NETNS: sets HB3_PID[NODE] to the heartbeat master's PID.
# The node must have been prepared with hb3_node_prepare. stdout/stderr of heartbeat
# go to BASE/NODE/stderr.log; its own log is BASE/NODE/log/ha.log.
hb3_node_start() {
	local base=$1 node=$2 netns=$3 dir=$1/$2
	# `ip netns exec`, `unshare` (no --fork) and `sh -c exec` all exec, so $! is heartbeat.
	ip netns exec "$netns" unshare --mount --uts --propagation private -- /bin/sh -c '
		set -e
		hostname "$1"
		mount --bind "$2/ha.d" /etc/ha.d
		mount --bind "$2/lib" /var/lib/heartbeat
		mount --bind "$2/log" /var/log
		mount -t tmpfs -o mode=0755 hb3run /run
		mkdir -p /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm
		chown hacluster:haclient /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm
		chmod 0750 /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm
		# The OCF agents (IPaddr...) keep state here; Debian creates it at boot.
		mkdir -p /run/resource-agents
		exec "$3" -f' hb3 "$node" "$dir" "$HB3_BIN" \
		</dev/null >>"$dir/stderr.log" 2>&1 &
	HB3_PID[$node]=$!
	# Not a job of ours any more: no "Killed" notice from bash when we kill it.
	disown "$!"
}

# hb3_descendants PID -> PID and all its descendants, one per line.
hb3_descendants() {
	local pid=$1 child
	echo "$pid"
	for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		hb3_descendants "$child"
	done
}

# hb3_node_stop PID: SIGKILL the master and every descendant (only processes we started).
hb3_node_stop() {
	local pid=$1 pids
	[[ -n $pid ]] || return 0
	# Gone, or a recycled PID that is not a heartbeat: nothing of ours to stop.
	grep -qa heartbeat "/proc/$pid/cmdline" 2>/dev/null || return 0
	pids=$(hb3_descendants "$pid")
	# shellcheck disable=SC2086
	[[ -n $pids ]] && kill -9 $pids 2>/dev/null
	# Disowned, so not `wait`able: poll until it is gone (or a zombie).
	while [[ -e /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
		sleep 0.01
	done
}

# hb3_wait_log FILE REGEX TIMEOUT_S: wait until FILE has a line matching REGEX.
hb3_wait_log() {
	local file=$1 regex=$2 deadline=$((SECONDS + $3))
	while ((SECONDS < deadline)); do
		grep -qE "$regex" "$file" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# hb3_wait_peer_active BASE NODE PEER TIMEOUT_S: NODE's log says PEER is active.
hb3_wait_peer_active() {
	hb3_wait_log "$1/$2/log/ha.log" "Status update for node $3: status active|node $3: status active" "$4"
}

# hb3_netns_up PREFIX: netns PREFIX-debian1 and PREFIX-debian2, veth eth1 <-> eth1.
hb3_netns_up() {
	local prefix=$1 node
	hb3_netns_down "$prefix"
	for node in debian1 debian2; do
		ip netns add "$prefix-$node"
		ip -n "$prefix-$node" link set lo up
	done
	ip link add hb3tmp1 netns "$prefix-debian1" type veth peer name hb3tmp2 netns "$prefix-debian2"
	for node in debian1 debian2; do
		local tmp=hb3tmp${node#debian}
		ip -n "$prefix-$node" link set "$tmp" name eth1
		ip -n "$prefix-$node" addr add "${HB3_ADDR[$node]}" brd + dev eth1
		ip -n "$prefix-$node" link set eth1 up
	done
}

# hb3_netns_down PREFIX: remove what hb3_netns_up made (ignores what is not there).
hb3_netns_down() {
	local node
	for node in debian1 debian2; do
		ip netns del "$1-$node" 2>/dev/null || true
	done
}

# ---- resources and control (added for scripts/bench-failover) ----------------------

HB3_SHARE=${HB3_SHARE:-/usr/share/heartbeat}

# hb3_node_haresources BASE NODE TEXT: the node's haresources (after hb3_node_prepare,
# which leaves it empty).
hb3_node_haresources() {
	printf '%s\n' "$3" >"$1/$2/ha.d/haresources"
}

# hb3_node_resource BASE NODE NAME SCRIPT: install SCRIPT as resource.d/NAME, replacing
# the package's script of that name. A symlink to SCRIPT's real path: a script that
# finds its helpers next to itself (scripts/lab-web/apache) still does.
hb3_node_resource() {
	local dst=$1/$2/ha.d/resource.d/$3
	rm -f "$dst"
	ln -s "$(readlink -f "$4")" "$dst"
}

# hb3_exec PID CMD...: run CMD in the namespaces (mount, net, UTS) of the heartbeat
# whose master PID is given: where its /etc/ha.d, /run/heartbeat and hostname are.
hb3_exec() {
	local pid=$1
	shift
	nsenter -t "$pid" -m -n -u -- "$@"
}

# hb3_standby PID [all|local|foreign]: the guide's hb_standby on that node.
hb3_standby() {
	hb3_exec "$1" "$HB3_SHARE/hb_standby" "${2:-all}"
}

# hb3_log_lines BASE NODE: how many lines the node's ha.log has now (for *_from waits).
hb3_log_lines() {
	local n
	n=$(wc -l <"$1/$2/log/ha.log" 2>/dev/null) || n=0
	echo "${n:-0}"
}

# hb3_wait_log_from FILE REGEX FROM_LINE TIMEOUT_S: a line after line FROM_LINE of FILE
# matches REGEX (hb3_wait_log sees the whole file, earlier runs included).
hb3_wait_log_from() {
	local file=$1 regex=$2 from=$3 deadline=$((SECONDS + $4))
	while ((SECONDS < deadline)); do
		tail -n +"$((from + 1))" "$file" 2>/dev/null | grep -qE "$regex" && return 0
		sleep 0.05
	done
	return 1
}

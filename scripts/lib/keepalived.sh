# shellcheck shell=bash
# scripts/lib/keepalived.sh: run Debian's keepalived (package `keepalived`) as a
# reference daemon of the benchmarks, one instance per lab node's network namespace.
#
# Sourced by scripts/bench-failover. What each node gets (see LAB-NOTES "Reference
# daemons"):
#   - the network namespace it is given (the lab's P-debian1 / P-debian2);
#   - its own UTS namespace (hostname debian1 / debian2) and mount namespace with a
#     fresh tmpfs on /run: keepalived's pid files (/run/keepalived.pid, vrrp.pid) are
#     private, so two nodes never collide, and after a kill -9 the stale ones vanish
#     with the namespace (a restart with them present refuses to run);
#   - a config generated here: VRRPv3, unicast_peer (no multicast needed between
#     namespaces), `state BACKUP` + `nopreempt` on both nodes (a revived node does not
#     take the VIP back: Heartbeat's auto_failback off), priority 100 on debian1 and 90
#     on debian2, the VIP as a secondary address on eth0.
# It runs `keepalived --dont-fork --vrrp`: the PID we record is the parent; its VRRP
# child is a descendant. Nothing here touches the host's /etc/keepalived or its service.

KA_BIN=${KA_BIN:-/usr/sbin/keepalived}
# Lab addresses (scripts/lab): eth0 on the public switch, eth1 the crossover cable.
declare -A KA_ETH0=([debian1]=192.168.69.14 [debian2]=192.168.69.15)
declare -A KA_ETH1=([debian1]=10.0.0.1 [debian2]=10.0.0.2)
declare -A KA_PRIORITY=([debian1]=100 [debian2]=90)
# PID of each node's keepalived parent (set by ka_node_start).
# shellcheck disable=SC2034 # read by the scripts that source this file
declare -A KA_PID=()

ka_available() {
	[[ -x $KA_BIN ]]
}

# ka_conf NODE ADVERT_S VIP/BITS LINK: the node's keepalived.conf. LINK (eth0|eth1) is
# where the VRRP adverts go (unicast to the peer's address on it); the VIP is on eth0.
ka_conf() {
	local node=$1 advert_s=$2 vip=$3 link=$4 peer src dst
	peer=debian2
	[[ $node == debian2 ]] && peer=debian1
	if [[ $link == eth1 ]]; then
		src=${KA_ETH1[$node]} dst=${KA_ETH1[$peer]}
	else
		src=${KA_ETH0[$node]} dst=${KA_ETH0[$peer]}
	fi
	cat <<KAEOF
global_defs {
	router_id $node
	vrrp_version 3
	script_user root
	enable_script_security
}

vrrp_instance VI_1 {
	state BACKUP
	nopreempt
	interface $link
	virtual_router_id 51
	priority ${KA_PRIORITY[$node]}
	advert_int $advert_s
	unicast_src_ip $src
	unicast_peer {
		$dst
	}
	virtual_ipaddress {
		$vip dev eth0
	}
}
KAEOF
}

# ka_node_prepare BASE NODE CONF_TEXT: BASE/NODE/{keepalived.conf,stderr.log}.
ka_node_prepare() {
	local dir=$1/$2
	mkdir -p "$dir"
	printf '%s\n' "$3" >"$dir/keepalived.conf"
	: >>"$dir/stderr.log"
}

# ka_node_start BASE NODE NETNS: sets KA_PID[NODE] (keepalived's parent). Its log
# (--log-console --log-detail) is appended to BASE/NODE/stderr.log.
ka_node_start() {
	local node=$2 netns=$3 dir=$1/$2
	printf '==== ka start %s %s\n' "$node" "$(date -u +%FT%T.%3NZ)" >>"$dir/stderr.log"
	# `ip netns exec`, `unshare` (no --fork) and `sh -c exec` all exec: $! is keepalived.
	# shellcheck disable=SC2016 # expanded by the inner shell
	ip netns exec "$netns" unshare --mount --uts --propagation private -- /bin/sh -c '
		set -e
		hostname "$1"
		mount -t tmpfs -o mode=0755 karun /run
		exec "$2" --dont-fork --vrrp --log-console --log-detail --use-file "$3"' \
		ka "$node" "$KA_BIN" "$dir/keepalived.conf" </dev/null >>"$dir/stderr.log" 2>&1 &
	# shellcheck disable=SC2034 # read by the scripts that source this file
	KA_PID[$node]=$!
	disown "$!"
}

# ka_descendants PID -> PID and all its descendants, one per line.
ka_descendants() {
	local pid=$1 child
	echo "$pid"
	# shellcheck disable=SC2013 # the file is one line of space-separated PIDs
	for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
		ka_descendants "$child"
	done
}

# ka_gone PID: true once PID has exited (or is a zombie).
ka_gone() {
	[[ ! -e /proc/$1 ]] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# ka_node_kill PID: SIGKILL keepalived and its VRRP child (a crash: no goodbye advert).
# SIGSTOP first: the child is told of its parent's death (SIGTERM) and, if that arrived
# before its own SIGKILL, would send the priority-0 advert of a graceful stop.
ka_node_kill() {
	local pid=$1 pids
	[[ -n $pid ]] || return 0
	pids=$(ka_descendants "$pid")
	# shellcheck disable=SC2086
	[[ -n $pids ]] && kill -STOP $pids 2>/dev/null && kill -KILL $pids 2>/dev/null
	until ka_gone "$pid"; do sleep 0.005; done
}

# ka_node_term PID TIMEOUT_S: SIGTERM, the graceful stop (a MASTER sends a priority-0
# advert, so its BACKUP takes over at once); SIGKILL after TIMEOUT_S. False if it had
# to be killed.
ka_node_term() {
	local pid=$1 deadline=$((SECONDS + $2))
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null
	until ka_gone "$pid"; do
		if ((SECONDS >= deadline)); then
			ka_node_kill "$pid"
			return 1
		fi
		sleep 0.01
	done
}

# ka_has_vip NETNS VIP (no /bits): true when the address is on the netns' eth0.
ka_has_vip() {
	ip -n "$1" -4 -o addr show dev eth0 2>/dev/null | grep -q " inet $2/"
}

# ka_wait_vip NETNS VIP TIMEOUT_S: wait until the address is on NETNS's eth0.
ka_wait_vip() {
	local deadline=$((SECONDS + $3))
	until ka_has_vip "$1" "$2"; do
		((SECONDS < deadline)) || return 1
		sleep 0.01
	done
}

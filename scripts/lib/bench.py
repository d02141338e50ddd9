#!/usr/bin/python3
"""Measuring tools for scripts/bench-*: independent of the daemons they measure.

Subcommands (each prints one JSON object on stdout unless said otherwise):

  capture  IFNAME PORT SECONDS [--contains TEXT]
      Run inside the receiving node's network namespace. An AF_PACKET socket on IFNAME
      sees every incoming IPv4/UDP datagram to PORT, whatever socket options the daemon
      under test uses; the arrival time is the kernel's receive timestamp
      (SO_TIMESTAMPNS), so a capture process delayed by a CPU hog does not inflate gaps.
      Outgoing packets (our own node's heartbeats) are skipped. --contains keeps only
      datagrams holding TEXT (Heartbeat 3 sends other messages than "t=status").
      -> {"packets", "gap_max_ms", "gap_p50_ms", "gap_p99_ms", "seconds"}

  follow   FILE REGEX OFFSET TIMEOUT_S
      Poll FILE (every POLL_S) from byte OFFSET for the first line matching REGEX.
      -> {"seen": epoch s when we saw it, "logged": epoch s of its leading
          ISO-8601 "...T..:..:..mmmZ" timestamp or null, "line": text}; exit 1 on timeout.

  stats    (numbers on stdin, one per line) -> {"n", "min", "median", "max"}

  footprint SECONDS PID...
      CPU time (every thread's schedstat run time, plus the reaped children's
      cutime+cstime, which covers short-lived helpers a daemon forks) of every PID over the window, and VmRSS at its end.
      -> {"processes", "threads", "rss_kib", "locked_kib", "cpu_ms", "cpu_pct",
          "per_process": [...]}  (locked_kib: VmLck, memory pinned by mlockall)
"""

import datetime
import json
import os
import re
import select
import socket
import statistics
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
# SO_TIMESTAMPNS on Linux (asm-generic/socket.h); Python does not always export it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# Receive buffer: several minutes of 50 ms heartbeats fit, so a stalled reader loses nothing.
RCVBUF_BYTES = 4 * 1024 * 1024
IPPROTO_UDP = 17
POLL_S = 0.005
CLK_TCK = os.sysconf("SC_CLK_TCK")


def capture(ifname, port, seconds, contains):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((ifname, ETH_P_IP))
    needle = contains.encode() if contains else None
    arrivals = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        data, ancdata, _flags, addr = sock.recvmsg(65536, socket.CMSG_SPACE(16))
        if addr[2] == PACKET_OUTGOING or not is_udp_to(data, port):
            continue
        if needle is not None and needle not in data:
            continue
        arrivals.append(kernel_time(ancdata))
    sock.close()
    return gaps_report(arrivals, seconds)


def is_udp_to(packet, port):
    """True for an IPv4 packet carrying UDP to `port` (no fragments expected)."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_UDP:
        return False
    header_len = (packet[0] & 0x0F) * 4
    if len(packet) < header_len + 8:
        return False
    (dst_port,) = struct.unpack_from("!H", packet, header_len + 2)
    return dst_port == port


def kernel_time(ancdata):
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            sec, nsec = struct.unpack_from("qq", value)
            return sec + nsec / 1e9
    return time.time()


def gaps_report(arrivals, seconds):
    gaps = [(b - a) * 1000.0 for a, b in zip(arrivals, arrivals[1:])]
    gaps.sort()

    def pct(p):
        return round(gaps[min(len(gaps) - 1, int(p * len(gaps)))], 2) if gaps else None

    return {
        "packets": len(arrivals),
        "gap_max_ms": round(gaps[-1], 2) if gaps else None,
        "gap_p50_ms": pct(0.50),
        "gap_p99_ms": pct(0.99),
        "seconds": seconds,
    }


ISO_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def follow(path, regex, offset, timeout_s):
    pattern = re.compile(regex)
    deadline = time.monotonic() + timeout_s
    pending = ""
    while time.monotonic() < deadline:
        try:
            with open(path, "r", errors="replace") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
        except FileNotFoundError:
            chunk = ""
        now = time.time()
        pending += chunk
        lines = pending.split("\n")
        pending = lines.pop()
        for line in lines:
            if pattern.search(line):
                return {"seen": now, "logged": iso_epoch(line), "line": line}
        time.sleep(POLL_S)
    return None


def iso_epoch(line):
    m = ISO_RE.search(line)
    if not m:
        return None
    stamp = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def stats(values):
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {
        "n": len(values),
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def cpu_ns(pid):
    """CPU time of every thread of `pid` (schedstat: ns resolution, where utime+stime
    count 10 ms ticks) plus the reaped children's cutime+cstime (ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); cutime, cstime are fields 16 and 17.
    children_ticks = int(fields[13]) + int(fields[14])
    return total + children_ticks * 1_000_000_000 // CLK_TCK


def proc_status(pid):
    """VmRSS and VmLck (KiB) and the thread count of `pid`."""
    out = {"rss_kib": 0, "locked_kib": 0, "threads": 0}
    keys = {"VmRSS:": "rss_kib", "VmLck:": "locked_kib", "Threads:": "threads"}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            words = line.split()
            if words and words[0] in keys:
                out[keys[words[0]]] = int(words[1])
    return out


def footprint(seconds, pids):
    start = {pid: cpu_ns(pid) for pid in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    per = []
    for pid in pids:
        try:
            used_ns = cpu_ns(pid) - start[pid]
            status = proc_status(pid)
        except FileNotFoundError:
            used_ns, status = 0, {"rss_kib": 0, "locked_kib": 0, "threads": 0}
        per.append({"pid": pid, "cpu_ms": round(used_ns / 1e6, 2), **status})
    cpu_ms = round(sum(p["cpu_ms"] for p in per), 2)
    return {
        "processes": len(pids),
        "threads": sum(p["threads"] for p in per),
        "rss_kib": sum(p["rss_kib"] for p in per),
        "locked_kib": sum(p["locked_kib"] for p in per),
        "cpu_ms": cpu_ms,
        "cpu_pct": round(cpu_ms / (wall * 1000.0) * 100.0, 3),
        "seconds": round(wall, 1),
        "per_process": per,
    }


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "capture":
        contains = None
        if len(args) == 5 and args[3] == "--contains":
            contains = args[4]
        out = capture(args[0], int(args[1]), float(args[2]), contains)
    elif cmd == "follow":
        out = follow(args[0], args[1], int(args[2]), float(args[3]))
        if out is None:
            return 1
    elif cmd == "stats":
        out = stats([float(x) for x in sys.stdin.read().split()])
    elif cmd == "footprint":
        out = footprint(float(args[0]), [int(p) for p in args[1:]])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Paced null-modem emulator between two ptys, with fault injection.

Why: a pty pair delivers at memory speed, buffers ~14 KiB and has no line
rate, so a daemon tested over a bare pty never meets the 960 B/s of a real
9600 8N1 cable nor its 4 KiB kernel buffer. This relay sits between two pty
masters and behaves like the cable plus the sender's UART buffer:

  daemon A -> /dev/pts/X (slave A) -> master A -> [buffer a>b, <= 4096 B]
           -> paced "wire" at RATE B/s (faults applied here) -> master B
           -> /dev/pts/Y (slave B) -> daemon B          (and the same b>a)

Back-pressure: when a direction's buffer is full the relay stops reading that
source master, so the writer's pty fills and its write() eventually returns
EAGAIN, as with a real UART whose kernel buffer is full. There is no flow
control towards the receiver (a null-modem has no RTS/CTS here): when the
receiving tty is full (its reader frozen), bytes are lost there ("overrun")
and the sender never blocks because of it.

Faults apply on the wire (after the buffer), per direction, like a cable:
  cut      the line goes silent: bytes still leave the buffer at line rate and
           are discarded (a real unplugged cable is silent; nothing is closed,
           no EOF/EIO is ever seen by the daemons)
  ber P    every data bit is flipped with probability P (bit error rate)
  drop N   the next N bytes are discarded
Start/stop bits are not modelled: a flipped bit is always a data bit.

The relay keeps both masters AND both slaves open for its whole lifetime, so a
daemon closing and reopening its port never makes the other side see EIO.

Usage:
  nullmodem.py run --a PATH_A --b PATH_B [--rate 960] [--buffer 4096]
               [--control SOCK] [--seed N] [--pidfile FILE] [--tick-ms 5]
  nullmodem.py ctl SOCK COMMAND...     (prints the relay's reply)

Control commands (Unix datagram socket, one command per datagram):
  cut a>b|b>a|both      heal a>b|b>a|both
  ber RATE [a>b|b>a|both]  (RATE 0 turns it off)
  drop N [a>b|b>a|both]
  stats                 one line per direction, key=value counters
  ping                  answers "pong"
Replies start with "ok", "error" or are the stats lines.
"""

import argparse
import errno
import math
import os
import random
import select
import signal
import socket
import sys
import tempfile
import time
import tty

DIRS = ("a>b", "b>a")
RATE_DEFAULT_BPS = 960  # 9600 baud, 8N1: 10 bits per byte
BUFFER_DEFAULT_BYTES = 4096  # a 16550's kernel buffer
TICK_DEFAULT_MS = 5
BURST_MIN_BYTES = 4
BURST_WINDOW_S = 0.010  # the token bucket holds at most 10 ms of line time
READ_CHUNK_BYTES = 1024
CTL_TIMEOUT_S = 3.0


class Direction:
    """One direction of the cable: the sender's buffer, the pacer, the faults."""

    def __init__(self, name, src_fd, dst_fd, rate, cap, seed):
        self.name = name
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.rate = float(rate)
        self.cap = cap
        self.burst = max(BURST_MIN_BYTES, self.rate * BURST_WINDOW_S)
        self.buf = bytearray()
        self.tokens = 0.0
        self.last = time.monotonic()
        self.rng = random.Random(seed)
        self.cut = False
        self.ber = 0.0
        self.bits_to_flip = None  # bits until the next flip (geometric skip)
        self.drop_pending = 0
        self.c = dict(read=0, relayed=0, dropped=0, cut_discarded=0, flipped=0, overrun=0)

    def wants_read(self):
        return len(self.buf) < self.cap

    def read_source(self):
        """Reads what fits in the buffer; never blocks."""
        room = self.cap - len(self.buf)
        if room <= 0:
            return
        try:
            data = os.read(self.src_fd, min(room, READ_CHUNK_BYTES))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR, errno.EIO):
                return
            raise
        self.buf += data
        self.c["read"] += len(data)

    def set_ber(self, p):
        self.ber = p
        self.bits_to_flip = self._next_skip() if p > 0 else None

    def _next_skip(self):
        # Number of error-free bits before the next flipped bit: geometric(p).
        u = 1.0 - self.rng.random()  # (0, 1]
        if self.ber >= 1.0:
            return 0
        return int(math.log(u) / math.log1p(-self.ber))

    def _corrupt(self, chunk):
        if self.ber <= 0:
            return chunk
        out = bytearray(chunk)
        bits = len(out) * 8
        pos = 0
        while True:
            pos += self.bits_to_flip
            if pos >= bits:
                self.bits_to_flip = pos - bits
                return bytes(out)
            out[pos // 8] ^= 1 << (pos % 8)
            self.c["flipped"] += 1
            pos += 1
            self.bits_to_flip = self._next_skip()

    def pump(self, now):
        """Moves at most the bytes the line rate allows onto the wire."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        n = min(int(self.tokens), len(self.buf))
        if n <= 0:
            return
        chunk = bytes(self.buf[:n])
        if self.cut:
            self._consume(n)
            self.c["cut_discarded"] += n
            return
        if self.drop_pending:
            k = min(self.drop_pending, n)
            self.drop_pending -= k
            self._consume(k)
            self.c["dropped"] += k
            chunk = chunk[k:]
            if not chunk:
                return
        wire = self._corrupt(chunk)
        try:
            written = os.write(self.dst_fd, wire)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EIO):
                raise
            # The receiving tty is full (its reader is frozen or gone): with no
            # hardware flow control the sender never notices; the bytes are lost
            # at the receiver, as in a UART overrun.
            self._consume(n)
            self.c["overrun"] += n
            return
        # A short write: the rest stays buffered (already corrupted bits are
        # re-rolled next time, which keeps the error rate unchanged).
        self._consume(written)
        self.c["relayed"] += written

    def _consume(self, n):
        del self.buf[:n]
        self.tokens -= n

    def stats_line(self):
        kv = " ".join("%s=%d" % (k, v) for k, v in self.c.items())
        return "%s %s buffered=%d cut=%d ber=%g drop_pending=%d" % (
            self.name, kv, len(self.buf), int(self.cut), self.ber, self.drop_pending)


def open_side(path):
    """One pty pair whose slave is symlinked at `path`; both ends stay open."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    name = os.ttyname(slave)
    tmp = path + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, path)
    return master, slave, name


def pick_dirs(arg):
    if arg in (None, "both"):
        return DIRS
    if arg in DIRS:
        return (arg,)
    raise ValueError("direction must be a>b, b>a or both")


def handle_command(line, dirs):
    words = line.split()
    if not words:
        return "error empty command"
    cmd, args = words[0], words[1:]
    try:
        if cmd == "ping":
            return "pong"
        if cmd == "stats":
            return "\n".join(dirs[d].stats_line() for d in DIRS)
        if cmd in ("cut", "heal") and len(args) == 1:
            for d in pick_dirs(args[0]):
                dirs[d].cut = cmd == "cut"
            return "ok %s %s" % (cmd, args[0])
        if cmd == "ber" and len(args) in (1, 2):
            p = float(args[0])
            if not 0.0 <= p <= 1.0:
                return "error ber must be within [0, 1]"
            for d in pick_dirs(args[1] if len(args) == 2 else None):
                dirs[d].set_ber(p)
            return "ok ber %g" % p
        if cmd == "drop" and len(args) in (1, 2):
            n = int(args[0])
            if n < 0:
                return "error drop count must be >= 0"
            for d in pick_dirs(args[1] if len(args) == 2 else None):
                dirs[d].drop_pending += n
            return "ok drop %d" % n
    except ValueError as e:
        return "error %s" % e
    return "error unknown command: %s" % line


def serve_control(ctl, dirs):
    try:
        data, addr = ctl.recvfrom(4096)
    except BlockingIOError:
        return
    reply = handle_command(data.decode("utf-8", "replace").strip(), dirs)
    if addr:
        try:
            ctl.sendto(reply.encode(), addr)
        except OSError:
            pass  # the client went away


def run(opts):
    ma, sa, name_a = open_side(opts.a)
    mb, sb, name_b = open_side(opts.b)
    dirs = {
        "a>b": Direction("a>b", ma, mb, opts.rate, opts.buffer, opts.seed * 2 + 1),
        "b>a": Direction("b>a", mb, ma, opts.rate, opts.buffer, opts.seed * 2 + 2),
    }
    ctl = None
    if opts.control:
        if os.path.lexists(opts.control):
            os.unlink(opts.control)
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ctl.bind(opts.control)
        ctl.setblocking(False)
    if opts.pidfile:
        with open(opts.pidfile + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(opts.pidfile + ".tmp", opts.pidfile)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("nullmodem: a=%s (%s) b=%s (%s) rate=%g B/s buffer=%d seed=%d" % (
        opts.a, name_a, opts.b, name_b, opts.rate, opts.buffer, opts.seed), flush=True)
    tick_s = opts.tick_ms / 1000.0
    try:
        loop(dirs, ctl, tick_s, stop)
    finally:
        for path in (opts.a, opts.b):
            if os.path.islink(path):
                os.unlink(path)
        for path in (opts.control, opts.pidfile):
            if path and os.path.exists(path):
                os.unlink(path)
        for fd in (ma, sa, mb, sb):
            os.close(fd)


def loop(dirs, ctl, tick_s, stop):
    while not stop:
        now = time.monotonic()
        for d in dirs.values():
            d.pump(now)
        poller = select.poll()
        watch = {}
        for d in dirs.values():
            if d.wants_read():
                poller.register(d.src_fd, select.POLLIN)
                watch[d.src_fd] = d
        if ctl is not None:
            poller.register(ctl.fileno(), select.POLLIN)
        busy = any(d.buf for d in dirs.values())
        timeout_ms = tick_s * 1000 if busy else 100
        try:
            events = poller.poll(timeout_ms)
        except InterruptedError:
            continue
        for fd, ev in events:
            if ctl is not None and fd == ctl.fileno():
                serve_control(ctl, dirs)
            elif fd in watch:
                if ev & select.POLLIN:
                    watch[fd].read_source()
                elif ev & (select.POLLHUP | select.POLLERR):
                    # No slave reader can make a master HUP here (we hold the
                    # slaves open), but never spin if it happens anyway.
                    time.sleep(tick_s)


def ctl_main(sock_path, words):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tmpdir = tempfile.mkdtemp(prefix="nullmodem-ctl-")
    me = os.path.join(tmpdir, "sock")
    try:
        c.bind(me)
        c.settimeout(CTL_TIMEOUT_S)
        c.sendto(" ".join(words).encode(), sock_path)
        reply = c.recv(65536).decode()
    except (OSError, socket.timeout) as e:
        print("error: no answer from %s: %s" % (sock_path, e), file=sys.stderr)
        return 2
    finally:
        c.close()
        if os.path.exists(me):
            os.unlink(me)
        os.rmdir(tmpdir)
    print(reply)
    return 1 if reply.startswith("error") else 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "ctl":
        if len(argv) < 3:
            print("usage: nullmodem.py ctl SOCK COMMAND...", file=sys.stderr)
            return 2
        return ctl_main(argv[1], argv[2:])
    p = argparse.ArgumentParser(description="paced null-modem between two ptys")
    p.add_argument("mode", choices=["run"])
    p.add_argument("--a", required=True, help="symlink path for side A's tty")
    p.add_argument("--b", required=True, help="symlink path for side B's tty")
    p.add_argument("--rate", type=float, default=RATE_DEFAULT_BPS, help="bytes/s per direction")
    p.add_argument("--buffer", type=int, default=BUFFER_DEFAULT_BYTES, help="bytes buffered per direction")
    p.add_argument("--control", help="Unix datagram control socket path")
    p.add_argument("--seed", type=int, default=1, help="RNG seed for bit errors")
    p.add_argument("--pidfile")
    p.add_argument("--tick-ms", type=float, default=TICK_DEFAULT_MS)
    opts = p.parse_args(argv)
    if opts.rate <= 0 or opts.buffer <= 0:
        p.error("--rate and --buffer must be positive")
    run(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

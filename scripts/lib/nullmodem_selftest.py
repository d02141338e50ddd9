#!/usr/bin/env python3
"""Self-test of scripts/nullmodem.py: pacing, back-pressure, cut, drop, bit errors.

Why: every serial test of the daemon trusts the relay to behave like a 9600 8N1
cable; this checks that claim with numbers. Runs in about 15 s; exits non-zero
on the first failed check. Usage: nullmodem_selftest.py [--quick]
"""

import os
import subprocess
import sys
import tempfile
import time
import tty

HERE = os.path.dirname(os.path.abspath(__file__))
RELAY = os.path.join(HERE, "..", "nullmodem.py")


class Relay:
    def __init__(self, rate, seed=7):
        self.dir = tempfile.mkdtemp(prefix="nm-selftest-")
        self.a = os.path.join(self.dir, "a")
        self.b = os.path.join(self.dir, "b")
        self.sock = os.path.join(self.dir, "ctl")
        self.proc = subprocess.Popen(
            [sys.executable, RELAY, "run", "--a", self.a, "--b", self.b, "--rate", str(rate),
             "--control", self.sock, "--seed", str(seed)],
            stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (os.path.exists(self.sock) and os.path.exists(self.b)):
            assert time.monotonic() < deadline, "relay did not start"
            time.sleep(0.02)
        self.fa = self._open(self.a)
        self.fb = self._open(self.b)

    @staticmethod
    def _open(path):
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        return fd

    def ctl(self, *words):
        out = subprocess.run([sys.executable, RELAY, "ctl", self.sock, *words],
                             capture_output=True, text=True, check=True)
        return out.stdout

    def stats(self):
        res = {}
        for line in self.ctl("stats").splitlines():
            name, *kvs = line.split()
            res[name] = {k: float(v) for k, v in (kv.split("=") for kv in kvs)}
        return res

    def close(self):
        os.close(self.fa)
        os.close(self.fb)
        self.proc.terminate()
        self.proc.wait(5)
        assert not os.path.lexists(self.a), "relay left its symlink behind"


def read_for(fd, seconds, want=None, arrivals=None):
    got = bytearray()
    first = last = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (want is None or len(got) < want):
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        now = time.monotonic()
        first = first or now
        last = now
        got += chunk
        if arrivals is not None:
            arrivals.append((now, len(chunk)))
    return bytes(got), first, last


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            time.sleep(0.002)


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        sys.exit(1)


def test_rate(quick):
    r = Relay(960)
    try:
        n = 1920 if quick else 4800
        data = bytes(range(256)) * (n // 256 + 1)
        data = data[:n]
        write_all(r.fa, data)
        arrivals = []
        got, first, last = read_for(r.fb, n / 960 + 3, want=n, arrivals=arrivals)
        check(got == data, "a>b delivers every byte in order (%d bytes)" % len(got))
        rate = (len(got) - 1) / (last - first)
        check(900 <= rate <= 1000, "paced rate %.0f B/s (want ~960)" % rate)
        # No burst: at most ~10 ms of line time (about 10 bytes) in any 10 ms.
        burst = max(sum(k for t2, k in arrivals if t <= t2 < t + 0.010) for t, _ in arrivals)
        check(burst <= 24, "largest burst %d bytes in 10 ms (line rate: 9.6)" % burst)
    finally:
        r.close()


def test_backpressure():
    r = Relay(960)
    try:
        accepted = 0
        t0 = time.monotonic()
        blocked = False
        chunk = b"x" * 512
        while time.monotonic() - t0 < 10:
            try:
                accepted += os.write(r.fa, chunk)
            except BlockingIOError:
                time.sleep(0.2)  # let the relay drain into its buffer
                try:
                    accepted += os.write(r.fa, chunk)
                except BlockingIOError:
                    blocked = True
                    break
        check(blocked, "writer gets EAGAIN when nobody reads the far end (%d bytes accepted)" % accepted)
        check(accepted < 64 * 1024, "bounded buffering: %d bytes accepted" % accepted)
        buffered = r.stats()["a>b"]["buffered"]
        check(buffered == 4096, "relay buffer holds exactly 4096 bytes (%d)" % buffered)
    finally:
        r.close()


def test_cut_drop():
    r = Relay(9600)
    try:
        r.ctl("cut", "a>b")
        write_all(r.fa, b"y" * 500)
        got, _, _ = read_for(r.fb, 0.5)
        check(got == b"", "cut a>b: nothing arrives (%d bytes)" % len(got))
        write_all(r.fb, b"z" * 50)
        got, _, _ = read_for(r.fa, 1.0, want=50)
        check(got == b"z" * 50, "cut a>b leaves b>a working")
        r.ctl("heal", "both")
        write_all(r.fa, b"w" * 100)
        got, _, _ = read_for(r.fb, 1.0, want=100)
        check(got == b"w" * 100, "heal: bytes flow again, none of the cut ones")
        r.ctl("drop", "10", "a>b")
        write_all(r.fa, bytes(range(100)))
        got, _, _ = read_for(r.fb, 1.0, want=90)
        check(got == bytes(range(10, 100)), "drop 10: the next 10 bytes vanish")
        s = r.stats()["a>b"]
        check(s["dropped"] == 10 and s["cut_discarded"] == 500, "counters: %s" % s)
    finally:
        r.close()


def test_overrun():
    r = Relay(100000)
    try:
        t0 = time.monotonic()
        write_all(r.fa, b"o" * 100000)
        took = time.monotonic() - t0
        check(took < 5, "a frozen receiver never blocks the sender (%.1f s for 100 KB)" % took)
        time.sleep(0.3)
        s = r.stats()["a>b"]
        check(s["overrun"] > 0, "bytes beyond the receiver's tty are lost (overrun=%d)" % s["overrun"])
        got, _, _ = read_for(r.fb, 0.5)
        check(len(got) + s["overrun"] + s["buffered"] == 100000, "delivered + overrun = sent")
    finally:
        r.close()


def test_ber():
    r = Relay(200000, seed=11)
    try:
        p = 1e-3
        r.ctl("ber", str(p), "a>b")
        n = 20000
        data = bytes(n)
        write_all(r.fa, data)
        got, _, _ = read_for(r.fb, 5, want=n)
        check(len(got) == n, "ber: every byte still arrives (%d)" % len(got))
        flips = sum(bin(b).count("1") for b in got)
        expect = n * 8 * p
        sigma = expect ** 0.5
        check(abs(flips - expect) < 4 * sigma, "ber 1e-3: %d flipped bits, expected %.0f +- %.0f"
              % (flips, expect, 4 * sigma))
        check(r.stats()["a>b"]["flipped"] == flips, "flipped counter matches the received damage")
    finally:
        r.close()


def main():
    quick = "--quick" in sys.argv
    test_rate(quick)
    test_backpressure()
    test_cut_drop()
    test_overrun()
    test_ber()
    print("nullmodem self-test passed")


if __name__ == "__main__":
    main()

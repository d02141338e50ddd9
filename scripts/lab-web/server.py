#!/usr/bin/python3
"""The lab's stand-in for the guide's Apache: a tiny HTTP server naming its node.

Started by scripts/lab-web/apache (an LSB-style resource.d script) inside a lab
node's namespaces. Every GET answers `node=<hostname> count=<n>` (n counts the
requests this process served), so a client can tell which node answered and see a
restart. One request per connection (HTTP/1.0, Connection: close): a client probing
every few milliseconds must never sit on a kept-alive connection to a dead node.

With --docroot DIR (the demo: /mnt/repl, the replicated disk's mount point), a GET
answers DIR/index.html when that file exists, read afresh on every request, signed
`<address>lab-web: node=<hostname> count=<n></address>` as Apache signs its pages:
the client sees the replicated file and which node served it. Without the file (the
disk not mounted here) the answer is the plain `node=... count=...` line.

Usage: server.py --pidfile FILE [--port 80] [--bind 0.0.0.0] [--node NAME] [--docroot DIR]
(--node: the name to answer with, default the hostname; for tests on loopback.)
The pidfile is written only once the socket is bound and listening, so the script
that started us can wait for it: its presence means "ready to answer".
SIGTERM/SIGINT: close the socket, remove the pidfile (if it is still ours), exit 0.
"""

import argparse
import os
import signal
import socket
import sys

PORT_DEFAULT = 80
BACKLOG = 128
# A client that connects and sends nothing must not block the server for long.
REQUEST_TIMEOUT_S = 0.5
REQUEST_MAX_BYTES = 8192
# A demo page, not a file server: the probe reads at most 4 KiB of an answer.
PAGE_MAX_BYTES = 3072


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pidfile", required=True)
    p.add_argument("--port", type=int, default=PORT_DEFAULT)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--node", help="name to answer with (default: the hostname)")
    p.add_argument("--docroot", help="serve DOCROOT/index.html when it exists")
    return p.parse_args()


def read_request(conn):
    """Reads up to the end of the request head; returns the request line or ''."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < REQUEST_MAX_BYTES:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("latin-1").strip()


def page(docroot, node, count):
    """The body and its type: DOCROOT/index.html signed, else the node line."""
    if docroot:
        try:
            with open(os.path.join(docroot, "index.html"), "rb") as f:
                html = f.read(PAGE_MAX_BYTES)
            sign = f"<address>lab-web: node={node} count={count}</address>\n".encode()
            return "text/html", html + sign
        except OSError:
            pass
    return "text/plain", f"node={node} count={count}\n".encode()


def answer(conn, node, count, docroot):
    line = read_request(conn)
    ctype = "text/plain"
    if not line.startswith("GET ") and not line.startswith("HEAD "):
        status, body = "400 Bad Request", b"bad request\n"
    else:
        ctype, body = page(docroot, node, count)
        status = "200 OK"
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    conn.sendall(head if line.startswith("HEAD ") else head + body)


def remove_pidfile(path):
    try:
        with open(path) as f:
            mine = f.read().strip() == str(os.getpid())
        if mine:
            os.unlink(path)
    except OSError:
        pass


def main():
    args = parse_args()
    node = args.node or socket.gethostname()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(BACKLOG)

    def on_term(_sig, _frame):
        remove_pidfile(args.pidfile)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    tmp = f"{args.pidfile}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(tmp, args.pidfile)
    count = 0
    while True:
        conn, _addr = srv.accept()
        count += 1
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            answer(conn, node, count, args.docroot)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()

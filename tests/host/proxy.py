#!/usr/bin/python3
"""A small HTTP proxy for the network tests (the reviewer's, made to run on any port):
CONNECT tunnels, and requests in absolute form forwarded in origin form; 502 when it cannot
reach the upstream. Prints `port=N` once it listens, then one line per request:
`REQUEST-LINE auth=yes|no` (never the credentials).

usage: proxy.py [--auth USER:PASSWORD] [--answer STATUS]
  --auth    answer 407 to requests without these credentials (Basic)
  --answer  answer every request with this status, e.g. 403
"""
import argparse
import base64
import select
import socket
import sys
import threading
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("--auth")
parser.add_argument("--answer", type=int)
args = parser.parse_args()
lock = threading.Lock()


def say(line):
    with lock:
        print(line, flush=True)


def pipe(a, b):
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 120)
            if not ready:
                break
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass


def answer(client, status, reason, extra=""):
    client.sendall(
        f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
    )
    client.close()


def handle(client):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = client.recv(4096)
        if not data:
            client.close()
            return
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin1").split("\r\n")
    line, headers = lines[0], lines[1:]
    auth = [h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization:")]
    say(f"{line} auth={'yes' if auth else 'no'}")
    if args.auth and auth != ["Basic " + base64.b64encode(args.auth.encode()).decode()]:
        answer(client, 407, "Proxy Authentication Required", 'Proxy-Authenticate: Basic realm="test"\r\n')
        return
    if args.answer:
        answer(client, args.answer, "Test Answer")
        return
    method, target, _ = line.split(" ", 2)
    try:
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
        else:
            url = urllib.parse.urlsplit(target)
            upstream = socket.create_connection((url.hostname, url.port or 80), timeout=10)
            path = url.path + ("?" + url.query if url.query else "")
            out = [f"{method} {path} HTTP/1.1"] + [h for h in headers if not h.lower().startswith("proxy-")]
            upstream.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin1") + rest)
    except OSError:
        answer(client, 502, "Bad Gateway")
        return
    upstream.settimeout(None)
    pipe(client, upstream)


server = socket.socket(socket.AF_INET)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(50)
say(f"port={server.getsockname()[1]}")
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()

"""Helpers for the conformance tests: start the real kvs-local binary, split
MKV files, and a PutMedia client signed with botocore's own SigV4 signer
(botocore has no PutMedia operation: the body is an endless stream)."""

import hashlib
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import boto3
import botocore.config
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = pathlib.Path(__file__).resolve().parents[3]
DEMO_ACCESS_KEY = "KVSLOCALDEMOACCESSKEY"
DEMO_SECRET_KEY = "kvs-local-demo-secret-key"
REGION = "us-west-2"


def binary():
    return os.environ.get("KVS_LOCAL_BIN", str(REPO / "target" / "debug" / "kvs-local"))


class KvsLocal:
    """The kvs-local binary started on a free port (`--port 0`)."""

    def __init__(self, data_dir, *args):
        self.data_dir = pathlib.Path(data_dir)
        self.proc = subprocess.Popen(
            [binary(), "--port", "0", "--data-dir", str(self.data_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        prefix = "kvs-local listening on "
        if not line.startswith(prefix):
            self.proc.kill()
            raise RuntimeError(f"kvs-local did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line[len(prefix):].strip()
        self.stopped = False

    def report(self):
        with urllib.request.urlopen(self.url + "/__kvs-local/report", timeout=10) as r:
            return json.load(r)

    def stop(self):
        """SIGTERM, as a user would; returns the report written on exit."""
        if self.stopped:
            return None
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.returncode == 0, self.proc.stderr.read()
        return json.loads((self.data_dir / "report.json").read_text())

    def export(self, stream, out):
        subprocess.run(
            [binary(), "export", "--data-dir", str(self.data_dir), "--stream", stream, str(out)],
            check=True,
            capture_output=True,
        )
        return pathlib.Path(out).read_bytes()


# --- MKV --------------------------------------------------------------------

CLUSTER = 0x1F43B675
SEGMENT = 0x18538067
LEVEL1 = {CLUSTER, 0x1254C367, 0x1C53BB6B, 0x1549A966, 0x1654AE6B, 0x114D9B74, 0x1941A469}


def _vint(data, pos, is_id):
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    raw = int.from_bytes(data[pos:pos + length], "big")
    if is_id:
        return raw, pos + length
    value = raw & ((1 << (7 * length)) - 1)
    unknown = value == (1 << (7 * length)) - 1
    return (None if unknown else value), pos + length


def split_mkv(data):
    """(stream header, [(cluster timecode, cluster bytes)]) of a streamable
    MKV file (Segment and Clusters of unknown size, as matroskamux writes)."""
    pos = 0
    eid, pos = _vint(data, pos, True)
    size, pos = _vint(data, pos, False)
    assert eid == 0x1A45DFA3
    pos += size
    eid, pos = _vint(data, pos, True)
    assert eid == SEGMENT
    _, pos = _vint(data, pos, False)
    header_end = None
    clusters = []
    while pos < len(data):
        start = pos
        eid, pos = _vint(data, pos, True)
        size, pos = _vint(data, pos, False)
        if eid != CLUSTER:
            assert size is not None, hex(eid)
            pos += size
            continue
        if header_end is None:
            header_end = start
        timecode = None
        while pos < len(data) and (size is None or pos < start + size):
            cid, p = _vint(data, pos, True)
            if size is None and cid in LEVEL1:
                break
            csize, p = _vint(data, p, False)
            if cid == 0xE7:
                timecode = int.from_bytes(data[p:p + csize], "big")
            pos = p + csize
        clusters.append((timecode, data[start:pos]))
    return data[:header_end], clusters


def make_mkv(path, frames=60, key_int=15):
    """A small H.264 MKV made by GStreamer's matroskamux."""
    subprocess.run(
        [
            "gst-launch-1.0", "-q", "videotestsrc", f"num-buffers={frames}",
            "!", "video/x-raw,format=I420,width=160,height=120,framerate=30/1",
            "!", "x264enc", f"key-int-max={key_int}", "speed-preset=ultrafast",
            "!", "h264parse", "!", "matroskamux", "streamable=true",
            "!", "filesink", f"location={path}",
        ],
        check=True,
        timeout=120,
    )
    return pathlib.Path(path).read_bytes()


# --- signing and PutMedia ---------------------------------------------------


def sign(url, headers, body=None, *, access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY,
         token=None, region=REGION, unsigned_payload=False):
    """Signs with botocore's SigV4Auth; returns the headers to send (as
    botocore spells them: `X-Amz-Date`, `Authorization`...)."""
    req = AWSRequest(method="POST", url=url, headers=dict(headers), data=body)
    if unsigned_payload:
        req.context["payload_signing_enabled"] = False
    SigV4Auth(Credentials(access_key, secret_key, token), "kinesisvideo", region).add_auth(req)
    return list(req.headers.items())


class PutMedia:
    """One PutMedia request over a raw socket: the body is sent chunk by
    chunk while acks are read from the same connection."""

    def __init__(self, endpoint, stream, *, start_ts=None, timecode_type="RELATIVE",
                 unsigned_payload=True, host=None, expect_continue=False, token=None,
                 sign_token=True, access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY,
                 extra_signed=()):
        u = urllib.parse.urlsplit(endpoint)
        url = f"{u.scheme}://{u.netloc}/putMedia"
        headers = [
            ("x-amzn-stream-name", stream),
            ("x-amzn-fragment-timecode-type", timecode_type),
            ("x-amzn-producer-start-timestamp",
             "%.3f" % (time.time() if start_ts is None else start_ts)),
            ("x-amzn-fragment-acknowledgment-required", "1"),
            *extra_signed,
        ]
        if host is not None:
            headers.append(("host", host))
        signed = sign(url, headers, access_key=access_key, secret_key=secret_key,
                      token=token if sign_token else None, unsigned_payload=unsigned_payload)
        if token is not None and not sign_token:
            signed.append(("x-amz-security-token", token))
        names = {k.lower() for k, _ in signed}
        lines = ["POST /putMedia HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {u.netloc}")
        lines += [f"{k}: {v}" for k, v in signed]
        if "transfer-encoding" not in names:
            lines.append("Transfer-Encoding: chunked")
        if expect_continue:
            lines.append("Expect: 100-continue")
        self.sock = socket.create_connection((u.hostname, u.port), timeout=20)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.resp = http.client.HTTPResponse(self.sock)
        self.continued = False
        if expect_continue:
            status = self.resp.fp.readline()
            if b" 100 " in status:
                self.continued = True
                while self.resp.fp.readline() not in (b"\r\n", b"\n", b""):
                    pass
            else:  # no 100: let begin() parse this status line again
                self.resp.fp = _Prefixed(status, self.resp.fp)
        # the service answers before any body byte arrives
        self.resp.begin()
        self.status = self.resp.status
        self.acks = []

    def send(self, data):
        if data:
            self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def finish(self):
        self.sock.sendall(b"0\r\n\r\n")

    def next_ack(self):
        """The next ack (skipping IDLE), or None at the end of the response."""
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            ack = json.loads(line)
            if ack["EventType"] == "IDLE":
                continue
            self.acks.append(ack)
            return ack

    def wait_for(self, event, timecode):
        while True:
            ack = self.next_ack()
            assert ack is not None, f"response ended before {event} {timecode}: {self.acks}"
            assert ack["EventType"] != "ERROR", ack
            if ack["EventType"] == event and ack.get("FragmentTimecode") == timecode:
                return ack

    def rest(self):
        while self.next_ack() is not None:
            pass
        self.sock.close()
        return self.acks

    def body(self):
        return self.resp.read()


class _Prefixed:
    def __init__(self, first, fp):
        self.first, self.fp = first, fp

    def readline(self, *a):
        if self.first is not None:
            line, self.first = self.first, None
            return line
        return self.fp.readline(*a)

    def __getattr__(self, name):
        return getattr(self.fp, name)


def put_all(endpoint, stream, header, clusters, **kw):
    """Sends header and clusters, waiting for each PERSISTED ack before the
    next cluster (acks must stream while the body is still open)."""
    pm = PutMedia(endpoint, stream, **kw)
    assert pm.status == 200, pm.body()
    pm.send(header)
    persisted = []
    for i, (_, cluster) in enumerate(clusters):
        pm.send(cluster)
        if i > 0:  # cluster i starting completes cluster i-1 (unknown sizes)
            persisted.append(pm.wait_for("PERSISTED", clusters[i - 1][0]))
    pm.finish()
    persisted.append(pm.wait_for("PERSISTED", clusters[-1][0]))
    pm.rest()
    return pm, persisted


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def client(service, endpoint, access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY, token=None,
           validate=True):
    """A boto3 client for `service` pointed at `endpoint` (no retries); with
    `validate=False` botocore sends what it is given, for the server to judge."""
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        region_name=REGION,
    )
    cfg = botocore.config.Config(retries={"max_attempts": 1}, read_timeout=30,
                                 parameter_validation=validate)
    return session.client(service, endpoint_url=endpoint, config=cfg)

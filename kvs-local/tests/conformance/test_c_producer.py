"""kvs-local against the way AWS's C producer (producer-c, used by the
official C++ kvssink 3.6.0) talks, where it differs from kvssink-rs and from
boto3. Signing is botocore's SigV4Auth; what is sent is shaped like the C
producer's requests (read from its public source):

* `Host: 127.0.0.1` without the port, and `host` signed that way;
* JSON bodies hashed into the signature without an x-amz-content-sha256
  header; PutMedia signed with the SHA-256 of the empty string, no header;
* x-amz-security-token sent but not signed;
* lower-case header names (user-agent, x-amzn-..., transfer-encoding and
  connection signed too), curl's `Expect: 100-continue` on PutMedia;
* PutMedia right after CreateStream, without waiting for ACTIVE.

kvs-local follows the client: GetDataEndpoint answers the address the
request reached (not `http://<Host>`, which would send the producer to port
80), and a new stream is ACTIVE at once by default."""

import http.client
import json
import urllib.parse

import kvsclient
from kvsclient import client, sha256

AK, SK, TOKEN = "CPRODUCERKEY", "c-producer-secret", "c-producer-session-token"
USER_AGENT = "AWS-SDK-KVS-CPP-CLIENT/3.6.0 GCC/12.2.0 Linux/6.1 x86_64"


def c_call(url, op, body):
    """One control-plane call the way the C producer makes it."""
    u = urllib.parse.urlsplit(url)
    raw = json.dumps(body).encode()
    headers = [
        ("user-agent", USER_AGENT),
        ("host", u.hostname),  # no port
        ("content-type", "application/json"),
        ("content-length", str(len(raw))),
    ]
    # no token in the signature; the body hash goes into it without a header
    signed = kvsclient.sign(f"{u.scheme}://{u.hostname}/{op}", headers, raw, access_key=AK, secret_key=SK)
    assert not any(k.lower() == "x-amz-content-sha256" for k, _ in signed)
    signed.append(("x-amz-security-token", TOKEN))
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    conn.putrequest("POST", f"/{op}", skip_host=True, skip_accept_encoding=True)
    for k, v in signed:
        conn.putheader(k, v)
    conn.endheaders(raw)
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"{}")
    conn.close()
    return out


def test_c_producer_startup_and_putmedia(start, mkv):
    _, header, clusters = mkv
    s = start("--key", f"{AK}:{SK}:{TOKEN}")

    # DescribeStream -> 404, CreateStream, TagStream, GetDataEndpoint(PUT_MEDIA)
    status, body = c_call(s.url, "describeStream", {"StreamName": "c-cam"})
    assert (status, body["__type"]) == (404, "ResourceNotFoundException")
    # producer-c leaves KmsKeyId out when it has none (an empty one breaks the API's
    # length 1-2048, and kvs-local says so)
    status, body = c_call(s.url, "createStream", {
        "DeviceName": "c-dev", "StreamName": "c-cam", "MediaType": "video/h264",
        "DataRetentionInHours": 2})
    assert status == 200, body
    status, body = c_call(s.url, "tagStream", {"StreamName": "c-cam", "Tags": {"a": "b"}})
    assert status == 200, body
    status, body = c_call(s.url, "getDataEndpoint", {"StreamName": "c-cam", "APIName": "PUT_MEDIA"})
    assert status == 200, body
    # the server's own address: with the port, although Host had none
    assert body["DataEndpoint"] == s.url

    # PutMedia at once: empty-payload hash, no x-amz-content-sha256, token
    # unsigned, host without port, Expect: 100-continue
    u = urllib.parse.urlsplit(body["DataEndpoint"])
    pm = kvsclient.PutMedia(
        body["DataEndpoint"], "c-cam", unsigned_payload=False, host=u.hostname,
        expect_continue=True, token=TOKEN, sign_token=False, access_key=AK, secret_key=SK,
        extra_signed=[("user-agent", USER_AGENT), ("transfer-encoding", "chunked"),
                      ("connection", "keep-alive")])
    assert pm.continued, "100 Continue expected before the 200"
    assert pm.status == 200, pm.body()
    pm.send(header)
    for _, c in clusters:
        pm.send(c)
    pm.finish()
    acks = pm.rest()
    assert not [a for a in acks if a["EventType"] == "ERROR"], acks
    assert [a["FragmentTimecode"] for a in acks if a["EventType"] == "PERSISTED"] == [tc for tc, _ in clusters]

    report = s.report()
    assert all(r["auth"] == "accepted" for r in report["requests"]), report["requests"]
    assert [f["sha256"] for f in report["sessions"][0]["fragments"]] == [sha256(c) for _, c in clusters]

    # and boto3 reads back what the C-style producer stored
    kv = client("kinesisvideo", s.url, access_key=AK, secret_key=SK, token=TOKEN)
    assert kv.describe_stream(StreamName="c-cam")["StreamInfo"]["DeviceName"] == "c-dev"
    archived = client("kinesis-video-archived-media", s.url, access_key=AK, secret_key=SK, token=TOKEN)
    assert len(archived.list_fragments(StreamName="c-cam")["Fragments"]) == len(clusters)


def test_c_producer_without_token_is_rejected(start):
    s = start("--key", f"{AK}:{SK}:{TOKEN}")
    u = urllib.parse.urlsplit(s.url)
    pm = kvsclient.PutMedia(s.url, "c-cam", unsigned_payload=False, host=u.hostname,
                            access_key=AK, secret_key=SK)
    assert pm.status == 403
    assert pm.resp.getheader("x-amzn-ErrorType") == "UnrecognizedClientException"

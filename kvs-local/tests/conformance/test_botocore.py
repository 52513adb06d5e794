"""kvs-local against the AWS SDK for Python (Debian's python3-boto3 and
python3-botocore): the SDK's own request serialisation, SigV4 signer,
response and error parsing. PutMedia (absent from botocore: the body is an
endless stream) is signed with botocore's SigV4Auth and UNSIGNED-PAYLOAD."""

import datetime
import subprocess
import time

import pytest
from botocore.exceptions import ClientError

import kvsclient
from kvsclient import client, put_all, sha256

APIS = [
    "PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL", "GET_DASH_STREAMING_SESSION_URL", "GET_CLIP", "GET_IMAGES",
]


def error_code(exc_info):
    return exc_info.value.response["Error"]["Code"], exc_info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_control_plane(kvs):
    kv = client("kinesisvideo", kvs.url)
    arn = kv.create_stream(
        StreamName="conf-cp", DataRetentionInHours=2, MediaType="video/h264",
        DeviceName="cam-1", Tags={"site": "lab"},
    )["StreamARN"]
    assert arn.startswith("arn:aws:kinesisvideo:us-west-2:")

    # default: ACTIVE at once (no flag beyond --port)
    info = kv.describe_stream(StreamName="conf-cp")["StreamInfo"]
    assert info["Status"] == "ACTIVE"
    assert info["StreamARN"] == arn
    assert info["MediaType"] == "video/h264"
    assert info["DeviceName"] == "cam-1"
    assert info["DataRetentionInHours"] == 2
    # botocore parses CreationTime (exponent form on the wire) as a timestamp
    assert isinstance(info["CreationTime"], datetime.datetime)
    assert abs(info["CreationTime"].timestamp() - time.time()) < 60
    assert kv.describe_stream(StreamARN=arn)["StreamInfo"]["StreamName"] == "conf-cp"

    kv.create_stream(StreamName="conf-cp2")
    kv.create_stream(StreamName="other")
    listed = kv.list_streams(StreamNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "conf-"})
    assert sorted(s["StreamName"] for s in listed["StreamInfoList"]) == ["conf-cp", "conf-cp2"]
    page = kv.list_streams(MaxResults=2)
    assert len(page["StreamInfoList"]) == 2 and "NextToken" in page
    rest = kv.list_streams(MaxResults=2, NextToken=page["NextToken"])
    assert len(rest["StreamInfoList"]) == 1 and "NextToken" not in rest
    paginated = [s["StreamName"] for p in kv.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1})
                 for s in p["StreamInfoList"]]
    assert sorted(paginated) == ["conf-cp", "conf-cp2", "other"]

    kv.tag_stream(StreamName="conf-cp", Tags={"camera": "door", "floor": "2"})
    assert kv.list_tags_for_stream(StreamARN=arn)["Tags"] == {"site": "lab", "camera": "door", "floor": "2"}
    kv.untag_stream(StreamName="conf-cp", TagKeyList=["floor"])
    assert kv.list_tags_for_stream(StreamName="conf-cp")["Tags"] == {"site": "lab", "camera": "door"}

    version = kv.describe_stream(StreamName="conf-cp")["StreamInfo"]["Version"]
    kv.update_data_retention(StreamName="conf-cp", CurrentVersion=version,
                             Operation="INCREASE_DATA_RETENTION", DataRetentionChangeInHours=3)
    info = kv.describe_stream(StreamName="conf-cp")["StreamInfo"]
    assert info["DataRetentionInHours"] == 5
    with pytest.raises(ClientError) as e:
        kv.update_data_retention(StreamName="conf-cp", CurrentVersion=version,
                                 Operation="DECREASE_DATA_RETENTION", DataRetentionChangeInHours=1)
    assert error_code(e) == ("VersionMismatchException", 400)

    for api in APIS:
        assert kv.get_data_endpoint(StreamName="conf-cp", APIName=api)["DataEndpoint"] == kvs.url
    assert kv.get_data_endpoint(StreamARN=arn, APIName="PUT_MEDIA")["DataEndpoint"] == kvs.url

    with pytest.raises(kv.exceptions.ResourceInUseException):
        kv.create_stream(StreamName="conf-cp")
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_stream(StreamName="missing")
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.get_data_endpoint(StreamName="missing", APIName="PUT_MEDIA")
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.delete_stream(StreamARN=arn, CurrentVersion="0")
    kv.delete_stream(StreamARN=arn, CurrentVersion=info["Version"])
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_stream(StreamName="conf-cp")

    report = kvs.report()
    ops = [r["operation"] for r in report["requests"]]
    for op in ["CreateStream", "DescribeStream", "ListStreams", "TagStream", "UntagStream",
               "ListTagsForStream", "UpdateDataRetention", "GetDataEndpoint", "DeleteStream"]:
        assert op in ops, op
    assert all(r["auth"] == "accepted" for r in report["requests"]), report["requests"]


def test_signature_errors(start):
    s = start("--key", "AKIDCONF:conf-secret", "--key", "AKIDTOKEN:token-secret:the-token")
    ok = client("kinesisvideo", s.url, access_key="AKIDCONF", secret_key="conf-secret")
    ok.create_stream(StreamName="sig")

    bad = client("kinesisvideo", s.url, access_key="AKIDCONF", secret_key="wrong")
    with pytest.raises(ClientError) as e:
        bad.describe_stream(StreamName="sig")
    assert error_code(e) == ("InvalidSignatureException", 403)
    assert "signature we calculated does not match" in e.value.response["Error"]["Message"]

    unknown = client("kinesisvideo", s.url, access_key="AKIDNOPE", secret_key="x")
    with pytest.raises(ClientError) as e:
        unknown.describe_stream(StreamName="sig")
    assert error_code(e) == ("UnrecognizedClientException", 403)

    demo = client("kinesisvideo", s.url)  # demo pair not accepted once keys are set
    with pytest.raises(ClientError) as e:
        demo.describe_stream(StreamName="sig")
    assert error_code(e) == ("UnrecognizedClientException", 403)

    # temporary credentials: boto3 signs x-amz-security-token
    tok = client("kinesisvideo", s.url, access_key="AKIDTOKEN", secret_key="token-secret", token="the-token")
    assert tok.describe_stream(StreamName="sig")["StreamInfo"]["Status"] == "ACTIVE"
    notok = client("kinesisvideo", s.url, access_key="AKIDTOKEN", secret_key="token-secret")
    with pytest.raises(ClientError) as e:
        notok.describe_stream(StreamName="sig")
    assert error_code(e) == ("UnrecognizedClientException", 403)

    rejected = [r for r in s.report()["requests"] if r["auth"] == "rejected"]
    assert len(rejected) == 4 and all(r["auth_reason"] for r in rejected)


def test_putmedia_and_read_back(kvs, mkv, tmp_path):
    data, header, clusters = mkv
    kv = client("kinesisvideo", kvs.url)
    kv.create_stream(StreamName="conf-media", MediaType="video/h264")
    endpoint = kv.get_data_endpoint(StreamName="conf-media", APIName="PUT_MEDIA")["DataEndpoint"]
    start_ts = int(time.time()) - 30 + 0.25
    pm, persisted = put_all(endpoint, "conf-media", header, clusters, start_ts=start_ts)
    numbers = [a["FragmentNumber"] for a in persisted]
    assert [a["FragmentTimecode"] for a in persisted] == [tc for tc, _ in clusters]
    kinds = [a["EventType"] for a in pm.acks]
    assert kinds.count("BUFFERING") == kinds.count("RECEIVED") == kinds.count("PERSISTED") == len(clusters)
    assert numbers == sorted(numbers, key=int) and all(len(n) == 47 for n in numbers)

    # GetMedia through the SDK's kinesis-video-media client
    get_ep = kv.get_data_endpoint(StreamName="conf-media", APIName="GET_MEDIA")["DataEndpoint"]
    media = client("kinesis-video-media", get_ep)
    r = media.get_media(StreamName="conf-media", StartSelector={"StartSelectorType": "EARLIEST"})
    assert r["ContentType"] == "video/webm"
    payload = r["Payload"].read()
    for n, (_, cluster) in zip(numbers, clusters):
        assert cluster in payload
        assert n.encode() in payload
    assert payload.count(b"AWS_KINESISVIDEO_CONTINUATION_TOKEN") == len(clusters)
    r = media.get_media(StreamName="conf-media",
                        StartSelector={"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": numbers[0]})
    rest = r["Payload"].read()
    assert clusters[0][1] not in rest and clusters[1][1] in rest
    with pytest.raises(ClientError) as e:
        media.get_media(StreamName="missing", StartSelector={"StartSelectorType": "EARLIEST"})
    assert error_code(e)[0] == "ResourceNotFoundException"

    # ListFragments / GetMediaForFragmentList through kinesis-video-archived-media
    list_ep = kv.get_data_endpoint(StreamName="conf-media", APIName="LIST_FRAGMENTS")["DataEndpoint"]
    archived = client("kinesis-video-archived-media", list_ep)
    frags = archived.list_fragments(StreamName="conf-media")["Fragments"]
    assert [f["FragmentNumber"] for f in frags] == numbers
    assert [f["FragmentSizeInBytes"] for f in frags] == [len(c) for _, c in clusters]
    for f, (tc, _) in zip(frags, clusters):
        assert isinstance(f["ProducerTimestamp"], datetime.datetime)
        assert abs(f["ProducerTimestamp"].timestamp() - (start_ts + tc / 1000)) < 0.01
        assert isinstance(f["ServerTimestamp"], datetime.datetime)
    # botocore sends timestamps as whole epoch seconds (it truncates), so the
    # range is chosen on second boundaries: [start_ts + 1 s, start_ts + 10 s]
    lo, hi = int(start_ts) + 1, int(start_ts) + 10
    selector = {"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
        "StartTimestamp": datetime.datetime.fromtimestamp(lo, datetime.timezone.utc),
        "EndTimestamp": datetime.datetime.fromtimestamp(hi, datetime.timezone.utc)}}
    ranged = archived.list_fragments(StreamName="conf-media", FragmentSelector=selector)["Fragments"]
    expected = [n for n, (tc, _) in zip(numbers, clusters) if lo <= start_ts + tc / 1000 <= hi]
    assert 0 < len(expected) < len(numbers)
    assert [f["FragmentNumber"] for f in ranged] == expected
    paged = [f["FragmentNumber"] for p in archived.get_paginator("list_fragments").paginate(
        StreamName="conf-media", PaginationConfig={"PageSize": 1}) for f in p["Fragments"]]
    assert paged == numbers

    fl_ep = kv.get_data_endpoint(StreamName="conf-media", APIName="GET_MEDIA_FOR_FRAGMENT_LIST")["DataEndpoint"]
    archived = client("kinesis-video-archived-media", fl_ep)
    r = archived.get_media_for_fragment_list(StreamName="conf-media", Fragments=[numbers[2], numbers[0]])
    got = r["Payload"].read()
    assert got.index(clusters[2][1]) < got.index(clusters[0][1])
    assert clusters[1][1] not in got

    # the report: every request accepted, every fragment persisted with its digest
    report = kvs.report()
    assert all(r["auth"] == "accepted" for r in report["requests"]), report["requests"]
    put = [r for r in report["requests"] if r["operation"] == "PutMedia"]
    assert len(put) == 1 and put[0]["status"] == 200
    (sess,) = report["sessions"]
    assert sess["stream"] == "conf-media" and sess["end_reason"]
    assert [f["outcome"] for f in sess["fragments"]] == ["persisted"] * len(clusters)
    assert [f["sha256"] for f in sess["fragments"]] == [sha256(c) for _, c in clusters]
    assert len(sess["acks"]) >= 3 * len(clusters)

    # stopped as a user would: report on exit, then export replays the upload
    final = kvs.stop()
    assert len(final["requests"]) == len(report["requests"])
    out = tmp_path / "export.mkv"
    assert kvs.export("conf-media", out) == data
    subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={out}", "!", "matroskademux",
                    "!", "h264parse", "!", "avdec_h264", "!", "fakesink"], check=True, timeout=60)


def test_putmedia_errors_through_http(kvs, mkv):
    _, header, clusters = mkv
    kv = client("kinesisvideo", kvs.url)
    kv.create_stream(StreamName="conf-err")
    # unknown stream: 404 before any body
    pm = kvsclient.PutMedia(kvs.url, "missing")
    assert pm.status == 404
    assert b"ResourceNotFoundException" in pm.body()
    # bad secret: 403 with the SigV4 error shape
    pm = kvsclient.PutMedia(kvs.url, "conf-err", secret_key="wrong")
    assert pm.status == 403
    assert pm.resp.getheader("x-amzn-ErrorType") == "InvalidSignatureException"
    # a fragment out of order gets ERROR 4004 and the session goes on
    pm = kvsclient.PutMedia(kvs.url, "conf-err")
    pm.send(header)
    pm.send(clusters[1][1])
    pm.send(clusters[0][1])
    pm.send(clusters[2][1])
    pm.finish()
    acks = pm.rest()
    errors = [a for a in acks if a["EventType"] == "ERROR"]
    assert [(a["ErrorId"], a["ErrorCode"]) for a in errors] == [(4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS")]
    assert len([a for a in acks if a["EventType"] == "PERSISTED"]) == 2


def test_creating_delay_is_an_option(start, mkv):
    _, header, clusters = mkv
    s = start("--creating-delay-ms", "1500")
    kv = client("kinesisvideo", s.url)
    kv.create_stream(StreamName="slow")
    assert kv.describe_stream(StreamName="slow")["StreamInfo"]["Status"] == "CREATING"
    pm = kvsclient.PutMedia(s.url, "slow")
    assert pm.status == 200
    pm.send(header)
    acks = pm.rest()
    assert [(a["EventType"], a.get("ErrorId")) for a in acks] == [("ERROR", 4008)]
    deadline = time.time() + 10
    while kv.describe_stream(StreamName="slow")["StreamInfo"]["Status"] != "ACTIVE":
        assert time.time() < deadline
        time.sleep(0.1)
    put_all(s.url, "slow", header, clusters)


def test_unserved_apis_say_so(kvs):
    """Signaling channels and the configurations kvs-local has no use for tell a boto3 user
    that kvs-local does not serve them. (GetClip, GetImages, HLS and MPEG-DASH are served:
    test_kvssink.py.)"""
    kv = client("kinesisvideo", kvs.url)
    kv.create_stream(StreamName="conf-hls", DataRetentionInHours=2, MediaType="video/h264")
    others = [
        ("signaling channels", lambda: kv.list_signaling_channels()),
        ("TagResource", lambda: kv.list_tags_for_resource(
            ResourceARN="arn:aws:kinesisvideo:us-west-2:123456789012:channel/c/1")),
        ("image generation", lambda: kv.describe_image_generation_configuration(
            StreamName="conf-hls")),
    ]
    for what, call in others:
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == ("UnknownOperationException", 404), what
        message = e.value.response["Error"]["Message"]
        assert "kvs-local does not serve" in message and what in message, message


def test_the_time_may_come_in_a_date_header(kvs):
    """SigV4 takes the request's time from Date when X-Amz-Date is absent (an HTTP date);
    a hand-written client may sign that way."""
    import hashlib
    import hmac
    import http.client
    import urllib.parse

    kv = client("kinesisvideo", kvs.url)
    kv.create_stream(StreamName="conf-date", DataRetentionInHours=2)
    host = urllib.parse.urlsplit(kvs.url).netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    iso, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%a, %d %b %Y %H:%M:%S GMT")
    body = b'{"StreamName":"conf-date"}'
    headers = {"content-type": "application/json", "date": date, "host": host}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/describeStream", ""] + [f"{k}:{headers[k]}" for k in sorted(headers)]
                          + ["", signed, sha256(body)])
    scope = f"{iso[:8]}/us-west-2/kinesisvideo/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", iso, scope, sha256(canonical.encode())])
    key = ("AWS4" + kvsclient.DEMO_SECRET_KEY).encode()
    for part in (iso[:8], "us-west-2", "kinesisvideo", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    conn = http.client.HTTPConnection(host)
    conn.request("POST", "/describeStream", body=body, headers={
        "Content-Type": "application/json", "Date": date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={kvsclient.DEMO_ACCESS_KEY}/{scope}, "
                         f"SignedHeaders={signed}, Signature={signature}"})
    answer = conn.getresponse()
    text = answer.read()
    assert answer.status == 200, text
    assert b'"StreamName":"conf-date"' in text, text

"""Control-plane rules as a boto3 user meets them: stream names that are
awkward file names, validation as the service does it (400
InvalidArgumentException, with botocore's own client-side validation off so
that the server is the judge), ListStreams paging, UpdateStream, and the
shape of StreamInfo."""

import pytest
from botocore.exceptions import ClientError

import kvsclient
from kvsclient import client, put_all


def error_of(exc_info):
    err = exc_info.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"]["Message"]


def test_dot_and_long_names_keep_other_streams(start, mkv, tmp_path):
    """`.`, `..` and 256-character names are valid stream names; with a data
    dir they must not touch other streams' data, and survive a restart."""
    data, header, clusters = mkv
    s = start()
    kv = client("kinesisvideo", s.url)
    kv.create_stream(StreamName="precious")
    put_all(s.url, "precious", header, clusters)
    long = "n" * 256
    for name in [".", "..", long]:
        kv.create_stream(StreamName=name)
    put_all(s.url, long, header, clusters)
    archived = client("kinesis-video-archived-media", s.url)
    assert len(archived.list_fragments(StreamName="precious")["Fragments"]) == len(clusters)
    for name in [".", ".."]:
        arn = kv.describe_stream(StreamName=name)["StreamInfo"]["StreamARN"]
        kv.delete_stream(StreamARN=arn)
    assert len(archived.list_fragments(StreamName="precious")["Fragments"]) == len(clusters)
    kv.create_stream(StreamName="..")
    s.stop()

    again = kvsclient.KvsLocal(s.data_dir)  # a restart on the same data dir
    try:
        kv = client("kinesisvideo", again.url)
        names = sorted(i["StreamName"] for i in kv.list_streams()["StreamInfoList"])
        assert names == sorted(["..", "precious", long])
        archived = client("kinesis-video-archived-media", again.url)
        assert len(archived.list_fragments(StreamName="precious")["Fragments"]) == len(clusters)
        assert len(archived.list_fragments(StreamName=long)["Fragments"]) == len(clusters)
        assert archived.list_fragments(StreamName="..")["Fragments"] == []
    finally:
        again.stop()  # SIGTERM, then kill if need be
    assert again.export(long, tmp_path / "long.mkv") == data


def test_validation_errors_as_botocore_parses_them(kvs):
    """What botocore validates itself it is told to send anyway; the server
    answers as the service: 400 InvalidArgumentException, 'N validation
    error(s) detected: Value ... at 'member' failed to satisfy constraint: ...'."""
    kv = client("kinesisvideo", kvs.url, validate=False)
    kv.create_stream(StreamName="v-ok", MediaType="video/h264,audio/aac", DeviceName="Kinesis_Video_Device")
    cases = [
        (kv.create_stream, dict(StreamName="v1", MediaType="h264"), "at 'mediaType' failed to satisfy constraint: Member must satisfy regular expression pattern"),
        (kv.create_stream, dict(StreamName="v1", MediaType="video/" + "x" * 123), "Member must have length less than or equal to 128"),
        (kv.create_stream, dict(StreamName="v1", KmsKeyId=""), "at 'kmsKeyId' failed to satisfy constraint: Member must have length greater than or equal to 1"),
        (kv.create_stream, dict(StreamName="v1", KmsKeyId="k" * 2049), "Member must have length less than or equal to 2048"),
        (kv.create_stream, dict(StreamName="v1", DeviceName="a b"), "at 'deviceName' failed to satisfy constraint"),
        (kv.create_stream, dict(StreamName="v1", DeviceName="d" * 129), "at 'deviceName' failed to satisfy constraint: Member must have length less than or equal to 128"),
        (kv.create_stream, dict(StreamName="v1", Tags={"k" * 129: "v"}), "Map keys must satisfy constraint: [Member must have length less than or equal to 128]"),
        (kv.create_stream, dict(StreamName="v1", Tags={"k#!": "v"}), "Map keys must satisfy constraint: [Member must satisfy regular expression pattern"),
        (kv.create_stream, dict(StreamName="v1", Tags={"k": "v" * 257}), "Map value must satisfy constraint: [Member must have length less than or equal to 256]"),
        (kv.create_stream, dict(StreamName="v1", DataRetentionInHours=-1), "Value '-1' at 'dataRetentionInHours' failed to satisfy constraint: Member must have value greater than or equal to 0"),
        (kv.tag_stream, dict(StreamName="v-ok", Tags={}), "at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1"),
        (kv.tag_stream, dict(StreamName="v-ok"), "Value null at 'tags' failed to satisfy constraint: Member must not be null"),
        (kv.untag_stream, dict(StreamName="v-ok", TagKeyList=[]), "at 'tagKeyList' failed to satisfy constraint: Member must have length greater than or equal to 1"),
        (kv.list_streams, dict(StreamNameCondition={"ComparisonOperator": "EQUALS", "ComparisonValue": "v"}), "Member must satisfy enum value set: [BEGINS_WITH]"),
        (kv.list_streams, dict(MaxResults=0), "Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"),
        (kv.list_streams, dict(MaxResults=10001), "Member must have value less than or equal to 10000"),
        (kv.describe_stream, dict(StreamARN="notanarn"), "Value 'notanarn' at 'streamARN' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:"),
        (kv.delete_stream, dict(StreamARN="arn:aws:kinesisvideo:us-west-2:1:stream/v-ok"), "at 'streamARN' failed to satisfy constraint"),
        (kv.get_data_endpoint, dict(StreamName="v-ok"), "Value null at 'aPIName' failed to satisfy constraint: Member must not be null"),
        (kv.get_data_endpoint, dict(StreamName="v-ok", APIName="PUT"), "Member must satisfy enum value set: [PUT_MEDIA, GET_MEDIA,"),
    ]
    for call, kwargs, what in cases:
        with pytest.raises(ClientError) as e:
            call(**kwargs)
        status, code, message = error_of(e)
        assert (status, code) == (400, "InvalidArgumentException"), (kwargs, message)
        assert "validation error" in message and what in message, (kwargs, message)
    assert [i["StreamName"] for i in kv.list_streams()["StreamInfoList"]] == ["v-ok"]
    archived = client("kinesis-video-archived-media", kvs.url, validate=False)
    for bad in [0, 1001]:
        with pytest.raises(ClientError) as e:
            archived.list_fragments(StreamName="v-ok", MaxResults=bad)
        assert error_of(e)[:2] == (400, "InvalidArgumentException")
    assert archived.list_fragments(StreamName="v-ok", MaxResults=1000)["Fragments"] == []


def test_list_streams_pages_survive_deletes(kvs):
    """A stream returned on one page and deleted before the next must not
    make the next page skip one (the token names the last stream returned)."""
    kv = client("kinesisvideo", kvs.url)
    for n in ["pg-a", "pg-b", "pg-c", "pg-d", "pg-e", "pg-f"]:
        kv.create_stream(StreamName=n)
    cond = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "pg-"}
    first = kv.list_streams(MaxResults=3, StreamNameCondition=cond)
    got = [s["StreamName"] for s in first["StreamInfoList"]]
    arn = kv.describe_stream(StreamName="pg-a")["StreamInfo"]["StreamARN"]
    kv.delete_stream(StreamARN=arn)
    second = kv.list_streams(MaxResults=3, StreamNameCondition=cond, NextToken=first["NextToken"])
    got += [s["StreamName"] for s in second["StreamInfoList"]]
    assert got == ["pg-a", "pg-b", "pg-c", "pg-d", "pg-e", "pg-f"]
    assert "NextToken" not in second
    paged = [s["StreamName"] for p in kv.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 2})
             for s in p["StreamInfoList"]]
    assert paged == ["pg-b", "pg-c", "pg-d", "pg-e", "pg-f"]
    with pytest.raises(ClientError) as e:
        kv.list_streams(NextToken="12")
    assert error_of(e)[:2] == (400, "InvalidArgumentException")


def test_update_stream(start):
    """UpdateStream as boto3 calls it: CurrentVersion checked, a new version,
    members left out unchanged, persisted in the data dir."""
    s = start()
    kv = client("kinesisvideo", s.url)
    arn = kv.create_stream(StreamName="up", MediaType="video/h264", DeviceName="dev1")["StreamARN"]
    v1 = kv.describe_stream(StreamName="up")["StreamInfo"]["Version"]
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.update_stream(StreamName="up", CurrentVersion="0", MediaType="video/h265")
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.update_stream(StreamName="missing", CurrentVersion=v1, MediaType="video/h265")
    kv.update_stream(StreamName="up", CurrentVersion=v1, MediaType="video/h265")
    info = kv.describe_stream(StreamName="up")["StreamInfo"]
    assert (info["MediaType"], info["DeviceName"], info["Status"]) == ("video/h265", "dev1", "ACTIVE")
    assert info["Version"] != v1
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.update_stream(StreamARN=arn, CurrentVersion=v1, DeviceName="dev2")
    kv.update_stream(StreamARN=arn, CurrentVersion=info["Version"], DeviceName="dev2")
    kvn = client("kinesisvideo", s.url, validate=False)
    with pytest.raises(ClientError) as e:
        kvn.update_stream(StreamName="up", CurrentVersion=info["Version"], MediaType="h265")
    assert error_of(e)[:2] == (400, "InvalidArgumentException")
    report = s.stop()
    updates = [r["status"] for r in report["requests"] if r["operation"] == "UpdateStream"]
    assert updates == [400, 404, 200, 400, 200, 400]
    again = kvsclient.KvsLocal(s.data_dir)
    try:
        info = client("kinesisvideo", again.url).describe_stream(StreamName="up")["StreamInfo"]
        assert (info["MediaType"], info["DeviceName"]) == ("video/h265", "dev2")
    finally:
        again.stop()


def test_stream_info_leaves_unset_fields_out(kvs):
    """DescribeStream / ListStreams on the wire: no `null` members (AWS's
    C++ kvssink warns about a null MediaType); KmsKeyId is always there."""
    kv = client("kinesisvideo", kvs.url)
    bodies = []
    kv.meta.events.register("response-received.kinesis-video.*",
                            lambda response_dict=None, **_: bodies.append(response_dict["body"]))
    kv.create_stream(StreamName="bare")
    info = kv.describe_stream(StreamName="bare")["StreamInfo"]
    assert "MediaType" not in info and "DeviceName" not in info
    assert info["KmsKeyId"].endswith(":alias/aws/kinesisvideo")
    kv.list_streams()
    for raw in bodies[-2:]:
        assert b"null" not in raw and b"MediaType" not in raw and b"DeviceName" not in raw, raw
        assert b"KmsKeyId" in raw

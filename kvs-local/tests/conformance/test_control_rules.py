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

"""kvs-local against the AWS CLI (Debian's awscli) with --endpoint-url."""

import json
import os
import shutil
import subprocess

import pytest

import kvsclient
from kvsclient import put_all

AWS = os.environ.get("KVS_CONFORMANCE_AWS") or ("/usr/bin/aws" if os.path.exists("/usr/bin/aws") else shutil.which("aws"))


def aws(url, *args, parse=True):
    env = dict(os.environ)
    env.update({
        "AWS_ACCESS_KEY_ID": kvsclient.DEMO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": kvsclient.DEMO_SECRET_KEY,
        "AWS_DEFAULT_REGION": kvsclient.REGION,
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_PAGER": "", "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "1",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    r = subprocess.run([AWS, *args, "--endpoint-url", url, "--output", "json"],
                       capture_output=True, text=True, env=env, timeout=60)
    if not parse:
        return r
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else {}


@pytest.fixture(scope="module", autouse=True)
def have_cli():
    assert AWS, "the aws CLI is missing (scripts/setup.sh installs Debian's awscli)"


def test_cli_control_plane_and_media(kvs, mkv, tmp_path):
    data, header, clusters = mkv
    u = kvs.url
    arn = aws(u, "kinesisvideo", "create-stream", "--stream-name", "cli-cam",
              "--data-retention-in-hours", "1", "--media-type", "video/h264",
              "--tags", "site=lab")["StreamARN"]
    info = aws(u, "kinesisvideo", "describe-stream", "--stream-arn", arn)["StreamInfo"]
    assert (info["StreamName"], info["Status"]) == ("cli-cam", "ACTIVE")
    assert "cli-cam" in [s["StreamName"] for s in aws(u, "kinesisvideo", "list-streams")["StreamInfoList"]]
    aws(u, "kinesisvideo", "tag-stream", "--stream-name", "cli-cam", "--tags", "camera=door")
    assert aws(u, "kinesisvideo", "list-tags-for-stream", "--stream-name", "cli-cam")["Tags"] == {
        "site": "lab", "camera": "door"}
    ep = aws(u, "kinesisvideo", "get-data-endpoint", "--stream-name", "cli-cam",
             "--api-name", "PUT_MEDIA")["DataEndpoint"]
    assert ep == u
    r = aws(u, "kinesisvideo", "describe-stream", "--stream-name", "nope", parse=False)
    assert r.returncode != 0 and "ResourceNotFoundException" in r.stderr

    _, persisted = put_all(ep, "cli-cam", header, clusters)
    numbers = [a["FragmentNumber"] for a in persisted]

    frags = aws(u, "kinesis-video-archived-media", "list-fragments", "--stream-name", "cli-cam")["Fragments"]
    assert sorted(f["FragmentNumber"] for f in frags) == numbers
    out = tmp_path / "get-media.webm"
    meta = aws(u, "kinesis-video-media", "get-media", "--stream-name", "cli-cam",
               "--start-selector", "StartSelectorType=EARLIEST", str(out))
    assert meta["ContentType"] == "video/webm"
    got = out.read_bytes()
    assert all(c in got for _, c in clusters)
    out = tmp_path / "list.webm"
    aws(u, "kinesis-video-archived-media", "get-media-for-fragment-list", str(out),
        "--stream-name", "cli-cam", "--fragments", *numbers)
    assert all(c in out.read_bytes() for _, c in clusters)

    aws(u, "kinesisvideo", "delete-stream", "--stream-arn", arn)
    assert aws(u, "kinesisvideo", "list-streams")["StreamInfoList"] == []
    assert all(r["auth"] == "accepted" for r in kvs.report()["requests"]
               if r["error_type"] != "ResourceNotFoundException")

"""Our own kvssink (the workspace's GStreamer element) against the kvs-local
binary, as a user runs it: CONTROL_PLANE_URI and the demo keys; then read
back with boto3, the report and `kvs-local export`."""

import os
import subprocess

import kvsclient
from kvsclient import client, sha256

PLUGIN_DIR = os.environ.get("KVSSINK_PLUGIN_DIR", str(kvsclient.REPO / "target" / "debug"))


def test_kvssink_streams_into_kvs_local(kvs, tmp_path):
    assert os.path.exists(os.path.join(PLUGIN_DIR, "libgstkvs.so")), \
        f"kvssink not built in {PLUGIN_DIR} (cargo build -p gst-plugin-kvs)"
    env = dict(os.environ)
    env.update({
        "GST_PLUGIN_PATH": PLUGIN_DIR,
        "CONTROL_PLANE_URI": kvs.url,
        "AWS_ACCESS_KEY_ID": kvsclient.DEMO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": kvsclient.DEMO_SECRET_KEY,
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    })
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    r = subprocess.run(
        ["gst-launch-1.0", "-e", "videotestsrc", "num-buffers=90",
         "!", "video/x-raw,format=I420,width=160,height=120,framerate=30/1",
         "!", "x264enc", "key-int-max=15", "speed-preset=ultrafast",
         "!", "h264parse", "!", "matroskamux", "streamable=true",
         "!", "kvssink", "stream-name=rs-cam", "aws-region=us-west-2"],
        env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

    kv = client("kinesisvideo", kvs.url)
    assert kv.describe_stream(StreamName="rs-cam")["StreamInfo"]["Status"] == "ACTIVE"
    archived = client("kinesis-video-archived-media",
                      kv.get_data_endpoint(StreamName="rs-cam", APIName="LIST_FRAGMENTS")["DataEndpoint"])
    frags = archived.list_fragments(StreamName="rs-cam")["Fragments"]
    assert len(frags) >= 5, frags

    report = kvs.report()
    assert all(q["auth"] == "accepted" for q in report["requests"]), report["requests"]
    persisted = [f for s in report["sessions"] for f in s["fragments"] if f["outcome"] == "persisted"]
    assert len(persisted) == len(frags)

    kvs.stop()
    out = tmp_path / "rs-cam.mkv"
    data = kvs.export("rs-cam", out)
    header, clusters = kvsclient.split_mkv(data)
    assert sorted(sha256(c) for _, c in clusters) == sorted(f["sha256"] for f in persisted)
    subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={out}", "!", "matroskademux",
                    "!", "h264parse", "!", "avdec_h264", "!", "fakesink"], check=True, timeout=60)

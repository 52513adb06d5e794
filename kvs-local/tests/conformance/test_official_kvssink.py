"""AWS's own kvssink (the GStreamer element of AWS's C++ producer SDK,
libgstkvssink.so) against the kvs-local binary: the line AWS's README gives,
with only the plugin path changed, then every fragment read back with boto3,
kvs-local's report and `kvs-local export`.

AWS's element is not built here: the test runs when KVSSINK_OFFICIAL_PLUGIN_DIR
names a directory holding a build of it (README.md, "kvs-local" section, says
how to build one), and is skipped otherwise. Our own plugin is also named
kvssink, so AWS's is loaded from its directory alone, with a registry of its
own."""

import os
import re
import shlex
import subprocess

import pytest

import kvsclient
from kvsclient import client, sha256

OFFICIAL_DIR = os.environ.get("KVSSINK_OFFICIAL_PLUGIN_DIR", "")

pytestmark = pytest.mark.skipif(
    not OFFICIAL_DIR,
    reason="KVSSINK_OFFICIAL_PLUGIN_DIR is not set: no build of AWS's kvssink "
    "(libgstkvssink.so) to run against kvs-local; kvs-local/README.md says how to build one",
)

# AWS's README line, as typed: a live test source, 10 s, into stream "official".
OFFICIAL_LINE = (
    "videotestsrc is-live=true num-buffers=300 "
    "! video/x-raw,format=I420,width=640,height=480,framerate=30/1 "
    "! x264enc bframes=0 key-int-max=45 bitrate=500 tune=zerolatency "
    "! video/x-h264,stream-format=avc,alignment=au "
    "! kvssink stream-name=official aws-region=us-east-1"
)


def official_env(tmp_path, url):
    env = dict(os.environ)
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "GST_PLUGIN_PATH_1_0"):
        env.pop(k, None)
    env.update({
        "GST_PLUGIN_PATH": OFFICIAL_DIR,
        "GST_REGISTRY": str(tmp_path / "official-registry.bin"),
        "CONTROL_PLANE_URI": url,
        "AWS_ACCESS_KEY_ID": kvsclient.DEMO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": kvsclient.DEMO_SECRET_KEY,
    })
    return env


def test_official_kvssink_streams_into_kvs_local(kvs, tmp_path):
    so = os.path.join(OFFICIAL_DIR, "libgstkvssink.so")
    assert os.path.isfile(so), f"KVSSINK_OFFICIAL_PLUGIN_DIR={OFFICIAL_DIR}: no libgstkvssink.so"
    env = official_env(tmp_path, kvs.url)
    inspect = subprocess.run(["gst-inspect-1.0", "kvssink"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert inspect.returncode == 0 and "libgstkvssink.so" in inspect.stdout, \
        "the kvssink found is not AWS's:\n" + inspect.stdout[:2000] + inspect.stderr[-2000:]

    # In an empty directory: AWS's element reads ../kvs_log_configuration when there is one;
    # without, it logs at DEBUG level to its standard output (the acks included).
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    r = subprocess.run(["gst-launch-1.0", "-e", *shlex.split(OFFICIAL_LINE)], env=env,
                       cwd=run_dir, capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]

    kv = client("kinesisvideo", kvs.url)
    assert kv.describe_stream(StreamName="official")["StreamInfo"]["Status"] == "ACTIVE"
    archived = client("kinesis-video-archived-media",
                      kv.get_data_endpoint(StreamName="official",
                                           APIName="LIST_FRAGMENTS")["DataEndpoint"])
    frags = archived.list_fragments(StreamName="official")["Fragments"]
    # 300 frames with a key frame at least every 45: 7 fragments or more.
    assert len(frags) >= 7, frags

    report = kvs.report()
    assert report["requests"], report
    assert all(q["auth"] == "accepted" for q in report["requests"]), report["requests"]
    sessions = [s for s in report["sessions"] if s["stream"] == "official"]
    assert sessions, report["sessions"]
    outcomes = [f["outcome"] for s in sessions for f in s["fragments"]]
    assert outcomes and all(o == "persisted" for o in outcomes), outcomes
    persisted = [f for s in sessions for f in s["fragments"] if f["outcome"] == "persisted"]
    assert len(persisted) == len(frags)

    # AWS's element got a PERSISTED ack for every fragment kvs-local stored, and no ERROR.
    acks = re.findall(r'"EventType":"(\w+)","FragmentTimecode":(\d+)', out)
    assert acks, "no acks in AWS's element's DEBUG output:\n" + out[-4000:]
    assert not [a for a in acks if a[0] == "ERROR"], acks
    assert len({tc for event, tc in acks if event == "PERSISTED"}) == len(frags), acks

    kvs.stop()
    exported = tmp_path / "official.mkv"
    data = kvs.export("official", exported)
    header, clusters = kvsclient.split_mkv(data)
    assert sorted(sha256(c) for _, c in clusters) == sorted(f["sha256"] for f in persisted)
    subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={exported}", "!",
                    "matroskademux", "!", "h264parse", "!", "avdec_h264", "!", "fakesink"],
                   check=True, timeout=60)


# Frames whose PTS are epoch nanoseconds (the first at 2026-06-01T08:00:00.250Z), a key frame
# every 2 s: with use-original-pts=true, AWS's element stores each fragment at its frames' time.
ORIGINAL_PTS_MS = 1_780_300_800_250
ORIGINAL_PTS_LINE = (
    f"videotestsrc num-buffers=50 timestamp-offset={ORIGINAL_PTS_MS * 1_000_000} "
    "! video/x-raw,format=I420,width=160,height=120,framerate=5/1 "
    "! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 "
    "! video/x-h264,stream-format=avc,alignment=au "
    "! kvssink aws-region=us-east-1 use-original-pts=true"
)


def test_use_original_pts_stores_the_same_times_from_aws_element_and_ours(kvs, tmp_path):
    """The drop-in promise for use-original-pts: the same line, with AWS's plugin path or
    ours, stores the same producer timestamps, live (AWS's default) and offline."""
    from test_kvssink import PLUGIN_DIR
    ours = official_env(tmp_path, kvs.url)
    ours.update({"GST_PLUGIN_PATH": PLUGIN_DIR, "GST_REGISTRY": str(tmp_path / "ours.bin")})
    hosts = {"aws": official_env(tmp_path, kvs.url), "ours": ours}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stored = {}
    for who, env in hosts.items():
        for mode in ("realtime", "offline"):
            stream = f"pts-{who}-{mode}"
            line = f"{ORIGINAL_PTS_LINE} stream-name={stream}"
            if mode == "offline":
                line += " streaming-type=offline"
            r = subprocess.run(["gst-launch-1.0", "-e", *shlex.split(line)], env=env,
                               cwd=run_dir, capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
            kv = client("kinesisvideo", kvs.url)
            archived = client("kinesis-video-archived-media",
                              kv.get_data_endpoint(StreamName=stream,
                                                   APIName="LIST_FRAGMENTS")["DataEndpoint"])
            frags = archived.list_fragments(StreamName=stream)["Fragments"]
            stored[(who, mode)] = sorted(
                round(f["ProducerTimestamp"].timestamp() * 1000) for f in frags)
    expected = [ORIGINAL_PTS_MS + 2000 * i for i in range(5)]
    assert stored == {key: expected for key in stored}, stored

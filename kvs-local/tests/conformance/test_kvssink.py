"""Our own kvssink (the workspace's GStreamer element) against the kvs-local
binary, as a user runs it: CONTROL_PLANE_URI and the demo keys; then read
back with boto3, the report and `kvs-local export`."""

import datetime
import os
import re
import subprocess
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

import kvsclient
from kvsclient import client, sha256

PLUGIN_DIR = os.environ.get("KVSSINK_PLUGIN_DIR", str(kvsclient.REPO / "target" / "debug"))


def kvssink_env(kvs):
    """The environment of a user's kvssink pointed at `kvs` with the demo keys."""
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
    return env


def test_kvssink_streams_into_kvs_local(kvs, tmp_path):
    assert os.path.exists(os.path.join(PLUGIN_DIR, "libgstkvs.so")), \
        f"kvssink not built in {PLUGIN_DIR} (cargo build -p gst-plugin-kvs)"
    env = kvssink_env(kvs)
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


def decoded_bytes(args, tmp_path, name):
    """Runs a gst-launch-1.0 line whose decoded output goes to `filesink location=<name>`
    (written in `tmp_path`) and gives how many bytes it wrote."""
    out = tmp_path / name
    line = [a.replace("@OUT@", str(out)) for a in args]
    r = subprocess.run(["gst-launch-1.0", "-q"] + line, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out.stat().st_size


def clip_file(archived, stream, start, tmp_path):
    """boto3's get_clip of `stream`'s first minute from `start` (epoch seconds), as a file."""
    utc = datetime.timezone.utc
    clip = archived.get_clip(StreamName=stream, ClipFragmentSelector={
        "FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
            "StartTimestamp": datetime.datetime.fromtimestamp(start, utc),
            "EndTimestamp": datetime.datetime.fromtimestamp(start + 60, utc)}})
    assert clip["ContentType"] == "video/mp4"
    out = tmp_path / f"{stream}.mp4"
    out.write_bytes(clip["Payload"].read())
    return out


def decoded_video(mp4, tmp_path):
    """Bytes of I420 that qtdemux and avdec_h264 decode from the MP4 file `mp4`."""
    return decoded_bytes(["filesrc", f"location={mp4}", "!", "qtdemux", "!", "h264parse", "!",
                          "avdec_h264", "!", "videoconvert", "!", "video/x-raw,format=I420",
                          "!", "filesink", "location=@OUT@"], tmp_path, "video.raw")


def record_av(kvs, stream, start, frames=120, size=(160, 120), pattern="smpte"):
    """kvssink in gst-launch-1.0 uploads `frames` of H.264 (30 a second, with B-frames) and AAC,
    muxed by matroskamux, into `stream`, its timecode 0 at `start` (epoch seconds): a fragment
    a second."""
    r = subprocess.run(
        ["gst-launch-1.0", "-e", "videotestsrc", f"num-buffers={frames}", f"pattern={pattern}",
         "!", f"video/x-raw,format=I420,width={size[0]},height={size[1]},framerate=30/1",
         "!", "x264enc", "key-int-max=30", "bframes=2", "!", "h264parse", "!", "queue", "!", "mux.",
         "audiotestsrc", "num-buffers=170", "!", "audio/x-raw,rate=44100",
         "!", "avenc_aac", "!", "aacparse", "!", "queue", "!", "mux.",
         "matroskamux", "name=mux", "streamable=true",
         "!", "kvssink", f"stream-name={stream}", "aws-region=us-west-2",
         f"file-start-time={start}"],
        env=kvssink_env(kvs), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_get_clip_gives_an_mp4_of_every_frame(kvs, tmp_path):
    """A boto3 user's GetClip of what kvssink sent (H.264 with B-frames and AAC): an MP4 that
    GStreamer's qtdemux reads, with every video frame of the fragments in the range; then the
    service's errors for an empty range and a stream that retains nothing."""
    start = 1_764_000_000
    record_av(kvs, "rs-clip", start)

    kv = client("kinesisvideo", kvs.url)
    archived = client("kinesis-video-archived-media",
                      kv.get_data_endpoint(StreamName="rs-clip", APIName="GET_CLIP")["DataEndpoint"])
    utc = datetime.timezone.utc
    frags = archived.list_fragments(StreamName="rs-clip")["Fragments"]
    assert len(frags) == 4, frags
    out = clip_file(archived, "rs-clip", start, tmp_path)
    # every frame decodes: 120 raw I420 frames of 160x120, and all the audio
    assert decoded_video(out, tmp_path) == 120 * 160 * 120 * 3 // 2
    audio = decoded_bytes(["filesrc", f"location={out}", "!", "qtdemux", "!", "aacparse", "!",
                           "avdec_aac", "!", "audioconvert", "!", "audio/x-raw,format=S16LE",
                           "!", "filesink", "location=@OUT@"], tmp_path, "audio.raw")
    assert audio >= 160 * 1024 * 2, audio

    # a range with no fragment, and a stream without retention: as the service answers them
    with pytest.raises(ClientError) as e:
        archived.get_clip(StreamName="rs-clip", ClipFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
                "StartTimestamp": datetime.datetime.fromtimestamp(start - 100, utc),
                "EndTimestamp": datetime.datetime.fromtimestamp(start - 50, utc)}})
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    kv.create_stream(StreamName="rs-noretention")
    with pytest.raises(ClientError) as e:
        archived.get_clip(StreamName="rs-noretention", ClipFragmentSelector={
            "FragmentSelectorType": "SERVER_TIMESTAMP", "TimestampRange": {
                "StartTimestamp": datetime.datetime.fromtimestamp(start, utc),
                "EndTimestamp": datetime.datetime.fromtimestamp(start + 60, utc)}})
    assert e.value.response["Error"]["Code"] == "NoDataRetentionException"


def record_alaw(kvs, stream, start, frames, audio_buffers):
    """AWS's line for audio: H.264 (160x120, 30 fps) on kvssink's video pad and G.711 A-law
    (8 kHz, 1000 samples a buffer) on its audio pad, recorded from `start`."""
    r = subprocess.run(
        ["gst-launch-1.0", "-e", "videotestsrc", f"num-buffers={frames}",
         "!", "video/x-raw,format=I420,width=160,height=120,framerate=30/1",
         "!", "x264enc", "key-int-max=30", "!", "h264parse", "!", "kvssink", "name=k",
         f"stream-name={stream}", "aws-region=us-west-2", f"file-start-time={start}",
         "audiotestsrc", f"num-buffers={audio_buffers}", "samplesperbuffer=1000",
         "!", "audio/x-raw,rate=8000,channels=1", "!", "alawenc", "!", "k."],
        env=kvssink_env(kvs), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_get_clip_of_g711_on_kvssinks_audio_pad(kvs, tmp_path):
    """AWS's line for audio: H.264 on kvssink's video pad and G.711 A-law on its audio pad
    (kvssink muxes them itself). GetClip gives an MP4 with every frame and every sample."""
    start = 1_764_001_000
    record_alaw(kvs, "rs-clip-alaw", start, 150, 40)

    kv = client("kinesisvideo", kvs.url)
    archived = client("kinesis-video-archived-media", kv.get_data_endpoint(
        StreamName="rs-clip-alaw", APIName="GET_CLIP")["DataEndpoint"])
    out = clip_file(archived, "rs-clip-alaw", start, tmp_path)
    assert decoded_video(out, tmp_path) == 150 * 160 * 120 * 3 // 2
    # 40,000 A-law samples, 2 bytes each decoded
    audio = decoded_bytes(["filesrc", f"location={out}", "!", "qtdemux", "!", "alawdec", "!",
                           "audio/x-raw,format=S16LE", "!", "filesink", "location=@OUT@"],
                          tmp_path, "audio.raw")
    assert audio == 40_000 * 2, audio


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def played_video(url, tmp_path, name):
    """Bytes of I420 video GStreamer's own HLS or DASH client (uridecodebin3: hlsdemux2 or
    dashdemux2 over souphttpsrc) decodes from a session's URL."""
    return decoded_bytes(["uridecodebin3", f"uri={url}", "caps=video/x-raw", "!", "videoconvert",
                          "!", "video/x-raw,format=I420", "!", "filesink", "location=@OUT@"],
                         tmp_path, name)


def hls_client(kvs, stream):
    """The kinesis-video-archived-media client of `stream`'s HLS endpoint."""
    kv = client("kinesisvideo", kvs.url)
    return client("kinesis-video-archived-media", kv.get_data_endpoint(
        StreamName=stream, APIName="GET_HLS_STREAMING_SESSION_URL")["DataEndpoint"])


def hls_on_demand(archived, stream, start, **more):
    """The URL of an ON_DEMAND HLS session of the minute from `start`, by producer time."""
    utc = datetime.timezone.utc
    return archived.get_hls_streaming_session_url(
        StreamName=stream, PlaybackMode="ON_DEMAND", HLSFragmentSelector={
            "FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
                "StartTimestamp": datetime.datetime.fromtimestamp(start, utc),
                "EndTimestamp": datetime.datetime.fromtimestamp(start + 60, utc)}},
        **more)["HLSStreamingSessionURL"]


def hls_playlists(url):
    """A session's master playlist, media playlist and the media playlist's URIs, fetched as
    a player does, and the base the URIs are relative to."""
    base = url.rsplit("/", 1)[0] + "/"
    master = fetch(url).decode()
    assert master.startswith("#EXTM3U"), master
    media_uri = [line for line in master.splitlines() if line and not line.startswith("#")]
    media = fetch(base + media_uri[0]).decode()
    segments = [line for line in media.splitlines() if line and not line.startswith("#")]
    return master, media, segments, base


def test_hls_session_plays_every_frame(kvs, tmp_path):
    """A boto3 user's HLS session (GetHLSStreamingSessionURL, fragmented MP4) of what kvssink
    sent (H.264 with B-frames and AAC), fetched as a player does: the master playlist, the
    media playlist, the initialization segment and each fragment's media segment. Their
    concatenation decodes with qtdemux to every video frame and all the audio. LIVE mode
    lists the last fragments without an end; the service's errors for what it refuses."""
    start = 1_764_002_000
    record_av(kvs, "rs-hls", start)

    kv = client("kinesisvideo", kvs.url)
    archived = hls_client(kvs, "rs-hls")
    utc = datetime.timezone.utc

    def on_demand(**more):
        return hls_on_demand(archived, "rs-hls", start, **more)

    url = on_demand(DisplayFragmentTimestamp="ALWAYS")
    master, media, segments, base = hls_playlists(url)
    assert 'CODECS="avc1.' in master and "mp4a.40.2" in master and "RESOLUTION=160x120" in master
    assert len(segments) == 4 and media.rstrip().endswith("#EXT-X-ENDLIST"), media
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in media
    # by producer timestamps the service's default DiscontinuityMode is NEVER
    assert "#EXT-X-DISCONTINUITY" not in media, media
    assert "#EXT-X-PROGRAM-DATE-TIME:2025-11-24T" in media, media
    durations = [float(line[8:].rstrip(",")) for line in media.splitlines()
                 if line.startswith("#EXTINF:")]
    assert abs(sum(durations) - 4.0) < 0.1, durations
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', media).group(1)
    out = tmp_path / "hls.mp4"
    with open(out, "wb") as f:
        f.write(fetch(base + init))
        for segment in segments:
            f.write(fetch(base + segment))
    assert decoded_video(out, tmp_path) == 120 * 160 * 120 * 3 // 2
    audio = decoded_bytes(["filesrc", f"location={out}", "!", "qtdemux", "!", "aacparse", "!",
                           "avdec_aac", "!", "audioconvert", "!", "audio/x-raw,format=S16LE",
                           "!", "filesink", "location=@OUT@"], tmp_path, "audio.raw")
    assert audio >= 160 * 1024 * 2, audio
    # the report shows the player's requests as the service names them
    ops = [(r["operation"], r["stream"], r["status"]) for r in kvs.report()["requests"]]
    for op in ("GetHLSMasterPlaylist", "GetHLSMediaPlaylist", "GetMP4InitFragment",
               "GetMP4MediaFragment"):
        assert (op, "rs-hls", 200) in ops, ops
    # GStreamer's own HLS client (uridecodebin3, hlsdemux2 over souphttpsrc) plays the URL
    played = played_video(url, tmp_path, "played.raw")
    assert played == 120 * 160 * 120 * 3 // 2
    # DiscontinuityMode ALWAYS: a marker between every two fragments, and the player still
    # plays every frame
    always = on_demand(DiscontinuityMode="ALWAYS")
    always_media = fetch(always.rsplit("/", 1)[0] + "/" + [
        line for line in fetch(always).decode().splitlines()
        if line and not line.startswith("#")][0]).decode()
    assert always_media.count("#EXT-X-DISCONTINUITY\n") == 3, always_media
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in always_media, always_media
    played = played_video(always, tmp_path, "always.raw")
    assert played == 120 * 160 * 120 * 3 // 2

    # LIVE: the last fragments, no end, numbered as in the stream
    live = archived.get_hls_streaming_session_url(
        StreamName="rs-hls", MaxMediaPlaylistFragmentResults=2)["HLSStreamingSessionURL"]
    live_master = fetch(live).decode()
    live_media = fetch(live.rsplit("/", 1)[0] + "/" + [
        line for line in live_master.splitlines() if line and not line.startswith("#")][0]).decode()
    assert "#EXT-X-ENDLIST" not in live_media and "#EXT-X-MEDIA-SEQUENCE:2" in live_media
    assert live_media.count("getMP4MediaFragment.mp4") == 2, live_media
    # by server timestamps the default is ALWAYS, the two markers before the window counted
    assert live_media.count("#EXT-X-DISCONTINUITY\n") == 1, live_media
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:2" in live_media, live_media
    # the producer starts again (a new stream header, another size): LIVE follows it, with
    # an initialization segment of its own
    record_av(kvs, "rs-hls", start + 100, frames=60, size=(320, 240))
    live = archived.get_hls_streaming_session_url(
        StreamName="rs-hls", MaxMediaPlaylistFragmentResults=5)["HLSStreamingSessionURL"]
    live_master = fetch(live).decode()
    assert "RESOLUTION=320x240" in live_master, live_master
    live_media = fetch(live.rsplit("/", 1)[0] + "/" + [
        line for line in live_master.splitlines() if line and not line.startswith("#")][0]).decode()
    assert live_media.count("getMP4MediaFragment.mp4") == 2, live_media
    assert "#EXT-X-MEDIA-SEQUENCE:4" in live_media, live_media

    # a token changed by hand (a later expiry, another stream) is refused
    token = url.split("SessionToken=")[1]
    payload, mac = token.split("-")
    forged = bytes.fromhex(payload).replace(b'"s":"rs-hls"', b'"s":"rs-clip"').hex()
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(url.replace(token, f"{forged}-{mac}"))
    assert e.value.code == 400

    # what the service refuses
    with pytest.raises(ClientError) as e:
        archived.get_hls_streaming_session_url(
            StreamName="rs-hls", PlaybackMode="ON_DEMAND", HLSFragmentSelector={
                "FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
                    "StartTimestamp": datetime.datetime.fromtimestamp(start - 100, utc),
                    "EndTimestamp": datetime.datetime.fromtimestamp(start - 50, utc)}})
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        archived.get_hls_streaming_session_url(StreamName="rs-hls", PlaybackMode="ON_DEMAND")
    assert e.value.response["Error"]["Code"] == "InvalidArgumentException"
    kv.create_stream(StreamName="rs-hls-noretention")
    with pytest.raises(ClientError) as e:
        archived.get_hls_streaming_session_url(StreamName="rs-hls-noretention")
    assert e.value.response["Error"]["Code"] == "NoDataRetentionException"


def test_hls_session_in_mpeg_ts_plays_every_frame(kvs, tmp_path):
    """A boto3 user's HLS session in ContainerFormat MPEG_TS of what kvssink sent (H.264 with
    B-frames and AAC), fetched as a player does: the master playlist, the media playlist (one
    getTSFragment.ts per fragment, no initialization segment) and each fragment's MPEG-TS
    segment. Their concatenation decodes with tsdemux to every video frame and all the audio,
    and GStreamer's HLS client plays the URL to every frame. LIVE lists TS segments too; an
    unknown ContainerFormat is refused as the service refuses it."""
    start = 1_764_005_000
    record_av(kvs, "rs-hls-ts", start)

    archived = hls_client(kvs, "rs-hls-ts")
    url = hls_on_demand(archived, "rs-hls-ts", start, ContainerFormat="MPEG_TS")
    master, media, segments, base = hls_playlists(url)
    assert 'CODECS="avc1.' in master and "mp4a.40.2" in master and "RESOLUTION=160x120" in master
    assert len(segments) == 4 and media.rstrip().endswith("#EXT-X-ENDLIST"), media
    # MPEG-TS segments carry their own PAT, PMT and parameter sets: no initialization segment
    assert "#EXT-X-MAP" not in media and ".mp4" not in media, media
    assert all(re.fullmatch(r"getTSFragment\.ts\?FragmentNumber=\d+&SessionToken=[0-9a-f]+-\w+",
                            segment) for segment in segments), media
    out = tmp_path / "hls.ts"
    with open(out, "wb") as f:
        for segment in segments:
            with urllib.request.urlopen(base + segment, timeout=30) as r:
                assert r.headers["Content-Type"] == "video/mp2t"
                data = r.read()
            # 188-byte packets, each with its sync byte
            assert len(data) % 188 == 0 and data[::188] == b"\x47" * (len(data) // 188)
            f.write(data)
    video = decoded_bytes(["filesrc", f"location={out}", "!", "tsdemux", "!", "h264parse", "!",
                           "avdec_h264", "!", "videoconvert", "!", "video/x-raw,format=I420",
                           "!", "filesink", "location=@OUT@"], tmp_path, "video.raw")
    assert video == 120 * 160 * 120 * 3 // 2
    audio = decoded_bytes(["filesrc", f"location={out}", "!", "tsdemux", "!", "aacparse", "!",
                           "avdec_aac", "!", "audioconvert", "!", "audio/x-raw,format=S16LE",
                           "!", "filesink", "location=@OUT@"], tmp_path, "audio.raw")
    assert audio >= 160 * 1024 * 2, audio
    # GStreamer's own HLS client (uridecodebin3, hlsdemux2 over souphttpsrc) plays the URL
    played = played_video(url, tmp_path, "played.raw")
    assert played == 120 * 160 * 120 * 3 // 2
    # the report names the requests as the service does; no initialization segment asked for
    ops = [(r["operation"], r["stream"], r["status"]) for r in kvs.report()["requests"]]
    for op in ("GetHLSMasterPlaylist", "GetHLSMediaPlaylist", "GetTSFragment"):
        assert (op, "rs-hls-ts", 200) in ops, ops
    assert not [o for o in ops if o[0].startswith("GetMP4")], ops

    # LIVE: the last fragments as TS segments, no end
    live = archived.get_hls_streaming_session_url(
        StreamName="rs-hls-ts", ContainerFormat="MPEG_TS",
        MaxMediaPlaylistFragmentResults=2)["HLSStreamingSessionURL"]
    live_media = fetch(live.rsplit("/", 1)[0] + "/" + [
        line for line in fetch(live).decode().splitlines()
        if line and not line.startswith("#")][0]).decode()
    assert "#EXT-X-ENDLIST" not in live_media and "#EXT-X-MAP" not in live_media, live_media
    assert live_media.count("\ngetTSFragment.ts?FragmentNumber=") == 2, live_media

    # a ContainerFormat the service does not know: its validation error
    with pytest.raises(ClientError) as e:
        archived.get_hls_streaming_session_url(StreamName="rs-hls-ts", ContainerFormat="MP4")
    assert e.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "'MP4' at 'containerFormat'" in e.value.response["Error"]["Message"]


def test_dash_session_plays_every_frame(kvs, tmp_path):
    """A boto3 user's MPEG-DASH session (GetDASHStreamingSessionURL) of what kvssink sent
    (H.264 with B-frames and AAC): a static manifest for ON_DEMAND, one segment per fragment
    at its producer time with kvs:ts and kvs:fn when asked, that GStreamer's own DASH client
    (uridecodebin3, dashdemux2) plays to every frame; a dynamic one for LIVE; G.711 audio,
    which HLS refuses, is served; the service's errors for what it refuses."""
    import xml.etree.ElementTree as ET
    start = 1_764_003_000
    record_av(kvs, "rs-dash", start)
    kv = client("kinesisvideo", kvs.url)
    archived = client("kinesis-video-archived-media", kv.get_data_endpoint(
        StreamName="rs-dash", APIName="GET_DASH_STREAMING_SESSION_URL")["DataEndpoint"])
    utc = datetime.timezone.utc
    selector = {"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {
        "StartTimestamp": datetime.datetime.fromtimestamp(start, utc),
        "EndTimestamp": datetime.datetime.fromtimestamp(start + 60, utc)}}
    url = archived.get_dash_streaming_session_url(
        StreamName="rs-dash", PlaybackMode="ON_DEMAND", DASHFragmentSelector=selector,
        DisplayFragmentTimestamp="ALWAYS", DisplayFragmentNumber="ALWAYS",
    )["DASHStreamingSessionURL"]
    assert "/dash/v1/getDASHManifest.mpd?SessionToken=" in url, url
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    mpd = ET.fromstring(fetch(url))
    assert mpd.get("type") == "static", mpd.attrib
    rep = mpd.find("d:Period/d:AdaptationSet/d:Representation", ns)
    assert rep.get("codecs").startswith("avc1.") and "mp4a.40.2" in rep.get("codecs")
    assert (rep.get("width"), rep.get("height")) == ("160", "120")
    timeline = rep.findall("d:SegmentList/d:SegmentTimeline/d:S", ns)
    segments = rep.findall("d:SegmentList/d:SegmentURL", ns)
    assert len(timeline) == len(segments) == 4
    frags = archived.list_fragments(StreamName="rs-dash")["Fragments"]
    numbers = sorted(f["FragmentNumber"] for f in frags)
    kvs_ns = "{urn:aws:kinesisvideo:dash}"
    assert sorted(s.get(kvs_ns + "fn") for s in timeline) == numbers
    times = [int(s.get("t")) for s in timeline]
    assert times[0] == start * 1000 and times == sorted(times), times
    assert [int(s.get(kvs_ns + "ts")) for s in timeline] == times
    played = played_video(url, tmp_path, "dash.raw")
    assert played == 120 * 160 * 120 * 3 // 2
    ops = [(r["operation"], r["stream"], r["status"]) for r in kvs.report()["requests"]]
    for op in ("GetDASHManifest", "GetMP4InitFragment", "GetMP4MediaFragment"):
        assert (op, "rs-dash", 200) in ops, ops

    # LIVE: dynamic, the last fragments, available from the epoch (a segment when its
    # fragment is); recorded a minute ago at most, so record one now
    record_av(kvs, "rs-dash-live", int(datetime.datetime.now(utc).timestamp()) - 10)
    live = archived.get_dash_streaming_session_url(
        StreamName="rs-dash-live", MaxManifestFragmentResults=2)["DASHStreamingSessionURL"]
    live_mpd = ET.fromstring(fetch(live))
    assert live_mpd.get("type") == "dynamic", live_mpd.attrib
    assert live_mpd.get("availabilityStartTime") == "1970-01-01T00:00:00Z"
    assert len(live_mpd.findall(".//d:SegmentURL", ns)) == 2

    # G.711 audio: DASH serves it (HLS does not)
    record_alaw(kvs, "rs-dash-alaw", start, 60, 16)
    alaw = archived.get_dash_streaming_session_url(
        StreamName="rs-dash-alaw", PlaybackMode="ON_DEMAND",
        DASHFragmentSelector=selector)["DASHStreamingSessionURL"]
    alaw_rep = ET.fromstring(fetch(alaw)).find(".//d:Representation", ns)
    assert alaw_rep.get("codecs").endswith(",alaw"), alaw_rep.attrib
    with pytest.raises(ClientError) as e:
        archived.get_hls_streaming_session_url(
            StreamName="rs-dash-alaw", PlaybackMode="ON_DEMAND", HLSFragmentSelector=selector)
    assert e.value.response["Error"]["Code"] == "UnsupportedStreamMediaTypeException"

    # what the service refuses
    with pytest.raises(ClientError) as e:
        archived.get_dash_streaming_session_url(
            StreamName="rs-dash", PlaybackMode="ON_DEMAND", DASHFragmentSelector=selector,
            DisplayFragmentNumber="SOMETIMES")
    assert e.value.response["Error"]["Code"] in ("InvalidArgumentException", "ValidationException")
    with pytest.raises(ClientError) as e:
        archived.get_dash_streaming_session_url(StreamName="rs-dash", PlaybackMode="ON_DEMAND")
    assert e.value.response["Error"]["Code"] == "InvalidArgumentException"


def image_size(data):
    """(format, width, height) of a JPEG (its first SOF marker) or a PNG (its IHDR)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("PNG", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    assert data.startswith(b"\xff\xd8"), data[:4]
    at = 2
    while at < len(data):
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return ("JPEG", int.from_bytes(data[at + 7:at + 9], "big"),
                    int.from_bytes(data[at + 5:at + 7], "big"))
        at += 2 + length
    raise AssertionError("no SOF marker")


def test_get_images_gives_a_picture_per_sampled_time(kvs):
    """A boto3 user's GetImages of what kvssink sent (H.264 with B-frames, a moving ball):
    one JPEG per sampled time, each of its own frame, at the video's size; PNG scaled to a
    width, its height following the picture; NO_MEDIA where nothing was recorded; pages of
    MaxResults with NextToken; the service's errors for what it refuses."""
    import base64
    start = 1_764_004_000
    record_av(kvs, "rs-images", start, pattern="ball")
    kv = client("kinesisvideo", kvs.url)
    # Debian's botocore has the first model of GetImages (SamplingInterval 3000 ms at least,
    # and required); the service takes 200 ms on, and a default, as newer ones say.
    archived = client("kinesis-video-archived-media", kv.get_data_endpoint(
        StreamName="rs-images", APIName="GET_IMAGES")["DataEndpoint"], validate=False)
    utc = datetime.timezone.utc
    at = lambda s: datetime.datetime.fromtimestamp(s, utc)  # noqa: E731
    got = archived.get_images(
        StreamName="rs-images", ImageSelectorType="PRODUCER_TIMESTAMP",
        StartTimestamp=at(start), EndTimestamp=at(start + 6), SamplingInterval=1000,
        Format="JPEG", FormatConfig={"JPEGQuality": "90"})
    images = got["Images"]
    assert "NextToken" not in got
    assert [i["TimeStamp"] for i in images] == [at(start + s) for s in range(7)]
    # Recorded: 120 frames, the last fragment to 4.018 s (its audio and B-frames); nothing
    # after. (Debian's botocore sends whole seconds.)
    assert [i.get("Error") for i in images] == [None] * 5 + ["NO_MEDIA"] * 2, images
    pictures = [base64.b64decode(i["ImageContent"]) for i in images[:5]]
    assert all(image_size(p) == ("JPEG", 160, 120) for p in pictures)
    assert len(set(pictures)) == 5, "the ball moves: each second is another picture"

    png = archived.get_images(
        StreamName="rs-images", ImageSelectorType="PRODUCER_TIMESTAMP",
        StartTimestamp=at(start), EndTimestamp=at(start + 3), SamplingInterval=200,
        Format="PNG", WidthPixels=80, MaxResults=10)
    assert len(png["Images"]) == 10 and png["NextToken"]
    rest = archived.get_images(
        StreamName="rs-images", ImageSelectorType="PRODUCER_TIMESTAMP",
        StartTimestamp=at(start), EndTimestamp=at(start + 3), SamplingInterval=200,
        Format="PNG", WidthPixels=80, MaxResults=10, NextToken=png["NextToken"])
    pages = png["Images"] + rest["Images"]
    assert len(pages) == 16 and "NextToken" not in rest
    assert all(image_size(base64.b64decode(i["ImageContent"])) == ("PNG", 80, 60)
               for i in pages), [i.get("Error") for i in pages]

    # SERVER_TIMESTAMP: the fragments' arrival times (a recording uploaded at once: all
    # within a second or so), each lasting as long as its media; in whole seconds.
    frags = archived.list_fragments(StreamName="rs-images")["Fragments"]
    first = at(int(min(f["ServerTimestamp"] for f in frags).timestamp()) + 1)
    server = archived.get_images(
        StreamName="rs-images", ImageSelectorType="SERVER_TIMESTAMP",
        StartTimestamp=first, EndTimestamp=first, Format="JPEG")["Images"]
    assert len(server) == 1 and image_size(base64.b64decode(server[0]["ImageContent"])) == \
        ("JPEG", 160, 120), server

    for bad, says in [
        ({"EndTimestamp": at(start + 301)}, "300 seconds"),
        ({"SamplingInterval": 100}, "SamplingInterval"),
        ({"FormatConfig": {"JPEGQuality": "101"}}, "JPEGQuality"),
    ]:
        args = dict(StreamName="rs-images", ImageSelectorType="PRODUCER_TIMESTAMP",
                    StartTimestamp=at(start), EndTimestamp=at(start + 6), Format="JPEG")
        args.update(bad)
        with pytest.raises(ClientError) as e:
            archived.get_images(**args)
        assert e.value.response["Error"]["Code"] == "InvalidArgumentException", bad
        assert says in e.value.response["Error"]["Message"], e.value.response

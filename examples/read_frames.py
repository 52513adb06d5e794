#!/usr/bin/python3
# Reads a Kinesis video stream back into BGR frames with kvssrc ! matroskademux ! h264parse !
# avdec_h264 ! videoconvert ! appsink, and prints each frame's timestamp, size, bytes and when it
# was produced (ms since the epoch: the timeline-origin of the frame's timeline plus the
# timestamp), and each fragment's metadata items. A frame's bytes are height rows of width * 3
# bytes of BGR, tightly packed (GStreamer's rows, which it pads to a multiple of 4 bytes, without
# their padding): numpy.frombuffer(data, numpy.uint8).reshape(height, width, 3) for OpenCV. By default it reads from the earliest fragment up to now and stops (a
# bounded read); --selector now reads live until interrupted (Ctrl-C, or SIGTERM): it then stops
# and prints the frame count as at the end of a bounded read.
import argparse
import signal
import sys
import threading
import time
import warnings

import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo, GLib

parser = argparse.ArgumentParser()
parser.add_argument("--stream", default="cam1")
parser.add_argument("--endpoint", help="control-plane URL (default: the region's)")
parser.add_argument("--selector", default="earliest",
                    choices=["now", "earliest", "producer-timestamp", "server-timestamp",
                             "fragment-number", "continuation-token"],
                    help="start-selector (default: earliest)")
parser.add_argument("--start-timestamp", type=int,
                    help="for the timestamp selectors: ms since the epoch")
parser.add_argument("--start-fragment-number",
                    help="for fragment-number: read from the fragment after this one")
parser.add_argument("--continuation-token",
                    help="for continuation-token: where an earlier read left off")
parser.add_argument("--end-timestamp", type=int,
                    help="stop at this producer time, ms since the epoch (0: never; default: now, "
                         "or never with --selector now)")
args = parser.parse_args()
if args.end_timestamp is None:
    args.end_timestamp = 0 if args.selector == "now" else int(time.time() * 1000)

Gst.init(None)
pipeline = Gst.parse_launch(
    f"kvssrc name=src stream-name={args.stream} start-selector={args.selector} "
    f"end-timestamp={args.end_timestamp} "
    "! matroskademux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=BGR "
    "! appsink name=out emit-signals=true sync=false")
src = pipeline.get_by_name("src")
if args.endpoint:
    src.set_property("control-plane-uri", args.endpoint)
for option in ("start_timestamp", "start_fragment_number", "continuation_token"):
    if getattr(args, option) is not None:
        src.set_property(option.replace("_", "-"), getattr(args, option))
frames = 0
empty = False
# (timestamp in ns from which it holds, timeline-origin): a recording dated before what was
# read starts a new timeline (a kvs-timeline message). kvssrc posts its messages before it passes
# the fragment on (or EOS), so a sync handler (on the streaming thread) has them before its
# frames.
timelines = []


def on_sync_message(bus, msg):
    global empty
    s = msg.get_structure()
    if s.get_name() == "kvs-fragment" and not timelines and s.has_field("timeline-origin"):
        timelines.append((0, s.get_value("timeline-origin")))
    elif s.get_name() == "kvs-timeline":
        timelines.append((s.get_value("start"), s.get_value("timeline-origin")))
    elif s.get_name() == "kvs-end" and s.get_value("fragments") == 0:
        # A bounded read that found no fragment: kvssrc's error that follows says so, and
        # is no failure of the read.
        empty = True


def origin_of(pts):
    return next((origin for start, origin in reversed(timelines) if start <= pts), 0)


# Frames arrive on GStreamer's streaming thread, bus messages on the main loop: one line at a
# time.
out_lock = threading.Lock()


def say(*words):
    with out_lock:
        print(*words, flush=True)


def packed_bgr(buf, video):
    """The frame in `buf` as height rows of width * 3 bytes of BGR, and GStreamer's stride (bytes
    from one row to the next). GStreamer pads each row to a multiple of 4 bytes: a 1366-pixel row
    is 4098 bytes of BGR in 4100, and the buffer 3148800 bytes, not 1366 * 768 * 3 = 3147264."""
    meta = GstVideo.buffer_get_video_meta(buf)  # the buffer's own layout, if it says
    offset, stride = (meta.offset[0], meta.stride[0]) if meta else (video.offset[0],
                                                                    video.stride[0])
    row = video.width * 3
    ok, info = buf.map(Gst.MapFlags.READ)
    if not ok:
        return None, stride
    try:
        data = info.data
        if stride == row:
            return bytes(data[offset:offset + row * video.height]), stride
        return b"".join(data[offset + y * stride:offset + y * stride + row]
                        for y in range(video.height)), stride
    finally:
        buf.unmap(info)


def new_sample(appsink):
    global frames
    sample = appsink.emit("pull-sample")
    buf = sample.get_buffer()
    video = GstVideo.VideoInfo.new_from_caps(sample.get_caps())
    data, stride = packed_bgr(buf, video)
    if data is not None:
        pts_ms = buf.pts // Gst.MSECOND
        produced_ms = origin_of(buf.pts) + pts_ms
        say("frame", pts_ms, f"{video.width}x{video.height}", len(data), produced_ms,
            f"stride={stride}")
        frames += 1
    return Gst.FlowReturn.OK


pipeline.get_by_name("out").connect("new-sample", new_sample)
loop = GLib.MainLoop()
failed = False


def on_interrupt():
    # Ctrl-C (SIGINT) or SIGTERM: the read stops like a bounded read that ended. GLib's handler,
    # not Python's, which raised KeyboardInterrupt out of loop.run() and skipped the count. Once
    # removed (SOURCE_REMOVE), the signal's default action is back: a second Ctrl-C ends it at
    # once.
    print("interrupted: stopping", file=sys.stderr, flush=True)
    loop.quit()
    return GLib.SOURCE_REMOVE


for signum in (signal.SIGINT, signal.SIGTERM):
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, on_interrupt)


def metadata_items(s):
    """The (name, value) metadata items of a kvs-fragment message, every one in order (its
    "metadata" structure holds only the last value of each name). PyGObject alone cannot convert
    the GstValueArray with get_value (gst-python can: a list); get_array gives a GValueArray, whose
    get_nth GLib marks deprecated."""
    ok, items = s.get_array("metadata-items")
    if not ok:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Each item is read while `items` (which holds it) is alive.
        return [(item.get_string("name"), item.get_string("value"))
                for item in (items.get_nth(i) for i in range(items.n_values))]


def on_message(bus, msg):
    global failed
    s = msg.get_structure()
    if msg.type == Gst.MessageType.ELEMENT and s.get_name() == "kvs-fragment":
        number = s.get_string("fragment-number")
        say("fragment", number, s.get_value("producer-timestamp"))
        for name, value in metadata_items(s):
            say("metadata", number, f"{name}={value}")
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if msg.type == Gst.MessageType.ERROR and empty:
            say("no fragment in the range read")
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print("error:", err.message, debug, file=sys.stderr)
            failed = True
        loop.quit()


bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
bus.enable_sync_message_emission()
bus.connect("sync-message::element", on_sync_message)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
print("frames:", frames)
sys.exit(1 if failed else 0)

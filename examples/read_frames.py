#!/usr/bin/python3
# Reads a Kinesis video stream back into BGR frames with kvssrc ! matroskademux ! h264parse !
# avdec_h264 ! videoconvert ! appsink, and prints each frame's timestamp and when it was produced
# (ms since the epoch: kvssrc's timeline-origin plus the timestamp). By default it reads from the
# earliest fragment up to now and stops (a bounded read).
import argparse
import sys
import threading
import time

import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib

parser = argparse.ArgumentParser()
parser.add_argument("--stream", default="cam1")
parser.add_argument("--endpoint", help="control-plane URL (default: the region's)")
parser.add_argument("--selector", default="earliest",
                    help="start-selector: now, earliest, producer-timestamp, ...")
parser.add_argument("--end-timestamp", type=int, default=int(time.time() * 1000),
                    help="stop at this producer time, ms since the epoch (0: never)")
args = parser.parse_args()

Gst.init(None)
pipeline = Gst.parse_launch(
    f"kvssrc name=src stream-name={args.stream} start-selector={args.selector} "
    f"end-timestamp={args.end_timestamp} "
    "! matroskademux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=BGR "
    "! appsink name=out emit-signals=true sync=false")
src = pipeline.get_by_name("src")
if args.endpoint:
    src.set_property("control-plane-uri", args.endpoint)
frames = 0
# Frames arrive on GStreamer's streaming thread, bus messages on the main loop: one line at a
# time.
out_lock = threading.Lock()


def say(*words):
    with out_lock:
        print(*words, flush=True)


def new_sample(appsink):
    global frames
    sample = appsink.emit("pull-sample")
    buf = sample.get_buffer()
    s = sample.get_caps().get_structure(0)
    width, height = s.get_value("width"), s.get_value("height")
    ok, info = buf.map(Gst.MapFlags.READ)
    if ok:
        data = bytes(info.data)  # width * height * 3 bytes of BGR, e.g. for numpy or OpenCV
        buf.unmap(info)
        pts_ms = buf.pts // Gst.MSECOND
        produced_ms = src.get_property("timeline-origin") + pts_ms
        say("frame", pts_ms, f"{width}x{height}", len(data), produced_ms)
        frames += 1
    return Gst.FlowReturn.OK


pipeline.get_by_name("out").connect("new-sample", new_sample)
loop = GLib.MainLoop()
failed = False


def on_message(bus, msg):
    global failed
    s = msg.get_structure()
    if msg.type == Gst.MessageType.ELEMENT and s.get_name() == "kvs-fragment":
        say("fragment", s.get_string("fragment-number"), s.get_value("producer-timestamp"))
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print("error:", err.message, debug, file=sys.stderr)
            failed = True
        loop.quit()


bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
print("frames:", frames)
sys.exit(1 if failed else 0)

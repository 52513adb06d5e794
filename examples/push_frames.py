#!/usr/bin/python3
# Pushes frames made in Python (plain BGR bytes, no numpy) into a Kinesis video stream through
# appsrc ! videoconvert ! x264enc ! matroskamux ! kvssink, and prints every acknowledgement.
# Credentials and region come from the environment (see the README); --endpoint points at a
# KVS-compatible endpoint such as kvs-local. With --captured-at, the frames keep the time they
# were captured: their timestamps are epoch times, and kvssink takes the H.264 itself with
# use-original-pts=true.
import argparse
import sys

import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib

parser = argparse.ArgumentParser()
parser.add_argument("--stream", default="cam1")
parser.add_argument("--endpoint", help="control-plane URL (default: the region's)")
parser.add_argument("--frames", type=int, default=90)
parser.add_argument("--fps", type=int, default=30)
parser.add_argument("--width", type=int, default=320)
parser.add_argument("--height", type=int, default=240)
parser.add_argument("--captured-at", type=int,
                    help="when the first frame was captured, ms since the epoch")
args = parser.parse_args()

Gst.init(None)
caps = f"video/x-raw,format=BGR,width={args.width},height={args.height},framerate={args.fps}/1"
# x264enc takes even widths and heights only (641x481: "Can not initialize x264 encoder"): for
# other sizes, scale before it (videoconvert ! videoscale ! video/x-raw,format=I420,width=640,...).
pipeline = Gst.parse_launch(
    f"appsrc name=src format=time caps={caps} "
    "! videoconvert ! video/x-raw,format=I420 "
    f"! x264enc speed-preset=ultrafast key-int-max={args.fps} ! h264parse "
    + ("! matroskamux streamable=true ! kvssink" if args.captured_at is None
       else "! kvssink use-original-pts=true")
    + f" name=sink stream-name={args.stream}")
if args.endpoint:
    pipeline.get_by_name("sink").set_property("control-plane-uri", args.endpoint)
src = pipeline.get_by_name("src")
frame_duration = Gst.SECOND // args.fps
# Timestamps from 0 (the stream starts now), or the capture times in ns since the epoch.
first_pts = 0 if args.captured_at is None else args.captured_at * Gst.MSECOND
pushed = 0


# GStreamer's layout of a raw BGR frame: each row of width*3 bytes is padded to a multiple of
# 4 bytes (its stride), so a frame is stride*height bytes. Unpadded rows (width*height*3 bytes,
# as numpy or OpenCV give them) are refused by videoconvert whenever width*3 is not a multiple
# of 4 (1366x768, 642x480): a WARNING "invalid video buffer received" for every frame, and no
# picture. Copy such rows into a padded frame, as here.
stride = (args.width * 3 + 3) // 4 * 4


def frame(i):
    """One BGR frame: a colour that changes with i, its rows padded to the stride."""
    pixel = bytes(((i * 7) % 256, (i * 3) % 256, 255 - (i * 5) % 256))
    row = pixel * args.width + bytes(stride - args.width * 3)
    return row * args.height


def need_data(appsrc, _length):
    global pushed
    if pushed == args.frames:
        appsrc.emit("end-of-stream")
        return
    buf = Gst.Buffer.new_wrapped(frame(pushed))
    # Timestamps are what the stream keeps: frame i is shown i/fps seconds in.
    buf.pts = first_pts + pushed * frame_duration
    buf.duration = frame_duration
    appsrc.emit("push-buffer", buf)
    pushed += 1


src.connect("need-data", need_data)
loop = GLib.MainLoop()
failed = False


def on_message(bus, msg):
    global failed
    s = msg.get_structure()
    # IDLE acks are the service's keep-alive while no data arrives: they name no fragment.
    if (msg.type == Gst.MessageType.ELEMENT and s.get_name() == "kvs-ack"
            and s.get_string("event-type") != "IDLE"):
        print("ack", s.get_string("event-type"), s.get_value("fragment-timecode"), flush=True)
    elif msg.type == Gst.MessageType.WARNING:
        # Warnings do not stop the pipeline: a frame refused upstream, a reconnect, fragments
        # dropped or not persisted.
        err, debug = msg.parse_warning()
        print("warning:", err.message, debug, file=sys.stderr, flush=True)
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
print("pushed", pushed, "frames")
sys.exit(1 if failed else 0)

#!/usr/bin/python3
# Streams test video into a Kinesis video stream and tags its fragments the way AWS's kvssink
# takes it: a "kvs-add-metadata" event sent to the kvssink element. A persistent item
# ("camera") goes with every fragment from the first on; a non-persistent one ("motion") with
# the fragment open when it is sent, here every 1.5 s as if a detector fired. Open in kvssink:
# that of the last cluster kvssink received, not of the frames still in the encoder; to tag the
# fragment of a given frame, send the event into the source right after that frame
# (appsrc.send_event, see the README's "Fragment metadata"). Prints each item sent and every
# acknowledgement. Credentials and region come from the environment (see the README);
# --endpoint points at a KVS-compatible endpoint such as kvs-local.
import argparse
import sys

import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib

parser = argparse.ArgumentParser()
parser.add_argument("--stream", default="cam1")
parser.add_argument("--endpoint", help="control-plane URL (default: the region's)")
parser.add_argument("--seconds", type=int, default=6)
args = parser.parse_args()

Gst.init(None)
pipeline = Gst.parse_launch(
    f"videotestsrc is-live=true num-buffers={args.seconds * 30} ! video/x-raw,format=I420 "
    "! x264enc tune=zerolatency key-int-max=30 "
    f"! h264parse ! matroskamux streamable=true ! kvssink name=sink stream-name={args.stream}")
sink = pipeline.get_by_name("sink")
if args.endpoint:
    sink.set_property("control-plane-uri", args.endpoint)


def add_metadata(name, value, persistent):
    """One fragment metadata item for kvssink: name and value strings, persist a boolean."""
    s = Gst.Structure.new_empty("kvs-add-metadata")
    s.set_value("name", name)
    s.set_value("value", value)
    s.set_value("persist", persistent)
    if sink.send_event(Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM, s)):
        print("sent", f"{name}={value}", "persistent" if persistent else "once", flush=True)


detections = 0


def on_motion():
    global detections
    detections += 1
    add_metadata("motion", str(detections), False)
    # The last one well before the source ends.
    return detections * 1.5 < args.seconds - 1.5


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
        err, debug = msg.parse_warning()
        print("warning:", err.message, debug, file=sys.stderr)
    elif msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print("error:", err.message, debug, file=sys.stderr)
            failed = True
        loop.quit()


bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
# Given while setting up, before the pipeline plays: kvssink keeps it for its start.
add_metadata("camera", "front-door", True)
pipeline.set_state(Gst.State.PLAYING)
GLib.timeout_add(1500, on_motion)
loop.run()
pipeline.set_state(Gst.State.NULL)
sys.exit(1 if failed else 0)

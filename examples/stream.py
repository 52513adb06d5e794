#!/usr/bin/python3
# Streams 10 s of test video into the Kinesis video stream "cam1" and prints each fragment's
# acknowledgements. Credentials, region and endpoint come from the environment (see the README).
import sys

import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst, GLib

Gst.init(None)
pipeline = Gst.parse_launch(
    "videotestsrc is-live=true num-buffers=300 ! video/x-raw,format=I420 "
    "! x264enc tune=zerolatency key-int-max=30 "
    "! h264parse ! matroskamux streamable=true ! kvssink name=sink stream-name=cam1")
loop = GLib.MainLoop()
failed = False

def on_message(bus, msg):
    global failed
    s = msg.get_structure()
    # IDLE acks are the service's keep-alive while no data arrives: they name no fragment.
    if (msg.type == Gst.MessageType.ELEMENT and s.get_name() == "kvs-ack"
            and s.get_string("event-type") != "IDLE"):
        print(s.get_string("event-type"), s.get_value("fragment-timecode"))
    elif msg.type == Gst.MessageType.ELEMENT and s.get_name() == "kvs-summary":
        print("summary:", s.get_string("outcome"))
    elif msg.type == Gst.MessageType.WARNING:
        # A reconnect, a fragment refused or dropped: the stream goes on.
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
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
sys.exit(1 if failed else 0)

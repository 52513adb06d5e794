#!/usr/bin/python3
"""A camera that records locally and uploads on events: a kvssink branch added to its tee and
removed, twice, the usual GStreamer way (block, unlink, EOS into the branch, wait for it)."""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst

Gst.init(None)
CAMERA = (
    "videotestsrc is-live=true num-buffers=330 ! video/x-raw,format=I420,width=320,height=240,"
    "framerate=30/1 ! x264enc tune=zerolatency key-int-max=30 speed-preset=ultrafast ! "
    "h264parse ! tee name=t ! queue ! fakesink name=local signal-handoffs=true"
)
pipeline = Gst.parse_launch(CAMERA)
tee = pipeline.get_by_name("t")
local = [0]
pipeline.get_by_name("local").connect("handoff", lambda *a: local.__setitem__(0, local[0] + 1))
loop = GLib.MainLoop()
branch = {}


def add(name, mid):
    desc = f"queue ! {mid}kvssink name=sink stream-name={name}"
    bin_ = Gst.parse_bin_from_description(desc, True)
    pipeline.add(bin_)
    bin_.sync_state_with_parent()
    pad = tee.request_pad_simple("src_%u")
    pad.link(bin_.get_static_pad("sink"))
    branch.update(bin=bin_, pad=pad, name=name)
    print("added", name, flush=True)
    return False


def remove():
    bin_, pad, name = branch["bin"], branch["pad"], branch["name"]

    def at_eos(sinkpad, info):
        if info.get_event().type == Gst.EventType.EOS:
            GLib.idle_add(finish, bin_, name)
        return Gst.PadProbeReturn.OK

    def blocked(teepad, info):
        teepad.unlink(bin_.get_static_pad("sink"))
        tee.release_request_pad(teepad)
        bin_.get_by_name("sink").get_static_pad("sink").add_probe(
            Gst.PadProbeType.EVENT_DOWNSTREAM, at_eos
        )
        bin_.get_static_pad("sink").send_event(Gst.Event.new_eos())
        return Gst.PadProbeReturn.REMOVE

    pad.add_probe(Gst.PadProbeType.BLOCK_DOWNSTREAM, blocked)
    return False


def finish(bin_, name):
    bin_.set_state(Gst.State.NULL)
    pipeline.remove(bin_)
    print("removed", name, flush=True)
    return False


def on_message(bus, msg):
    if msg.type == Gst.MessageType.ELEMENT:
        s = msg.get_structure()
        if s.get_name() == "kvs-summary":
            print("summary", s.get_string("stream-name"), s.get_string("outcome"), flush=True)
    elif msg.type == Gst.MessageType.WARNING:
        print("warning", msg.parse_warning()[0].message, flush=True)
    elif msg.type == Gst.MessageType.ERROR:
        print("error", msg.parse_error()[0].message, flush=True)
        loop.quit()
    elif msg.type == Gst.MessageType.EOS:
        print("eos", flush=True)
        loop.quit()


bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
GLib.timeout_add(1000, add, "motion-1", "")
GLib.timeout_add(4000, remove)
GLib.timeout_add(5500, add, "motion-2", "matroskamux ! ")
GLib.timeout_add(8500, remove)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
print("local", local[0], flush=True)

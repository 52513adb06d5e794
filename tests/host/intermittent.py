#!/usr/bin/python3
"""An application that streams intermittently the way AWS's intermittent-streaming sample
does: it plays a live camera into kvssink, stops by sending EOS and waiting for it, pauses the
source and flushes, then flushes again and plays the source to stream again; CYCLES times,
then a last EOS. Prints kvssink's element messages as run_pipeline.py does.

    intermittent.py STREAM-NAME CYCLES PLAY-SECONDS PAUSE-SECONDS

Exit status: 0 after the last EOS, 1 after an error message or an EOS that never came.
"""
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main(stream, cycles, play_s, pause_s):
    Gst.init(None)
    pipeline = Gst.parse_launch(
        "videotestsrc name=source is-live=true "
        "! video/x-raw,format=I420,width=320,height=240,framerate=30/1 "
        "! x264enc bframes=0 key-int-max=15 tune=zerolatency "
        "! video/x-h264,stream-format=avc,alignment=au "
        f"! kvssink stream-name={stream}"
    )
    source = pipeline.get_by_name("source")
    loop = GLib.MainLoop()
    eos = threading.Event()
    status = {"code": 0}

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ELEMENT:
            s = msg.get_structure()
            if s is not None and s.get_name().startswith("kvs-"):
                print(f"(element): {s.to_string()}", flush=True)
        elif msg.type == Gst.MessageType.EOS:
            print("eos", flush=True)
            eos.set()
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print(f"ERROR: {err.message}\n{debug}", file=sys.stderr, flush=True)
            status["code"] = 1
            eos.set()
            loop.quit()

    def stop():
        eos.clear()
        pipeline.send_event(Gst.Event.new_eos())
        if not eos.wait(60):
            print("ERROR: no EOS", file=sys.stderr, flush=True)
            status["code"] = 1

    def cycle():
        for _ in range(cycles):
            time.sleep(play_s)
            if status["code"]:
                break
            stop()
            source.set_state(Gst.State.PAUSED)
            pipeline.send_event(Gst.Event.new_flush_start())
            time.sleep(pause_s)
            pipeline.send_event(Gst.Event.new_flush_stop(True))
            source.set_state(Gst.State.PLAYING)
        if not status["code"]:
            time.sleep(play_s)
            stop()
        GLib.idle_add(loop.quit)

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    threading.Thread(target=cycle, daemon=True).start()
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return status["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))

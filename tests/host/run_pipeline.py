#!/usr/bin/python3
"""Runs a launch line to EOS the way a Python application does (PyGObject, a GLib main loop),
printing kvssink's element messages like `gst-launch-1.0 -m` so the Rust tests can read them.

    run_pipeline.py [--default-sigpipe] [--stop-after-persisted N]
                    [--pause-after-persisted N SECONDS] [--stop-after-seconds S]
                    [--set-before-stop ELEMENT PROPERTY VALUE]
                    [--set-during-stop ELEMENT PROPERTY VALUE SECONDS] [--eos-after-seconds S]
                    [--seek-after-seconds S POSITION] [--capture-times ELEMENT] LAUNCH-LINE

--default-sigpipe restores the default SIGPIPE action, as many applications (and anything
started from them) do: CPython itself ignores SIGPIPE at start-up.
--stop-after-persisted N sets the pipeline to NULL (no EOS) after N PERSISTED acks, as an
application stopping its pipeline does.
--pause-after-persisted N SECONDS sets the pipeline to PAUSED after N PERSISTED acks and back to
PLAYING SECONDS later (a pause button), printing `paused-at=MS` and `playing-at=MS` (ms since
the epoch, taken just before each change).
--stop-after-seconds S stops the pipeline (no EOS) S seconds after PLAYING, whatever it is
doing, and prints `stop-took-ms=MS`: how long setting it to READY and NULL took.
--eos-after-seconds S sends EOS to the pipeline S seconds after PLAYING (an application ending
its stream), then waits for the EOS message as usual; with --eos-to ELEMENT, to that element
(gst_element_send_event on the sink, as AWS's samples do).
--seek-after-seconds S POSITION makes a flushing key-unit seek of the pipeline to POSITION
seconds, S seconds after PLAYING (a player's seek bar), and prints `seeked=True` or `False`;
with --seek-element NAME, the seek is sent to that element instead of the pipeline.
--push-untimed N pushes N black frames without timestamps into the appsrc named `in` (I420,
its caps' size), then ends its stream: the mistake of an application that never sets a PTS.
--set-before-stop ELEMENT PROPERTY VALUE sets a property of the element named ELEMENT just
before the pipeline is stopped (VALUE parsed for the property's type).
--set-after-seconds ELEMENT PROPERTY VALUE SECONDS sets it from the main loop SECONDS after
PLAYING, whatever the pipeline is doing (waiting at EOS, say).
--shift-base-time-after-seconds S MS moves the base time of the pipeline and of every element
in it MS ms earlier, S seconds after PLAYING: running time jumps MS ms ahead of the clock (a
live source then makes the frames it is late for at once).
--set-during-stop ELEMENT PROPERTY VALUE SECONDS sets it from another thread SECONDS after the
stop began (an application cutting a long stop short).
--capture-times ELEMENT notes when (ms since the epoch) each buffer leaves the element named
ELEMENT (a live source: when it was captured) and prints `captured=PTS:MS` for each at the end
(PTS in ms).
--timestamps-back ELEMENT SECONDS MS: from the first key frame leaving the element named ELEMENT
SECONDS after PLAYING, every buffer it sends is stamped MS ms earlier (PTS and DTS): a source
that restarted with its time behind. May be given for several elements (audio and video).
It prints `started-at=MS` (ms since the epoch) just before setting the pipeline to PLAYING, and
`ended-at=MS` when the run ends (EOS, an error or the requested stop), before stopping it.
Exit status: 0 after EOS (or the requested stop), 1 after an error message.
"""
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main(argv):
    stop_after = None
    pause = None
    stop_after_s = None
    before_stop = []
    during_stop = []
    set_after = []
    shift = None
    eos_after_s = None
    eos_to = None
    seek = None
    seek_element = None
    untimed = 0
    capture = None
    backs = []
    while argv and argv[0].startswith("--"):
        flag = argv.pop(0)
        if flag == "--default-sigpipe":
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        elif flag == "--stop-after-persisted":
            stop_after = int(argv.pop(0))
        elif flag == "--pause-after-persisted":
            pause = (int(argv.pop(0)), float(argv.pop(0)))
        elif flag == "--stop-after-seconds":
            stop_after_s = float(argv.pop(0))
        elif flag == "--eos-after-seconds":
            eos_after_s = float(argv.pop(0))
        elif flag == "--seek-after-seconds":
            seek = (float(argv.pop(0)), float(argv.pop(0)))
        elif flag == "--seek-element":
            seek_element = argv.pop(0)
        elif flag == "--eos-to":
            eos_to = argv.pop(0)
        elif flag == "--set-during-stop":
            during_stop.append((argv.pop(0), argv.pop(0), argv.pop(0), float(argv.pop(0))))
        elif flag == "--shift-base-time-after-seconds":
            shift = (float(argv.pop(0)), int(argv.pop(0)))
        elif flag == "--set-after-seconds":
            set_after.append((argv.pop(0), argv.pop(0), argv.pop(0), float(argv.pop(0))))
        elif flag == "--set-before-stop":
            before_stop.append((argv.pop(0), argv.pop(0), argv.pop(0)))
        elif flag == "--capture-times":
            capture = argv.pop(0)
        elif flag == "--timestamps-back":
            backs.append((argv.pop(0), float(argv.pop(0)), int(argv.pop(0))))
        elif flag == "--push-untimed":
            untimed = int(argv.pop(0))
        else:
            raise SystemExit(f"unknown flag {flag}")
    Gst.init(None)
    pipeline = Gst.parse_launch(" ".join(argv))
    if untimed:
        source = pipeline.get_by_name("in")
        caps = source.get_property("caps").get_structure(0)
        size = caps.get_value("width") * caps.get_value("height") * 3 // 2
        for _ in range(untimed):
            source.emit("push-buffer", Gst.Buffer.new_wrapped(bytes(size)))
        source.emit("end-of-stream")
    captured = []
    if capture:
        def note(_pad, info):
            captured.append((info.get_buffer().pts // Gst.MSECOND, now_ms()))
            return Gst.PadProbeReturn.OK

        pad = pipeline.get_by_name(capture).get_static_pad("src")
        pad.add_probe(Gst.PadProbeType.BUFFER, note)
    for name, after_s, back_ms in backs:
        state = {"since": None, "from": None}

        def restamp(_pad, info, state=state, after_s=after_s, back_ms=back_ms):
            buf = info.get_buffer()
            if state["since"] is None:
                state["since"] = time.monotonic()
            key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
            if (state["from"] is None and key
                    and time.monotonic() - state["since"] >= after_s):
                state["from"] = buf.pts
                print(f"timestamps-back-at={buf.pts // Gst.MSECOND}", flush=True)
            if state["from"] is not None:
                # (PyGObject sets the fields of the buffer being pushed in place.)
                for field in ("pts", "dts"):
                    t = getattr(buf, field)
                    if t != Gst.CLOCK_TIME_NONE:
                        setattr(buf, field, max(0, t - back_ms * Gst.MSECOND))
            return Gst.PadProbeReturn.OK

        pad = pipeline.get_by_name(name).get_static_pad("src")
        pad.add_probe(Gst.PadProbeType.BUFFER, restamp)
    for name, prop, value, delay in set_after:
        element = pipeline.get_by_name(name)
        GLib.timeout_add(int(delay * 1000),
                         lambda e=element, p=prop, v=value: Gst.util_set_object_arg(e, p, v))
    if shift is not None:
        def shift_base_time():
            base = pipeline.get_base_time() - shift[1] * Gst.MSECOND
            pipeline.set_start_time(Gst.CLOCK_TIME_NONE)
            pipeline.set_base_time(base)
            elements = pipeline.iterate_recurse()
            while True:
                result, element = elements.next()
                if result != Gst.IteratorResult.OK:
                    break
                element.set_base_time(base)
            return False

        GLib.timeout_add(int(shift[0] * 1000), shift_base_time)
    code = run(pipeline, stop_after, pause, stop_after_s, before_stop,
               eos_after_s, eos_to, during_stop, seek, seek_element)
    for pts, at in captured:
        print(f"captured={pts}:{at}")
    return code


def now_ms():
    return int(time.time() * 1000)


_loop = None


def quit():
    """Ends run()'s main loop from any thread (then run() stops the pipeline as usual)."""
    GLib.idle_add(lambda: _loop.quit() and False)


def run(pipeline, stop_after=None, pause=None, stop_after_s=None, before_stop=(),
        eos_after_s=None, eos_to=None, during_stop=(), seek=None, seek_element=None):
    """Plays `pipeline` until EOS, an error or `stop_after` PERSISTED acks, printing kvssink's
    messages; returns the exit status. Also used by the other host scripts here."""
    global _loop
    loop = _loop = GLib.MainLoop()
    status = {"code": 0, "persisted": 0}

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ELEMENT:
            s = msg.get_structure()
            if s is not None and s.get_name().startswith("kvs-"):
                print(f"(element): {s.to_string()}", flush=True)
                if s.get_name() == "kvs-ack" and s.get_string("event-type") == "PERSISTED":
                    status["persisted"] += 1
                    if stop_after is not None and status["persisted"] >= stop_after:
                        loop.quit()
                    if pause is not None and status["persisted"] == pause[0]:
                        print(f"paused-at={now_ms()}", flush=True)
                        pipeline.set_state(Gst.State.PAUSED)

                        def play_again():
                            print(f"playing-at={now_ms()}", flush=True)
                            pipeline.set_state(Gst.State.PLAYING)
                            return False

                        GLib.timeout_add(int(pause[1] * 1000), play_again)
        elif msg.type == Gst.MessageType.WARNING:
            err, debug = msg.parse_warning()
            print(f"WARNING: {err.message} ({debug})", file=sys.stderr, flush=True)
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            print(f"ERROR: {err.message} ({debug})", file=sys.stderr, flush=True)
            status["code"] = 1
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    print(f"started-at={now_ms()}", flush=True)
    pipeline.set_state(Gst.State.PLAYING)
    if stop_after_s is not None:
        GLib.timeout_add(int(stop_after_s * 1000), lambda: loop.quit() and False)
    if eos_after_s is not None:
        target = pipeline.get_by_name(eos_to) if eos_to else pipeline
        GLib.timeout_add(int(eos_after_s * 1000),
                         lambda: target.send_event(Gst.Event.new_eos()) and False)
    if seek is not None:
        def do_seek():
            flags = Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT
            target = pipeline.get_by_name(seek_element) if seek_element else pipeline
            done = target.seek_simple(Gst.Format.TIME, flags, int(seek[1] * Gst.SECOND))
            print(f"seeked={done}", flush=True)
            return False

        GLib.timeout_add(int(seek[0] * 1000), do_seek)
    loop.run()
    print(f"ended-at={now_ms()}", flush=True)
    # kvssink gives its account of a stop without EOS while going to READY; read it before
    # NULL, which flushes the bus.
    for name, prop, value in before_stop:
        Gst.util_set_object_arg(pipeline.get_by_name(name), prop, value)
    for name, prop, value, delay in during_stop:
        element = pipeline.get_by_name(name)
        threading.Timer(delay, Gst.util_set_object_arg, (element, prop, value)).start()
    stopping = time.monotonic()
    pipeline.set_state(Gst.State.READY)
    while True:
        msg = bus.pop()
        if msg is None:
            break
        on_message(bus, msg)
    pipeline.set_state(Gst.State.NULL)
    if stop_after_s is not None:
        print(f"stop-took-ms={int((time.monotonic() - stopping) * 1000)}", flush=True)
    return status["code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

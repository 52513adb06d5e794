#!/usr/bin/python3
"""An application that connects to the signals of AWS's kvssink as its samples and canary do:
`fragment-ack` (a pointer to the producer SDK's FragmentAck, read here with ctypes) and
`stream-error` (a guint64 status), and `stream-client-metric`. Then it runs LAUNCH-LINE (whose
kvssink is named `sink`) as run_pipeline.py does, then prints one line per signal received
(the acks come on another thread: printed at the end, so that lines do not interleave):

    fragment-ack type=3 timestamp=1796351342000 sequence=9134... result=200
    stream-error status=15

    signals.py [--stop-in-ack N] LAUNCH-LINE

--stop-in-ack N sets the pipeline to NULL from inside the fragment-ack handler at the Nth
PERSISTED ack, as C applications do to stop on an ack (then prints `stopped in ack`).
"""
import ctypes
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

import run_pipeline  # noqa: E402  (beside this script)


class FragmentAck(ctypes.Structure):
    # The producer SDK's FragmentAck (version 0), as its C applications read it.
    _fields_ = [
        ("version", ctypes.c_uint32),
        ("ackType", ctypes.c_int),
        ("timestamp", ctypes.c_uint64),
        ("sequenceNumber", ctypes.c_char * 129),
        ("result", ctypes.c_int),
    ]


def main(args):
    stop_in_ack = None
    if args and args[0] == "--stop-in-ack":
        stop_in_ack, args = int(args[1]), args[2:]
    line = " ".join(args)
    Gst.init(None)
    pipeline = Gst.parse_launch(line)
    sink = pipeline.get_by_name("sink")
    received = []
    stopped = threading.Event()

    def on_ack(_sink, pointer):
        # PyGObject hands a gpointer over as a gobject.GPointer, whose hash is the address.
        address = hash(pointer)
        ack = ctypes.cast(address, ctypes.POINTER(FragmentAck)).contents
        received.append(f"fragment-ack type={ack.ackType} timestamp={ack.timestamp} "
                        f"sequence={ack.sequenceNumber.decode()} result={ack.result}")
        persisted = sum(1 for r in received if r.startswith("fragment-ack type=3"))
        if stop_in_ack is not None and ack.ackType == 3 and persisted == stop_in_ack:
            pipeline.set_state(Gst.State.NULL)
            received.append("stopped in ack")
            stopped.set()
            run_pipeline.quit()

    def on_error(_sink, status):
        received.append(f"stream-error status={status}")

    if stop_in_ack is not None:
        # The stop runs on the thread that reads the acks, and NULL flushes the bus: what it
        # posts is printed as it is posted.
        bus = pipeline.get_bus()
        bus.enable_sync_message_emission()

        def on_sync(_bus, msg):
            if msg.type == Gst.MessageType.WARNING:
                received.append(f"sync WARNING: {msg.parse_warning()[0].message}")
            elif msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "kvs-summary":
                received.append(f"sync (element): {msg.get_structure().to_string()}")

        bus.connect("sync-message", on_sync)
    sink.connect("fragment-ack", on_ack)
    sink.connect("stream-error", on_error)
    sink.connect("stream-client-metric", lambda _sink, _pointer: None)
    code = run_pipeline.run(pipeline)
    if stop_in_ack is not None:
        # The main loop may end (at the stop's error) before the handler's set_state returns.
        stopped.wait(600)
    for line in received:
        print(line, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""An application that connects to the signals of AWS's kvssink as its samples and canary do:
`fragment-ack` (a pointer to the producer SDK's FragmentAck, read here with ctypes) and
`stream-error` (a guint64 status), and `stream-client-metric`. Then it runs LAUNCH-LINE (whose
kvssink is named `sink`) as run_pipeline.py does, then prints one line per signal received
(the acks come on another thread: printed at the end, so that lines do not interleave):

    fragment-ack type=3 timestamp=1796351342000 sequence=9134... result=200
    stream-error status=15

    signals.py LAUNCH-LINE
"""
import ctypes
import sys

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


def main(line):
    Gst.init(None)
    pipeline = Gst.parse_launch(line)
    sink = pipeline.get_by_name("sink")
    received = []

    def on_ack(_sink, pointer):
        # PyGObject hands a gpointer over as a gobject.GPointer, whose hash is the address.
        address = hash(pointer)
        ack = ctypes.cast(address, ctypes.POINTER(FragmentAck)).contents
        received.append(f"fragment-ack type={ack.ackType} timestamp={ack.timestamp} "
                        f"sequence={ack.sequenceNumber.decode()} result={ack.result}")

    def on_error(_sink, status):
        received.append(f"stream-error status={status}")

    sink.connect("fragment-ack", on_ack)
    sink.connect("stream-error", on_error)
    sink.connect("stream-client-metric", lambda _sink, _pointer: None)
    code = run_pipeline.run(pipeline)
    for line in received:
        print(line, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:])))

#!/usr/bin/python3
"""An application that builds its pipeline the way AWS's kvssink samples and tests do: it asks
kvssink for its `video_%u` and `audio_%u` request pads by name and links H.264 and AAC to
them, then runs to EOS as run_pipeline.py does, printing kvssink's element messages.

    request_pads.py STREAM-NAME [--release-video-after SECONDS]

--release-video-after SECONDS blocks the video branch, releases `video_0` and removes the
branch that long after PLAYING (printing `released-video`), while audio goes on to its end.

Exit status: 0 after EOS, 1 after an error message or a refused pad.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

import run_pipeline  # noqa: E402  (beside this script)


def main(stream, release_video_after=None):
    Gst.init(None)
    pipeline = Gst.Pipeline.new("app")
    video = Gst.parse_bin_from_description(
        "videotestsrc is-live=true num-buffers=90 "
        "! video/x-raw,format=I420,width=320,height=240,framerate=30/1 "
        "! x264enc bframes=0 key-int-max=45 tune=zerolatency ! h264parse ! queue",
        True,
    )
    audio_buffers = 141 if release_video_after is None else 470
    audio = Gst.parse_bin_from_description(
        f"audiotestsrc is-live=true num-buffers={audio_buffers} ! audio/x-raw,rate=48000 "
        "! audioconvert ! avenc_aac ! queue",
        True,
    )
    sink = Gst.ElementFactory.make("kvssink")
    sink.set_property("stream-name", stream)
    for element in (video, audio, sink):
        pipeline.add(element)
    video_pad = sink.request_pad_simple("video_%u")
    audio_pad = sink.request_pad_simple("audio_%u")
    if video_pad is None or audio_pad is None:
        print("ERROR: a request pad was refused", file=sys.stderr)
        return 1
    print(f"pads: {video_pad.get_name()} {audio_pad.get_name()}", flush=True)
    if video.get_static_pad("src").link(video_pad) != Gst.PadLinkReturn.OK:
        return 1
    if audio.get_static_pad("src").link(audio_pad) != Gst.PadLinkReturn.OK:
        return 1

    released = []
    if release_video_after is not None:
        src = video.get_static_pad("src")

        def finish():
            src.unlink(video_pad)
            sink.release_request_pad(video_pad)
            video.set_state(Gst.State.NULL)
            pipeline.remove(video)
            released.append(True)
            print("released-video", flush=True)
            return False

        def blocked(_pad, _info):
            if not released:
                GLib.idle_add(finish)
            return Gst.PadProbeReturn.OK

        GLib.timeout_add(int(release_video_after * 1000),
                         lambda: src.add_probe(Gst.PadProbeType.BLOCK_DOWNSTREAM, blocked)
                         and False)

    code = run_pipeline.run(pipeline)
    if not released:
        sink.release_request_pad(video_pad)
    sink.release_request_pad(audio_pad)
    return code


if __name__ == "__main__":
    args = sys.argv[1:]
    after = None
    if "--release-video-after" in args:
        i = args.index("--release-video-after")
        after = float(args[i + 1])
        del args[i:i + 2]
    sys.exit(main(args[0], after))

#!/bin/bash
# Interleaved A/B of a paced upload (a camera at 30 fps): the CPU (perf's task-clock) of the
# whole gst-launch-1.0 for fakesink, two builds of our kvssink and, when given, AWS's kvssink
# (as typed and with its log at WARN), N rounds, into one kvs-local --discard-media.
#
#   BASE=dir-with-libgstkvs.so NEW=dir-with-libgstkvs.so [AWS=dir-with-libgstkvssink.so] \
#   [N=8] [FRAMES=600] benches/paced-ab.sh > out.log
#
# Input: the `sink` bench's H.264 file in MP4 (target/bench-data/snow-360p-8M-$FRAMES.mp4,
# made by `cargo bench --bench sink`). Prints "round sink ms" lines; the first round also
# builds each registry: leave it out. Run it for FRAMES=600 and FRAMES=60 and take the
# difference to leave out start-up.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
: "${BASE:?a directory holding the baseline libgstkvs.so}" "${NEW:?a directory holding the new libgstkvs.so}"
N=${N:-8}
FRAMES=${FRAMES:-600}
MP4=${KVSSINK_BENCH_DATA:-$here/target/bench-data}/snow-360p-8M-$FRAMES.mp4
KVS_LOCAL_BIN=${KVS_LOCAL_BIN:-$here/target/release/kvs-local}
[ -f "$MP4" ] || { echo "no $MP4: run cargo bench --bench sink first" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $kl 2>/dev/null; rm -rf "$work"' EXIT
printf '%s\n' 'log4cplus.rootLogger=WARN, Console' \
    'log4cplus.appender.Console=log4cplus::ConsoleAppender' \
    'log4cplus.appender.Console.layout=log4cplus::PatternLayout' \
    'log4cplus.appender.Console.layout.ConversionPattern=[%-5p] %m%n' > "$work/warn.log4cplus"
port=$((40000 + RANDOM % 20000))
"$KVS_LOCAL_BIN" --port $port --discard-media > /dev/null 2>&1 &
kl=$!
sleep 1
export AWS_ACCESS_KEY_ID=KVSLOCALDEMOACCESSKEY AWS_SECRET_ACCESS_KEY=kvs-local-demo-secret-key
export AWS_REGION=us-east-1 CONTROL_PLANE_URI=http://127.0.0.1:$port
sinks="fake base new"
[ -n "${AWS:-}" ] && sinks="$sinks aws awswarn"
cd "$work"
for i in $(seq 1 "$N"); do
    for v in $sinks; do
        stream=ab-$v-$i-$$
        case $v in
            fake) sink="fakesink sync=false"; dir=$NEW ;;
            base) sink="kvssink stream-name=$stream streaming-type=realtime"; dir=$BASE ;;
            new) sink="kvssink stream-name=$stream streaming-type=realtime"; dir=$NEW ;;
            aws) sink="kvssink stream-name=$stream aws-region=us-east-1"; dir=$AWS ;;
            awswarn) sink="kvssink stream-name=$stream aws-region=us-east-1 log-config=$work/warn.log4cplus"; dir=$AWS ;;
        esac
        GST_PLUGIN_PATH=$dir GST_REGISTRY=$work/registry-$v.bin \
            perf stat -x, -o "$work/perf" -e task-clock \
            gst-launch-1.0 -q filesrc location="$MP4" ! qtdemux ! h264parse ! identity sync=true \
            ! video/x-h264,stream-format=avc,alignment=au ! $sink > /dev/null 2>&1
        echo "$i $v $(grep task-clock "$work/perf" | cut -d, -f1)"
    done
done

#!/usr/bin/env bash
# The demo: builds kvssink and kvs-local, starts kvs-local, streams a live test pattern through
# x264enc ! matroskamux ! kvssink into it for a few seconds while printing the acknowledgements,
# then exports what kvs-local stored and shows that it plays back.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --locked -p gst-plugin-kvs -p kvs-local

work=$(mktemp -d)
log="$work/kvs-local.log"
target/debug/kvs-local --port 0 --data-dir "$work/data" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
url=""
for _ in $(seq 100); do
  url=$(grep -o 'http://[0-9.:]*' "$log" | head -n1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "demo: kvs-local did not start" >&2; exit 1; }
echo "demo: kvs-local is serving on $url"

# Everything a user needs to point kvssink at kvs-local: the control-plane URI and the demo keys.
export GST_PLUGIN_PATH="$PWD/target/debug"
export CONTROL_PLANE_URI="$url"
export AWS_ACCESS_KEY_ID=KVSLOCALDEMOACCESSKEY
export AWS_SECRET_ACCESS_KEY=kvs-local-demo-secret-key

echo "demo: streaming 6 s of live video into stream 'demo'"
gst-launch-1.0 -m -e \
  videotestsrc is-live=true num-buffers=180 \
  ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 ! clockoverlay \
  ! x264enc tune=zerolatency speed-preset=veryfast key-int-max=30 bitrate=1500 \
  ! h264parse ! matroskamux streamable=true \
  ! kvssink stream-name=demo aws-region=us-east-1 \
  | grep --line-buffered -oE '(kvs-ack|kvs-connection|kvs-summary)[^;]*(;[^;]*){0,3}|ERROR.*|WARNING.*'

out="$work/demo.mkv"
target/debug/kvs-local export --data-dir "$work/data" --stream demo "$out"
echo "demo: exported the stored stream to $out; gst-discoverer-1.0 says:"
gst-discoverer-1.0 "$out" | grep -E 'Duration|video|container|Done' 
gst-launch-1.0 -q filesrc location="$out" ! matroskademux ! h264parse ! avdec_h264 ! fakesink \
  && echo "demo: the stored video decodes from start to end"

#!/usr/bin/env bash
# Installs what kvssink needs on Debian 12 (bookworm): GStreamer 1.22 with its development
# files, every GStreamer element that the README, scripts/, pipelines/, examples/ and the tests
# use (listed in `elements` below, each with the package that provides it), the command-line
# tools, meson, Debian's python3 with PyGObject, and curl and perf (for the benchmark). Then it checks that
# each element and PyGObject really are there. Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  pkg-config build-essential curl ca-certificates
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x
  meson ninja-build python3 python3-gi gir1.2-gstreamer-1.0
  faketime
  linux-perf
  python3-boto3 python3-botocore python3-pytest awscli
)

# Every element used anywhere in the project, as element:package. scripts/check-readme.py fails
# when a launch line in the README, scripts/, pipelines/, examples/ or the tests uses one that is
# not listed here.
elements=(
  fakesink:libgstreamer1.0-0 filesink:libgstreamer1.0-0 filesrc:libgstreamer1.0-0
  identity:libgstreamer1.0-0 queue:libgstreamer1.0-0 tee:libgstreamer1.0-0 valve:libgstreamer1.0-0
  appsink:gstreamer1.0-plugins-base appsrc:gstreamer1.0-plugins-base audiotestsrc:gstreamer1.0-plugins-base
  videoconvert:gstreamer1.0-plugins-base videoscale:gstreamer1.0-plugins-base
  videotestsrc:gstreamer1.0-plugins-base uridecodebin3:gstreamer1.0-plugins-base
  decodebin:gstreamer1.0-plugins-base
  audioconvert:gstreamer1.0-plugins-base opusenc:gstreamer1.0-plugins-base
  opusdec:gstreamer1.0-plugins-base alawenc:gstreamer1.0-plugins-good
  alawdec:gstreamer1.0-plugins-good hlsdemux2:gstreamer1.0-plugins-good
  dashdemux2:gstreamer1.0-plugins-good
  souphttpsrc:gstreamer1.0-plugins-good
  aacparse:gstreamer1.0-plugins-good jpegenc:gstreamer1.0-plugins-good
  jpegdec:gstreamer1.0-plugins-good pngenc:gstreamer1.0-plugins-good
  multifilesrc:gstreamer1.0-plugins-good
  multifilesink:gstreamer1.0-plugins-good mp4mux:gstreamer1.0-plugins-good
  qtdemux:gstreamer1.0-plugins-good rtph264pay:gstreamer1.0-plugins-good
  rtph264depay:gstreamer1.0-plugins-good rtspsrc:gstreamer1.0-plugins-good
  matroskademux:gstreamer1.0-plugins-good matroskamux:gstreamer1.0-plugins-good
  v4l2src:gstreamer1.0-plugins-good capssetter:gstreamer1.0-plugins-good
  autovideosink:gstreamer1.0-plugins-good
  h264parse:gstreamer1.0-plugins-bad voaacenc:gstreamer1.0-plugins-bad
  mpegtsmux:gstreamer1.0-plugins-bad tsdemux:gstreamer1.0-plugins-bad
  h265parse:gstreamer1.0-plugins-bad openh264enc:gstreamer1.0-plugins-bad
  x265enc:gstreamer1.0-plugins-bad
  x264enc:gstreamer1.0-plugins-ugly
  avdec_h264:gstreamer1.0-libav avdec_h265:gstreamer1.0-libav avenc_aac:gstreamer1.0-libav
  avdec_aac:gstreamer1.0-libav
  clockoverlay:gstreamer1.0-x
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found. Install Rust $(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml) (e.g. with rustup) and run again." >&2
  exit 1
fi

# What was installed must work: every element, the tools, and PyGObject for the Python example.
absent=()
for e in "${elements[@]}"; do
  gst-inspect-1.0 --exists "${e%%:*}" || absent+=("GStreamer element ${e%%:*} (package ${e#*:})")
done
for t in gst-launch-1.0:gstreamer1.0-tools gst-discoverer-1.0:gstreamer1.0-plugins-base-apps; do
  command -v "${t%%:*}" >/dev/null || absent+=("${t%%:*} (package ${t#*:})")
done
/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' 2>/dev/null \
  || absent+=("PyGObject with GStreamer for /usr/bin/python3 (packages python3-gi gir1.2-gstreamer-1.0)")
if ((${#absent[@]})); then
  printf 'setup: missing after installing:\n' >&2
  printf '  %s\n' "${absent[@]}" >&2
  exit 1
fi

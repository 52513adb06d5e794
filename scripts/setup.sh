#!/usr/bin/env bash
# Installs what kvssink needs on Debian 12 (bookworm): GStreamer 1.22 with its development
# files, the plugins the demo and tests use (good/bad/ugly/libav), the command-line tools,
# meson, and curl (for the benchmark). Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  pkg-config build-essential curl ca-certificates
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-base-apps gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  meson ninja-build python3-gi gir1.2-gstreamer-1.0
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

#!/usr/bin/env bash
# meson's build step: cargo builds the plugin, then the library is copied where meson wants it.
# cargo's target directory is the one meson gives (build/target) unless CARGO_TARGET_DIR is set,
# as cargo itself does.
set -euo pipefail
cargo=$1 src=$2 target=${CARGO_TARGET_DIR:-$3} profile=$4 output=$5
flags=()
[ "$profile" = release ] && flags+=(--release)
"$cargo" build --manifest-path "$src/Cargo.toml" --target-dir "$target" -p gst-plugin-kvs --lib "${flags[@]}"
cp "$target/$profile/libgstkvs.so" "$output"

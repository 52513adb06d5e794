#!/usr/bin/env bash
# Sets up the machine and runs every test: formatting, lints, unit tests, and integration tests
# that run real GStreamer pipelines against kvs-local on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Builds everything, benchmarks included (so they cannot rot; `cargo bench` runs them), and the
# plugin library that the gst-launch-1.0 tests load.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads=2
# Every command block of the README, run as typed against kvs-local (one release build), and the
# demo as CI would run it.
/usr/bin/python3 scripts/check-readme.py
bash kvs-local/tests/conformance/run.sh

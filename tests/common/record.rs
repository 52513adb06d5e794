//! Recording GStreamer output with gst-launch-1.0: the one helper of the workspace's tests
//! that records `matroskamux` output. Only `std`, so that kvs-local's tests can include this
//! file too (`#[path]`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs `gst-launch-1.0 -q <pipeline> ! filesink location=<file>` and returns what it wrote.
/// Panics when gst-launch-1.0 is missing or the pipeline fails.
pub fn record_pipeline(pipeline: &str, file: &Path) -> Vec<u8> {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .args(["!", "filesink", &format!("location={}", file.display())])
        .status()
        .expect("run gst-launch-1.0 (GStreamer 1.22 tools; see scripts/setup.sh)");
    assert!(
        status.success(),
        "gst-launch-1.0 failed: {pipeline} ! filesink location={}",
        file.display()
    );
    std::fs::read(file).expect("read the recording")
}

/// Whether gst-launch-1.0 runs.
pub fn gst_available() -> bool {
    Command::new("gst-launch-1.0")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether GStreamer has an element factory `name` (gst-inspect-1.0 knows it).
pub fn gst_element_exists(name: &str) -> bool {
    Command::new("gst-inspect-1.0")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

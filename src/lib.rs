//! GStreamer plugin `kvs`: the `kvssink` element, which streams Matroska into Amazon Kinesis
//! Video Streams with PutMedia.
//!
//! The protocol logic lives in GStreamer-free modules ([`mkv`], [`store`], [`ack`], [`sigv4`],
//! [`control`], [`uploader`]) so it can be tested and benchmarked on its own; [`kvssink`] is
//! the thin element on top.

use gst::glib;

pub mod ack;
pub mod aws_settings;
pub mod control;
pub mod credentials;
pub mod endpoint;
pub mod esmux;
pub mod getmedia;
pub mod kvssink;
pub mod kvssrc;
pub mod mkv;
pub mod playback;
pub mod producer;
pub mod runtime;
pub mod sigv4;
pub mod spool;
pub mod store;
pub mod uploader;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    kvssink::register(plugin)?;
    kvssrc::register(plugin)
}

gst::plugin_define!(
    kvs,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

/// `stream NAME: what`: how every message about a stream begins.
pub fn about(stream: &str, what: impl std::fmt::Display) -> String {
    format!("stream {stream}: {what}")
}

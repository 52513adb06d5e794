//! GStreamer plugin `kvs`: the `kvssink` element, which streams Matroska into Amazon Kinesis
//! Video Streams with PutMedia.
//!
//! The protocol logic lives in GStreamer-free modules ([`mkv`], [`store`], [`ack`], [`sigv4`],
//! [`control`], [`uploader`]) so it can be tested and benchmarked on its own; [`kvssink`] is
//! the thin element on top.

use gst::glib;

pub mod ack;
pub mod annexb;
pub mod aws_settings;
pub mod control;
pub mod credentials;
pub mod endpoint;
pub mod esmux;
pub mod getmedia;
pub mod kvssink;
pub mod kvssrc;
pub mod metadata;
pub mod mkv;
pub mod playback;
pub mod producer;
pub mod runtime;
pub mod sigv4;
pub mod spool;
pub mod store;
pub mod uploader;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    apply_aws_log_level(std::env::var("AWS_KVS_LOG_LEVEL").ok().as_deref());
    kvssink::register(plugin)?;
    kvssrc::register(plugin)
}

/// AWS's kvssink reads its log level from `AWS_KVS_LOG_LEVEL` (1 verbose ... 7 silent); here
/// it sets the threshold of the `kvssink` and `kvssrc` debug categories, unless `GST_DEBUG`
/// names them (GStreamer's own setting wins).
fn apply_aws_log_level(value: Option<&str>) {
    let Some(level) = value.and_then(aws_log_level) else {
        return;
    };
    let gst_debug = std::env::var("GST_DEBUG").unwrap_or_default();
    for name in ["kvssink", "kvssrc"] {
        if gst_debug.contains(name) {
            continue;
        }
        if let Some(cat) = gst::DebugCategory::get(name) {
            cat.set_threshold(level);
        } else {
            gst::DebugCategory::new(name, gst::DebugColorFlags::empty(), None).set_threshold(level);
        }
    }
}

/// The GStreamer level of an `AWS_KVS_LOG_LEVEL` value.
fn aws_log_level(value: &str) -> Option<gst::DebugLevel> {
    Some(match value.trim().parse::<u8>().ok()? {
        1 => gst::DebugLevel::Log,
        2 => gst::DebugLevel::Debug,
        3 => gst::DebugLevel::Info,
        4 => gst::DebugLevel::Warning,
        5 | 6 => gst::DebugLevel::Error,
        7 => gst::DebugLevel::None,
        _ => return None,
    })
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

//! `kvssink`: streams `matroskamux` output into Amazon Kinesis Video Streams with PutMedia.

use gst::glib;
use gst::prelude::*;

mod es;
mod exit;
mod imp;
pub mod metadata;
pub mod official;
mod settings;

glib::wrapper! {
    /// The kvssink element.
    pub struct KvsSink(ObjectSubclass<imp::KvsSink>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

/// Registers `kvssink` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "kvssink",
        gst::Rank::NONE,
        KvsSink::static_type(),
    )
}

//! `kvssrc`: reads a Kinesis video stream back with GetMedia, as Matroska for `matroskademux`.

use gst::glib;
use gst::prelude::*;

mod imp;
mod settings;

pub use settings::StartSelector;

glib::wrapper! {
    /// The kvssrc element.
    pub struct KvsSrc(ObjectSubclass<imp::KvsSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// Registers `kvssrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "kvssrc",
        gst::Rank::NONE,
        KvsSrc::static_type(),
    )
}

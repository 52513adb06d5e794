//! Matroska values and the Tags element builder.

use crate::ebml::Writer;
use crate::ids::*;

/// TrackType of a video track.
pub const TRACK_TYPE_VIDEO: u64 = 1;
/// TrackType of an audio track.
pub const TRACK_TYPE_AUDIO: u64 = 2;

/// CodecID of H.264 (CodecPrivate: the avcC record).
pub const CODEC_H264: &str = "V_MPEG4/ISO/AVC";
/// CodecID of H.265 (CodecPrivate: the hvcC record).
pub const CODEC_H265: &str = "V_MPEGH/ISO/HEVC";
/// CodecID of AAC (CodecPrivate: the AudioSpecificConfig).
pub const CODEC_AAC: &str = "A_AAC";
/// CodecID of Opus (CodecPrivate: the OpusHead).
pub const CODEC_OPUS: &str = "A_OPUS";
/// CodecID of the Microsoft ACM mapping, used for G.711 A-law and µ-law (CodecPrivate: a
/// WAVEFORMATEX), as AWS's producer and matroskamux write them.
pub const CODEC_ACM: &str = "A_MS/ACM";
/// WAVEFORMATEX format tag (the first two bytes, little-endian, of an `A_MS/ACM` track's
/// CodecPrivate) of G.711 A-law.
pub const WAVE_FORMAT_ALAW: u16 = 6;
/// WAVEFORMATEX format tag of G.711 µ-law.
pub const WAVE_FORMAT_MULAW: u16 = 7;

/// A Tags element holding one Tag with one SimpleTag (TagName, TagString) per
/// `(name, value)`, without Targets, as the Kinesis Video Streams producer writes its tags
/// (they apply to the whole Segment).
pub fn tags(simple: &[(&str, &str)]) -> Vec<u8> {
    write_tags(false, simple)
}

/// Like [`tags`], with an empty Targets element first in the Tag (the form the Matroska
/// specification makes mandatory, as kvs-local's GetMedia writes it).
pub fn tags_with_targets(simple: &[(&str, &str)]) -> Vec<u8> {
    write_tags(true, simple)
}

fn write_tags(targets: bool, simple: &[(&str, &str)]) -> Vec<u8> {
    Writer::new()
        .master(ID_TAGS, |w| {
            w.master(ID_TAG, |w| {
                if targets {
                    w.element(ID_TARGETS, &[]);
                }
                for (name, value) in simple {
                    w.master(ID_SIMPLE_TAG, |w| {
                        w.string(ID_TAG_NAME, name).string(ID_TAG_STRING, value);
                    });
                }
            });
        })
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_layout() {
        let t = tags(&[("A", "b")]);
        // Tags(Tag(SimpleTag(TagName "A", TagString "b")))
        assert_eq!(
            t,
            [
                &[
                    0x12, 0x54, 0xC3, 0x67, 0x8E, 0x73, 0x73, 0x8B, 0x67, 0xC8, 0x88
                ][..],
                &[0x45, 0xA3, 0x81, b'A', 0x44, 0x87, 0x81, b'b'],
            ]
            .concat()
        );
        let t = tags_with_targets(&[("A", "b")]);
        assert_eq!(&t[4..11], &[0x91, 0x73, 0x73, 0x8E, 0x63, 0xC0, 0x80]);
        assert_eq!(tags(&[]).len(), 4 + 1 + 2 + 1);
    }
}

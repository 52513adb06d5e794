//! Kinesis Video Streams facts: the PutMedia `ErrorId` table, the end-of-fragment tag,
//! fragment metadata and the service's limits on what a producer sends.

use std::time::Duration;

/// SimpleTag name that closes the open fragment (AWS producer convention): a Tags element
/// carrying it after a cluster ends that fragment at once.
pub const END_OF_FRAGMENT_TAG: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";

/// The Tags element carrying the `AWS_KINESISVIDEO_END_OF_FRAGMENT` SimpleTag (with an empty
/// TagString), as AWS's producer sends it on EOS: 49 bytes, no Targets.
pub fn end_of_fragment_tags() -> Vec<u8> {
    crate::matroska::tags(&[(END_OF_FRAGMENT_TAG, "")])
}

/// A fragment carries at most this many metadata items (name/value pairs, each a Matroska
/// SimpleTag). More: the service refuses the fragment with `ErrorId` 4009,
/// `FRAGMENT_METADATA_LIMIT_REACHED`.
pub const MAX_FRAGMENT_METADATA: usize = 10;
/// Longest fragment metadata name, in bytes (UTF-8); a name is never empty.
pub const MAX_METADATA_NAME_LEN: usize = 128;
/// Longest fragment metadata value, in bytes (UTF-8); a value may be empty.
pub const MAX_METADATA_VALUE_LEN: usize = 256;
/// Fragment metadata names must not begin with this (case-sensitive): the service's own tags
/// (`AWS_KINESISVIDEO_...`) do. AWS's producer refuses such a name from an application.
pub const RESERVED_METADATA_PREFIX: &str = "AWS";

/// Fragment metadata as AWS's producer writes it between clusters: one Tags element, holding
/// one Tag with one SimpleTag (TagName, TagString), per `(name, value)`, in order.
pub fn fragment_metadata_tags(items: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend(crate::matroska::tags(std::slice::from_ref(item)));
    }
    out
}

/// Length of [`cluster_head`].
pub const CLUSTER_HEAD_LEN: usize = 18;

/// The start of a Cluster as AWS's producer writes every one (`gMkvClusterInfoBits` in its
/// PIC library): the Cluster ID, an unknown size in the one-byte form (`0xFF`), the Timecode in
/// 8 bytes, and Position 0 (the value for a live stream). Blocks follow.
pub fn cluster_head(timecode: u64) -> [u8; CLUSTER_HEAD_LEN] {
    use crate::ids::{ID_CLUSTER, ID_POSITION, ID_TIMECODE};
    let mut head = [0u8; CLUSTER_HEAD_LEN];
    head[..4].copy_from_slice(&ID_CLUSTER.to_be_bytes());
    head[4] = 0xFF;
    head[5] = ID_TIMECODE as u8;
    head[6] = 0x88;
    head[7..15].copy_from_slice(&timecode.to_be_bytes());
    head[15] = ID_POSITION as u8;
    head[16] = 0x81;
    head[17] = 0;
    head
}

/// A stream may have at most this many tracks (more: `ErrorId` 4005/4012).
pub const MAX_TRACKS: usize = 3;
/// Largest fragment (cluster) the service accepts (larger: 4001,
/// `MAX_FRAGMENT_SIZE_REACHED`).
pub const MAX_FRAGMENT_SIZE: u64 = 50 * 1024 * 1024;
/// Longest fragment the service accepts (longer: 4002, `MAX_FRAGMENT_DURATION_REACHED`).
pub const MAX_FRAGMENT_DURATION: Duration = Duration::from_secs(10);

/// The PutMedia `ErrorId`s and their `ErrorCode` names, as the service sends them in ERROR
/// acks. 4005 and 4012 share a name.
pub const ERROR_CODES: &[(u32, &str)] = &[
    (4000, "STREAM_READ_ERROR"),
    (4001, "MAX_FRAGMENT_SIZE_REACHED"),
    (4002, "MAX_FRAGMENT_DURATION_REACHED"),
    (4003, "MAX_CONNECTION_DURATION_REACHED"),
    (4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS"),
    (4005, "MORE_THAN_ALLOWED_TRACKS_FOUND"),
    (4006, "INVALID_MKV_DATA"),
    (4007, "INVALID_PRODUCER_TIMESTAMP"),
    (4008, "STREAM_NOT_ACTIVE"),
    (4009, "FRAGMENT_METADATA_LIMIT_REACHED"),
    (4010, "TRACK_NUMBER_MISMATCH"),
    (4011, "FRAMES_MISSING_FOR_TRACK"),
    (4012, "MORE_THAN_ALLOWED_TRACKS_FOUND"),
    (4500, "KMS_KEY_ACCESS_DENIED"),
    (4501, "KMS_KEY_DISABLED"),
    (4502, "KMS_KEY_VALIDATION_ERROR"),
    (4503, "KMS_KEY_UNAVAILABLE"),
    (4504, "KMS_KEY_INVALID_USAGE"),
    (4505, "KMS_KEY_INVALID_STATE"),
    (4506, "KMS_KEY_NOT_FOUND"),
    (4507, "STREAM_DELETED"),
    (5000, "INTERNAL_ERROR"),
    (5001, "ARCHIVAL_ERROR"),
];

/// `ErrorCode` name of a PutMedia `ErrorId`, e.g. 4006 → `INVALID_MKV_DATA`; `None` for an
/// id not in [`ERROR_CODES`].
pub fn error_name(id: u32) -> Option<&'static str> {
    ERROR_CODES
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebml::{read_header, read_string};
    use crate::ids::*;

    #[test]
    fn end_of_fragment_tags_bytes() {
        let mut expected = vec![
            0x12, 0x54, 0xC3, 0x67, 0xAC, // Tags, 44 bytes
            0x73, 0x73, 0xA9, // Tag, 41 bytes
            0x67, 0xC8, 0xA6, // SimpleTag, 38 bytes
            0x45, 0xA3, 0xA0, // TagName, 32 bytes
        ];
        expected.extend_from_slice(END_OF_FRAGMENT_TAG.as_bytes());
        expected.extend_from_slice(&[0x44, 0x87, 0x80]); // TagString, empty
        assert_eq!(end_of_fragment_tags(), expected);
        assert_eq!(expected.len(), 49);
        let name = &expected[11..];
        let h = read_header(name).unwrap().unwrap();
        assert_eq!(h.id, ID_TAG_NAME);
        assert_eq!(read_string(&name[h.len..h.len + 32]), END_OF_FRAGMENT_TAG);
    }

    #[test]
    fn fragment_metadata_is_one_tags_element_per_item() {
        let bytes = fragment_metadata_tags(&[("motion", "true"), ("lat", "")]);
        let first = crate::matroska::tags(&[("motion", "true")]);
        let second = crate::matroska::tags(&[("lat", "")]);
        assert_eq!(bytes, [first.clone(), second].concat());
        let h = read_header(&first).unwrap().unwrap();
        assert_eq!(h.id, ID_TAGS);
        assert_eq!(h.len + h.size.unwrap() as usize, first.len());
        assert!(fragment_metadata_tags(&[]).is_empty());
        assert!(END_OF_FRAGMENT_TAG.starts_with(RESERVED_METADATA_PREFIX));
    }

    #[test]
    fn cluster_head_bytes() {
        assert_eq!(
            cluster_head(0x0102),
            [
                0x1F, 0x43, 0xB6, 0x75, 0xFF, // Cluster, unknown size
                0xE7, 0x88, 0, 0, 0, 0, 0, 0, 0x01, 0x02, // Timecode, 8 bytes
                0xA7, 0x81, 0x00, // Position 0
            ]
        );
        let h = read_header(&cluster_head(7)).unwrap().unwrap();
        assert_eq!((h.id, h.size, h.len), (ID_CLUSTER, None, 5));
    }

    #[test]
    fn error_table() {
        assert_eq!(error_name(4006), Some("INVALID_MKV_DATA"));
        assert_eq!(
            error_name(4004),
            Some("FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS")
        );
        assert_eq!(error_name(4005), error_name(4012));
        assert_eq!(error_name(4506), Some("KMS_KEY_NOT_FOUND"));
        assert_eq!(error_name(4999), None);
        for id in (4000..=4012).chain(4500..=4507).chain([5000, 5001]) {
            assert!(error_name(id).is_some(), "{id}");
        }
        assert_eq!(ERROR_CODES.len(), 13 + 8 + 2);
        assert!(
            ERROR_CODES.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, each id once"
        );
    }
}

/// SimpleTag names GetMedia writes around every fragment it sends.
pub mod get_media_tags {
    /// The fragment's number (a long decimal string).
    pub const FRAGMENT_NUMBER: &str = "AWS_KINESISVIDEO_FRAGMENT_NUMBER";
    /// When the service received the fragment, in seconds since the epoch (decimal).
    pub const SERVER_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_TIMESTAMP";
    /// The fragment's producer time, in seconds since the epoch (decimal).
    pub const PRODUCER_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP";
    /// How far the fragment is behind the tip of the stream, in ms.
    pub const MILLIS_BEHIND_NOW: &str = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW";
    /// Where a new GetMedia request continues after this fragment.
    pub const CONTINUATION_TOKEN: &str = "AWS_KINESISVIDEO_CONTINUATION_TOKEN";
    /// The service could not send the stream on: its error name.
    pub const ERROR_CODE: &str = "AWS_KINESISVIDEO_ERROR_CODE";
    /// The service could not send the stream on: its error number.
    pub const ERROR_ID: &str = "AWS_KINESISVIDEO_ERROR_ID";
}

//! Elementary streams in: H.264 or H.265 access units (the input of AWS's kvssink) made into
//! the Matroska stream KVS takes, which then goes the same way as matroskamux output. Free of
//! GStreamer.
//!
//! The header has the shape AWS's producer sends: an EBML header with its default fields,
//! a Segment and Clusters of unknown size (short form), Info with a 1 ms TimecodeScale, one
//! video track (number 1). Each key frame starts a Cluster (a fragment); every frame is a
//! SimpleBlock whose payload is the access unit as it came, not copied.

use bytes::Bytes;
use kvs_format::ebml::{Writer, write_id, write_vint};
use kvs_format::ids::*;
use kvs_format::matroska::TRACK_TYPE_VIDEO;

/// The video track: codec and what the Matroska header says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    /// `V_MPEG4/ISO/AVC` or `V_MPEGH/ISO/HEVC`.
    pub codec_id: &'static str,
    /// avcC or hvcC (the caps' codec_data).
    pub codec_private: Bytes,
    pub width: u32,
    pub height: u32,
}

pub const CODEC_H264: &str = "V_MPEG4/ISO/AVC";
pub const CODEC_H265: &str = "V_MPEGH/ISO/HEVC";

/// Why a frame cannot be muxed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EsError {
    #[error(
        "a frame {0} ms away from the key frame before it: Matroska blocks reach 32.7 s \
         from their cluster's key frame; make the encoder emit key frames more often"
    )]
    TooFarFromKeyFrame(i64),
}

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Muxed {
    Frame,
    /// Frames before the first key frame cannot start a fragment: dropped.
    BeforeFirstKeyFrame,
}

/// Makes Matroska out of one video elementary stream.
#[derive(Debug)]
pub struct EsMuxer {
    track: VideoTrack,
    header_sent: bool,
    /// The open cluster's timecode (ms).
    cluster_ms: Option<u64>,
}

impl EsMuxer {
    pub fn new(track: VideoTrack) -> EsMuxer {
        EsMuxer {
            track,
            header_sent: false,
            cluster_ms: None,
        }
    }

    pub fn track(&self) -> &VideoTrack {
        &self.track
    }

    /// The stream header: EBML header, Segment, Info, Tracks.
    pub fn header(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.master(ID_EBML, |w| {
            w.uint(ID_EBML_VERSION, 1)
                .uint(ID_EBML_READ_VERSION, 1)
                .uint(ID_EBML_MAX_ID_LENGTH, 4)
                .uint(ID_EBML_MAX_SIZE_LENGTH, 8)
                .string(ID_DOC_TYPE, "matroska")
                .uint(ID_DOC_TYPE_VERSION, 4)
                .uint(ID_DOC_TYPE_READ_VERSION, 2);
        });
        let mut out = w.finish();
        // Segment of unknown size, in the short (one byte) form.
        write_id(&mut out, ID_SEGMENT);
        out.push(0xFF);
        let t = &self.track;
        let mut w = Writer::new();
        w.master(ID_INFO, |w| {
            w.uint(ID_TIMECODE_SCALE, 1_000_000)
                .string(ID_MUXING_APP, "kvssink")
                .string(ID_WRITING_APP, "kvssink");
        })
        .master(ID_TRACKS, |w| {
            w.master(ID_TRACK_ENTRY, |w| {
                w.uint(ID_TRACK_NUMBER, 1)
                    .uint(ID_TRACK_UID, 1)
                    .uint(ID_TRACK_TYPE, TRACK_TYPE_VIDEO)
                    .string(ID_CODEC_ID, t.codec_id)
                    .element(ID_CODEC_PRIVATE, &t.codec_private)
                    .master(ID_VIDEO, |w| {
                        w.uint(ID_PIXEL_WIDTH, t.width.into())
                            .uint(ID_PIXEL_HEIGHT, t.height.into());
                    });
            });
        });
        out.extend(w.finish());
        out
    }

    /// The Matroska bytes of one access unit presented at `pts_ms`, in `out`: the header
    /// before the first, a new Cluster at each key frame, then the SimpleBlock (its header,
    /// then `frame` itself).
    pub fn push(
        &mut self,
        pts_ms: u64,
        key: bool,
        frame: Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<Muxed, EsError> {
        if key {
            if !self.header_sent {
                self.header_sent = true;
                out.push(Bytes::from(self.header()));
            }
            let mut cluster = Vec::with_capacity(16);
            write_id(&mut cluster, ID_CLUSTER);
            cluster.push(0xFF);
            let timecode = Writer::new().uint(ID_TIMECODE, pts_ms).finish();
            cluster.extend_from_slice(&timecode);
            out.push(Bytes::from(cluster));
            self.cluster_ms = Some(pts_ms);
        }
        let Some(cluster_ms) = self.cluster_ms else {
            return Ok(Muxed::BeforeFirstKeyFrame);
        };
        let relative = pts_ms as i64 - cluster_ms as i64;
        let relative =
            i16::try_from(relative).map_err(|_| EsError::TooFarFromKeyFrame(relative))?;
        let mut block = Vec::with_capacity(16);
        write_id(&mut block, ID_SIMPLE_BLOCK);
        write_vint(&mut block, frame.len() as u64 + 4);
        block.push(0x81); // track 1
        block.extend_from_slice(&relative.to_be_bytes());
        block.push(if key { 0x80 } else { 0 });
        out.push(Bytes::from(block));
        out.push(frame);
        Ok(Muxed::Frame)
    }
}

/// The codec of an H.264 or H.265 caps structure name, if it is one.
pub fn codec_for(caps_name: &str) -> Option<&'static str> {
    match caps_name {
        "video/x-h264" => Some(CODEC_H264),
        "video/x-h265" => Some(CODEC_H265),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mkv::{Event, Splitter};

    fn track() -> VideoTrack {
        VideoTrack {
            codec_id: CODEC_H264,
            codec_private: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
            width: 320,
            height: 240,
        }
    }

    #[test]
    fn frames_become_clusters_at_key_frames_that_the_splitter_reads_back() {
        let mut mux = EsMuxer::new(track());
        let mut out = Vec::new();
        assert_eq!(
            mux.push(0, false, Bytes::from_static(b"early"), &mut out),
            Ok(Muxed::BeforeFirstKeyFrame)
        );
        assert!(out.is_empty());
        let frames = [
            (100, true),
            (133, false),
            (166, false),
            (2100, true),
            (2133, false),
        ];
        for (pts, key) in frames {
            let payload = Bytes::from(vec![pts as u8; 50]);
            assert_eq!(
                mux.push(pts, key, payload.clone(), &mut out),
                Ok(Muxed::Frame)
            );
            assert_eq!(out.last(), Some(&payload), "the frame is not copied");
        }
        let mut splitter = Splitter::new(Default::default());
        let mut events = Vec::new();
        for piece in out {
            splitter.push(piece, &mut events).unwrap();
        }
        splitter.finish(&mut events).unwrap();
        let header = events.iter().find_map(|e| match e {
            Event::Header(h) => Some(h.clone()),
            _ => None,
        });
        let header = header.expect("a header");
        assert_eq!(header.tracks.len(), 1);
        assert_eq!(header.tracks[0].number, 1);
        assert_eq!(header.tracks[0].codec_id, CODEC_H264);
        assert_eq!(
            &header.tracks[0].codec_private[..],
            &track().codec_private[..]
        );
        assert_eq!(header.date_utc_ms, None);
        let starts: Vec<(u64, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::FragmentStart(s) => Some((s.timecode, s.key_frame)),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [(100, true), (2100, true)]);
        let blocks: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::FragmentEnd(s) => Some(s.blocks),
                _ => None,
            })
            .collect();
        assert_eq!(blocks, [3, 2]);
    }

    #[test]
    fn a_frame_too_far_from_its_key_frame_is_an_error() {
        let mut mux = EsMuxer::new(track());
        let mut out = Vec::new();
        mux.push(0, true, Bytes::from_static(b"k"), &mut out)
            .unwrap();
        assert_eq!(
            mux.push(40_000, false, Bytes::from_static(b"d"), &mut out),
            Err(EsError::TooFarFromKeyFrame(40_000))
        );
    }
}

//! The synthetic stream: matroskamux-shaped buffers written in memory (EBML header, Segment
//! of unknown size, Info, Tracks, then clusters of unknown size cut as matroskamux cuts them).
//!
//! This is the bench's one EBML writer (`put_*`); it moves to the shared `kvs-format` crate's
//! writer once that exists.

use bytes::Bytes;

/// Frames per second (and per cluster) of every stream the bench makes.
pub const FPS: u64 = 30;

pub const ID_EBML: u32 = 0x1A45_DFA3;
pub const ID_SEGMENT: u32 = 0x1853_8067;
pub const ID_INFO: u32 = 0x1549_A966;
pub const ID_TRACKS: u32 = 0x1654_AE6B;
pub const ID_CLUSTER: u32 = 0x1F43_B675;
pub const ID_TIMECODE: u32 = 0xE7;
pub const ID_SIMPLE_BLOCK: u32 = 0xA3;
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// A plausible avcC (profile High, level 3.1, one SPS, one PPS); the bytes are not decoded.
const AVCC: [u8; 19] = [
    0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x04, 0x67, 0x64, 0x00, 0x1F, 0x01, 0x00, 0x04, 0x68,
    0xEE, 0x3C, 0x80,
];

pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&id.to_be_bytes()[skip..]);
}

pub fn put_size(out: &mut Vec<u8>, size: u64, len: usize) {
    let v = size | (1u64 << (7 * len));
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

fn put_element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(out, id);
    let mut len = 1;
    while (1u64 << (7 * len)) - 1 <= body.len() as u64 {
        len += 1;
    }
    put_size(out, body.len() as u64, len);
    out.extend_from_slice(body);
}

pub fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let skip = ((value.leading_zeros() / 8) as usize).min(7);
    put_element(out, id, &value.to_be_bytes()[skip..]);
}

fn put_str(out: &mut Vec<u8>, id: u32, value: &str) {
    put_element(out, id, value.as_bytes());
}

/// EBML header, Segment of unknown size, Info (1 ms timecodes), Tracks (one H.264 track):
/// everything matroskamux sends before the first Cluster.
pub fn stream_header() -> Vec<u8> {
    let mut ebml = Vec::new();
    put_uint(&mut ebml, 0x4286, 1); // EBMLVersion
    put_uint(&mut ebml, 0x42F7, 1); // EBMLReadVersion
    put_uint(&mut ebml, 0x42F2, 4); // EBMLMaxIDLength
    put_uint(&mut ebml, 0x42F3, 8); // EBMLMaxSizeLength
    put_str(&mut ebml, 0x4282, "matroska"); // DocType
    put_uint(&mut ebml, 0x4287, 4); // DocTypeVersion
    put_uint(&mut ebml, 0x4285, 2); // DocTypeReadVersion
    let mut out = Vec::new();
    put_element(&mut out, ID_EBML, &ebml);
    put_id(&mut out, ID_SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    let mut info = Vec::new();
    put_uint(&mut info, 0x2A_D7B1, 1_000_000); // TimecodeScale
    put_str(&mut info, 0x4D80, "kvssink-bench"); // MuxingApp
    put_str(&mut info, 0x5741, "kvssink-bench"); // WritingApp
    put_element(&mut out, ID_INFO, &info);
    let mut video = Vec::new();
    put_uint(&mut video, 0xB0, 1280); // PixelWidth
    put_uint(&mut video, 0xBA, 720); // PixelHeight
    let mut entry = Vec::new();
    put_uint(&mut entry, 0xD7, 1); // TrackNumber
    put_uint(&mut entry, 0x73C5, 1); // TrackUID
    put_uint(&mut entry, 0x83, 1); // TrackType: video
    put_str(&mut entry, 0x86, "V_MPEG4/ISO/AVC"); // CodecID
    put_element(&mut entry, 0x63A2, &AVCC); // CodecPrivate
    put_element(&mut entry, 0xE0, &video); // Video
    let mut tracks = Vec::new();
    put_element(&mut tracks, 0xAE, &entry); // TrackEntry
    put_element(&mut out, ID_TRACKS, &tracks);
    out
}

/// One buffer as matroskamux pushes it.
pub struct Piece {
    pub bytes: Bytes,
    /// Set on the first buffer of a frame (a cluster start, or a block header): the frame's
    /// index, for live pacing.
    pub frame: Option<u64>,
}

/// Frame sizes between 40 and 60 KB (the key frame 60 KB), deterministic.
fn frame_len(cluster: u64, frame: u64) -> usize {
    if frame == 0 {
        60_000
    } else {
        40_000 + ((cluster * 7919 + frame * 3571) % 20_000) as usize
    }
}

/// About this many bytes of stream per cluster (30 frames of ~50 KB).
const CLUSTER_BYTES: u64 = 1_500_000;

/// The stream, cut as matroskamux cuts it: the header; then per cluster a buffer with the
/// Cluster ID, unknown size and Timecode; then per frame a buffer with the SimpleBlock header
/// (ID, 8-byte size, track, relative timecode, flags) and a buffer with the frame. Frames
/// share one payload, so making the stream costs next to nothing. Clusters hold 30 frames
/// `frame_ms` apart; frames are `frame_len` scaled by `scale_pct` percent.
pub fn stream_pieces(
    clusters: u64,
    frame_ms: u64,
    scale_pct: usize,
    payload: &Bytes,
) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(1 + clusters as usize * (2 * FPS as usize + 1));
    pieces.push(Piece {
        bytes: Bytes::from(stream_header()),
        frame: None,
    });
    for c in 0..clusters {
        for f in 0..FPS {
            let index = c * FPS + f;
            let len = frame_len(c, f) * scale_pct / 100;
            if f == 0 {
                let mut start = Vec::with_capacity(24);
                put_id(&mut start, ID_CLUSTER);
                start.extend_from_slice(&UNKNOWN_SIZE);
                put_uint(&mut start, ID_TIMECODE, c * FPS * frame_ms);
                pieces.push(Piece {
                    bytes: Bytes::from(start),
                    frame: Some(index),
                });
            }
            let mut block = Vec::with_capacity(16);
            put_id(&mut block, ID_SIMPLE_BLOCK);
            put_size(&mut block, len as u64 + 4, 8);
            block.push(0x81); // track 1
            block.extend_from_slice(&((f * frame_ms) as i16).to_be_bytes());
            block.push(if f == 0 { 0x80 } else { 0 });
            pieces.push(Piece {
                bytes: Bytes::from(block),
                frame: (f != 0).then_some(index),
            });
            pieces.push(Piece {
                bytes: payload.slice(..len),
                frame: None,
            });
        }
    }
    pieces
}

/// Incompressible filler for frames.
pub fn payload() -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(64_000);
    while v.len() < 64_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

pub fn total_len(pieces: &[Piece]) -> u64 {
    pieces.iter().map(|p| p.bytes.len() as u64).sum()
}

/// The throughput stream: about `bytes` bytes of 30-frame clusters with 40-60 KB frames.
pub struct Throughput {
    pub clusters: u64,
    /// Milliseconds between frames.
    pub frame_ms: u64,
    pub pieces: Vec<Piece>,
}

impl Throughput {
    pub fn new(bytes: u64) -> Throughput {
        let clusters = bytes.div_ceil(CLUSTER_BYTES);
        // kvs-local refuses producer timestamps more than 10 min ahead, and RELATIVE timecodes
        // start now: squeeze the stream's timeline to at most ~5 min.
        let frame_ms = (300_000 / (clusters * FPS)).clamp(1, 1000 / FPS);
        let pieces = stream_pieces(clusters, frame_ms, 100, &payload());
        Throughput {
            clusters,
            frame_ms,
            pieces,
        }
    }
}

//! The synthetic stream: matroskamux-shaped buffers written in memory (EBML header, Segment
//! of unknown size, Info, Tracks, then clusters of unknown size cut as matroskamux cuts them).
//!
//! Written with the workspace's one EBML writer (`kvs-format`).

use bytes::Bytes;
use kvs_format::build;
use kvs_format::ebml::{write_id, write_vint_len};
use kvs_format::ids::ID_SIMPLE_BLOCK;

/// Frames per second (and per cluster) of every stream the bench makes.
pub const FPS: u64 = 30;

/// EBML header, Segment of unknown size, Info (1 ms timecodes), Tracks (one H.264 track):
/// everything matroskamux sends before the first Cluster.
pub fn stream_header() -> Vec<u8> {
    build::simple_header()
}

/// The header of a SimpleBlock on track 1 carrying `len` bytes of frame, as matroskamux
/// pushes it in a buffer of its own (8-byte size, track, relative timecode, flags).
pub fn block_header(len: usize, rel_timecode: i16, key: bool) -> Vec<u8> {
    let mut block = Vec::with_capacity(16);
    write_id(&mut block, ID_SIMPLE_BLOCK);
    write_vint_len(&mut block, len as u64 + 4, 8);
    block.push(0x81); // track 1
    block.extend_from_slice(&rel_timecode.to_be_bytes());
    block.push(if key { 0x80 } else { 0 });
    block
}

/// The start of a Cluster of unknown size at `timecode` (ms), in a buffer of its own.
pub fn cluster_start(timecode: u64) -> Vec<u8> {
    build::cluster_start(timecode)
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
                pieces.push(Piece {
                    bytes: Bytes::from(cluster_start(c * FPS * frame_ms)),
                    frame: Some(index),
                });
            }
            let block = block_header(len, (f * frame_ms) as i16, f == 0);
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

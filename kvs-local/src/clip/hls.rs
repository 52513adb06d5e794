//! HLS and MPEG-DASH with fragmented MP4, as `GetHLSStreamingSessionURL`'s and
//! `GetDASHStreamingSessionURL`'s sessions serve them: an initialization segment from a
//! stream header, and one media segment per fragment. The service's rules are a clip's
//! ([`super::sources`]), and its audio is AAC (HLS) or AAC and G.711 (DASH).

use super::mp4::{Codec, Movie, Track};
use super::{ClipError, chunks, samples, sources};
use crate::model::records::StoredFragment;
use bytes::Bytes;

/// What the master playlist says of a session's tracks.
pub(crate) struct Variant {
    /// RFC 6381 codecs, e.g. `avc1.64001F,mp4a.40.2`.
    pub(crate) codecs: String,
    /// Video width and height.
    pub(crate) resolution: (u16, u16),
}

/// The initialization segment of the tracks of `fragment` (whose stream header is in
/// `headers`), and what the master playlist says of them.
pub(crate) fn init(
    headers: &[Bytes],
    fragment: &StoredFragment,
    g711: bool,
) -> Result<(Vec<u8>, Variant), ClipError> {
    let sources = checked_sources(headers, fragment, g711)?;
    let movie = Movie {
        tracks: sources
            .iter()
            .map(|src| Track {
                codec: src.codec.clone(),
                size: src.size,
                audio: src.audio,
                timescale: src.timescale,
                samples: Vec::new(),
                delay_ms: 0,
            })
            .collect(),
        chunks: Vec::new(),
        created_unix_s: fragment.producer_timestamp_ms / 1000,
    };
    let codecs: Vec<String> = sources.iter().map(|s| codec_name(&s.codec)).collect();
    let variant = Variant {
        codecs: codecs.join(","),
        resolution: sources[0].size,
    };
    Ok((movie.write_init(), variant))
}

/// The media segment of `fragment`, number `sequence` in the stream: its frames, decoded
/// from its producer time on (each track's decode times counted from the Unix epoch, so that
/// segments follow one another).
pub(crate) fn segment(
    headers: &[Bytes],
    fragment: &StoredFragment,
    sequence: u32,
    g711: bool,
) -> Result<Vec<Bytes>, ClipError> {
    let sources = checked_sources(headers, fragment, g711)?;
    let mut decode_times = Vec::with_capacity(sources.len());
    let mut tracks = Vec::with_capacity(sources.len());
    for src in &sources {
        let (samples, _, base_ns) = if src.frames.is_empty() {
            (Vec::new(), 0, 0)
        } else {
            samples(src)
        };
        let ticks = base_ns.max(0) * i128::from(src.timescale) / 1_000_000_000;
        decode_times.push(u64::try_from(ticks).unwrap_or(0));
        tracks.push(Track {
            codec: src.codec.clone(),
            size: src.size,
            audio: src.audio,
            timescale: src.timescale,
            samples,
            delay_ms: 0,
        });
    }
    let movie = Movie {
        tracks,
        chunks: chunks(&sources, std::slice::from_ref(fragment)),
        created_unix_s: 0,
    };
    Ok(movie.write_segment(sequence, &decode_times))
}

/// The fragment's tracks, as HLS takes them: a clip's, with AAC audio (or G.711 too, with
/// `g711`: MPEG-DASH's).
pub(super) fn checked_sources(
    headers: &[Bytes],
    fragment: &StoredFragment,
    g711: bool,
) -> Result<Vec<super::Source>, ClipError> {
    let sources = sources(headers, std::slice::from_ref(fragment), true)?;
    if let Some(audio) = sources.get(1)
        && !g711
        && !matches!(audio.codec, Codec::Aac(_))
    {
        return Err(ClipError::UnsupportedStreamMediaType(
            "HLS takes AAC audio as track 2 (this stream's is G.711: read it with GetClip, \
             GetMedia or kvssrc)"
                .into(),
        ));
    }
    Ok(sources)
}

/// RFC 6381's name of a codec, from its configuration record.
fn codec_name(codec: &Codec) -> String {
    match codec {
        Codec::Avc(c) if c.len() >= 4 => format!("avc1.{:02X}{:02X}{:02X}", c[1], c[2], c[3]),
        Codec::Avc(_) => "avc1".into(),
        Codec::Hevc(c) if c.len() >= 13 => {
            // general_profile_space, tier, profile, compatibility flags (bit-reversed), level
            let space = ["", "A", "B", "C"][usize::from(c[1] >> 6)];
            let tier = if c[1] & 0x20 != 0 { 'H' } else { 'L' };
            let compat = u32::from_be_bytes([c[2], c[3], c[4], c[5]]).reverse_bits();
            format!("hvc1.{space}{}.{compat:X}.{tier}{}.B0", c[1] & 0x1F, c[12])
        }
        Codec::Hevc(_) => "hvc1".into(),
        Codec::Aac(c) => format!("mp4a.40.{}", c.first().map_or(2, |b| b >> 3)),
        Codec::G711 { alaw: true } => "alaw".into(),
        Codec::G711 { alaw: false } => "ulaw".into(),
    }
}

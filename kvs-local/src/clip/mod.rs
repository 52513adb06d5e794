//! GetClip: stored fragments as one MP4 file, with the service's rules for what a clip can
//! hold (track 1 H.264 or H.265 video with its codec private data, an optional track 2 of
//! AAC or G.711, the same tracks and codec private data throughout).
//!
//! The frames are read with kvs-local's own Matroska reading ([`crate::mkv`]) and written
//! with [`mp4`]; their bytes are not copied until the response is assembled.

pub(crate) mod hls;
pub(crate) mod mp4;
pub(crate) mod ts;

use crate::mkv::{Frame, TrackInfo, cluster_frames, header_tracks};
use crate::model::records::StoredFragment;
use bytes::Bytes;
use kvs_format::matroska::{
    CODEC_AAC, CODEC_ACM, CODEC_H264, CODEC_H265, TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO,
    WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW, same_tracks,
};
use mp4::{Chunk, Codec, Movie, Sample, Track};

/// Most fragments in one clip (the service's limit: the clip holds the first of them).
pub(crate) const MAX_CLIP_FRAGMENTS: usize = 200;
/// Most bytes of fragments in one clip (the service's limit, as for fragments).
pub(crate) const MAX_CLIP_BYTES: u64 = 100 * 1024 * 1024;
/// Video timescale: MP4's customary 90 kHz.
const VIDEO_TIMESCALE: u32 = 90_000;

/// Why a clip cannot be made, as the service names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClipError {
    /// `MissingCodecPrivateDataException`.
    MissingCodecPrivateData(String),
    /// `InvalidCodecPrivateDataException`.
    InvalidCodecPrivateData(String),
    /// `UnsupportedStreamMediaTypeException`.
    UnsupportedStreamMediaType(String),
    /// `InvalidMediaFrameException`.
    InvalidMediaFrame(String),
}

impl ClipError {
    /// The error type the service answers.
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            ClipError::MissingCodecPrivateData(_) => "MissingCodecPrivateDataException",
            ClipError::InvalidCodecPrivateData(_) => "InvalidCodecPrivateDataException",
            ClipError::UnsupportedStreamMediaType(_) => "UnsupportedStreamMediaTypeException",
            ClipError::InvalidMediaFrame(_) => "InvalidMediaFrameException",
        }
    }

    /// What went wrong.
    pub(crate) fn message(&self) -> &str {
        match self {
            ClipError::MissingCodecPrivateData(m)
            | ClipError::InvalidCodecPrivateData(m)
            | ClipError::UnsupportedStreamMediaType(m)
            | ClipError::InvalidMediaFrame(m) => m,
        }
    }
}

/// The fragments a clip holds, of those in its range (in stream order): the first
/// [`MAX_CLIP_FRAGMENTS`], and no more than [`MAX_CLIP_BYTES`] (at least one), in ascending
/// order of index.
pub(crate) fn clip_limit(in_range: impl Iterator<Item = (usize, u64)>) -> Vec<usize> {
    let mut bytes = 0u64;
    let mut out = Vec::new();
    for (index, size) in in_range.take(MAX_CLIP_FRAGMENTS) {
        if !out.is_empty() && bytes + size > MAX_CLIP_BYTES {
            break;
        }
        bytes += size;
        out.push(index);
    }
    out
}

/// A track of the clip: where its frames come from and how they are written.
struct Source {
    number: u64,
    codec: Codec,
    size: (u16, u16),
    audio: (u16, u32),
    timescale: u32,
    /// Bytes of the length before each NAL unit (video).
    nal_length: usize,
    /// Its frames: (presentation time in ns since the epoch, fragment, frame).
    frames: Vec<(i128, usize, Frame)>,
}

/// The sampling rate and channels of an AudioSpecificConfig (ISO/IEC 14496-3), for a track
/// without SamplingFrequency.
fn aac_rate(config: &[u8]) -> Option<(u32, u16)> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    let bits = u32::from(*config.first()?) << 8 | u32::from(*config.get(1)?);
    let index = (bits >> 7) & 0xF;
    let channels = (bits >> 3) & 0xF;
    Some((*RATES.get(index as usize)?, channels.max(1) as u16))
}

fn video(t: &TrackInfo) -> Result<Source, ClipError> {
    let hevc = match t.codec_id.as_str() {
        CODEC_H264 => false,
        CODEC_H265 => true,
        other => {
            return Err(ClipError::UnsupportedStreamMediaType(format!(
                "track 1 has codec {other:?}: a clip needs H.264 ({CODEC_H264}) or H.265 \
                 ({CODEC_H265}) video as track 1"
            )));
        }
    };
    let cpd = &t.codec_private;
    if cpd.is_empty() {
        return Err(ClipError::MissingCodecPrivateData(
            "track 1 (video) has no codec private data".into(),
        ));
    }
    // avcC and hvcC both begin with configurationVersion 1; an Annex B header (start codes)
    // does not
    let (min, length_at) = if hevc { (23, 21) } else { (7, 4) };
    if cpd[0] != 1 || cpd.len() < min {
        return Err(ClipError::InvalidCodecPrivateData(format!(
            "track 1's codec private data is not an {} record (ISO/IEC 14496-15)",
            if hevc { "hvcC" } else { "avcC" }
        )));
    }
    let clamp = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    Ok(Source {
        number: t.number,
        codec: if hevc {
            Codec::Hevc(cpd.clone())
        } else {
            Codec::Avc(cpd.clone())
        },
        size: (clamp(t.pixel_size.0), clamp(t.pixel_size.1)),
        audio: (0, 0),
        timescale: VIDEO_TIMESCALE,
        nal_length: usize::from(cpd[length_at] & 3) + 1,
        frames: Vec::new(),
    })
}

fn audio(t: &TrackInfo) -> Result<Source, ClipError> {
    let cpd = &t.codec_private;
    let (codec, rate, channels) = match t.codec_id.as_str() {
        CODEC_AAC => {
            if cpd.is_empty() {
                return Err(ClipError::MissingCodecPrivateData(
                    "track 2 (AAC) has no codec private data".into(),
                ));
            }
            let Some((rate, channels)) = aac_rate(cpd) else {
                return Err(ClipError::InvalidCodecPrivateData(
                    "track 2's codec private data is not an AAC AudioSpecificConfig".into(),
                ));
            };
            let (rate, channels) = match t.audio {
                (0, _) => (rate, channels),
                (hz, ch) => (hz as u32, ch as u16),
            };
            (Codec::Aac(cpd.clone()), rate, channels)
        }
        CODEC_ACM => {
            if cpd.is_empty() {
                return Err(ClipError::MissingCodecPrivateData(
                    "track 2 (A_MS/ACM) has no codec private data".into(),
                ));
            }
            if cpd.len() < 16 {
                return Err(ClipError::InvalidCodecPrivateData(
                    "track 2's codec private data is not a WAVEFORMATEX".into(),
                ));
            }
            let tag = u16::from_le_bytes([cpd[0], cpd[1]]);
            let alaw = match tag {
                WAVE_FORMAT_ALAW => true,
                WAVE_FORMAT_MULAW => false,
                other => {
                    return Err(ClipError::UnsupportedStreamMediaType(format!(
                        "track 2 is A_MS/ACM of format tag {other}: a clip's audio is AAC or \
                         G.711 (tags {WAVE_FORMAT_ALAW} and {WAVE_FORMAT_MULAW})"
                    )));
                }
            };
            let channels = u16::from_le_bytes([cpd[2], cpd[3]]).max(1);
            let rate = u32::from_le_bytes([cpd[4], cpd[5], cpd[6], cpd[7]]);
            (Codec::G711 { alaw }, rate, channels)
        }
        other => {
            return Err(ClipError::UnsupportedStreamMediaType(format!(
                "track 2 has codec {other:?}: a clip's audio (track 2) is AAC ({CODEC_AAC}) \
                 or G.711 ({CODEC_ACM})"
            )));
        }
    };
    if rate == 0 {
        return Err(ClipError::InvalidCodecPrivateData(
            "track 2 has no sampling rate".into(),
        ));
    }
    Ok(Source {
        number: t.number,
        codec,
        size: (0, 0),
        audio: (channels, rate),
        timescale: rate,
        nal_length: 0,
        frames: Vec::new(),
    })
}

/// Whether `frame` is NAL units each after its length, filling it exactly (as Matroska and
/// MP4 carry H.264 and H.265; start codes instead would not).
fn nal_units_fit(frame: &[u8], length: usize) -> bool {
    let mut rest = frame;
    while !rest.is_empty() {
        let Some(head) = rest.get(..length) else {
            return false;
        };
        let n = head.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let Some(next) = rest.get(length + n..) else {
            return false;
        };
        rest = next;
    }
    true
}

/// A track's samples from its frames' presentation times: decode times are the presentation
/// times in order (moved back by the largest reordering, so that no frame is shown before it
/// is decoded), each after the one before.
fn samples(src: &Source) -> (Vec<Sample>, i128, i128) {
    let pts: Vec<i128> = src.frames.iter().map(|(t, ..)| *t).collect();
    let mut sorted = pts.clone();
    sorted.sort_unstable();
    let reorder = sorted
        .iter()
        .zip(&pts)
        .map(|(s, p)| s - p)
        .max()
        .unwrap_or(0)
        .max(0);
    let base = sorted.first().copied().unwrap_or(0) - reorder;
    let ts = i128::from(src.timescale);
    let ticks = |ns: i128| (((ns - base) * ts + 500_000_000).div_euclid(1_000_000_000)).max(0);
    let mut dts: Vec<i128> = Vec::with_capacity(pts.len());
    for s in &sorted {
        let t = ticks(s - reorder);
        dts.push(dts.last().map_or(t, |last| t.max(last + 1)));
    }
    let g711 = matches!(src.codec, Codec::G711 { .. });
    let channels = u32::from(src.audio.0.max(1));
    let default = match src.codec {
        Codec::Aac(_) => 1024,
        _ => i128::from(src.timescale / 30),
    };
    let mut out = Vec::with_capacity(pts.len());
    for (i, (p, _, frame)) in src.frames.iter().enumerate() {
        let size = u32::try_from(frame.data.len()).unwrap_or(u32::MAX);
        let duration = if g711 {
            size / channels
        } else {
            let d = match (dts.get(i + 1), i.checked_sub(1)) {
                (Some(next), _) => next - dts[i],
                (None, Some(prev)) => dts[i] - dts[prev],
                (None, None) => default,
            };
            u32::try_from(d).unwrap_or(u32::MAX)
        };
        out.push(Sample {
            duration,
            cts: u32::try_from((ticks(*p) - dts[i]).max(0)).unwrap_or(0),
            size,
            sync: frame.key || !matches!(src.codec, Codec::Avc(_) | Codec::Hevc(_)),
        });
    }
    // presented first at the earliest presentation time; decoded first at `base`
    (out, sorted.first().copied().unwrap_or(0), base)
}

/// The MP4 file of `fragments` (in stream order, at least one), whose stream headers are
/// `headers` (by [`StoredFragment::header_index`]), as the body's pieces.
pub(crate) fn clip(
    headers: &[Bytes],
    fragments: &[StoredFragment],
) -> Result<Vec<Bytes>, ClipError> {
    let sources = sources(headers, fragments, false)?;
    let built: Vec<(Vec<Sample>, i128, i128)> = sources.iter().map(samples).collect();
    let origin = built.iter().map(|(_, start, _)| *start).min().unwrap_or(0);
    let mut movie = Movie {
        tracks: Vec::new(),
        chunks: Vec::new(),
        created_unix_s: u64::try_from(origin.div_euclid(1_000_000_000)).unwrap_or(0),
    };
    for (src, (samples, start, _)) in sources.iter().zip(built) {
        movie.tracks.push(Track {
            codec: src.codec.clone(),
            size: src.size,
            audio: src.audio,
            timescale: src.timescale,
            samples,
            delay_ms: u32::try_from((start - origin + 500_000) / 1_000_000).unwrap_or(0),
        });
    }
    movie.chunks = chunks(&sources, fragments);
    Ok(movie.write())
}

/// One chunk per track and fragment, in the fragments' order.
fn chunks(sources: &[Source], fragments: &[StoredFragment]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut next = vec![0usize; sources.len()];
    for (index, f) in fragments.iter().enumerate() {
        for (track, src) in sources.iter().enumerate() {
            let of_fragment: Vec<Bytes> = src.frames[next[track]..]
                .iter()
                .take_while(|(_, i, _)| *i == index)
                .map(|(_, _, frame)| f.bytes.slice(frame.data.clone()))
                .collect();
            if !of_fragment.is_empty() {
                next[track] += of_fragment.len();
                out.push(Chunk {
                    track,
                    samples: of_fragment.len(),
                    data: of_fragment,
                });
            }
        }
    }
    out
}

/// The tracks of `fragments` with their frames, checked as the service checks a clip's: the
/// same tracks throughout, H.264 or H.265 video first with its codec private data, then AAC
/// or G.711 audio; video frames made of length-prefixed NAL units. Tracks without frames
/// are left out unless `keep_empty`; the video always has some.
fn sources(
    headers: &[Bytes],
    fragments: &[StoredFragment],
    keep_empty: bool,
) -> Result<Vec<Source>, ClipError> {
    let invalid = |m: String| ClipError::InvalidMediaFrame(m);
    let Some(first) = fragments.first() else {
        return Err(invalid("no fragment".into()));
    };
    let header_of = |f: &StoredFragment| {
        headers
            .get(f.header_index)
            .ok_or_else(|| invalid(format!("fragment {} has no stream header", f.number)))
    };
    let header = header_of(first)?;
    for f in fragments {
        let h = header_of(f)?;
        if f.header_index != first.header_index && !same_tracks(header, h) {
            let codecs = kvs_format::matroska::header_codecs;
            return Err(if codecs(header) != codecs(h) {
                ClipError::UnsupportedStreamMediaType(format!(
                    "the tracks change at fragment {} (from {:?} to {:?}): a clip needs the \
                     same tracks throughout",
                    f.number,
                    codecs(header),
                    codecs(h)
                ))
            } else {
                ClipError::InvalidCodecPrivateData(format!(
                    "the codec private data or the tracks' settings change at fragment {}: a \
                     clip needs the same throughout",
                    f.number
                ))
            });
        }
    }
    let (scale, tracks) = header_tracks(header).map_err(|e| invalid(e.to_string()))?;
    let Some(t1) = tracks.first() else {
        return Err(ClipError::UnsupportedStreamMediaType(
            "the stream has no tracks".into(),
        ));
    };
    if t1.track_type != TRACK_TYPE_VIDEO {
        return Err(ClipError::UnsupportedStreamMediaType(format!(
            "track 1 is of type {} ({:?}): a clip needs video as track 1",
            t1.track_type, t1.codec_id
        )));
    }
    let mut sources = vec![video(t1)?];
    if let Some(t2) = tracks.get(1) {
        if t2.track_type != TRACK_TYPE_AUDIO {
            return Err(ClipError::UnsupportedStreamMediaType(format!(
                "track 2 is of type {} ({:?}): a clip's track 2 is audio",
                t2.track_type, t2.codec_id
            )));
        }
        sources.push(audio(t2)?);
    }
    let scale = i128::from(scale);
    for (index, f) in fragments.iter().enumerate() {
        let (timecode, frames) =
            cluster_frames(&f.bytes).map_err(|e| invalid(format!("fragment {}: {e}", f.number)))?;
        let base = time_base(f, timecode, scale);
        for frame in frames {
            let Some(src) = sources.iter_mut().find(|s| s.number == frame.track) else {
                continue; // a third track: not in a clip
            };
            if src.nal_length > 0 && !nal_units_fit(&f.bytes[frame.data.clone()], src.nal_length) {
                return Err(invalid(format!(
                    "a frame of fragment {} is not NAL units each after its {}-byte length \
                     (start codes instead?)",
                    f.number, src.nal_length
                )));
            }
            src.frames
                .push((base + i128::from(frame.timecode) * scale, index, frame));
        }
    }
    if sources[0].frames.is_empty() {
        return Err(invalid("the clip's fragments hold no video frame".into()));
    }
    if !keep_empty {
        sources.retain(|s| !s.frames.is_empty());
    }
    Ok(sources)
}

/// The presentation time (ns since the epoch) of time 0 of the Cluster of `f`, whose
/// Timecode is `timecode` (in units of `scale` ns): a frame is shown at this plus its
/// Cluster-relative time. The fragment's producer time is its Cluster's, to the ms.
pub(crate) fn time_base(f: &StoredFragment, timecode: u64, scale: i128) -> i128 {
    let cluster_ns = i128::from(timecode) * scale;
    i128::from(f.producer_timestamp_ms) * 1_000_000 + cluster_ns % 1_000_000
}

#[cfg(test)]
mod tests;

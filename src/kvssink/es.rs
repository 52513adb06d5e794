//! The elementary-stream inputs of AWS's kvssink, as caps: what the pads accept, and the
//! tracks their caps describe. The muxing itself is GStreamer-free, in [`crate::esmux`].

use bytes::Bytes;

use crate::esmux::{self, AudioTrack, VideoTrack};

/// H.264 and H.265 access units with their codec data (h264parse / h265parse or the encoder
/// convert to this), and access units in Annex B form (cameras' `byte-stream`).
pub fn video_caps() -> gst::Caps {
    gst::Caps::builder_full()
        .structure(
            gst::Structure::builder("video/x-h264")
                .field("stream-format", gst::List::new(["avc", "byte-stream"]))
                .field("alignment", "au")
                .build(),
        )
        .structure(
            gst::Structure::builder("video/x-h265")
                .field(
                    "stream-format",
                    gst::List::new(["hvc1", "hev1", "byte-stream"]),
                )
                .field("alignment", "au")
                .build(),
        )
        .build()
}

/// AAC (raw, with its AudioSpecificConfig), G.711 A-law and µ-law (what AWS's kvssink
/// takes), and Opus.
pub fn audio_caps() -> gst::Caps {
    let any_rate = gst::IntRange::new(1, i32::MAX);
    let g711 = |name: &str| {
        gst::Structure::builder(name)
            .field("channels", gst::IntRange::new(1, 2))
            .field("rate", gst::IntRange::new(8000, 192_000))
            .build()
    };
    gst::Caps::builder_full()
        .structure(
            gst::Structure::builder("audio/mpeg")
                .field("mpegversion", gst::List::new([2i32, 4]))
                .field("stream-format", "raw")
                .field("channels", gst::IntRange::new(1, i32::MAX))
                .field("rate", any_rate)
                .build(),
        )
        .structure(g711("audio/x-alaw"))
        .structure(g711("audio/x-mulaw"))
        .structure(
            gst::Structure::builder("audio/x-opus")
                .field("channel-mapping-family", 0i32)
                .field("channels", gst::IntRange::new(1, 2))
                .field("rate", any_rate)
                .build(),
        )
        .build()
}

fn codec_data(s: &gst::StructureRef) -> Option<Bytes> {
    let buffer = s.get::<gst::Buffer>("codec_data").ok()?;
    let map = buffer.map_readable().ok()?;
    Some(Bytes::copy_from_slice(&map))
}

/// The video track of H.264 / H.265 caps; `Ok(None)` for other (Matroska) caps.
pub fn video_track(s: &gst::StructureRef) -> Result<Option<VideoTrack>, String> {
    let Some(codec_id) = esmux::codec_for(s.name()) else {
        return Ok(None);
    };
    let annexb = s.get::<&str>("stream-format").ok() == Some("byte-stream");
    let codec_private = match codec_data(s) {
        Some(data) if !annexb => data,
        // Built from the stream's SPS and PPS.
        _ if annexb => Bytes::new(),
        _ => return Err(format!("{} caps without codec_data", s.name())),
    };
    Ok(Some(VideoTrack {
        codec_id,
        codec_private,
        width: s.get::<i32>("width").unwrap_or(0).max(0) as u32,
        height: s.get::<i32>("height").unwrap_or(0).max(0) as u32,
        annexb,
    }))
}

/// The audio track of caps the audio pad accepted.
pub fn audio_track(s: &gst::StructureRef) -> Result<AudioTrack, String> {
    let positive = |field: &str| -> Result<u32, String> {
        match s.get::<i32>(field) {
            Ok(v) if v > 0 => Ok(v as u32),
            _ => Err(format!("{} caps without {field}", s.name())),
        }
    };
    let rate = positive("rate")?;
    let channels = positive("channels")?;
    let track = |codec_id, codec_private| AudioTrack {
        codec_id,
        codec_private,
        rate,
        channels,
        bit_depth: None,
        codec_delay_ns: None,
    };
    match s.name().as_ref() {
        "audio/mpeg" => {
            let config = codec_data(s).ok_or(
                "AAC caps without codec_data (the \
                 AudioSpecificConfig); put aacparse before kvssink",
            )?;
            Ok(track(esmux::CODEC_AAC, config))
        }
        name @ ("audio/x-alaw" | "audio/x-mulaw") => {
            let tag = if name == "audio/x-alaw" {
                esmux::WAVE_FORMAT_ALAW
            } else {
                esmux::WAVE_FORMAT_MULAW
            };
            let private = esmux::g711_codec_private(tag, rate, channels as u16);
            Ok(AudioTrack {
                bit_depth: Some(8),
                ..track(esmux::CODEC_ACM, private)
            })
        }
        "audio/x-opus" => {
            let head = s
                .get::<gst::ArrayRef>("streamheader")
                .ok()
                .and_then(|a| a.first().and_then(|v| v.get::<gst::Buffer>().ok()))
                .and_then(|b| b.map_readable().ok().map(|m| Bytes::copy_from_slice(&m)))
                .filter(|h| esmux::opus_pre_skip(h).is_some())
                .unwrap_or_else(|| esmux::opus_head(rate, channels as u8, 0));
            let pre_skip = esmux::opus_pre_skip(&head).unwrap_or(0);
            Ok(AudioTrack {
                codec_delay_ns: Some(u64::from(pre_skip) * 1_000_000_000 / 48_000),
                ..track(esmux::CODEC_OPUS, head)
            })
        }
        other => Err(format!("kvssink takes no audio of type {other}")),
    }
}

/// Where the elementary-stream muxer begins fragments: AWS's `key-frame-fragmentation` (a
/// fragment at every key frame, else at the first key frame `fragment-duration` after the
/// fragment's start) and `fragment-duration`, as set (after `official::apply`).
pub fn fragmentation(settings: &super::settings::Settings) -> esmux::Fragmentation {
    esmux::Fragmentation {
        key_frame: settings.official.value("key-frame-fragmentation")
            != Some(super::official::Value::Bool(false)),
        duration_ms: settings.fragment_duration.into(),
    }
}

/// The warnings of what the muxer dropped for want of a fragment to put it in: audio before
/// the first video key frame (once, with how much), and audio held as long as it may be
/// while no video key frame comes.
pub fn drop_warnings(written: &esmux::Written, hold_ms: u64) -> Vec<String> {
    let mut said = Vec::new();
    if written.audio_hold_full {
        said.push(format!(
            "no video key frame came within {hold_ms} ms of audio: audio is held at most that \
             long for one, and older audio is dropped until one comes"
        ));
    }
    if let Some(d) = written.audio_before_video {
        let upto = match d.key_frame_ms {
            Some(key) => format!("the first video key frame (at {key} ms)"),
            None => "any video key frame that could begin a fragment with it".to_owned(),
        };
        said.push(format!(
            "{} audio frames ({} ms of audio) came before {upto} and are not sent: a Kinesis \
             Video Streams fragment begins at a video key frame{}",
            d.frames,
            d.ms,
            if d.held_too_long {
                format!("; audio waits for it at most {hold_ms} ms")
            } else {
                String::new()
            }
        ));
    }
    said
}

/// The warnings of video the muxer dropped: before the first key frame (the stream began
/// inside a group of pictures), and further from its key frame than a block reaches (a group
/// of pictures longer than 32.7 s); each once per run of frames, with how much.
pub fn video_drop_warnings(written: &esmux::Written) -> Vec<String> {
    let mut said = Vec::new();
    let until = |key: Option<u64>, verb: &str| match key {
        Some(ms) => format!("the stream {verb} at the key frame at {ms} ms"),
        None => "no key frame came before the end".to_owned(),
    };
    if let Some(d) = written.video_before_first_key {
        said.push(format!(
            "the stream begins inside a group of pictures: its first {} video frames ({} ms) \
             came before a key frame and are not sent, as a Kinesis Video Streams fragment \
             begins with one (they cannot be decoded without it); {}",
            d.frames,
            d.ms,
            until(d.key_frame_ms, "begins")
        ));
    }
    if let Some(d) = written.video_too_far {
        said.push(format!(
            "{} video frames ({} ms, {} bytes) more than 32.7 s after their key frame were not \
             sent: a Matroska block reaches 32.7 s from the key frame its cluster begins with \
             (and the fragment was cut at the service's 10 s long before); {}. Make the \
             encoder emit key frames more often (x264enc key-int-max, e.g. 2 s of frames)",
            d.frames,
            d.ms,
            d.bytes,
            until(d.key_frame_ms, "goes on")
        ));
    }
    said
}

/// Said once when `key-frame-fragmentation=false` meets Matroska input.
pub const MATROSKA_KEY_FRAME_FRAGMENTATION: &str = "key-frame-fragmentation=false has no effect \
     on Matroska input: its fragments are matroskamux's clusters, which begin at every key \
     frame; for longer fragments make key frames rarer, or give kvssink the H.264/H.265 \
     stream itself";

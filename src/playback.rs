//! What the service's playback (console, HLS, DASH, GetClip) needs of a stream beyond what
//! PutMedia accepts. PutMedia stores such a stream without a word; these checks run on the
//! stream header so the user hears of it before hours of video nobody can watch are stored.

use crate::mkv::{TRACK_TYPE_VIDEO, TrackInfo};
use kvs_format::matroska::{CODEC_H264, CODEC_H265};

/// HLS, DASH and GetClip need the video on track 1. kvssink renumbers the tracks itself when
/// it can ([`crate::mkv::renumber`]); this is what is left when it cannot.
pub fn track_order_problem(tracks: &[TrackInfo]) -> Option<String> {
    let video = tracks.iter().find(|t| t.track_type == TRACK_TYPE_VIDEO)?;
    (video.number != 1).then(|| {
        let why = match crate::mkv::renumber::plan(tracks) {
            Err(e) => format!(" and kvssink cannot renumber it: {e}"),
            Ok(_) => String::new(),
        };
        format!(
            "the video is track {} (the first track is {}){why}: the service's HLS, DASH and \
             GetClip need video as track 1. Link the video branch to matroskamux first (put it \
             first in the launch line)",
            video.number,
            tracks
                .iter()
                .find(|t| t.number == 1)
                .map_or("missing", |t| t.codec_id.as_str())
        )
    })
}

/// Video that browsers, and so the console, HLS and DASH, cannot decode: H.264 beyond 8-bit
/// 4:2:0 (High 10, High 4:2:2, High 4:4:4), H.265 beyond Main.
pub fn codec_problem(track: &TrackInfo) -> Option<String> {
    // avcC and hvcC both start with a version byte, then the profile.
    let profile = *track.codec_private.get(1)?;
    let name = match (track.codec_id.as_str(), profile) {
        (CODEC_H264, 110) => "H.264 High 10",
        (CODEC_H264, 122) => "H.264 High 4:2:2",
        (CODEC_H264, 244) => "H.264 High 4:4:4 Predictive",
        (CODEC_H264, 44) => "H.264 CAVLC 4:4:4 Intra",
        (CODEC_H265, p) if p & 0x1f == 2 => "H.265 Main 10",
        (CODEC_H265, p) if p & 0x1f == 4 => "H.265 Range Extensions",
        _ => return None,
    };
    Some(format!(
        "the video is {name}, which the Kinesis Video Streams console, HLS and DASH cannot play \
         (browsers decode 8-bit 4:2:0). It is stored all the same; for playback put \
         video/x-raw,format=I420 before the encoder (videoconvert ! video/x-raw,format=I420 ! \
         x264enc)"
    ))
}

/// Every playback problem of a stream's tracks, one message each.
pub fn problems(tracks: &[TrackInfo]) -> Vec<String> {
    track_order_problem(tracks)
        .into_iter()
        .chain(tracks.iter().filter_map(codec_problem))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mkv::TRACK_TYPE_AUDIO;
    use bytes::Bytes;

    fn track(number: u64, track_type: u64, codec_id: &str, private: &[u8]) -> TrackInfo {
        TrackInfo {
            number,
            track_type,
            codec_id: codec_id.into(),
            codec_private: Bytes::copy_from_slice(private),
        }
    }

    #[test]
    fn video_must_be_track_one() {
        let video = track(1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", &[1, 100]);
        let audio = track(2, TRACK_TYPE_AUDIO, "A_AAC", &[]);
        assert!(problems(&[video.clone(), audio.clone()]).is_empty());
        let swapped = [
            track(1, TRACK_TYPE_AUDIO, "A_AAC", &[]),
            track(2, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", &[1, 100]),
        ];
        let p = problems(&swapped);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("video is track 2 (the first track is A_AAC)"),
            "{}",
            p[0]
        );
        assert!(problems(&[audio]).is_empty(), "audio alone is fine");
        // What kvssink cannot renumber says why.
        let two_videos = [
            track(1, TRACK_TYPE_AUDIO, "A_AAC", &[]),
            track(2, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", &[1, 100]),
            track(3, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", &[1, 100]),
        ];
        let p = problems(&two_videos);
        assert!(
            p[0].contains("cannot renumber it: it has 2 video tracks"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn profiles_browsers_cannot_decode_are_named() {
        for (private, name) in [
            (&[1u8, 244][..], "High 4:4:4 Predictive"),
            (&[1, 122], "High 4:2:2"),
            (&[1, 110], "High 10"),
        ] {
            let p = codec_problem(&track(1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", private));
            assert!(p.unwrap().contains(name));
        }
        for ok in [66u8, 77, 100] {
            assert!(codec_problem(&track(1, 1, "V_MPEG4/ISO/AVC", &[1, ok])).is_none());
        }
        assert!(codec_problem(&track(1, 1, "V_MPEGH/ISO/HEVC", &[1, 0x01])).is_none());
        assert!(
            codec_problem(&track(1, 1, "V_MPEGH/ISO/HEVC", &[1, 0x02]))
                .unwrap()
                .contains("Main 10")
        );
        assert!(codec_problem(&track(1, 1, "V_MPEG4/ISO/AVC", &[])).is_none());
    }
}

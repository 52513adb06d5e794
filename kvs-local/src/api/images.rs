//! GetImages: still images (JPEG or PNG) of a stream's video, one per sampling interval of a
//! time range, as the service makes them for machine learning and previews.
//!
//! Each image is the last video frame shown at or before its time, in the fragment that
//! holds that time; a time no fragment holds is `NO_MEDIA`. kvs-local has no video decoder
//! of its own: each fragment that holds sampled times is decoded once by GStreamer
//! (`gst-launch-1.0` with `matroskademux`, `decodebin`, `videoscale` and `jpegenc` or
//! `pngenc`, which this project's `scripts/setup.sh` installs), and its frames encoded
//! as images. When that cannot be done, its images are `MEDIA_ERROR` and the log says why.

use super::context::{Shared, store_err};
use super::http::{ApiError, RespBody, json_response};
use super::media::{by_producer_time, needs_retention, timestamp_ms};
use super::operation::{GetImagesInput, Page};
use crate::mkv::{cluster_frames, header_tracks};
use crate::model::records::StoredFragment;
use crate::util::{base64_encode, epoch_seconds_json};
use bytes::Bytes;
use http::Response;
use kvs_format::matroska::{CODEC_H264, CODEC_H265, TRACK_TYPE_VIDEO};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest time range of one request (the service's 300 s).
const MAX_RANGE_MS: u64 = 300_000;
/// The sampling interval's default and bounds (ms).
const DEFAULT_INTERVAL_MS: u64 = 3_000;
const MIN_INTERVAL_MS: u64 = 200;
const MAX_INTERVAL_MS: u64 = 20_000;
/// `JPEGQuality` when none is given.
const DEFAULT_QUALITY: u64 = 80;
/// Most images in one response.
const MAX_RESULTS: u64 = 100;
/// Largest width and height asked for.
const MAX_WIDTH: u64 = 3840;
const MAX_HEIGHT: u64 = 2160;
/// How long one fragment's decoding may take.
const DECODE_TIMEOUT: Duration = Duration::from_secs(60);

/// The size of the images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    /// The video's own.
    Original,
    /// One side given: the other follows the picture's aspect ratio.
    Width(u64),
    Height(u64),
    /// Both: the picture stretched to them.
    Both(u64, u64),
}

/// A checked request.
#[derive(Debug, PartialEq, Eq)]
struct Images {
    producer: bool,
    /// Sampled times (ms since the epoch), in order.
    times: Vec<u64>,
    png: bool,
    quality: u64,
    size: Size,
}

/// The times sampled in `start..=end`: `start`, then every `interval` up to `end` (only
/// `start` when the range is shorter than the interval).
fn sample_times(start: u64, end: u64, interval: u64) -> Vec<u64> {
    (0..)
        .map(|i| start + i * interval)
        .take_while(|t| *t <= end)
        .collect()
}

fn in_range(
    v: Option<&serde_json::Number>,
    k: &str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, ApiError> {
    match v {
        None => Ok(None),
        Some(n) => match n.as_u64() {
            Some(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
            _ => Err(ApiError::invalid_argument(format!(
                "{k} must be from {lo} to {hi}, not {n}"
            ))),
        },
    }
}

impl Images {
    fn of(r: &GetImagesInput) -> Result<Images, ApiError> {
        let producer = by_producer_time(r.image_selector_type.as_deref(), "ImageSelectorType")?;
        let (Some(start), Some(end)) = (
            timestamp_ms(r.start_timestamp, "StartTimestamp")?,
            timestamp_ms(r.end_timestamp, "EndTimestamp")?,
        ) else {
            return Err(ApiError::invalid_argument(
                "GetImages needs StartTimestamp and EndTimestamp",
            ));
        };
        if end < start {
            return Err(ApiError::invalid_argument(
                "EndTimestamp must not be earlier than StartTimestamp",
            ));
        }
        if end - start > MAX_RANGE_MS {
            return Err(ApiError::invalid_argument(
                "the time range between StartTimestamp and EndTimestamp must be no longer \
                 than 300 seconds",
            ));
        }
        let interval = in_range(
            r.sampling_interval.as_ref(),
            "SamplingInterval",
            MIN_INTERVAL_MS,
            MAX_INTERVAL_MS,
        )?
        .unwrap_or(DEFAULT_INTERVAL_MS);
        let png = match r.format.as_deref() {
            Some("JPEG") => false,
            Some("PNG") => true,
            other => {
                return Err(ApiError::invalid_argument(format!(
                    "Format must be JPEG or PNG, not {other:?}"
                )));
            }
        };
        let mut quality = DEFAULT_QUALITY;
        for (key, value) in r.format_config.iter().flatten() {
            if key != "JPEGQuality" {
                return Err(ApiError::invalid_argument(format!(
                    "FormatConfig takes only JPEGQuality, not {key:?}"
                )));
            }
            quality = value
                .parse()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| {
                    ApiError::invalid_argument(format!(
                        "JPEGQuality must be a whole number from 1 to 100, not {value:?}"
                    ))
                })?;
        }
        let width = in_range(r.width_pixels.as_ref(), "WidthPixels", 1, MAX_WIDTH)?;
        let height = in_range(r.height_pixels.as_ref(), "HeightPixels", 1, MAX_HEIGHT)?;
        let size = match (width, height) {
            (None, None) => Size::Original,
            (Some(w), None) => Size::Width(w),
            (None, Some(h)) => Size::Height(h),
            (Some(w), Some(h)) => Size::Both(w, h),
        };
        Ok(Images {
            producer,
            times: sample_times(start, end, interval),
            png,
            quality,
            size,
        })
    }
}

/// One entry of the response.
#[derive(Serialize)]
struct Image {
    #[serde(rename = "TimeStamp")]
    time_stamp: Box<serde_json::value::RawValue>,
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(rename = "ImageContent", skip_serializing_if = "Option::is_none")]
    image_content: Option<String>,
}

/// `GetImages`: blocks while GStreamer decodes (run it off the server's async threads).
pub(crate) fn get_images(
    shared: &Shared,
    name: &str,
    r: GetImagesInput,
    rid: &str,
) -> Result<Response<RespBody>, ApiError> {
    let req = Images::of(&r)?;
    let page = Page::new(r.max_results.as_ref(), r.next_token.as_deref(), MAX_RESULTS)?;
    needs_retention(shared, name, "GetImages")?;
    let times: Vec<u64> = req
        .times
        .iter()
        .copied()
        .skip(page.start)
        .take(page.max)
        .collect();
    // Each time's fragment: the latest to begin at or before it and to end after it.
    let metas = shared.store.fragment_metas(name);
    let begin = |m: &crate::model::records::FragMeta| {
        if req.producer {
            m.producer_timestamp_ms
        } else {
            m.server_timestamp_ms
        }
    };
    // By fragment index: its number, and the (slot, producer time) of the times it holds.
    type Held<'a> = (&'a str, Vec<(usize, u64)>);
    let mut by_fragment: BTreeMap<usize, Held> = BTreeMap::new();
    for (slot, t) in times.iter().enumerate() {
        let holder = metas
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| {
                m.key_frame && begin(m) <= *t && *t < begin(m) + m.duration_ms.max(1)
            })
            .max_by_key(|(_, (m, _))| begin(m));
        if let Some((index, (m, _))) = holder {
            // Into the fragment's producer time (a server time moves with its fragment).
            let producer_ms = m.producer_timestamp_ms + (t - begin(m));
            by_fragment
                .entry(index)
                .or_insert_with(|| (m.number.as_str(), Vec::new()))
                .1
                .push((slot, producer_ms));
        }
    }
    let mut images: Vec<Option<Result<Vec<u8>, ()>>> = vec![None; times.len()];
    if !by_fragment.is_empty() {
        let fragments = shared
            .store
            .fragments_where(name, |i, _| by_fragment.contains_key(&i))
            .map_err(|e| store_err(e, name))?;
        let headers = shared.store.headers(name);
        // Matched by number: a stream deleted and made again meanwhile has other fragments
        // (its times are then NO_MEDIA).
        for (number, wanted) in by_fragment.values() {
            let Some(f) = fragments.iter().find(|f| f.number == *number) else {
                continue;
            };
            let at: Vec<u64> = wanted.iter().map(|(_, t)| *t).collect();
            let made = headers
                .get(f.header_index)
                .ok_or_else(|| "its stream header is gone".to_owned())
                .and_then(|header| decode(header, f, &at, &req));
            match made {
                Ok(made) => {
                    for ((slot, _), image) in wanted.iter().zip(made) {
                        images[*slot] = Some(Ok(image));
                    }
                }
                Err(e) => {
                    shared.log(format_args!(
                        "GetImages stream={name}: no image from fragment {}: {e}",
                        f.number
                    ));
                    for (slot, _) in wanted {
                        images[*slot] = Some(Err(()));
                    }
                }
            }
        }
    }
    #[derive(Serialize)]
    struct Out {
        #[serde(rename = "Images")]
        images: Vec<Image>,
        #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    }
    let out = Out {
        images: times
            .iter()
            .zip(images)
            .map(|(t, image)| {
                let (error, image_content) = match image {
                    None => (Some("NO_MEDIA"), None),
                    Some(Err(())) => (Some("MEDIA_ERROR"), None),
                    Some(Ok(bytes)) => (None, Some(base64_encode(&bytes))),
                };
                Image {
                    time_stamp: epoch_seconds_json(*t),
                    error,
                    image_content,
                }
            })
            .collect(),
        next: page.next_token(req.times.len()),
    };
    Ok(json_response(200, &out, rid))
}

/// For each of the times `at` (producer time, ms since the epoch, in `f`), the image of the
/// last video frame shown at or before it (the first, for a time before it).
fn decode(
    header: &Bytes,
    f: &StoredFragment,
    at: &[u64],
    req: &Images,
) -> Result<Vec<Vec<u8>>, String> {
    let (scale, tracks) = header_tracks(header).map_err(|e| e.to_string())?;
    // The first video track: the one the launch line decodes (`video_0`).
    let video = tracks
        .iter()
        .find(|t| t.track_type == TRACK_TYPE_VIDEO)
        .filter(|t| [CODEC_H264, CODEC_H265].contains(&t.codec_id.as_str()))
        .ok_or("the stream's first video track is not H.264 or H.265")?;
    let (timecode, frames) = cluster_frames(&f.bytes).map_err(|e| e.to_string())?;
    // Presentation times (ns since the epoch), as GetClip places them.
    let scale = i128::from(scale);
    let base = crate::clip::time_base(f, timecode, scale);
    let mut shown: Vec<i128> = frames
        .iter()
        .filter(|fr| fr.track == video.number)
        .map(|fr| base + i128::from(fr.timecode) * scale)
        .collect();
    shown.sort_unstable();
    if shown.is_empty() {
        return Err("the fragment holds no video frame".into());
    }
    let picks: Vec<usize> = at
        .iter()
        .map(|t| {
            let t = i128::from(*t) * 1_000_000;
            shown.partition_point(|p| *p <= t).saturating_sub(1)
        })
        .collect();
    let mut mkv = header.to_vec();
    mkv.extend_from_slice(&f.bytes);
    let files = run_gstreamer(&mkv, req)?;
    if files.len() != shown.len() {
        return Err(format!(
            "GStreamer decoded {} of its {} video frames",
            files.len(),
            shown.len()
        ));
    }
    Ok(picks.into_iter().map(|i| files[i].clone()).collect())
}

/// A directory of its own for one decoding, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvs-local-images-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The launch line that decodes the Matroska file `input`'s (first) video into one
/// image file per frame in `out`, in presentation order.
fn launch_line(input: &Path, out: &Path, req: &Images) -> Vec<String> {
    let mut line: Vec<String> = vec![
        "filesrc".into(),
        format!("location={}", input.display()),
        "!".into(),
        "matroskademux".into(),
        "name=d".into(),
        "d.video_0".into(),
        "!".into(),
        "decodebin".into(),
        "!".into(),
        "videoconvert".into(),
        "!".into(),
        "videoscale".into(),
    ];
    let caps = match req.size {
        Size::Original => None,
        Size::Width(w) => Some(format!("video/x-raw,width={w},pixel-aspect-ratio=1/1")),
        Size::Height(h) => Some(format!("video/x-raw,height={h},pixel-aspect-ratio=1/1")),
        Size::Both(w, h) => Some(format!(
            "video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1"
        )),
    };
    if let Some(caps) = caps {
        line.extend(["!".into(), caps]);
    }
    line.push("!".into());
    if req.png {
        line.push("pngenc".into());
    } else {
        line.extend(["jpegenc".into(), format!("quality={}", req.quality)]);
    }
    line.extend([
        "!".into(),
        "multifilesink".into(),
        format!("location={}", out.join("%06d").display()),
    ]);
    line
}

/// Decodes `mkv`'s video (its first video track) with `gst-launch-1.0`: the encoded images
/// of its frames, in presentation order.
fn run_gstreamer(mkv: &[u8], req: &Images) -> Result<Vec<Vec<u8>>, String> {
    let scratch = Scratch::new().map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let input = scratch.0.join("fragment.mkv");
    let out = scratch.0.join("images");
    std::fs::create_dir(&out).map_err(|e| e.to_string())?;
    std::fs::write(&input, mkv).map_err(|e| e.to_string())?;
    let mut child = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(launch_line(&input, &out, req))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run gst-launch-1.0 ({e}): GetImages needs GStreamer's tools and \
                 plugins (scripts/setup.sh installs them)"
            )
        })?;
    let deadline = Instant::now() + DECODE_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("decoding took longer than {DECODE_TIMEOUT:?}"));
            }
        }
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!("gst-launch-1.0 failed ({status}): {}", err.trim()));
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(&out)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> GetImagesInput {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn times_are_sampled_from_the_start_to_the_end_inclusive() {
        assert_eq!(sample_times(1000, 7000, 3000), vec![1000, 4000, 7000]);
        assert_eq!(sample_times(1000, 6999, 3000), vec![1000, 4000]);
        // A range shorter than the interval: the start alone.
        assert_eq!(sample_times(1000, 1500, 3000), vec![1000]);
        assert_eq!(sample_times(1000, 1000, 200), vec![1000]);
    }

    #[test]
    fn a_request_is_checked_as_the_service_does() {
        let ok = r#""StreamName":"s","ImageSelectorType":"PRODUCER_TIMESTAMP","StartTimestamp":10,"EndTimestamp":16,"Format":"JPEG""#;
        let r = Images::of(&input(&format!("{{{ok}}}"))).unwrap();
        assert_eq!(r.times, vec![10_000, 13_000, 16_000]);
        assert_eq!(
            (r.png, r.quality, r.size, r.producer),
            (false, 80, Size::Original, true)
        );
        let r = Images::of(&input(&format!(
            r#"{{{ok},"SamplingInterval":200,"FormatConfig":{{"JPEGQuality":"55"}},"WidthPixels":160}}"#
        )))
        .unwrap();
        assert_eq!(r.times.len(), 31);
        assert_eq!((r.quality, r.size), (55, Size::Width(160)));
        let bad = |extra: &str, says: &str| {
            let e = Images::of(&input(&format!("{{{ok},{extra}}}"))).unwrap_err();
            assert_eq!(e.error_type, "InvalidArgumentException", "{extra}");
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        };
        bad(
            r#""SamplingInterval":100"#,
            "SamplingInterval must be from 200 to 20000",
        );
        bad(
            r#""SamplingInterval":20001"#,
            "SamplingInterval must be from 200 to 20000",
        );
        bad(
            r#""FormatConfig":{"JPEGQuality":"0"}"#,
            "JPEGQuality must be",
        );
        bad(
            r#""FormatConfig":{"Quality":"50"}"#,
            "takes only JPEGQuality",
        );
        bad(
            r#""WidthPixels":3841"#,
            "WidthPixels must be from 1 to 3840",
        );
        bad(r#""HeightPixels":0"#, "HeightPixels must be from 1 to 2160");
        // Whole requests: the range, its order, the format.
        let refused = |json: &str, says: &str| {
            let e = Images::of(&input(json)).unwrap_err();
            assert!(e.message.contains(says), "{json}: {}", e.message);
        };
        let server = r#""ImageSelectorType":"SERVER_TIMESTAMP","StartTimestamp":10"#;
        refused(
            &format!(r#"{{{server},"EndTimestamp":311,"Format":"PNG"}}"#),
            "no longer than 300 seconds",
        );
        refused(
            &format!(r#"{{{server},"EndTimestamp":9,"Format":"PNG"}}"#),
            "not be earlier",
        );
        refused(
            &format!(r#"{{{server},"EndTimestamp":11,"Format":"GIF"}}"#),
            "Format must be JPEG or PNG",
        );
    }

    #[test]
    fn the_launch_line_scales_as_asked() {
        let mut r = Images::of(&input(
            r#"{"ImageSelectorType":"SERVER_TIMESTAMP","StartTimestamp":10,"EndTimestamp":11,"Format":"PNG","HeightPixels":90}"#,
        ))
        .unwrap();
        let line = launch_line(Path::new("/i.mkv"), Path::new("/o"), &r).join(" ");
        assert!(
            line.ends_with(
                "videoscale ! video/x-raw,height=90,pixel-aspect-ratio=1/1 ! pngenc ! \
                 multifilesink location=/o/%06d"
            ),
            "{line}"
        );
        r.png = false;
        r.size = Size::Original;
        let line = launch_line(Path::new("/i.mkv"), Path::new("/o"), &r).join(" ");
        assert!(
            line.ends_with("videoscale ! jpegenc quality=80 ! multifilesink location=/o/%06d"),
            "{line}"
        );
    }
}

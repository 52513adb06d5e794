//! HLS playback: `GetHLSStreamingSessionURL`, and the session's master and media playlists,
//! initialization segment and media segments (one segment per fragment: fragmented MP4, or
//! MPEG-TS with `ContainerFormat` `MPEG_TS`), as a player fetches them from the URL it was
//! given.
//!
//! The session token carries the session itself (stream, mode, range, expiry; hex of its
//! JSON) and an HMAC-SHA256 of it with a key of this process: kvs-local keeps no state for
//! it, and a token cannot be made or changed without asking for a session (which is signed
//! with SigV4). Tokens end with the process, as they expire.

use super::context::{ConnCtl, Shared, new_record, record_error, store_err};
use super::control::Reply;
use super::http::{ApiError, RespBody, full};
use super::media::{needs_retention, timestamp_ms, typed_response};
use super::operation::{GetDashInput, GetHlsInput};
use super::validate::Checks;
use crate::model::records::FragMeta;
use crate::util::now_ms;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::fmt::Write;

/// `Expires` bounds and default (seconds).
const EXPIRES_S: (u64, u64, u64) = (300, 43_200, 300);
/// `MaxMediaPlaylistFragmentResults` bound, and its defaults live and on demand.
const MAX_PLAYLIST_FRAGMENTS: (u64, usize, usize) = (5_000, 5, 1_000);

/// `ContainerFormat`'s values: HLS's segments in fragmented MP4 (the default), or MPEG-TS.
const CONTAINER_FORMATS: [&str; 2] = ["FRAGMENTED_MP4", "MPEG_TS"];
/// The `ContainerFormat` of MPEG-TS segments.
const MPEG_TS: &str = CONTAINER_FORMATS[1];

/// The path (after `/hls/v1/`) of an MPEG-TS media segment: `GetTSFragment`.
const TS_SEGMENT: &str = "getTSFragment.ts";
/// The path of a fragmented MP4 media segment: `GetMP4MediaFragment`.
const MP4_SEGMENT: &str = "getMP4MediaFragment.mp4";

/// LIVE needs a fragment received this recently (ms), as the service does.
const LIVE_RECENT_MS: u64 = 30_000;

/// `ON_DISCONTINUITY`: a gap or an overlap of more than this (ms) between two fragments marks
/// a discontinuity, as the service says.
const DISCONTINUITY_MS: i64 = 50;
/// ... past what a fragment's duration leaves out: it spans its frames' times, so the next
/// fragment begins a frame after its end (at 10 frames a second or more, at most this, ms).
const LAST_FRAME_MS: i64 = 100;

/// A session, as its token carries it.
#[derive(Serialize, Deserialize)]
struct Session {
    /// Stream name.
    s: String,
    /// `LIVE`, `LIVE_REPLAY` or `ON_DEMAND`.
    m: String,
    /// Fragments selected by producer (else server) timestamp.
    p: bool,
    /// Range (ms since the epoch), ends included.
    f: Option<u64>,
    t: Option<u64>,
    /// Expiry (ms since the epoch).
    x: u64,
    /// Most fragments in a media playlist.
    n: usize,
    /// Add `#EXT-X-PROGRAM-DATE-TIME` to the media playlist.
    d: bool,
    /// `DiscontinuityMode`: 0 `NEVER`, 1 `ALWAYS`, 2 `ON_DISCONTINUITY`.
    c: u8,
    /// An MPEG-DASH session (else HLS).
    #[serde(default)]
    k: bool,
    /// DASH: `DisplayFragmentNumber=ALWAYS` (`kvs:fn` on each segment).
    #[serde(default)]
    g: bool,
    /// HLS: MPEG-TS media segments (`ContainerFormat=MPEG_TS`), else fragmented MP4.
    #[serde(default)]
    e: bool,
}

/// The key of this process's session tokens.
fn token_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        let random = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key));
        if random.is_err() {
            // No /dev/urandom: the time and the address of a stack value, hashed.
            let seed = format!("{:?}{:p}", std::time::SystemTime::now(), &key);
            key.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes()));
        }
        key
    })
}

fn mac(payload: &str) -> String {
    aws_sigv4::sign::v4::calculate_signature(token_key(), payload.as_bytes())
}

impl Session {
    fn token(&self) -> String {
        let payload = hex::encode(serde_json::to_vec(self).unwrap_or_default());
        format!("{payload}-{}", mac(&payload))
    }

    fn of_token(token: &str) -> Result<Session, ApiError> {
        let invalid = || ApiError::invalid_argument("SessionToken is not a valid token");
        let (payload, signature) = token.split_once('-').ok_or_else(invalid)?;
        if mac(payload) != signature {
            return Err(invalid());
        }
        let session: Session = hex::decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        if now_ms() > session.x {
            return Err(ApiError::new(
                403,
                "ExpiredSessionTokenException",
                "the session token has expired (the session's Expires passed): ask for a new \
                 session URL",
            ));
        }
        Ok(session)
    }

    /// A fragment's time as the session selects by: its producer's or the server's.
    fn time(&self, m: &FragMeta) -> u64 {
        if self.p {
            m.producer_timestamp_ms
        } else {
            m.server_timestamp_ms
        }
    }

    /// The fragments of the media playlist, in stream order: (index in the stream, meta).
    fn fragments(&self, metas: &[(FragMeta, usize)]) -> Vec<(usize, FragMeta)> {
        let time = |m: &FragMeta| self.time(m);
        let all = metas.iter().enumerate().map(|(i, (m, _))| (i, m));
        let chosen: Vec<(usize, &FragMeta)> = match self.m.as_str() {
            "LIVE" => {
                let skip = metas.len().saturating_sub(self.n);
                all.skip(skip).collect()
            }
            "LIVE_REPLAY" => all
                .filter(|(_, m)| self.f.is_none_or(|f| time(m) >= f))
                .take(self.n)
                .collect(),
            _ => all
                .filter(|(_, m)| {
                    self.f.is_none_or(|f| time(m) >= f) && self.t.is_none_or(|t| time(m) <= t)
                })
                .take(self.n)
                .collect(),
        };
        // One stream header (one initialization segment) per playlist: the first's, or live,
        // the newest's (a producer that started again is followed).
        let live = self.m == "LIVE";
        let keep = if live { chosen.last() } else { chosen.first() };
        let header = keep.map(|(_, m)| m.header_digest.clone());
        let same = |(_, m): &&(usize, &FragMeta)| Some(&m.header_digest) == header.as_ref();
        let mut run: Vec<(usize, FragMeta)> = if live {
            chosen.iter().rev().take_while(same).collect::<Vec<_>>()
        } else {
            chosen.iter().take_while(same).collect::<Vec<_>>()
        }
        .into_iter()
        .map(|(i, m)| (*i, (*m).clone()))
        .collect();
        if live {
            run.reverse();
        }
        run
    }
}

/// `GetDASHStreamingSessionURL`: an HLS session's checks (without its container format and
/// discontinuity mode, with `DisplayFragmentNumber`), and the URL of an MPEG-DASH manifest.
pub(crate) fn dash_session_url(
    shared: &Shared,
    name: &str,
    r: GetDashInput,
    ctl: &ConnCtl,
) -> Reply {
    let display = |v: Option<&str>, what: &str| match v {
        None | Some("NEVER") => Ok(false),
        Some("ALWAYS") => Ok(true),
        Some(other) => Err(ApiError::invalid_argument(format!(
            "{what} must be ALWAYS or NEVER, not {other}"
        ))),
    };
    let numbers = display(
        r.display_fragment_number.as_deref(),
        "DisplayFragmentNumber",
    )?;
    display(
        r.display_fragment_timestamp.as_deref(),
        "DisplayFragmentTimestamp",
    )?;
    let hls = GetHlsInput {
        stream: r.stream,
        playback_mode: r.playback_mode,
        hls_fragment_selector: r.dash_fragment_selector,
        container_format: None,
        discontinuity_mode: None,
        display_fragment_timestamp: r.display_fragment_timestamp,
        expires: r.expires,
        max_media_playlist_fragment_results: r.max_manifest_fragment_results,
    };
    open_session(shared, name, hls, ctl, Some(numbers))
}

/// `GetHLSStreamingSessionURL`: checks what the service checks, and answers the URL of a
/// master playlist on this endpoint.
pub(crate) fn session_url(shared: &Shared, name: &str, r: GetHlsInput, ctl: &ConnCtl) -> Reply {
    open_session(shared, name, r, ctl, None)
}

/// A session's checks and URL; `dash`: an MPEG-DASH session, with `DisplayFragmentNumber`.
fn open_session(
    shared: &Shared,
    name: &str,
    r: GetHlsInput,
    ctl: &ConnCtl,
    dash: Option<bool>,
) -> Reply {
    let mode = r.playback_mode.unwrap_or_else(|| "LIVE".into());
    if !["LIVE", "LIVE_REPLAY", "ON_DEMAND"].contains(&mode.as_str()) {
        return Err(ApiError::invalid_argument(format!(
            "PlaybackMode must be LIVE, LIVE_REPLAY or ON_DEMAND, not {mode}"
        )));
    }
    // (MPEG-DASH has no ContainerFormat: its sessions are fragmented MP4.)
    Checks::new()
        .one_of(
            "containerFormat",
            r.container_format.as_deref(),
            &CONTAINER_FORMATS,
        )
        .finish()?;
    let ts = r.container_format.as_deref() == Some(MPEG_TS);
    let discontinuity = match r.discontinuity_mode.as_deref() {
        None => None,
        Some("NEVER") => Some(0),
        Some("ALWAYS") => Some(1),
        Some("ON_DISCONTINUITY") => Some(2),
        Some(d) => {
            return Err(ApiError::invalid_argument(format!(
                "DiscontinuityMode must be ALWAYS, NEVER or ON_DISCONTINUITY, not {d}"
            )));
        }
    };
    let selector = r.hls_fragment_selector;
    let producer = match selector
        .as_ref()
        .and_then(|s| s.fragment_selector_type.as_deref())
    {
        None | Some("SERVER_TIMESTAMP") => false,
        Some("PRODUCER_TIMESTAMP") => true,
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "FragmentSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP, not {other}"
            )));
        }
    };
    let range = selector.and_then(|s| s.timestamp_range);
    let from = timestamp_ms(
        range.as_ref().and_then(|r| r.start_timestamp),
        "StartTimestamp",
    )?;
    let to = timestamp_ms(range.as_ref().and_then(|r| r.end_timestamp), "EndTimestamp")?;
    match mode.as_str() {
        "LIVE" if from.is_some() || to.is_some() => {
            return Err(ApiError::invalid_argument(
                "TimestampRange must not be given with PlaybackMode LIVE",
            ));
        }
        "LIVE_REPLAY" if from.is_none() => {
            return Err(ApiError::invalid_argument(
                "PlaybackMode LIVE_REPLAY needs a StartTimestamp",
            ));
        }
        "ON_DEMAND" if from.is_none() || to.is_none() => {
            return Err(ApiError::invalid_argument(
                "PlaybackMode ON_DEMAND needs StartTimestamp and EndTimestamp",
            ));
        }
        _ => {}
    }
    if let (Some(f), Some(t)) = (from, to)
        && (t <= f || t - f > 24 * 3_600_000)
    {
        return Err(ApiError::invalid_argument(
            "EndTimestamp must be later than StartTimestamp, and at most 24 hours after it",
        ));
    }
    let number =
        |v: Option<serde_json::Number>, what: &str, (lo, hi, default): (u64, u64, u64)| match v
            .map(|n| n.as_u64())
        {
            None => Ok(default),
            Some(Some(n)) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_argument(format!(
                "{what} must be from {lo} to {hi}"
            ))),
        };
    let expires = number(r.expires, "Expires", EXPIRES_S)?;
    let (max, live_default, demand_default) = MAX_PLAYLIST_FRAGMENTS;
    let default = if mode == "ON_DEMAND" {
        demand_default
    } else {
        live_default
    };
    let n = number(
        r.max_media_playlist_fragment_results,
        if dash.is_some() {
            "MaxManifestFragmentResults"
        } else {
            "MaxMediaPlaylistFragmentResults"
        },
        (1, max, default as u64),
    )? as usize;
    needs_retention(shared, name, "HLS")?;
    let session = Session {
        s: name.to_owned(),
        m: mode,
        p: producer,
        f: from,
        t: to,
        x: now_ms() + expires * 1000,
        n,
        d: r.display_fragment_timestamp.as_deref() == Some("ALWAYS"),
        // The service's default: ALWAYS for server timestamps, NEVER for the producer's.
        c: discontinuity.unwrap_or(if producer { 0 } else { 1 }),
        k: dash.is_some(),
        g: dash == Some(true),
        e: ts,
    };
    let metas = shared.store.fragment_metas(name);
    // LIVE plays what the stream receives now: none in the last 30 s is no live stream.
    if session.m == "LIVE"
        && metas
            .last()
            .is_none_or(|(m, _)| m.server_timestamp_ms + LIVE_RECENT_MS < now_ms())
    {
        return Err(ApiError::not_found(
            "No fragments found in the stream in the last 30 seconds for the LIVE HLS \
             streaming request (use LIVE_REPLAY or ON_DEMAND for older ones).",
        ));
    }
    let chosen = session.fragments(&metas);
    let Some((_, first)) = chosen.first() else {
        return Err(ApiError::not_found(
            "No fragments found in the stream for the HLS streaming request.",
        ));
    };
    // The service checks the media of the session's fragments when it is asked for: so here.
    let fragment = shared
        .store
        .fragments_where(name, |_, m| m.number == first.number)
        .map_err(|e| store_err(e, name))?;
    if let Some(f) = fragment.first() {
        let headers = shared.store.headers(name);
        crate::clip::hls::init(&headers, f, session.k).map_err(clip_error)?;
        if session.e {
            crate::clip::ts::check(&headers, f).map_err(clip_error)?;
        }
    }
    let (path, key) = if session.k {
        ("dash/v1/getDASHManifest.mpd", "DASHStreamingSessionURL")
    } else {
        ("hls/v1/getHLSMasterPlaylist.m3u8", "HLSStreamingSessionURL")
    };
    let url = format!(
        "{}/{path}?SessionToken={}",
        super::control::data_endpoint(shared, ctl),
        session.token()
    );
    serde_json::to_vec(&serde_json::json!({ key: url }))
        .map_err(|e| ApiError::new(500, "InternalFailure", e.to_string()))
}

fn clip_error(e: crate::clip::ClipError) -> ApiError {
    ApiError::new(400, e.error_type(), e.message())
}

/// A GET of the session's URLs (`rest` is the path after `/hls/v1/`).
pub(crate) fn handle(
    shared: &Shared,
    ctl: &ConnCtl,
    rest: &str,
    req: ::http::Request<hyper::body::Incoming>,
    rid: &str,
) -> ::http::Response<RespBody> {
    // In the report as the service names them (GetHLSMasterPlaylist, GetMP4MediaFragment,
    // GetTSFragment, ...).
    let name = rest.split('.').next().unwrap_or(rest);
    let operation: String = name
        .char_indices()
        .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
        .collect();
    let mut rec = new_record(&req, ctl, &operation);
    let query = req.uri().query().unwrap_or("");
    let param = |key: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == key).then(|| v.to_owned())
        })
    };
    let result = (|| {
        let token = param("SessionToken")
            .ok_or_else(|| ApiError::invalid_argument("SessionToken is required"))?;
        let session = Session::of_token(&token)?;
        rec.stream = Some(session.s.clone());
        let metas = shared.store.fragment_metas(&session.s);
        match rest {
            "getHLSMasterPlaylist.m3u8" if !session.k => master(shared, &session, &metas, &token),
            "getHLSMediaPlaylist.m3u8" if !session.k => Ok(media(&session, &metas, &token)),
            "getDASHManifest.mpd" if session.k => manifest(shared, &session, &metas, &token),
            "getMP4InitFragment.mp4" => {
                // The header of the fragment the playlist names (its first), else the
                // session's first.
                let number = match param("FragmentNumber") {
                    Some(n) => n,
                    None => {
                        let first = session.fragments(&metas).into_iter().next();
                        first
                            .ok_or_else(|| ApiError::not_found("No fragments found"))?
                            .1
                            .number
                    }
                };
                let f = fragment(shared, &session.s, &number)?;
                let (init, _) =
                    crate::clip::hls::init(&shared.store.headers(&session.s), &f, session.k)
                        .map_err(clip_error)?;
                Ok((Bytes::from(init), "video/mp4"))
            }
            MP4_SEGMENT => media_segment(shared, &session, &metas, param("FragmentNumber"), false),
            TS_SEGMENT if !session.k => {
                media_segment(shared, &session, &metas, param("FragmentNumber"), true)
            }
            _ => Err(ApiError::new(
                404,
                "UnknownOperationException",
                format!(
                    "kvs-local serves HLS (fragmented MP4 or MPEG-TS) and MPEG-DASH (fragmented \
                     MP4): no {rest} for this {} session",
                    if session.k { "MPEG-DASH" } else { "HLS" }
                ),
            )),
        }
    })();
    shared.log(format_args!(
        "HLS {rest} -> {}",
        result.as_ref().map_or_else(|e| e.status, |_| 200)
    ));
    let response = match result {
        Ok((body, content_type)) => {
            rec.status = 200;
            typed_response(full(body), content_type, rid)
        }
        Err(e) => {
            record_error(&mut rec, &e);
            e.response(rid)
        }
    };
    shared.recorder.request(rec);
    response
}

/// The media segment of fragment `number` (`FragmentNumber`): MPEG-TS with `ts`, else
/// fragmented MP4.
fn media_segment(
    shared: &Shared,
    session: &Session,
    metas: &[(FragMeta, usize)],
    number: Option<String>,
    ts: bool,
) -> Result<(Bytes, &'static str), ApiError> {
    let number = number.ok_or_else(|| ApiError::invalid_argument("FragmentNumber is required"))?;
    let index = metas
        .iter()
        .position(|(m, _)| m.number == number)
        .ok_or_else(|| ApiError::not_found(format!("no fragment {number}")))?;
    let f = fragment(shared, &session.s, &number)?;
    let headers = shared.store.headers(&session.s);
    if ts {
        let segment = crate::clip::ts::segment(&headers, &f, index).map_err(clip_error)?;
        return Ok((Bytes::from(segment), "video/mp2t"));
    }
    let pieces =
        crate::clip::hls::segment(&headers, &f, index as u32 + 1, session.k).map_err(clip_error)?;
    Ok((Bytes::from(pieces.concat()), "video/mp4"))
}

fn fragment(
    shared: &Shared,
    name: &str,
    number: &str,
) -> Result<crate::model::records::StoredFragment, ApiError> {
    shared
        .store
        .fragments_where(name, |_, m| m.number == number)
        .map_err(|e| store_err(e, name))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no fragment {number}")))
}

/// The session's fragments (at least one), and what its first one's tracks are.
fn chosen_tracks(
    shared: &Shared,
    session: &Session,
    metas: &[(FragMeta, usize)],
) -> Result<(Vec<(usize, FragMeta)>, crate::clip::hls::Variant), ApiError> {
    let chosen = session.fragments(metas);
    let (_, first) = chosen
        .first()
        .ok_or_else(|| ApiError::not_found("No fragments found"))?;
    let f = fragment(shared, &session.s, &first.number)?;
    let (_, variant) = crate::clip::hls::init(&shared.store.headers(&session.s), &f, session.k)
        .map_err(clip_error)?;
    Ok((chosen, variant))
}

fn master(
    shared: &Shared,
    session: &Session,
    metas: &[(FragMeta, usize)],
    token: &str,
) -> Result<(Bytes, &'static str), ApiError> {
    let (chosen, variant) = chosen_tracks(shared, session, metas)?;
    let bandwidth = bandwidth(&chosen);
    let (w, h) = variant.resolution;
    let body = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{}\",RESOLUTION={w}x{h}\n\
         getHLSMediaPlaylist.m3u8?SessionToken={token}\n",
        variant.codecs
    );
    Ok((Bytes::from(body), "application/x-mpegURL"))
}

/// Bits a second of the `chosen` fragments.
fn bandwidth(chosen: &[(usize, FragMeta)]) -> u64 {
    let (bytes, ms) = chosen.iter().fold((0u64, 0u64), |(b, d), (_, m)| {
        (b + m.size, d + m.duration_ms)
    });
    bytes * 8 * 1000 / ms.max(1)
}

/// How long (ms) each of the `chosen` fragments plays: until the next one begins (its own
/// duration spans its frames' times, one frame short); the last, its own.
fn durations(chosen: &[(usize, FragMeta)], metas: &[(FragMeta, usize)]) -> Vec<u64> {
    chosen
        .iter()
        .map(|(index, m)| {
            metas
                .get(index + 1)
                .map(|(n, _)| {
                    n.producer_timestamp_ms
                        .saturating_sub(m.producer_timestamp_ms)
                })
                .filter(|&d| d > 0 && d < m.duration_ms * 2 + 1000)
                .unwrap_or(m.duration_ms)
        })
        .collect()
}

/// The MPEG-DASH manifest of a session: one Period, one Representation of the fragments'
/// fragmented MP4 (video and audio together), a SegmentList whose SegmentTimeline places
/// each fragment at its producer time (ms, the media segments' decode time), with `kvs:ts`
/// and `kvs:fn` on its S elements when the session asks. `ON_DEMAND` is static, from 0;
/// `LIVE` and `LIVE_REPLAY` dynamic (updated every second), available from the Unix epoch so
/// that a segment is when its fragment is.
fn manifest(
    shared: &Shared,
    session: &Session,
    metas: &[(FragMeta, usize)],
    token: &str,
) -> Result<(Bytes, &'static str), ApiError> {
    let (chosen, variant) = chosen_tracks(shared, session, metas)?;
    let first = &chosen[0].1;
    let durations = durations(&chosen, metas);
    let total_ms: u64 = durations.iter().sum();
    let seconds = |ms: u64| format!("PT{}.{:03}S", ms / 1000, ms % 1000);
    let dynamic = session.m != "ON_DEMAND";
    let offset = if dynamic {
        0
    } else {
        first.producer_timestamp_ms
    };
    let mut body = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(
        body,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" xmlns:kvs=\"urn:aws:kinesisvideo:dash\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" minBufferTime=\"PT2S\" "
    );
    if dynamic {
        let _ = writeln!(
            body,
            "type=\"dynamic\" availabilityStartTime=\"1970-01-01T00:00:00Z\" publishTime=\"{}\" \
             minimumUpdatePeriod=\"PT1S\" timeShiftBufferDepth=\"{}\">",
            crate::util::iso8601_ms(now_ms()),
            seconds(total_ms.max(1000) * 2)
        );
    } else {
        let _ = writeln!(
            body,
            "type=\"static\" mediaPresentationDuration=\"{}\">",
            seconds(total_ms)
        );
    }
    let (w, h) = variant.resolution;
    let _ = write!(
        body,
        "<Period id=\"0\" start=\"PT0S\">\n\
         <AdaptationSet id=\"0\" mimeType=\"video/mp4\" segmentAlignment=\"true\" \
         startWithSAP=\"1\">\n\
         <Representation id=\"0\" bandwidth=\"{}\" codecs=\"{}\" width=\"{w}\" \
         height=\"{h}\">\n\
         <SegmentList timescale=\"1000\" presentationTimeOffset=\"{offset}\">\n\
         <Initialization sourceURL=\"getMP4InitFragment.mp4?FragmentNumber={}&amp;\
         SessionToken={token}\"/>\n<SegmentTimeline>\n",
        bandwidth(&chosen),
        variant.codecs,
        first.number,
    );
    for ((_, m), d) in chosen.iter().zip(&durations) {
        let _ = write!(body, "<S t=\"{}\" d=\"{d}\"", m.producer_timestamp_ms);
        if session.d {
            let _ = write!(body, " kvs:ts=\"{}\"", session.time(m));
        }
        if session.g {
            let _ = write!(body, " kvs:fn=\"{}\"", m.number);
        }
        body.push_str("/>\n");
    }
    body.push_str("</SegmentTimeline>\n");
    for (_, m) in &chosen {
        let _ = writeln!(
            body,
            "<SegmentURL media=\"{MP4_SEGMENT}?FragmentNumber={}&amp;SessionToken={token}\"/>",
            m.number
        );
    }
    body.push_str("</SegmentList>\n</Representation>\n</AdaptationSet>\n</Period>\n</MPD>\n");
    Ok((Bytes::from(body), "application/dash+xml"))
}

fn media(session: &Session, metas: &[(FragMeta, usize)], token: &str) -> (Bytes, &'static str) {
    let chosen = session.fragments(metas);
    let durations = durations(&chosen, metas);
    let target = durations
        .iter()
        .map(|d| d.div_ceil(1000))
        .max()
        .unwrap_or(1)
        .max(1);
    // Whether fragment `i` of the stream follows fragment `i - 1` with a discontinuity.
    let time = |m: &FragMeta| session.time(m);
    let broken = |i: usize| match (session.c, i.checked_sub(1).and_then(|p| metas.get(p))) {
        (_, None) | (0, _) => false,
        (1, _) => true,
        (_, Some((prev, _))) => {
            let gap = time(&metas[i].0) as i64 - (time(prev) + prev.duration_ms) as i64;
            !(-DISCONTINUITY_MS..=DISCONTINUITY_MS + LAST_FRAME_MS).contains(&gap)
        }
    };
    let first = chosen.first().map_or(0, |(i, _)| *i);
    let mut body = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(body, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(body, "#EXT-X-MEDIA-SEQUENCE:{first}");
    if session.c != 0 {
        // The discontinuities before the playlist's first fragment (a live playlist's window
        // moves on), as HLS needs to keep timelines apart.
        let before = (1..=first.min(metas.len())).filter(|&i| broken(i)).count();
        let _ = writeln!(body, "#EXT-X-DISCONTINUITY-SEQUENCE:{before}");
    }
    if session.m == "ON_DEMAND" {
        body.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    // The initialization segment of the playlist's first fragment: its URI changes with the
    // stream header, so that a player does not keep an old one. (MPEG-TS has none: each
    // segment carries its PAT, PMT and parameter sets.)
    if !session.e {
        let _ = writeln!(
            body,
            "#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?FragmentNumber={}&SessionToken={token}\"",
            chosen.first().map_or("", |(_, m)| m.number.as_str())
        );
    }
    let segment = if session.e { TS_SEGMENT } else { MP4_SEGMENT };
    for (k, ((index, m), duration_ms)) in chosen.iter().zip(durations).enumerate() {
        if k > 0 && broken(*index) {
            body.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if session.d {
            let t = session.time(m);
            let _ = writeln!(
                body,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                crate::util::iso8601_ms(t)
            );
        }
        let _ = writeln!(
            body,
            "#EXTINF:{:.3},\n{segment}?FragmentNumber={}&SessionToken={token}",
            duration_ms as f64 / 1000.0,
            m.number
        );
    }
    if session.m == "ON_DEMAND" {
        body.push_str("#EXT-X-ENDLIST\n");
    }
    (Bytes::from(body), "application/x-mpegURL")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fragments of one stream header at these producer times (ms), each `duration_ms` long
    /// (its frames' span), received 10 ms after.
    fn metas(times: &[u64], duration_ms: u64) -> Vec<(FragMeta, usize)> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let meta = FragMeta {
                    number: format!("{i}"),
                    timecode: t,
                    producer_timestamp_ms: t,
                    server_timestamp_ms: t + 10,
                    duration_ms,
                    key_frame: true,
                    header_digest: "h".into(),
                    size: 1,
                    metadata: Vec::new(),
                };
                (meta, 0)
            })
            .collect()
    }

    fn session(mode: &str, c: u8, n: usize) -> Session {
        Session {
            s: "s".into(),
            m: mode.into(),
            p: true,
            f: Some(0),
            t: Some(u64::MAX / 2),
            x: u64::MAX,
            n,
            d: false,
            c,
            k: false,
            g: false,
            e: false,
        }
    }

    /// The media playlist's lines: `D` for a discontinuity, the fragment number for a
    /// segment, and its discontinuity sequence (when written).
    fn playlist(session: &Session, metas: &[(FragMeta, usize)]) -> (String, Option<usize>) {
        let (body, _) = media(session, metas, "t");
        let body = String::from_utf8(body.to_vec()).unwrap();
        let mut out = String::new();
        for line in body.lines() {
            if line == "#EXT-X-DISCONTINUITY" {
                out.push('D');
            } else if let Some(rest) = line
                .strip_prefix("getMP4MediaFragment.mp4?FragmentNumber=")
                .or_else(|| line.strip_prefix("getTSFragment.ts?FragmentNumber="))
            {
                out.push_str(rest.split('&').next().unwrap());
            }
        }
        let sequence = body
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
            .map(|n| n.parse().unwrap());
        (out, sequence)
    }

    /// `DiscontinuityMode`: `NEVER` writes no marker, `ALWAYS` one between every two
    /// fragments, `ON_DISCONTINUITY` one where the next fragment does not follow within 50 ms
    /// (past the frame a fragment's duration leaves out): a gap of 2 s, an overlap of 60 ms.
    #[test]
    fn discontinuities_are_marked_as_the_mode_says() {
        // 30 fps, fragments of a second: 967 ms of frame times each.
        let m = metas(&[0, 1000, 2000, 5000, 6000, 6907, 7907], 967);
        assert_eq!(
            playlist(&session("ON_DEMAND", 0, 100), &m),
            ("0123456".into(), None)
        );
        assert_eq!(
            playlist(&session("ON_DEMAND", 1, 100), &m),
            ("0D1D2D3D4D5D6".into(), Some(0))
        );
        assert_eq!(
            playlist(&session("ON_DEMAND", 2, 100), &m),
            ("012D34D56".into(), Some(0))
        );
        // 10 fps: the next fragment begins 100 ms after the last frame; no discontinuity.
        let slow = metas(&[0, 1000, 2000], 900);
        assert_eq!(playlist(&session("ON_DEMAND", 2, 100), &slow).0, "012");
        // A live window of the last 3: the discontinuities before it are counted.
        assert_eq!(
            playlist(&session("LIVE", 2, 3), &m),
            ("4D56".into(), Some(1))
        );
        assert_eq!(
            playlist(&session("LIVE", 1, 3), &m),
            ("4D5D6".into(), Some(4))
        );
    }

    /// `ContainerFormat=MPEG_TS`: the segments are `getTSFragment.ts`, with no
    /// initialization segment; fragmented MP4's are `getMP4MediaFragment.mp4` after
    /// `#EXT-X-MAP`.
    #[test]
    fn mpeg_ts_playlists_list_ts_segments_without_a_map() {
        let m = metas(&[0, 1000, 2000], 967);
        let mut ts = session("ON_DEMAND", 0, 100);
        ts.e = true;
        let body = String::from_utf8(media(&ts, &m, "t").0.to_vec()).unwrap();
        assert!(!body.contains("#EXT-X-MAP"), "{body}");
        assert!(!body.contains(".mp4"), "{body}");
        assert!(body.contains("\ngetTSFragment.ts?FragmentNumber=0&SessionToken=t\n"));
        assert_eq!(playlist(&ts, &m).0, "012");
        let mp4 = session("ON_DEMAND", 0, 100);
        let body = String::from_utf8(media(&mp4, &m, "t").0.to_vec()).unwrap();
        assert!(body.contains(
            "#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?FragmentNumber=0&SessionToken=t\"\n"
        ));
        assert!(body.contains("\ngetMP4MediaFragment.mp4?FragmentNumber=2&SessionToken=t\n"));
        assert!(!body.contains(".ts?"), "{body}");
        // the token keeps the container format; older tokens (without it) are fragmented MP4
        let back = |t: &str| Session::of_token(t).ok().map(|s| s.e);
        assert_eq!(back(&ts.token()), Some(true));
        assert_eq!(back(&mp4.token()), Some(false));
        let mut old = serde_json::to_value(&mp4).unwrap();
        old.as_object_mut().unwrap().remove("e");
        let payload = hex::encode(serde_json::to_vec(&old).unwrap());
        assert_eq!(back(&format!("{payload}-{}", mac(&payload))), Some(false));
    }
}

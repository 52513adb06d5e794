//! kvssink's properties: names and meanings follow AWS's C++ kvssink where it has them.

use std::collections::BTreeMap;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use crate::aws_settings::{self, AwsSettings};
use crate::credentials;
use crate::endpoint::Location;

use super::official;

pub const DEFAULT_STREAM_NAME: &str = "DEFAULT_STREAM";
pub const DEFAULT_RETENTION_HOURS: u32 = 2;
pub const DEFAULT_STOP_STREAM_TIMEOUT: u32 = 120;
pub const DEFAULT_CONNECTION_TIMEOUT: u32 = 10;
pub const DEFAULT_CONNECTION_STALENESS: u32 = 60;
pub const DEFAULT_STORAGE_SIZE_MB: u32 = 128;
pub const DEFAULT_BUFFER_DURATION: u32 = 120;
pub const DEFAULT_FRAGMENT_DURATION_MS: u32 = 2000;
pub const DEFAULT_ROTATION_PERIOD: u32 = 2400;
pub const DEFAULT_SPOOL_SIZE_MB: u32 = 1024;

/// `streaming-type`: the official element's values, plus `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(i32)]
#[enum_type(name = "GstKvsSinkStreamingType")]
pub enum StreamingType {
    /// A live source: producer timestamps from now; a full store drops its oldest fragments
    /// during an outage.
    #[enum_value(name = "Realtime: a live source", nick = "realtime")]
    Realtime = 0,
    /// Taken as realtime.
    #[enum_value(name = "Near-realtime (as realtime)", nick = "near-realtime")]
    NearRealtime = 1,
    /// A recording: its own time, sent as fast as the service allows, nothing dropped.
    #[enum_value(name = "Offline: a recording, with its own time", nick = "offline")]
    Offline = 2,
    /// Offline when upstream is not live, realtime when it is.
    #[default]
    #[enum_value(name = "Auto: offline unless upstream is live", nick = "auto")]
    Auto = 3,
}

/// Property values, copied out under the lock and read once per start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub stream_name: String,
    /// Credentials, region and endpoint (shared with kvssrc).
    pub aws: AwsSettings,
    pub retention_period: u32,
    pub allow_create_stream: bool,
    pub stream_tags: Option<gst::Structure>,
    pub stop_stream_timeout: u32,
    pub connection_timeout: u32,
    pub connection_staleness: u32,
    pub user_agent: String,
    pub content_type: Option<String>,
    pub storage_size: u32,
    pub buffer_duration: u32,
    pub fragment_duration: u32,
    pub fragment_acks: bool,
    pub streaming_type: StreamingType,
    pub spool_dir: Option<String>,
    /// Megabytes.
    pub spool_size: u32,
    /// As set: epoch seconds, or milliseconds (see [`Settings::file_start_ms`]); 0 unset.
    pub file_start_time: u64,
    pub rotation_period: u32,
    /// The official properties kvssink has no own setting for (see [`official`]).
    pub official: official::Values,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_name: DEFAULT_STREAM_NAME.to_owned(),
            aws: AwsSettings::default(),
            retention_period: DEFAULT_RETENTION_HOURS,
            allow_create_stream: true,
            stream_tags: None,
            stop_stream_timeout: DEFAULT_STOP_STREAM_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            connection_staleness: DEFAULT_CONNECTION_STALENESS,
            user_agent: default_user_agent(),
            content_type: None,
            storage_size: DEFAULT_STORAGE_SIZE_MB,
            buffer_duration: DEFAULT_BUFFER_DURATION,
            fragment_duration: DEFAULT_FRAGMENT_DURATION_MS,
            fragment_acks: true,
            streaming_type: StreamingType::Auto,
            spool_dir: None,
            spool_size: DEFAULT_SPOOL_SIZE_MB,
            file_start_time: 0,
            rotation_period: DEFAULT_ROTATION_PERIOD,
            official: official::Values::default(),
        }
    }
}

pub fn default_user_agent() -> String {
    format!("kvssink-rs/{} GStreamer", env!("CARGO_PKG_VERSION"))
}

impl Settings {
    /// `file-start-time` in milliseconds since the epoch, if set.
    pub fn file_start_ms(&self) -> Option<u64> {
        match self.file_start_time {
            0 => None,
            t => Some(crate::aws_settings::epoch_ms(t)),
        }
    }

    /// Region and endpoint settings, resolved by the uploader (see [`crate::endpoint`]).
    pub fn location(&self) -> Location {
        self.aws.location()
    }

    /// Credential properties that are set but cannot be used on their own.
    pub fn credential_warnings(&self) -> Vec<String> {
        self.aws.credential_warnings()
    }

    /// Where credentials come from (see [`crate::credentials`]).
    pub fn credential_sources(&self) -> Result<credentials::Sources, String> {
        self.aws.credential_sources(&self.stream_name)
    }

    pub fn ca_file(&self) -> Option<String> {
        self.aws.ca_file()
    }

    /// `stream-tags` as a name → value map (every field's value as a string).
    pub fn tags(&self) -> BTreeMap<String, String> {
        let Some(s) = &self.stream_tags else {
            return BTreeMap::new();
        };
        s.iter()
            .map(|(name, value)| {
                let text = value.get::<String>().unwrap_or_else(|_| {
                    value.serialize().map(|s| s.to_string()).unwrap_or_default()
                });
                (name.to_string(), text)
            })
            .collect()
    }

    /// The unsigned setting of an official property whose usable range
    /// [`official::Row::usable`] gives.
    pub fn uint_mut(&mut self, name: &str) -> Option<&mut u32> {
        Some(match name {
            "fragment-duration" => &mut self.fragment_duration,
            "buffer-duration" => &mut self.buffer_duration,
            "connection-staleness" => &mut self.connection_staleness,
            "rotation-period" => &mut self.rotation_period,
            "storage-size" => &mut self.storage_size,
            "connection-timeout" => &mut self.connection_timeout,
            _ => return None,
        })
    }

    pub fn stop_stream_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_stream_timeout.into())
    }
}

/// The property specifications; the blurbs are what gst-inspect-1.0 shows users.
pub fn properties() -> Vec<glib::ParamSpec> {
    let mut all = Vec::with_capacity(32);
    all.extend([glib::ParamSpecString::builder("stream-name")
        .nick("Stream name")
        .blurb("Name of the Kinesis video stream to write to")
        .default_value(Some(DEFAULT_STREAM_NAME))
        .mutable_ready()
        .build()]);
    all.extend(aws_settings::credential_properties());
    all.extend([
        glib::ParamSpecUInt::builder("retention-period")
            .nick("Retention period")
            .blurb("Data retention of a stream created by kvssink, in hours")
            .default_value(DEFAULT_RETENTION_HOURS)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("allow-create-stream")
            .nick("Allow create stream")
            .blurb("Create the stream when it does not exist")
            .default_value(true)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stream-tags")
            .nick("Stream tags")
            .blurb(
                "Tags set on the stream (TagStream, or with CreateStream), e.g. \
                 \"tags,site=lab,camera=door\"",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("stop-stream-timeout")
            .nick("Stop stream timeout")
            .blurb(
                "Seconds to wait at EOS, or at a stop without EOS, for every fragment to be \
                 persisted; what is still unacknowledged then is abandoned (with spool-dir, \
                 left on disk for the next start). May be changed while playing and during \
                 the wait, which then ends this long after it began (0: at once)",
            )
            .default_value(DEFAULT_STOP_STREAM_TIMEOUT)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt::builder("connection-timeout")
            .nick("Connection timeout")
            .blurb("Seconds allowed to connect and get an answer from the service")
            .default_value(DEFAULT_CONNECTION_TIMEOUT)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("connection-staleness")
            .nick("Connection staleness")
            .blurb(
                "Seconds without any acknowledgement, while fragments are outstanding, after \
                 which the connection is considered dead and reopened",
            )
            .default_value(DEFAULT_CONNECTION_STALENESS)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("user-agent")
            .nick("User agent")
            .blurb("User-Agent header sent to the service")
            .default_value(Some(default_user_agent().as_str()))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("content-type")
            .nick("Content type")
            .blurb(
                "Media type of a stream created by kvssink (e.g. video/h264,audio/aac); \
                 derived from the Matroska tracks when unset",
            )
            .mutable_ready()
            .build(),
    ]);
    all.extend(aws_settings::endpoint_properties());
    all.extend([
        glib::ParamSpecUInt::builder("storage-size")
            .nick("Storage size")
            .blurb(
                "MB of fragments kept until acknowledged. When full, upstream is held back \
                 until acknowledgements make room, except during an outage of a live stream \
                 (a connection attempt failed and none has streamed since): then the oldest \
                 whole fragments are dropped and reported. A recording (offline) is held back \
                 even then; with spool-dir, fragments wait on disk instead",
            )
            .default_value(DEFAULT_STORAGE_SIZE_MB)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("buffer-duration")
            .nick("Buffer duration")
            .blurb(
                "Seconds of fragments kept until acknowledged, a bound like storage-size: when \
                 reached, upstream is held back, except during an outage of a live stream, \
                 when the oldest whole fragments are dropped and reported",
            )
            .default_value(DEFAULT_BUFFER_DURATION)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("fragment-duration")
            .nick("Fragment duration")
            .blurb(
                "Fragment length to aim for, in milliseconds: kvssink asks upstream for a key \
                 frame this long into a fragment, earlier by the encoder's measured delay, so \
                 a new fragment starts; also how long a stream may go without data before \
                 its open fragment is ended. Any value is accepted, as by AWS's kvssink; \
                 values outside 200..10000 (the service takes at most 5 fragments a second, \
                 10 s each) are brought into it at start, with a warning",
            )
            .default_value(DEFAULT_FRAGMENT_DURATION_MS)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("fragment-acks")
            .nick("Fragment acks")
            .blurb(
                "Keep each fragment until the service says PERSISTED (true) or only until \
                 RECEIVED (false)",
            )
            .default_value(true)
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("streaming-type", StreamingType::Auto)
            .nick("Streaming type")
            .blurb(
                "realtime (0) for a live source: producer timestamps from now; offline (2) for \
                 a recording: its own time (file-start-time, else its Matroska date, else now \
                 minus its duration), sent as fast as the service allows, never dropped; \
                 near-realtime (1) is taken as realtime; auto: offline unless upstream is live",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("spool-dir")
            .nick("Spool directory")
            .blurb(
                "Keep every fragment on disk here (a directory per stream), written when it \
                 ends, until the service acknowledges it: an outage longer than storage-size \
                 allows is waited out on disk, a crash loses only the fragment open then, and \
                 what an earlier run left is sent first at start. Bounded by spool-size and \
                 the disk: when either is full, the oldest fragments on disk are dropped and \
                 reported. Unset: memory only",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("spool-size")
            .nick("Spool size")
            .blurb(
                "Megabytes the spool may take on disk; when full, its oldest fragments are \
                 dropped and reported",
            )
            .minimum(1)
            .default_value(DEFAULT_SPOOL_SIZE_MB)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("file-start-time")
            .nick("File start time")
            .blurb(
                "Offline: when the recording started (its timecode 0), in seconds since the \
                 epoch, or milliseconds for values of 100000000000 and more; 0: from the \
                 recording",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("rotation-period")
            .nick("Rotation period")
            .blurb("Seconds after which the PutMedia session is renewed at a fragment boundary")
            .default_value(DEFAULT_ROTATION_PERIOD)
            .mutable_ready()
            .build(),
    ]);
    all.extend(aws_settings::ca_file_properties());
    all.extend(official::properties());
    all.extend([glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
        .nick("Statistics")
        .blurb(
            "Counters: bytes and fragments sent, received, persisted, dropped, rejected, \
                 replayed, connections, reconnects, backlog, last error",
        )
        .read_only()
        .build()]);
    all
}

/// Applies a property write.
pub fn set(settings: &mut Settings, value: &glib::Value, pspec: &glib::ParamSpec) {
    let string = || {
        value
            .get::<Option<String>>()
            .expect("type checked upstream")
            .filter(|s| !s.is_empty())
    };
    let uint = || value.get::<u32>().expect("type checked upstream");
    if settings.aws.set(value, pspec) || settings.official.set(value, pspec) {
        return;
    }
    match pspec.name() {
        "stream-name" => settings.stream_name = string().unwrap_or_default(),
        "retention-period" => settings.retention_period = uint(),
        "allow-create-stream" => settings.allow_create_stream = value.get().expect("bool"),
        "stream-tags" => settings.stream_tags = value.get().expect("structure"),
        "stop-stream-timeout" => settings.stop_stream_timeout = uint(),
        "connection-timeout" => settings.connection_timeout = uint(),
        "connection-staleness" => settings.connection_staleness = uint(),
        "user-agent" => settings.user_agent = string().unwrap_or_else(default_user_agent),
        "content-type" => settings.content_type = string(),
        "storage-size" => settings.storage_size = uint(),
        "buffer-duration" => settings.buffer_duration = uint(),
        "fragment-duration" => settings.fragment_duration = uint(),
        "fragment-acks" => settings.fragment_acks = value.get().expect("bool"),
        "streaming-type" => settings.streaming_type = value.get().expect("enum"),
        "spool-dir" => settings.spool_dir = string(),
        "spool-size" => settings.spool_size = uint(),
        "file-start-time" => settings.file_start_time = value.get().expect("u64"),
        "rotation-period" => settings.rotation_period = uint(),
        name => unreachable!("unknown property {name}"),
    }
}

/// Reads a property; secrets read back as `<redacted>` when set.
pub fn get(settings: &Settings, pspec: &glib::ParamSpec) -> glib::Value {
    if let Some(value) = settings.aws.get(pspec) {
        return value;
    }
    if let Some(value) = settings.official.get(pspec) {
        return value;
    }
    match pspec.name() {
        "stream-name" => settings.stream_name.to_value(),
        "retention-period" => settings.retention_period.to_value(),
        "allow-create-stream" => settings.allow_create_stream.to_value(),
        "stream-tags" => settings.stream_tags.to_value(),
        "stop-stream-timeout" => settings.stop_stream_timeout.to_value(),
        "connection-timeout" => settings.connection_timeout.to_value(),
        "connection-staleness" => settings.connection_staleness.to_value(),
        "user-agent" => settings.user_agent.to_value(),
        "content-type" => settings.content_type.to_value(),
        "storage-size" => settings.storage_size.to_value(),
        "buffer-duration" => settings.buffer_duration.to_value(),
        "fragment-duration" => settings.fragment_duration.to_value(),
        "fragment-acks" => settings.fragment_acks.to_value(),
        "streaming-type" => settings.streaming_type.to_value(),
        "spool-dir" => settings.spool_dir.to_value(),
        "spool-size" => settings.spool_size.to_value(),
        "file-start-time" => settings.file_start_time.to_value(),
        "rotation-period" => settings.rotation_period.to_value(),
        name => unreachable!("unknown property {name}"),
    }
}

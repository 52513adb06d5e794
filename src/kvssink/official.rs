//! Every property of AWS's C++ kvssink (producer SDK 3.6.0, `gstkvssink.cpp`) and what it does
//! here, in one table: [`OFFICIAL`]. The properties kvssink has anyway are registered in
//! `settings.rs` and `aws_settings.rs` with the official name, type and unit; the others are
//! registered from this table ([`properties`]), kept as set ([`Values`]), and either mapped onto
//! kvssink's own settings or, when set to something other than the official default, reported
//! once at start with a warning ([`apply`]). The README's table "Properties of AWS's kvssink and
//! what they do here" says the same in prose.

use std::collections::BTreeMap;

use gst::glib;
use gst::prelude::*;

use super::settings::Settings;

/// The official property's GType and default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Official {
    Bool(bool),
    UInt(u32),
    UInt64(u64),
    /// A string with this default.
    Str(&'static str),
    /// A boxed `GstStructure`, unset by default.
    Structure,
    /// `GstKvsSinkStreamingType`, with this default value.
    StreamingType(i32),
}

impl Official {
    /// The GType of the official property.
    pub fn value_type(self) -> glib::Type {
        match self {
            Official::Bool(_) => bool::static_type(),
            Official::UInt(_) => u32::static_type(),
            Official::UInt64(_) => u64::static_type(),
            Official::Str(_) => String::static_type(),
            Official::Structure => gst::Structure::static_type(),
            Official::StreamingType(_) => super::settings::StreamingType::static_type(),
        }
    }
}

/// What an official property does here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Here {
    /// kvssink's own property of that name (in `settings.rs` or `aws_settings.rs`), with the
    /// official meaning; the text says where it differs.
    Same(&'static str),
    /// Registered from this table; its value is mapped onto kvssink's own settings as said.
    Mapped(&'static str),
    /// Registered from this table; whatever it is set to, kvssink behaves as asked, so no
    /// warning.
    Always(&'static str),
    /// Registered from this table; a value other than the official default has no effect
    /// here, and says so in one warning at start, with this reason.
    NoEffect(&'static str),
}

/// One official property.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub name: &'static str,
    pub official: Official,
    /// The official meaning, in a few words.
    pub meaning: &'static str,
    pub here: Here,
    /// For `Same` unsigned properties: the values kvssink can use. The property accepts the
    /// official range (any `guint`); a value outside this is brought to the nearest bound at
    /// start, with a warning.
    pub usable: Option<(u32, u32)>,
}

const fn same(
    name: &'static str,
    official: Official,
    meaning: &'static str,
    here: &'static str,
) -> Row {
    Row {
        name,
        official,
        meaning,
        here: Here::Same(here),
        usable: None,
    }
}

const fn own(name: &'static str, official: Official, meaning: &'static str, here: Here) -> Row {
    Row {
        name,
        official,
        meaning,
        here,
        usable: None,
    }
}

const fn bounded(mut row: Row, min: u32, max: u32) -> Row {
    row.usable = Some((min, max));
    row
}

const ELEMENTARY: &str = "kvssink writes the codec ID its caps name (V_MPEG4/ISO/AVC for H.264, \
     V_MPEGH/ISO/HEVC for H.265) and no track name for elementary-stream input, and with Matroska \
     input matroskamux writes them";

/// Every property of AWS's kvssink, in its registration order.
pub const OFFICIAL: &[Row] = &[
    same(
        "stream-name",
        Official::Str("DEFAULT_STREAM"),
        "the stream to write to",
        "implemented",
    ),
    same(
        "user-agent",
        Official::Str("AWS-SDK-KVS-CPP-CLIENT"),
        "User-Agent of the service calls",
        "implemented; default kvssink-rs/<version> GStreamer",
    ),
    same(
        "retention-period",
        Official::UInt(2),
        "retention of a created stream, hours",
        "implemented",
    ),
    same(
        "streaming-type",
        Official::StreamingType(0),
        "realtime (0), near-realtime (1) or offline (2)",
        "implemented, same enum type and values; near-realtime is taken as realtime; an \
         extra value auto (3) is the default: offline unless upstream is live",
    ),
    same(
        "content-type",
        Official::Str("video/h264"),
        "MediaType of a created stream",
        "implemented; unset by default: derived from the Matroska tracks",
    ),
    own(
        "max-latency",
        Official::UInt(60),
        "seconds of unacknowledged data after which the SDK reports latency pressure (a log \
         line)",
        Here::Mapped(
            "a live stream whose unacknowledged fragments span more than this many seconds \
             is warned about once (\"falling behind\"), again after it caught up to half of \
             it; 0: never. (At buffer-duration new fragments are dropped.)",
        ),
    ),
    bounded(
        same(
            "fragment-duration",
            Official::UInt(2000),
            "fragment length, ms",
            "implemented (ms): kvssink asks upstream for a key frame this long into a \
             fragment; usable 200 to 10000 ms (the service takes at most 5 fragments a second \
             and 10 s each)",
        ),
        crate::esmux::MIN_FRAGMENT_MS as u32,
        10_000,
    ),
    own(
        "timecode-scale",
        Official::UInt(1),
        "timecode scale of the Matroska the SDK writes, ms",
        Here::NoEffect(
            "matroskamux writes the Matroska, with its own timecodescale property (in ns)",
        ),
    ),
    own(
        "key-frame-fragmentation",
        Official::Bool(true),
        "a new fragment at every key frame (else at the first key frame after \
         fragment-duration)",
        Here::Mapped(
            "implemented for H.264/H.265 input: true (the default), a fragment at every key \
             frame, at least 200 ms apart (the service takes at most 5 fragments a second); \
             false, at the first key frame fragment-duration or more after the fragment's \
             start. With Matroska input the fragments are matroskamux's clusters, which start \
             at every key frame",
        ),
    ),
    own(
        "frame-timecodes",
        Official::Bool(true),
        "use the buffers' timestamps (else the SDK's clock at arrival)",
        Here::NoEffect(
            "the timecodes are matroskamux's, from the buffers' timestamps, and are always used",
        ),
    ),
    own(
        "absolute-fragment-times",
        Official::Bool(true),
        "fragment timecodes are absolute (else relative to the stream's start)",
        Here::NoEffect(
            "kvssink sends relative timecodes with a producer start timestamp (now, or the \
             recording's start for offline), so fragments always get absolute producer \
             timestamps",
        ),
    ),
    same(
        "fragment-acks",
        Official::Bool(true),
        "ask for and use fragment acks",
        "implemented: keep fragments until PERSISTED (true) or RECEIVED (false)",
    ),
    own(
        "restart-on-error",
        Official::Bool(true),
        "reset the stream and resend after an error",
        Here::NoEffect(
            "kvssink always reconnects after recoverable errors and resends what was not \
             acknowledged; fatal errors end the stream either way",
        ),
    ),
    own(
        "recalculate-metrics",
        Official::Bool(true),
        "recalculate the SDK's stream metrics",
        Here::NoEffect("there are no SDK metrics; the stats property is always up to date"),
    ),
    own(
        "framerate",
        Official::UInt(25),
        "expected frame rate, to size the SDK's buffer",
        Here::NoEffect(
            "the buffer holds whole fragments and is sized by storage-size and buffer-duration",
        ),
    ),
    own(
        "avg-bandwidth-bps",
        Official::UInt(4 * 1024 * 1024),
        "expected bit rate, to size the SDK's buffer",
        Here::NoEffect(
            "the buffer holds whole fragments and is sized by storage-size and buffer-duration",
        ),
    ),
    bounded(
        same(
            "buffer-duration",
            Official::UInt(120),
            "seconds of data kept until acknowledged",
            "implemented (seconds of unacknowledged fragments kept); 0 is taken as 1",
        ),
        1,
        u32::MAX,
    ),
    own(
        "replay-duration",
        Official::UInt(40),
        "seconds rewound and resent after a reconnection",
        Here::NoEffect("after a reconnection kvssink resends every unacknowledged fragment"),
    ),
    bounded(
        same(
            "connection-staleness",
            Official::UInt(60),
            "seconds without acks before reconnecting",
            "implemented; 0 is taken as 1",
        ),
        1,
        u32::MAX,
    ),
    own(
        "codec-id",
        Official::Str(kvs_format::matroska::CODEC_H264),
        "codec ID of the track the SDK writes",
        Here::NoEffect(ELEMENTARY),
    ),
    own(
        "track-name",
        Official::Str("kinesis_video"),
        "name of the track the SDK writes",
        Here::NoEffect(ELEMENTARY),
    ),
    same(
        "access-key",
        Official::Str("access_key"),
        "AWS access key id",
        "implemented; unset by default; reads back as <redacted>",
    ),
    same(
        "secret-key",
        Official::Str("secret_key"),
        "AWS secret key",
        "implemented; unset by default; reads back as <redacted>",
    ),
    same(
        "session-token",
        Official::Str("session_token"),
        "AWS session token",
        "implemented; unset by default; reads back as <redacted>",
    ),
    same(
        "aws-region",
        Official::Str("us-west-2"),
        "AWS region",
        "implemented; unset by default (then the environment, the profile, us-west-2); the \
         property wins over AWS_DEFAULT_REGION (a warning when they differ)",
    ),
    bounded(
        same(
            "rotation-period",
            Official::UInt(3600),
            "credential rotation period, seconds (unused by the official element)",
            "mapped to the PutMedia session's renewal at a fragment boundary, seconds; \
             default 2400; 0 is taken as 1",
        ),
        1,
        u32::MAX,
    ),
    own(
        "log-config",
        Official::Str("../kvs_log_configuration"),
        "log4cplus configuration file of the SDK",
        Here::NoEffect("kvssink logs through GStreamer: set GST_DEBUG=kvssink:5 instead"),
    ),
    bounded(
        same(
            "storage-size",
            Official::UInt(128),
            "MB of memory for unacknowledged data",
            "implemented (MB of unacknowledged fragments kept); 0 is taken as 1",
        ),
        1,
        u32::MAX,
    ),
    same(
        "stop-stream-timeout",
        Official::UInt(120),
        "seconds to wait at EOS for the last acks",
        "implemented",
    ),
    bounded(
        same(
            "connection-timeout",
            Official::UInt(5),
            "seconds to connect to the service",
            "implemented as seconds to connect and get an answer; default 10; 0 is taken as 1",
        ),
        1,
        u32::MAX,
    ),
    own(
        "completion-timeout",
        Official::UInt(10),
        "seconds for a service call to complete",
        Here::Mapped(
            "kvssink has one timeout to connect and get an answer: when completion-timeout \
             is set, the larger of connection-timeout and completion-timeout",
        ),
    ),
    same(
        "credential-path",
        Official::Str(".kvs/credential"),
        "rotating credentials file",
        "implemented, same file format; unset by default",
    ),
    same(
        "iot-certificate",
        Official::Structure,
        "credentials from AWS IoT with a certificate",
        "implemented, same structure fields",
    ),
    same(
        "stream-tags",
        Official::Structure,
        "tags of the stream",
        "implemented",
    ),
    same(
        "file-start-time",
        Official::UInt64(0),
        "offline: epoch seconds at which the file starts",
        "implemented; values of 100000000000 and more are taken as milliseconds",
    ),
    own(
        "disable-buffer-clipping",
        Official::Bool(false),
        "do not clip buffers to the segment",
        Here::Always(
            "kvssink never clips: the Matroska byte stream is taken whole whatever the segment",
        ),
    ),
    own(
        "use-original-pts",
        Official::Bool(false),
        "the buffers' PTS are epoch times",
        Here::Mapped(
            "implemented for H.264/H.265 input (AWS's element's input), live or offline: the \
             buffers' PTS are the frames' epoch times in nanoseconds; Matroska input keeps its \
             own cluster times (a warning says so)",
        ),
    ),
    own(
        "get-kvs-metrics",
        Official::Bool(false),
        "emit stream-client-metric signals at key frames",
        Here::NoEffect(
            "the stream-client-metric signal is never emitted; read the stats property and the kvs-ack bus messages",
        ),
    ),
    same(
        "allow-create-stream",
        Official::Bool(true),
        "create the stream when it does not exist",
        "implemented",
    ),
];

/// The row of `name`, if it is an official property.
pub fn row(name: &str) -> Option<&'static Row> {
    OFFICIAL.iter().find(|r| r.name == name)
}

/// Whether a row's property is registered from this table (not by `settings.rs`).
fn registered_here(row: &Row) -> bool {
    !matches!(row.here, Here::Same(_))
}

/// The property specifications of the official properties kvssink has no own property for.
pub(crate) fn properties() -> Vec<glib::ParamSpec> {
    OFFICIAL
        .iter()
        .filter(|r| registered_here(r))
        .map(|r| {
            let note = match r.here {
                Here::Same(_) => unreachable!(),
                Here::Mapped(text) => format!("Here: {text}"),
                Here::Always(text) => format!("Here: accepted; {text}"),
                Here::NoEffect(text) => format!(
                    "Here: accepted for compatibility, no effect ({text}); another value than \
                     the default gives a warning at start"
                ),
            };
            let blurb = format!("AWS kvssink: {}. {note}", r.meaning);
            let nick = r.name;
            match r.official {
                Official::Bool(default) => glib::ParamSpecBoolean::builder(r.name)
                    .nick(nick)
                    .blurb(&blurb)
                    .default_value(default)
                    .mutable_ready()
                    .build(),
                Official::UInt(default) => glib::ParamSpecUInt::builder(r.name)
                    .nick(nick)
                    .blurb(&blurb)
                    .default_value(default)
                    .mutable_ready()
                    .build(),
                Official::Str(default) => glib::ParamSpecString::builder(r.name)
                    .nick(nick)
                    .blurb(&blurb)
                    .default_value(Some(default))
                    .mutable_ready()
                    .build(),
                Official::UInt64(_) | Official::Structure | Official::StreamingType(_) => {
                    unreachable!("{} is one of kvssink's own properties", r.name)
                }
            }
        })
        .collect()
}

/// A value of an official-only property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    UInt(u32),
    Str(Option<String>),
}

impl Value {
    fn default_of(official: Official) -> Value {
        match official {
            Official::Bool(b) => Value::Bool(b),
            Official::UInt(u) => Value::UInt(u),
            Official::Str(s) => Value::Str(Some(s.to_owned())),
            _ => unreachable!("not registered from the table"),
        }
    }

    fn show(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Str(Some(s)) => format!("\"{s}\""),
            Value::Str(None) => "NULL".to_owned(),
        }
    }
}

/// The values of the official properties registered from this table, as set (those never set
/// are absent and read as the official default).
#[derive(Debug, Clone, Default)]
pub(crate) struct Values(BTreeMap<&'static str, Value>);

impl Values {
    /// Applies a write; `false` if `pspec` is not one of this table's own properties.
    pub fn set(&mut self, value: &glib::Value, pspec: &glib::ParamSpec) -> bool {
        let Some(row) = row(pspec.name()).filter(|r| registered_here(r)) else {
            return false;
        };
        let v = match row.official {
            Official::Bool(_) => Value::Bool(value.get().expect("bool")),
            Official::UInt(_) => Value::UInt(value.get().expect("uint")),
            Official::Str(_) => Value::Str(value.get().expect("string")),
            _ => unreachable!(),
        };
        self.0.insert(row.name, v);
        true
    }

    /// The current value of a property registered from this table.
    pub fn value(&self, name: &str) -> Option<Value> {
        let row = row(name).filter(|r| registered_here(r))?;
        Some(
            self.0
                .get(row.name)
                .cloned()
                .unwrap_or_else(|| Value::default_of(row.official)),
        )
    }

    /// Reads a property registered from this table; `None` if it is not one.
    pub fn get(&self, pspec: &glib::ParamSpec) -> Option<glib::Value> {
        Some(match self.value(pspec.name())? {
            Value::Bool(b) => b.to_value(),
            Value::UInt(u) => u.to_value(),
            Value::Str(s) => s.to_value(),
        })
    }

    /// Whether the property was set (to any value, the default included).
    fn is_set(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// AWS's `max-latency`: a live stream this far behind is warned about (0: never).
    pub fn max_latency(&self) -> Option<std::time::Duration> {
        let s = self.uint("max-latency");
        (s > 0).then(|| std::time::Duration::from_secs(s.into()))
    }

    fn uint(&self, name: &str) -> u32 {
        match self.value(name) {
            Some(Value::UInt(u)) => u,
            other => unreachable!("{name} is not an official uint: {other:?}"),
        }
    }
}

/// Maps the official properties onto `settings` at start, and returns the warnings to post:
/// one per property set to a value that has no effect here, one per value brought into the
/// range kvssink can use.
pub(crate) fn apply(settings: &mut Settings) -> Vec<String> {
    let mut warnings = Vec::new();
    for row in OFFICIAL {
        match row.here {
            Here::NoEffect(why) => {
                let value = settings.official.value(row.name).expect("registered here");
                if value != Value::default_of(row.official) {
                    warnings.push(format!(
                        "{}={} has no effect in this kvssink: {why}",
                        row.name,
                        value.show()
                    ));
                }
            }
            Here::Mapped(_) => {
                // Only when set: alone, connection-timeout keeps its meaning (and its default
                // 10 s, the official completion default).
                if row.name == "completion-timeout" && settings.official.is_set(row.name) {
                    let completion = settings.official.uint(row.name);
                    settings.connection_timeout = settings.connection_timeout.max(completion);
                }
            }
            Here::Same(_) | Here::Always(_) => {}
        }
        if let Some((min, max)) = row.usable
            && let Some(value) = settings.uint_mut(row.name)
            && !(min..=max).contains(value)
        {
            let used = (*value).clamp(min, max);
            warnings.push(format!(
                "{}={} is outside what kvssink can use ({min} to {max}): using {used}",
                row.name, *value
            ));
            *value = used;
        }
    }
    warnings
}

/// The signals of AWS's element, with its names, flags and argument types, so that an
/// application connecting to them works unchanged: `stream-error` (run-last, a `guint64`
/// status) once before a fatal error, `fragment-ack` (action, a pointer to a [`FragmentAck`])
/// for every ack, and `stream-client-metric` (action, a pointer), registered but never
/// emitted (the `stats` property and the bus messages carry the figures).
pub fn signals() -> Vec<glib::subclass::Signal> {
    use glib::subclass::Signal;
    vec![
        Signal::builder(STREAM_ERROR)
            .param_types([u64::static_type()])
            .run_last()
            .build(),
        Signal::builder(FRAGMENT_ACK)
            .param_types([glib::Type::POINTER])
            .run_last()
            .action()
            .build(),
        Signal::builder("stream-client-metric")
            .param_types([glib::Type::POINTER])
            .run_last()
            .action()
            .build(),
    ]
}

pub const STREAM_ERROR: &str = "stream-error";
pub const FRAGMENT_ACK: &str = "fragment-ack";

/// What `fragment-ack` points to: the layout of the producer SDK's `FragmentAck` (PIC
/// `ProducerClient` headers, version 0), which applications written for AWS's element read.
/// Valid only during the signal's emission.
#[repr(C)]
pub struct FragmentAck {
    pub version: u32,
    /// `FRAGMENT_ACK_TYPE`: 1 BUFFERING, 2 RECEIVED, 3 PERSISTED, 4 ERROR, 5 IDLE.
    pub ack_type: i32,
    /// The fragment's producer timestamp (ms since the epoch), what AWS's element gives with
    /// its default absolute fragment times; the ack's own timecode when it is not known.
    pub timestamp: u64,
    /// The fragment number, NUL-terminated (at most 128 characters).
    pub sequence_number: [std::ffi::c_char; 129],
    /// `SERVICE_CALL_RESULT`: 200 for a non-error ack, else the ack's `ErrorId`.
    pub result: i32,
}

impl FragmentAck {
    pub fn new(ack: &crate::ack::Ack, producer_time_ms: Option<u64>) -> FragmentAck {
        use crate::ack::AckEventType::*;
        let mut sequence_number = [0; 129];
        if let Some(n) = &ack.fragment_number {
            for (to, from) in sequence_number.iter_mut().zip(n.bytes().take(128)) {
                *to = from as std::ffi::c_char;
            }
        }
        FragmentAck {
            version: 0,
            ack_type: match ack.event_type {
                Buffering => 1,
                Received => 2,
                Persisted => 3,
                Error => 4,
                Idle => 5,
            },
            timestamp: producer_time_ms.or(ack.fragment_timecode).unwrap_or(0),
            sequence_number,
            result: ack.error_id.map_or(200, |id| id as i32),
        }
    }
}

//! kvssrc's properties: the stream, where reading starts and ends, and the AWS properties
//! shared with kvssink ([`crate::aws_settings`]).

use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use crate::aws_settings::{self, AwsSettings};
use crate::getmedia::{self, Start};

pub const DEFAULT_CONNECTION_TIMEOUT: u32 = 10;

/// `start-selector`: GetMedia's StartSelectorType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(i32)]
#[enum_type(name = "GstKvsSrcStartSelector")]
pub enum StartSelector {
    /// The next fragment to arrive: a live source.
    #[default]
    #[enum_value(name = "Now: the next fragment to arrive (live)", nick = "now")]
    Now = 0,
    #[enum_value(name = "Earliest: the oldest fragment kept", nick = "earliest")]
    Earliest = 1,
    #[enum_value(
        name = "Producer timestamp: from start-timestamp, producer time",
        nick = "producer-timestamp"
    )]
    ProducerTimestamp = 2,
    #[enum_value(
        name = "Server timestamp: from start-timestamp, server time",
        nick = "server-timestamp"
    )]
    ServerTimestamp = 3,
    #[enum_value(
        name = "Fragment number: after start-fragment-number",
        nick = "fragment-number"
    )]
    FragmentNumber = 4,
    #[enum_value(
        name = "Continuation token: after continuation-token",
        nick = "continuation-token"
    )]
    ContinuationToken = 5,
}

/// Property values, copied out under the lock and read once per start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub stream_name: Option<String>,
    pub aws: AwsSettings,
    pub start_selector: StartSelector,
    pub start_timestamp: u64,
    pub start_fragment_number: Option<String>,
    pub continuation_token: Option<String>,
    pub end_timestamp: u64,
    pub connection_timeout: u32,
    pub drop_on_latency: bool,
    pub user_agent: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_name: None,
            aws: AwsSettings::default(),
            start_selector: StartSelector::Now,
            start_timestamp: 0,
            start_fragment_number: None,
            continuation_token: None,
            end_timestamp: 0,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            drop_on_latency: false,
            user_agent: format!("kvssrc-rs/{} GStreamer", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl Settings {
    /// Where GetMedia starts; an error names the property that is missing.
    pub fn start(&self) -> Result<Start, String> {
        let needs = |what: &str| format!("start-selector={} needs {what}", self.selector_nick());
        Ok(match self.start_selector {
            StartSelector::Now => Start::Now,
            StartSelector::Earliest => Start::Earliest,
            StartSelector::ProducerTimestamp | StartSelector::ServerTimestamp => {
                if self.start_timestamp == 0 {
                    return Err(needs("start-timestamp (ms since the epoch)"));
                }
                let ms = crate::aws_settings::epoch_ms(self.start_timestamp);
                if self.start_selector == StartSelector::ProducerTimestamp {
                    Start::ProducerTimestamp(ms)
                } else {
                    Start::ServerTimestamp(ms)
                }
            }
            StartSelector::FragmentNumber => Start::AfterFragmentNumber(
                self.start_fragment_number
                    .clone()
                    .ok_or_else(|| needs("start-fragment-number"))?,
            ),
            StartSelector::ContinuationToken => Start::ContinuationToken(
                self.continuation_token
                    .clone()
                    .ok_or_else(|| needs("continuation-token"))?,
            ),
        })
    }

    /// The range a read covers, in its properties' words (for a message about it).
    pub fn range(&self) -> String {
        let start = match self.start_selector {
            StartSelector::ProducerTimestamp | StartSelector::ServerTimestamp => {
                format!(" start-timestamp={}", self.start_timestamp)
            }
            StartSelector::FragmentNumber => format!(
                " start-fragment-number={}",
                self.start_fragment_number.as_deref().unwrap_or_default()
            ),
            _ => String::new(),
        };
        let end = match self.end_timestamp {
            0 => String::new(),
            end => format!(" end-timestamp={end}"),
        };
        format!("start-selector={}{start}{end}", self.selector_nick())
    }

    pub fn selector_nick(&self) -> &'static str {
        glib::EnumValue::from_value(&self.start_selector.to_value())
            .map(|(_, v)| v.nick())
            .unwrap_or("?")
    }

    /// The reader's configuration for `stream`.
    pub fn reader_config(&self, stream: &str) -> Result<getmedia::Config, String> {
        Ok(getmedia::Config {
            stream_name: stream.to_owned(),
            location: self.aws.location(),
            start: self.start()?,
            end_ms: (self.end_timestamp > 0)
                .then(|| crate::aws_settings::epoch_ms(self.end_timestamp)),
            user_agent: self.user_agent.clone(),
            connection_timeout: Duration::from_secs(self.connection_timeout.into()),
            max_backoff: Duration::from_secs(5),
            ca_file: self.aws.ca_file().map(Into::into),
        })
    }
}

/// The property specifications; the blurbs are what gst-inspect-1.0 shows users.
pub fn properties() -> Vec<glib::ParamSpec> {
    let mut all = vec![
        glib::ParamSpecString::builder("stream-name")
            .nick("Stream name")
            .blurb("Name of the Kinesis video stream to read")
            .mutable_ready()
            .build(),
    ];
    all.extend(aws_settings::credential_properties());
    all.extend(aws_settings::endpoint_properties());
    all.extend(aws_settings::ca_file_properties());
    all.extend([
        glib::ParamSpecEnum::builder_with_default("start-selector", StartSelector::Now)
            .nick("Start selector")
            .blurb(
                "Where reading starts: now (live: the next fragment to arrive), earliest, \
                 producer-timestamp or server-timestamp (from start-timestamp), \
                 fragment-number (after start-fragment-number), continuation-token (after \
                 continuation-token)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("start-timestamp")
            .nick("Start timestamp")
            .blurb(
                "For the timestamp selectors: where to start, in ms since the epoch (a value \
                 below 10^11 is taken as seconds)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("start-fragment-number")
            .nick("Start fragment number")
            .blurb("For start-selector=fragment-number: read from the fragment after this one")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("continuation-token")
            .nick("Continuation token")
            .blurb(
                "For start-selector=continuation-token: where an earlier read left off (the \
                 continuation-token of its last kvs-fragment message)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("end-timestamp")
            .nick("End timestamp")
            .blurb(
                "Bounded read: EOS before the first fragment whose producer timestamp is \
                 after this (ms since the epoch; a value below 10^11 is taken as seconds), or \
                 once the service has nothing more and this time has passed; 0: read on for \
                 ever",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("connection-timeout")
            .nick("Connection timeout")
            .blurb("Seconds allowed to connect and get an answer from the service")
            .minimum(1)
            .default_value(DEFAULT_CONNECTION_TIMEOUT)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("drop-on-latency")
            .nick("Drop on latency")
            .blurb(
                "Reading live: skip a fragment that comes so late that even its last frame would \
                 be shown later than the latency allows, instead of raising the latency for it \
                 (after an outage, the view goes on live at once instead of showing the outage \
                 late and catching up later); each skip posts a QOS message and a kvs-fragment \
                 message with skipped=true",
            )
            .default_value(false)
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder(TIMELINE_ORIGIN)
            .nick("Timeline origin")
            .blurb(
                "Read only: the producer time (ms since the epoch) of timestamp 0 of what \
                 kvssrc reads, so that a frame was produced at this plus its timestamp; 0 \
                 until the first fragment",
            )
            .read_only()
            .build(),
    ]);
    all
}

/// The read-only property the element answers itself (not a setting).
pub const TIMELINE_ORIGIN: &str = "timeline-origin";

/// Applies a property write.
pub fn set(settings: &mut Settings, value: &glib::Value, pspec: &glib::ParamSpec) {
    if settings.aws.set(value, pspec) {
        return;
    }
    let string = || {
        value
            .get::<Option<String>>()
            .expect("type checked upstream")
            .filter(|s| !s.is_empty())
    };
    match pspec.name() {
        "stream-name" => settings.stream_name = string(),
        "start-selector" => settings.start_selector = value.get().expect("enum"),
        "start-timestamp" => settings.start_timestamp = value.get().expect("u64"),
        "start-fragment-number" => settings.start_fragment_number = string(),
        "continuation-token" => settings.continuation_token = string(),
        "end-timestamp" => settings.end_timestamp = value.get().expect("u64"),
        "connection-timeout" => settings.connection_timeout = value.get().expect("u32"),
        "drop-on-latency" => settings.drop_on_latency = value.get().expect("bool"),
        name => unreachable!("unknown property {name}"),
    }
}

/// Reads a property.
pub fn get(settings: &Settings, pspec: &glib::ParamSpec) -> glib::Value {
    if let Some(value) = settings.aws.get(pspec) {
        return value;
    }
    match pspec.name() {
        "stream-name" => settings.stream_name.to_value(),
        "start-selector" => settings.start_selector.to_value(),
        "start-timestamp" => settings.start_timestamp.to_value(),
        "start-fragment-number" => settings.start_fragment_number.to_value(),
        "continuation-token" => settings.continuation_token.to_value(),
        "end-timestamp" => settings.end_timestamp.to_value(),
        "connection-timeout" => settings.connection_timeout.to_value(),
        "drop-on-latency" => settings.drop_on_latency.to_value(),
        name => unreachable!("unknown property {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_names_where_a_read_starts_and_ends() {
        let mut s = Settings {
            start_selector: StartSelector::ProducerTimestamp,
            start_timestamp: 1_000_000_000_000,
            end_timestamp: 1_000_000_001_000,
            ..Settings::default()
        };
        assert_eq!(
            s.range(),
            "start-selector=producer-timestamp start-timestamp=1000000000000 \
             end-timestamp=1000000001000"
        );
        s.start_selector = StartSelector::FragmentNumber;
        s.start_fragment_number = Some("9100".into());
        s.end_timestamp = 0;
        assert_eq!(
            s.range(),
            "start-selector=fragment-number start-fragment-number=9100"
        );
        s.start_selector = StartSelector::Earliest;
        assert_eq!(s.range(), "start-selector=earliest");
    }
}

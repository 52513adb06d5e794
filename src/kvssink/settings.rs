//! kvssink's properties: names and meanings follow AWS's C++ kvssink where it has them.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_credential_types::Credentials;
use gst::glib;
use gst::prelude::*;

use crate::credentials::{self, IotCertificate};
use crate::endpoint::Location;

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
/// What reading a secret property gives when it is set.
pub const REDACTED: &str = "<redacted>";

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

/// `file-start-time` values at or above this are milliseconds, below it seconds (10^11 s is
/// in the year 5138; 10^11 ms is 1973).
const FILE_START_TIME_MS_FROM: u64 = 100_000_000_000;

/// Property values, copied out under the lock and read once per start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub stream_name: String,
    pub aws_region: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub profile: Option<String>,
    pub credential_path: Option<String>,
    pub iot_certificate: Option<gst::Structure>,
    pub use_fips: bool,
    pub use_dual_stack: bool,
    pub retention_period: u32,
    pub allow_create_stream: bool,
    pub stream_tags: Option<gst::Structure>,
    pub stop_stream_timeout: u32,
    pub connection_timeout: u32,
    pub connection_staleness: u32,
    pub user_agent: String,
    pub content_type: Option<String>,
    pub control_plane_uri: Option<String>,
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
    pub ca_file: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_name: DEFAULT_STREAM_NAME.to_owned(),
            aws_region: None,
            access_key: None,
            secret_key: None,
            session_token: None,
            profile: None,
            credential_path: None,
            iot_certificate: None,
            use_fips: false,
            use_dual_stack: false,
            retention_period: DEFAULT_RETENTION_HOURS,
            allow_create_stream: true,
            stream_tags: None,
            stop_stream_timeout: DEFAULT_STOP_STREAM_TIMEOUT,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            connection_staleness: DEFAULT_CONNECTION_STALENESS,
            user_agent: default_user_agent(),
            content_type: None,
            control_plane_uri: None,
            storage_size: DEFAULT_STORAGE_SIZE_MB,
            buffer_duration: DEFAULT_BUFFER_DURATION,
            fragment_duration: DEFAULT_FRAGMENT_DURATION_MS,
            fragment_acks: true,
            streaming_type: StreamingType::Auto,
            spool_dir: None,
            spool_size: DEFAULT_SPOOL_SIZE_MB,
            file_start_time: 0,
            rotation_period: DEFAULT_ROTATION_PERIOD,
            ca_file: None,
        }
    }
}

/// A string that never shows itself in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
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
            t if t >= FILE_START_TIME_MS_FROM => Some(t),
            t => Some(t.saturating_mul(1000)),
        }
    }

    /// Region and endpoint settings, resolved by the uploader (see [`crate::endpoint`]).
    pub fn location(&self) -> Location {
        Location {
            region: self.aws_region.clone(),
            profile: self.profile.clone(),
            use_fips: self.use_fips,
            use_dual_stack: self.use_dual_stack,
            control_plane_uri: self.control_plane_uri.clone(),
        }
    }

    /// Credential properties that are set but cannot be used on their own.
    pub fn credential_warnings(&self) -> Vec<String> {
        match (&self.access_key, &self.secret_key) {
            (Some(_), None) => vec!["access-key is set without secret-key: ignored".to_owned()],
            (None, Some(_)) => vec!["secret-key is set without access-key: ignored".to_owned()],
            _ => Vec::new(),
        }
    }

    /// Where credentials come from (see [`crate::credentials`]). Fails on an
    /// `iot-certificate` structure that lacks a field or has an unknown one.
    pub fn credential_sources(&self) -> Result<credentials::Sources, String> {
        let keys = match (&self.access_key, &self.secret_key) {
            (Some(access), Some(secret)) => Some(Credentials::new(
                access.0.clone(),
                secret.0.clone(),
                self.session_token.as_ref().map(|t| t.0.clone()),
                None,
                "the access-key/secret-key properties",
            )),
            _ => None,
        };
        let iot = self
            .iot_certificate
            .as_ref()
            .map(|s| iot_certificate(s, &self.stream_name))
            .transpose()?;
        Ok(credentials::Sources {
            keys,
            credential_path: self.credential_path.clone().map(Into::into),
            iot,
            location: self.location(),
            ca_file: self.ca_file().map(Into::into),
        })
    }

    pub fn ca_file(&self) -> Option<String> {
        self.ca_file
            .clone()
            .or_else(|| non_empty_env("KVSSINK_CA_CERT_PATH"))
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

    pub fn stop_stream_timeout(&self) -> Duration {
        Duration::from_secs(self.stop_stream_timeout.into())
    }
}

/// The fields of `iot-certificate`, as in AWS's C++ kvssink.
const IOT_FIELDS: &[&str] = &[
    "endpoint",
    "cert-path",
    "key-path",
    "ca-path",
    "role-aliases",
    "iot-thing-name",
    "connection-timeout",
    "completion-timeout",
];

/// Reads an `iot-certificate` structure; the thing name defaults to the stream name.
pub fn iot_certificate(s: &gst::Structure, stream: &str) -> Result<IotCertificate, String> {
    if let Some(unknown) = s.fields().find(|f| !IOT_FIELDS.contains(&f.as_str())) {
        return Err(format!(
            "iot-certificate: unknown field {unknown} (the fields are {})",
            IOT_FIELDS.join(", ")
        ));
    }
    let text = |name: &str| -> Option<String> {
        let value = s.value(name).ok()?;
        value
            .get::<String>()
            .ok()
            .or_else(|| value.serialize().ok().map(|v| v.to_string()))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let required = |name: &str| {
        text(name).ok_or_else(|| {
            format!(
                "iot-certificate needs {name} (e.g. iot-certificate=\"iot-certificate,\
                 endpoint=<prefix>.credentials.iot.<region>.amazonaws.com,cert-path=cert.pem,\
                 key-path=key.pem,ca-path=AmazonRootCA1.pem,role-aliases=<role alias>\")"
            )
        })
    };
    let seconds = |name: &str| -> Result<Option<std::time::Duration>, String> {
        text(name)
            .map(|t| {
                t.parse::<u64>()
                    .map(std::time::Duration::from_secs)
                    .map_err(|_| format!("iot-certificate: {name} must be a number of seconds"))
            })
            .transpose()
    };
    Ok(IotCertificate {
        endpoint: required("endpoint")?,
        cert_path: required("cert-path")?.into(),
        key_path: required("key-path")?.into(),
        ca_path: text("ca-path").map(Into::into),
        role_alias: required("role-aliases")?,
        thing_name: text("iot-thing-name").unwrap_or_else(|| stream.to_owned()),
        connection_timeout: seconds("connection-timeout")?,
        completion_timeout: seconds("completion-timeout")?,
    })
}

pub fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The property specifications; the blurbs are what gst-inspect-1.0 shows users.
pub fn properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("stream-name")
            .nick("Stream name")
            .blurb("Name of the Kinesis video stream to write to")
            .default_value(Some(DEFAULT_STREAM_NAME))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("aws-region")
            .nick("AWS region")
            .blurb(
                "AWS region of the stream. When unset: AWS_REGION, then AWS_DEFAULT_REGION, \
                 then the profile's region, then us-west-2. The property wins over the \
                 environment (AWS's C++ kvssink does the opposite)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("access-key")
            .nick("Access key")
            .blurb(
                "AWS access key id; with secret-key, used instead of credential-path and of \
                 the AWS chain (environment, profile, web identity, container, instance \
                 metadata); only iot-certificate wins over it. Reading it gives <redacted>",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("secret-key")
            .nick("Secret key")
            .blurb(
                "AWS secret access key, with access-key. Write-only in effect: reading it \
                 gives <redacted>",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("session-token")
            .nick("Session token")
            .blurb(
                "AWS session token for temporary credentials given with access-key and \
                 secret-key. Write-only in effect",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("profile")
            .nick("Profile")
            .blurb(
                "Profile of the shared config and credentials files (~/.aws/config, \
                 ~/.aws/credentials) for credentials and region; else AWS_PROFILE, else \
                 default. When set, AWS_ACCESS_KEY_ID/... are not used (as aws --profile)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("credential-path")
            .nick("Credential file path")
            .blurb(
                "File in the official kvssink format, kept up to date by another program: \
                 \"CREDENTIALS <access key> <expiration ISO 8601> <secret key> [<session \
                 token>]\" or \"CREDENTIALS <access key> <secret key>\"; read again when it \
                 changes or the credentials near expiry. Used when access-key/secret-key and \
                 iot-certificate are not set",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("iot-certificate")
            .nick("IoT certificate")
            .blurb(
                "Get temporary credentials from the AWS IoT credentials provider with the \
                 thing's certificate: \"iot-certificate,endpoint=<prefix>.credentials.iot.\
                 <region>.amazonaws.com,cert-path=<pem>,key-path=<pem>,ca-path=<pem>,\
                 role-aliases=<alias>[,iot-thing-name=<thing, default the stream name>]\
                 [,connection-timeout=<s>][,completion-timeout=<s>]\". Wins over every other \
                 credential source; renewed before expiry",
            )
            .mutable_ready()
            .build(),
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
            .blurb("Seconds to wait at EOS for every fragment to be persisted")
            .default_value(DEFAULT_STOP_STREAM_TIMEOUT)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("connection-timeout")
            .nick("Connection timeout")
            .blurb("Seconds allowed to connect and get an answer from the service")
            .minimum(1)
            .default_value(DEFAULT_CONNECTION_TIMEOUT)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("connection-staleness")
            .nick("Connection staleness")
            .blurb(
                "Seconds without any acknowledgement, while fragments are outstanding, after \
                 which the connection is considered dead and reopened",
            )
            .minimum(1)
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
        glib::ParamSpecString::builder("control-plane-uri")
            .nick("Control plane URI")
            .blurb(
                "Kinesis Video Streams control-plane URL (else CONTROL_PLANE_URI, \
                 AWS_ENDPOINT_URL_KINESIS_VIDEO, AWS_ENDPOINT_URL, else the region's endpoint \
                 in its partition: aws, aws-cn, aws-us-gov, ...); http:// is allowed, e.g. \
                 for kvs-local",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("use-fips")
            .nick("Use FIPS endpoint")
            .blurb(
                "Use the region's FIPS endpoint (kinesisvideo-fips.<region>...). Also turned \
                 on by AWS_USE_FIPS_ENDPOINT=true or the profile's use_fips_endpoint = true",
            )
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("use-dual-stack")
            .nick("Use dual-stack endpoint")
            .blurb(
                "Use the region's dual-stack (IPv4 and IPv6) endpoint. Also turned on by \
                 AWS_USE_DUALSTACK_ENDPOINT=true or the profile's use_dualstack_endpoint = true",
            )
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("storage-size")
            .nick("Storage size")
            .blurb(
                "MB of fragments kept until acknowledged; when full the oldest whole fragments \
                 are dropped",
            )
            .minimum(1)
            .default_value(DEFAULT_STORAGE_SIZE_MB)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("buffer-duration")
            .nick("Buffer duration")
            .blurb(
                "Seconds of fragments kept until acknowledged; older whole fragments are \
                 dropped",
            )
            .minimum(1)
            .default_value(DEFAULT_BUFFER_DURATION)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("fragment-duration")
            .nick("Fragment duration")
            .blurb(
                "Fragment length to aim for, in milliseconds: kvssink asks upstream for a key \
                 frame this long into a fragment, earlier by the encoder's measured delay, so \
                 a new fragment starts; also how long a stream may go without data before \
                 its open fragment is ended (the service allows fragments of at most 10000)",
            )
            .minimum(100)
            .maximum(10_000)
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
                "Keep every fragment on disk here (a directory per stream) until the service \
                 acknowledges it: an outage longer than storage-size, a crash or a restart \
                 loses nothing, and what an earlier run left is sent first at start. Unset: \
                 memory only",
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
            .minimum(1)
            .default_value(DEFAULT_ROTATION_PERIOD)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("ca-file")
            .nick("CA file")
            .blurb(
                "PEM file of extra CA certificates to trust (else KVSSINK_CA_CERT_PATH) for \
                 every HTTPS call: control plane, PutMedia, STS, AWS IoT credentials; TLS is \
                 always verified",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(
                "Counters: bytes and fragments sent, received, persisted, dropped, rejected, \
                 replayed, connections, reconnects, backlog, last error",
            )
            .read_only()
            .build(),
    ]
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
    match pspec.name() {
        "stream-name" => settings.stream_name = string().unwrap_or_default(),
        "aws-region" => settings.aws_region = string(),
        "access-key" => settings.access_key = string().map(Secret),
        "secret-key" => settings.secret_key = string().map(Secret),
        "session-token" => settings.session_token = string().map(Secret),
        "profile" => settings.profile = string(),
        "credential-path" => settings.credential_path = string(),
        "iot-certificate" => settings.iot_certificate = value.get().expect("structure"),
        "use-fips" => settings.use_fips = value.get().expect("bool"),
        "use-dual-stack" => settings.use_dual_stack = value.get().expect("bool"),
        "retention-period" => settings.retention_period = uint(),
        "allow-create-stream" => settings.allow_create_stream = value.get().expect("bool"),
        "stream-tags" => settings.stream_tags = value.get().expect("structure"),
        "stop-stream-timeout" => settings.stop_stream_timeout = uint(),
        "connection-timeout" => settings.connection_timeout = uint(),
        "connection-staleness" => settings.connection_staleness = uint(),
        "user-agent" => settings.user_agent = string().unwrap_or_else(default_user_agent),
        "content-type" => settings.content_type = string(),
        "control-plane-uri" => settings.control_plane_uri = string(),
        "storage-size" => settings.storage_size = uint(),
        "buffer-duration" => settings.buffer_duration = uint(),
        "fragment-duration" => settings.fragment_duration = uint(),
        "fragment-acks" => settings.fragment_acks = value.get().expect("bool"),
        "streaming-type" => settings.streaming_type = value.get().expect("enum"),
        "spool-dir" => settings.spool_dir = string(),
        "spool-size" => settings.spool_size = uint(),
        "file-start-time" => settings.file_start_time = value.get().expect("u64"),
        "rotation-period" => settings.rotation_period = uint(),
        "ca-file" => settings.ca_file = string(),
        name => unreachable!("unknown property {name}"),
    }
}

/// Reads a property; secrets read back as `<redacted>` when set.
pub fn get(settings: &Settings, pspec: &glib::ParamSpec) -> glib::Value {
    let redacted = |s: &Option<Secret>| s.as_ref().map(|_| REDACTED).to_value();
    match pspec.name() {
        "stream-name" => settings.stream_name.to_value(),
        "aws-region" => settings.aws_region.to_value(),
        "access-key" => redacted(&settings.access_key),
        "secret-key" => redacted(&settings.secret_key),
        "session-token" => redacted(&settings.session_token),
        "profile" => settings.profile.to_value(),
        "credential-path" => settings.credential_path.to_value(),
        "iot-certificate" => settings.iot_certificate.to_value(),
        "use-fips" => settings.use_fips.to_value(),
        "use-dual-stack" => settings.use_dual_stack.to_value(),
        "retention-period" => settings.retention_period.to_value(),
        "allow-create-stream" => settings.allow_create_stream.to_value(),
        "stream-tags" => settings.stream_tags.to_value(),
        "stop-stream-timeout" => settings.stop_stream_timeout.to_value(),
        "connection-timeout" => settings.connection_timeout.to_value(),
        "connection-staleness" => settings.connection_staleness.to_value(),
        "user-agent" => settings.user_agent.to_value(),
        "content-type" => settings.content_type.to_value(),
        "control-plane-uri" => settings.control_plane_uri.to_value(),
        "storage-size" => settings.storage_size.to_value(),
        "buffer-duration" => settings.buffer_duration.to_value(),
        "fragment-duration" => settings.fragment_duration.to_value(),
        "fragment-acks" => settings.fragment_acks.to_value(),
        "streaming-type" => settings.streaming_type.to_value(),
        "spool-dir" => settings.spool_dir.to_value(),
        "spool-size" => settings.spool_size.to_value(),
        "file-start-time" => settings.file_start_time.to_value(),
        "rotation-period" => settings.rotation_period.to_value(),
        "ca-file" => settings.ca_file.to_value(),
        name => unreachable!("unknown property {name}"),
    }
}

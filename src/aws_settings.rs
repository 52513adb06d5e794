//! The AWS properties kvssink and kvssrc share: credentials, region, endpoint and CA file.
//!
//! Both elements expose the same names with the same meanings; this module holds their
//! specifications, their values ([`AwsSettings`]) and what the values turn into (a
//! [`Location`] and credential [`Sources`](credentials::Sources)).

use aws_credential_types::Credentials;
use gst::glib;
use gst::prelude::*;

use crate::credentials::{self, IotCertificate};
use crate::endpoint::Location;

pub use crate::credentials::REDACTED;

/// A string that never shows itself in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Credential, region and endpoint property values.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    pub aws_region: Option<String>,
    pub access_key: Option<Secret>,
    pub secret_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub profile: Option<String>,
    pub credential_path: Option<String>,
    pub iot_certificate: Option<gst::Structure>,
    pub use_fips: bool,
    pub use_dual_stack: bool,
    pub control_plane_uri: Option<String>,
    pub ca_file: Option<String>,
}

impl AwsSettings {
    /// Region and endpoint settings (see [`crate::endpoint`]).
    pub fn location(&self) -> Location {
        Location {
            region: self.aws_region.clone(),
            profile: self.profile.clone(),
            use_fips: self.use_fips,
            use_dual_stack: self.use_dual_stack,
            control_plane_uri: self.control_plane_uri.clone(),
        }
    }

    /// `access-key`, `secret-key` and `session-token` as set, except AWS's element's
    /// placeholder defaults (`access_key`, `secret_key`, `session_token`), which it takes as
    /// unset: an application that sets them, or copies them from gst-inspect, means none.
    fn keys(&self) -> (Option<&Secret>, Option<&Secret>, Option<&Secret>) {
        fn real<'a>(s: &'a Option<Secret>, placeholder: &str) -> Option<&'a Secret> {
            s.as_ref().filter(|s| s.0 != placeholder)
        }
        (
            real(&self.access_key, "access_key"),
            real(&self.secret_key, "secret_key"),
            real(&self.session_token, "session_token"),
        )
    }

    /// Credential properties that are set but cannot be used on their own.
    pub fn credential_warnings(&self) -> Vec<String> {
        let (access_key, secret_key, _) = self.keys();
        match (access_key, secret_key) {
            (Some(_), None) => vec!["access-key is set without secret-key: ignored".to_owned()],
            (None, Some(_)) => vec!["secret-key is set without access-key: ignored".to_owned()],
            _ => Vec::new(),
        }
    }

    /// Where credentials come from (see [`crate::credentials`]); the IoT thing name defaults
    /// to `stream`. Fails on an `iot-certificate` structure that lacks a field or has an
    /// unknown one.
    pub fn credential_sources(&self, stream: &str) -> Result<credentials::Sources, String> {
        let (access_key, secret_key, session_token) = self.keys();
        let keys = match (access_key, secret_key) {
            (Some(access), Some(secret)) => Some(Credentials::new(
                access.0.clone(),
                secret.0.clone(),
                session_token.map(|t| t.0.clone()),
                None,
                "the access-key/secret-key properties",
            )),
            _ => None,
        };
        let iot = self
            .iot_certificate
            .as_ref()
            .map(|s| iot_certificate(s, stream))
            .transpose()?;
        // AWS's element's default file, named but absent, is no choice of a file: the AWS
        // chain looks further, as when it is not set.
        let credential_path = self.credential_path.clone().filter(|p| {
            p != credentials::OFFICIAL_DEFAULT_FILE || std::path::Path::new(p).exists()
        });
        Ok(credentials::Sources {
            keys,
            credential_path: credential_path.map(Into::into),
            iot,
            location: self.location(),
            ca_file: self.ca_file().map(Into::into),
        })
    }

    /// `ca-file`, else `KVSSINK_CA_CERT_PATH`.
    pub fn ca_file(&self) -> Option<String> {
        self.ca_file
            .clone()
            .or_else(|| non_empty_env("KVSSINK_CA_CERT_PATH"))
    }

    /// Applies a write to one of the shared properties; `false` if `pspec` is not one.
    pub fn set(&mut self, value: &glib::Value, pspec: &glib::ParamSpec) -> bool {
        let string = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match pspec.name() {
            "aws-region" => self.aws_region = string(),
            "access-key" => self.access_key = string().map(Secret),
            "secret-key" => self.secret_key = string().map(Secret),
            "session-token" => self.session_token = string().map(Secret),
            "profile" => self.profile = string(),
            "credential-path" => self.credential_path = string(),
            "iot-certificate" => self.iot_certificate = value.get().expect("structure"),
            "use-fips" => self.use_fips = value.get().expect("bool"),
            "use-dual-stack" => self.use_dual_stack = value.get().expect("bool"),
            "control-plane-uri" => self.control_plane_uri = string(),
            "ca-file" => self.ca_file = string(),
            _ => return false,
        }
        true
    }

    /// Reads one of the shared properties (secrets read back as `<redacted>` when set);
    /// `None` if `pspec` is not one.
    pub fn get(&self, pspec: &glib::ParamSpec) -> Option<glib::Value> {
        let redacted = |s: &Option<Secret>| s.as_ref().map(|_| REDACTED).to_value();
        Some(match pspec.name() {
            "aws-region" => self.aws_region.to_value(),
            "access-key" => redacted(&self.access_key),
            "secret-key" => redacted(&self.secret_key),
            "session-token" => redacted(&self.session_token),
            "profile" => self.profile.to_value(),
            "credential-path" => self.credential_path.to_value(),
            "iot-certificate" => self.iot_certificate.to_value(),
            "use-fips" => self.use_fips.to_value(),
            "use-dual-stack" => self.use_dual_stack.to_value(),
            // A user name and password in the URL (a proxy's, a gateway's) read back redacted.
            "control-plane-uri" => self
                .control_plane_uri
                .as_deref()
                .map(|u| crate::endpoint::without_userinfo(u).into_owned())
                .to_value(),
            "ca-file" => self.ca_file.to_value(),
            _ => return None,
        })
    }
}

/// `aws-region` and the credential properties, in the order gst-inspect-1.0 shows them.
pub fn credential_properties() -> Vec<glib::ParamSpec> {
    vec![
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
    ]
}

/// `control-plane-uri`, `use-fips` and `use-dual-stack`.
pub fn endpoint_properties() -> Vec<glib::ParamSpec> {
    vec![
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
    ]
}

/// Time properties in "ms since the epoch" (`file-start-time`, kvssrc's `start-timestamp` and
/// `end-timestamp`) also take seconds, as applications often have them (`time.time()`): values
/// below this are seconds (10^11 s is in the year 5138; 10^11 ms is 1973).
const EPOCH_MS_FROM: u64 = 100_000_000_000;

/// A time property's value in ms since the epoch, whether it was given in seconds or ms.
pub fn epoch_ms(value: u64) -> u64 {
    if value >= EPOCH_MS_FROM {
        value
    } else {
        value.saturating_mul(1000)
    }
}

/// `ca-file`.
pub fn ca_file_properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("ca-file")
            .nick("CA file")
            .blurb(
                "Extra CA certificates to trust (else KVSSINK_CA_CERT_PATH): a PEM file, or a \
                 directory of PEM files such as /etc/ssl/certs (one without certificates is an \
                 error at start), for every HTTPS call: control plane, PutMedia, GetMedia, STS, \
                 AWS IoT credentials; TLS is always verified",
            )
            .mutable_ready()
            .build(),
    ]
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

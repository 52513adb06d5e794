//! Where kvssink's AWS credentials come from, and keeping them fresh. GStreamer-free.
//!
//! Explicit settings first, each used alone when set: `iot-certificate` (AWS IoT credentials
//! provider), the `access-key`/`secret-key` properties, `credential-path` (the official
//! element's file). Otherwise the standard AWS chain, in the AWS CLI's order, with
//! [`aws_config`]'s providers: the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`; skipped when the `profile` property is set, as `aws --profile` does),
//! the shared config and credentials files (`profile`, else `AWS_PROFILE`, else `default`; static
//! keys, `role_arn` with `source_profile`, `credential_process`, `web_identity_token_file`),
//! web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, e.g. EKS), ECS/EKS container
//! credentials (`AWS_CONTAINER_CREDENTIALS_*`), then EC2 instance metadata (IMDSv2).
//!
//! Temporary credentials are kept until [`refresh_margin`] before they expire and then asked
//! for again; the uploader asks before every session and ends a session before the credentials
//! it was signed with expire, so a running stream moves to new credentials without a gap.

mod cache;
pub mod file;
pub mod http;
pub mod iot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};
use aws_types::region::Region;

pub use cache::Refreshing;
pub use file::FileProvider;
pub use iot::{IotCertificate, IotProvider};

use crate::endpoint::{self, Location};

/// What stands for a secret wherever one would show: a secret property read back, a session
/// token in the service's messages.
pub const REDACTED: &str = "<redacted>";

/// Access keys the service refused lately (an expired or revoked session token, or a key the
/// service does not know), most recent last: a cache holding one asks its source again instead
/// of handing it out until the expiry it believes in.
static REFUSED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// How many refused access keys are remembered.
const REFUSED_KEPT: usize = 16;

/// Records that the service refused `credentials`: every cache in the process that holds them
/// gets new ones from its source at the next request (the service's word is final; the
/// expiry the source gave, or this machine's clock, may be wrong).
pub fn refused(credentials: &Credentials) {
    let key = credentials.access_key_id();
    let mut refused = REFUSED.lock().unwrap_or_else(|e| e.into_inner());
    if !refused.iter().any(|k| k == key) {
        if refused.len() == REFUSED_KEPT {
            refused.remove(0);
        }
        refused.push(key.to_owned());
    }
}

/// Whether the service refused the access key `key` (see [`refused`]).
pub fn was_refused(key: &str) -> bool {
    REFUSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|k| k == key)
}

/// Longest margin before expiry at which temporary credentials are renewed.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// How long before their expiry credentials that lived `lifetime` are renewed: a quarter of
/// their life, at most [`MAX_REFRESH_MARGIN`] (long enough for a fragment boundary, at which a
/// session can end, and for fetching new ones).
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(MAX_REFRESH_MARGIN)
}

/// How long a session signed with `credentials` may last: until [`refresh_margin`] before
/// they expire (at least a second), or `None` for credentials that do not expire.
pub fn usable_for(credentials: &Credentials, now: std::time::SystemTime) -> Option<Duration> {
    let left = credentials
        .expiry()?
        .duration_since(now)
        .unwrap_or_default();
    Some(
        left.saturating_sub(refresh_margin(left))
            .max(Duration::from_secs(1)),
    )
}

/// Which source gave a set of credentials, attached to them ([`Credentials::set_property`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source(pub &'static str);

/// The source `credentials` came from, as attached by the providers of this module.
pub fn source_of(credentials: &Credentials) -> &'static str {
    credentials
        .get_property::<Source>()
        .map_or("a custom provider", |s| s.0)
}

/// A part of a set of credentials, for advice on where it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    AccessKey,
    SecretKey,
    SessionToken,
}

/// Where `part` of credentials from `source` ([`source_of`]) is set, to name in advice.
pub fn setting_of(source: &str, part: Part) -> String {
    let (property, variable, profile_key) = match part {
        Part::AccessKey => ("access-key", "AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        Part::SecretKey => (
            "secret-key",
            "AWS_SECRET_ACCESS_KEY",
            "aws_secret_access_key",
        ),
        Part::SessionToken => ("session-token", "AWS_SESSION_TOKEN", "aws_session_token"),
    };
    match source {
        KEY_PROPERTIES => format!("the {property} property"),
        ENVIRONMENT => variable.to_owned(),
        SHARED_FILES => format!("{profile_key} of the profile in the shared credentials file"),
        file::SOURCE => "the credential-path file".to_owned(),
        other => format!("what {other} gives"),
    }
}

/// The `credential-path` default of AWS's element (relative to the working directory).
pub const OFFICIAL_DEFAULT_FILE: &str = ".kvs/credential";

/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, when the first two
/// are set.
fn environment_keys() -> Option<Credentials> {
    let env = crate::aws_settings::non_empty_env;
    Some(from_source(
        Credentials::new(
            env("AWS_ACCESS_KEY_ID")?,
            env("AWS_SECRET_ACCESS_KEY")?,
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        ),
        ENVIRONMENT,
    ))
}

const KEY_PROPERTIES: &str = "the access-key/secret-key properties";
const ENVIRONMENT: &str = "the environment";
const SHARED_FILES: &str = "the shared config and credentials files";

/// `credentials` marked as coming from `source`.
pub fn from_source(mut credentials: Credentials, source: &'static str) -> Credentials {
    credentials.set_property(Source(source));
    credentials
}

/// The credential settings of one kvssink.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `access-key`, `secret-key` and `session-token` (Debug hides the secrets).
    pub keys: Option<Credentials>,
    /// `credential-path`.
    pub credential_path: Option<PathBuf>,
    /// `iot-certificate`.
    pub iot: Option<IotCertificate>,
    /// Region and profile settings (the profile chooses credentials; STS calls need a region).
    pub location: Location,
    /// `ca-file`: extra CA certificates for every HTTPS call.
    pub ca_file: Option<PathBuf>,
}

/// A provider for `sources`, and warnings about settings that are ignored. Fails when a
/// setting cannot work (unreadable IoT certificate, bad CA file).
pub fn provider(sources: &Sources) -> Result<(SharedCredentialsProvider, Vec<String>), String> {
    let mut ignored = Vec::new();
    let mut explicit = Vec::new();
    if sources.iot.is_some() {
        explicit.push("iot-certificate");
    }
    if sources.keys.is_some() {
        explicit.push("access-key/secret-key");
    }
    if sources.credential_path.is_some() {
        explicit.push("credential-path");
    }
    if explicit.len() > 1 {
        ignored.push(format!(
            "{} set: {} ignored",
            explicit[0],
            explicit[1..].join(" and ")
        ));
    }
    let ca_file = sources.ca_file.as_deref();
    let provider = if let Some(iot) = &sources.iot {
        let iot = IotProvider::new(iot, ca_file).map_err(|e| format!("iot-certificate: {e}"))?;
        SharedCredentialsProvider::new(Refreshing::new(SharedCredentialsProvider::new(iot)))
    } else if let Some(keys) = &sources.keys {
        SharedCredentialsProvider::new(from_source(keys.clone(), KEY_PROPERTIES))
    } else if let Some(path) = &sources.credential_path {
        match environment_keys().filter(|_| sources.location.profile.is_none()) {
            // As AWS's element: keys in the environment come before its credentials file.
            Some(keys) => {
                ignored.push(format!(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set in the environment: \
                     they are used and credential-path {} is ignored, as AWS's kvssink does",
                    path.display()
                ));
                SharedCredentialsProvider::new(keys)
            }
            None => SharedCredentialsProvider::new(FileProvider::new(path)),
        }
    } else {
        let http = http::ReqwestHttpClient::new(ca_file)?;
        SharedCredentialsProvider::new(Refreshing::new(SharedCredentialsProvider::new(
            DefaultChain {
                location: sources.location.clone(),
                http,
                links: tokio::sync::OnceCell::new(),
            },
        )))
    };
    Ok((provider, ignored))
}

/// One source of the default chain, with what it is called in messages.
#[derive(Debug)]
struct Link {
    /// What was tried, for the error when nothing was found.
    name: String,
    /// Where credentials came from, for the log.
    source: &'static str,
    /// Having nothing is an error (a profile the user named), not a reason to go on.
    required: bool,
    provider: SharedCredentialsProvider,
}

/// The standard AWS chain, built on first use (when the region is known).
#[derive(Debug)]
struct DefaultChain {
    location: Location,
    http: http::ReqwestHttpClient,
    links: tokio::sync::OnceCell<Arc<Vec<Link>>>,
}

impl DefaultChain {
    async fn links(&self) -> Arc<Vec<Link>> {
        self.links
            .get_or_init(|| async {
                let region = endpoint::region(&self.location).await;
                let config = ProviderConfig::without_region()
                    .with_http_client(self.http.clone())
                    .with_region(Some(Region::new(region)));
                Arc::new(default_links(&config, self.location.profile.as_deref()))
            })
            .await
            .clone()
    }

    async fn get(&self) -> Result<Credentials, CredentialsError> {
        let links = self.links().await;
        let mut tried = vec![
            "the access-key/secret-key, credential-path and iot-certificate properties \
                  (not set)"
                .to_owned(),
        ];
        if self.location.profile.is_some() {
            tried.push("the environment (skipped: the profile property is set)".to_owned());
        }
        for link in links.iter() {
            match link.provider.provide_credentials().await {
                Ok(credentials) => return Ok(from_source(credentials, link.source)),
                Err(CredentialsError::CredentialsNotLoaded(context)) if !link.required => {
                    let reason =
                        std::error::Error::source(&CredentialsError::CredentialsNotLoaded(context))
                            .map(error_text)
                            .unwrap_or_else(|| "not configured".to_owned());
                    tried.push(format!("{} ({reason})", link.name));
                }
                Err(e) => {
                    return Err(CredentialsError::provider_error(format!(
                        "{}: {}",
                        link.name,
                        describe(&e)
                    )));
                }
            }
        }
        Err(CredentialsError::not_loaded(format!(
            "no AWS credentials found. Tried, in order: {}",
            tried.join("; ")
        )))
    }
}

impl ProvideCredentials for DefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

fn default_links(config: &ProviderConfig, profile: Option<&str>) -> Vec<Link> {
    use aws_config::ecs::EcsCredentialsProvider;
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::imds::credentials::ImdsCredentialsProvider;
    use aws_config::profile::ProfileFileCredentialsProvider;
    use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;

    fn link(
        source: &'static str,
        name: impl Into<String>,
        provider: impl ProvideCredentials + 'static,
    ) -> Link {
        Link {
            name: name.into(),
            source,
            required: false,
            provider: SharedCredentialsProvider::new(provider),
        }
    }

    let mut links = Vec::new();
    if profile.is_none() {
        links.push(link(
            ENVIRONMENT,
            "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
            EnvironmentVariableCredentialsProvider::new(),
        ));
    }
    let mut builder = ProfileFileCredentialsProvider::builder().configure(config);
    if let Some(name) = profile {
        builder = builder.profile_name(name);
    }
    links.push(Link {
        // A profile named by the property must have the credentials.
        required: profile.is_some(),
        ..link(
            SHARED_FILES,
            format!(
                "profile {} in the shared config and credentials files ({}, {})",
                endpoint::profile_name(profile),
                env_or("AWS_CONFIG_FILE", "~/.aws/config"),
                env_or("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
            ),
            builder.build(),
        )
    });
    links.push(link(
        "web identity",
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)",
        WebIdentityTokenCredentialsProvider::builder()
            .configure(config)
            .build(),
    ));
    links.push(link(
        "the container credentials endpoint",
        "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI)",
        EcsCredentialsProvider::builder().configure(config).build(),
    ));
    links.push(link(
        "EC2 instance metadata",
        "EC2 instance metadata (IMDSv2)",
        ImdsCredentialsProvider::builder().configure(config).build(),
    ));
    links
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// An error and its causes on one line.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    scrubbed(&text)
}

/// An error text of a library with what must never be shown taken out: aws-smithy's "failed
/// to apply endpoint `X` to request `Request { .. }`" prints the whole request, whose body
/// may hold a web identity token (a bearer credential: STS's AssumeRoleWithWebIdentity is
/// not signed); parameters that name secrets; user names and passwords in URLs.
fn scrubbed(text: &str) -> String {
    const REQUEST: &str = " to request `";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(REQUEST) {
        out.push_str(&rest[..at]);
        out.push_str(" to the request");
        let body = &rest[at + REQUEST.len()..];
        rest = body.find('`').map_or("", |end| &body[end + 1..]);
    }
    out.push_str(rest);
    for name in [
        "WebIdentityToken=",
        "SessionToken=",
        "SecretAccessKey=",
        "secretAccessKey=",
        "sessionToken=",
    ] {
        let mut from = 0;
        while let Some(i) = out[from..].find(name).map(|i| from + i + name.len()) {
            let len = out[i..]
                .find(|c: char| c.is_whitespace() || "&\"',;)`".contains(c))
                .unwrap_or(out.len() - i);
            out.replace_range(i..i + len, REDACTED);
            from = i + REDACTED.len();
        }
    }
    crate::endpoint::without_userinfo_in(&out).into_owned()
}

/// What a [`CredentialsError`] says, without the generic words the variants print.
pub fn describe(error: &CredentialsError) -> String {
    match (error, std::error::Error::source(error)) {
        (CredentialsError::ProviderTimedOut(_), _) | (_, None) => error.to_string(),
        (_, Some(source)) => error_text(source),
    }
}

/// Whether the error says that no source had any credentials (rather than one failing).
pub fn is_not_found(error: &CredentialsError) -> bool {
    matches!(error, CredentialsError::CredentialsNotLoaded(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn library_errors_are_scrubbed_of_requests_secrets_and_passwords() {
        // aws-smithy, given an STS endpoint that does not parse, prints the request.
        let text = scrubbed(
            "failed to apply endpoint `sts.example` to request `Request { body: SdkBody { \
             inner: Once(Some(b\"Action=AssumeRoleWithWebIdentity&WebIdentityToken=eyJ.SECRETJWT.sig\")) } }`: \
             invalid URL",
        );
        assert!(!text.contains("SECRETJWT"), "{text}");
        assert_eq!(
            text,
            "failed to apply endpoint `sts.example` to the request: invalid URL"
        );
        let text = scrubbed("answer: WebIdentityToken=eyJ.SECRETJWT.sig&RoleArn=x");
        assert_eq!(text, "answer: WebIdentityToken=<redacted>&RoleArn=x");
        let text = scrubbed(
            "invalid full URI for ECS provider (URI did not refer to an allowed IP address): \
             http://u:PrOxYpAsS@192.0.2.1/creds",
        );
        assert!(!text.contains("PrOxYpAsS"), "{text}");
        assert!(
            text.ends_with("http://<redacted>@192.0.2.1/creds"),
            "{text}"
        );
    }

    #[test]
    fn margins() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            MAX_REFRESH_MARGIN
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
        let now = SystemTime::now();
        let c = Credentials::new("a", "b", None, Some(now + Duration::from_secs(3600)), "t");
        assert_eq!(usable_for(&c, now), Some(Duration::from_secs(3540)));
        let c = Credentials::new("a", "b", None, Some(now + Duration::from_secs(8)), "t");
        assert_eq!(usable_for(&c, now), Some(Duration::from_secs(6)));
        let c = Credentials::new("a", "b", None, None, "t");
        assert_eq!(usable_for(&c, now), None);
    }

    #[test]
    fn explicit_sources_win_and_the_others_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources {
            keys: Some(Credentials::new("AK", "SK", None, None, "properties")),
            credential_path: Some(dir.path().join("credential")),
            ..Sources::default()
        };
        let (_, ignored) = provider(&sources).unwrap();
        assert_eq!(
            ignored,
            ["access-key/secret-key set: credential-path ignored"]
        );
    }
}

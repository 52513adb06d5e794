//! The driver task: control plane, then PutMedia connections one after another, with
//! exponential backoff and jitter between failed attempts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use rand::Rng;
use url::Url;

use super::connection::{self, End, Failure};
use super::{ConnectionState, Event, FatalError, Shared};
use crate::about;
use crate::control::{ApiError, ControlPlane, CreateStream};
use crate::credentials::{self, Part};

/// First pause after a failure; doubles up to `Config::max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// While the service cannot be reached at all (the network or the endpoint is down), attempts
/// start this far apart once the backoff has grown to it: a connection that is refused or
/// times out costs the service nothing, and the stream is back within this long of the
/// endpoint answering again, however long the outage lasted.
const OUTAGE_RETRY: Duration = Duration::from_secs(1);
/// How long a new stream may stay CREATING.
const CREATE_WAIT: Duration = Duration::from_secs(60);
/// At start, give up when the service was not reached within this many connection timeouts
/// (kvssink, and kvssrc before its first read).
pub(crate) const START_ATTEMPT_FACTOR: u32 = 3;
/// A connection that went stale makes the next one wait for acks twice as long, up to this
/// many times `connection-staleness`.
const STALENESS_GROWTH: u64 = 8;
/// At start, keep retrying throttled requests for this many connection timeouts.
const START_THROTTLING_FACTOR: u32 = 12;
/// Consecutive refusals of the credentials after which the stream fails.
const MAX_AUTH_FAILURES: u32 = 3;
/// A clock this far off the service's is named once the control plane has answered: it
/// dates the fragments (the service's `Date` has whole seconds, so less is not told).
const DATING_SKEW: Duration = Duration::from_secs(10);

pub(super) async fn run(shared: Arc<Shared>, credentials: SharedCredentialsProvider) {
    if let Err(error) = drive(&shared, &credentials).await {
        shared.fail(error);
    }
}

async fn drive(
    shared: &Arc<Shared>,
    provider: &SharedCredentialsProvider,
) -> Result<(), FatalError> {
    let config = &shared.config;
    let place = crate::endpoint::resolve(&config.location).await;
    shared.emit(Event::Info(format!(
        "region {} (from {}), control plane {} (from {})",
        place.region, place.region_from, place.control_plane_url, place.control_plane_from
    )));
    for note in &place.notes {
        shared.emit(Event::Warning(about(&config.stream_name, note)));
    }
    if let Some(dir) = &config.dump_dir {
        shared.emit(Event::Info(format!(
            "{}: every PutMedia body also goes to {}/{}_<session>.mkv",
            super::DUMP_DIR_ENV,
            dir.display(),
            config.stream_name
        )));
    }
    let region = place.region.as_str();
    let client = build_client(config).map_err(|message| FatalError::Setup { message })?;
    let control = ControlPlane::new(client.clone(), &place.control_plane_url, region)
        .map_err(|e| fatal(shared, &e, "the control-plane URL is invalid"))?;

    // Nothing to do until the first stream header: it names the tracks CreateStream needs.
    loop {
        let notified = shared.wake_driver.notified();
        let (header, eos) = {
            let inner = shared.lock();
            (!inner.headers.is_empty(), inner.eos)
        };
        if header {
            break;
        }
        if eos {
            shared.emit_state(ConnectionState::Finished);
            return Ok(());
        }
        notified.await;
    }

    let mut attempt = 0u32;
    let mut auth_failures = 0u32;
    let mut ever_authorised = false;
    let mut clock_told = false;
    let mut endpoint: Option<Url> = None;
    let mut last_source = None;
    let started = tokio::time::Instant::now();
    // Until a PutMedia connection has been answered, the endpoint of the step under way (the
    // control plane, then, from its first answer on, the data endpoint) is given
    // START_ATTEMPT_FACTOR connection timeouts from here to be reached.
    let mut reaching_since = started;
    // Told once per attempt: not again between the control plane and PutMedia.
    let mut told_attempt = None;
    loop {
        let attempt_started = tokio::time::Instant::now();
        let persisted_before = shared.lock().fragments_persisted();
        if told_attempt != Some(attempt) {
            told_attempt = Some(attempt);
            shared.emit_state(ConnectionState::Connecting { attempt });
        }
        let credentials = match provider.provide_credentials().await {
            Ok(credentials) => {
                describe_credentials(shared, &credentials, &mut last_source);
                credentials
            }
            Err(error) => {
                auth_failures += 1;
                if !ever_authorised || auth_failures >= MAX_AUTH_FAILURES {
                    return Err(credentials_fatal(shared, &error));
                }
                let reason = format!(
                    "cannot renew the AWS credentials: {}",
                    credentials::describe(&error)
                );
                retry(shared, &mut attempt, reason, None).await;
                continue;
            }
        };

        // The data endpoint, when this attempt is PutMedia's.
        let data_endpoint = endpoint.clone();
        let result = match &endpoint {
            Some(url) => connection::run(shared, url, region, &credentials).await,
            None => {
                // The client for the CA file as it is now (kept per file, built again when it
                // changes): a `ca-file` replaced while the stream runs is what the next attempt
                // trusts.
                let control = match build_client(config) {
                    Ok(client) => control.with_client(client),
                    Err(reason) => {
                        retry(shared, &mut attempt, reason, None).await;
                        continue;
                    }
                };
                match prepare_stream(shared, &control, &credentials).await {
                    Ok(url) => {
                        if !ever_authorised {
                            reaching_since = tokio::time::Instant::now();
                        }
                        ever_authorised = true;
                        endpoint = Some(url);
                        let skew = crate::sigv4::CLOCK.skew();
                        if !clock_told && skew.magnitude() >= DATING_SKEW {
                            clock_told = true;
                            shared.emit(Event::Warning(about(
                                &config.stream_name,
                                format_args!(
                                    "{skew}. Requests are signed with the service's time, but \
                                     a live stream's producer timestamps come from this \
                                     machine's clock: its fragments are dated that much {}. \
                                     Set the clock right (NTP, e.g. timedatectl set-ntp true)",
                                    if skew.0 > 0 {
                                        "earlier than they happen"
                                    } else {
                                        "later than they happen (the service refuses fragments \
                                         dated too far in the future)"
                                    }
                                ),
                            )));
                        }
                        continue;
                    }
                    Err(Unusable::Api(e)) => Err(Failure::Api(e)),
                    Err(Unusable::Missing) => {
                        return Err(FatalError::Stream {
                            message: about(
                                &config.stream_name,
                                "DescribeStream answered ResourceNotFoundException: the \
                                 stream does not exist, and allow-create-stream is false. \
                                 Create it (aws kinesisvideo create-stream) or set \
                                 allow-create-stream=true; check the stream name and region",
                            ),
                        });
                    }
                    Err(Unusable::NotActive(status)) => {
                        return Err(FatalError::Stream {
                            message: about(
                                &config.stream_name,
                                format_args!(
                                    "the stream is {status}, not ACTIVE: it cannot take \
                                     data (a stream being deleted cannot be used; one still \
                                     CREATING after {} s points at a service problem)",
                                    CREATE_WAIT.as_secs()
                                ),
                            ),
                        });
                    }
                }
            }
        };

        let unreached = matches!(&result, Err(Failure::Api(e)) if e.is_unreached());
        let reason = match result {
            Ok(End::Finished) => {
                shared.emit_state(ConnectionState::Finished);
                return Ok(());
            }
            Ok(End::Closed { acked }) => {
                ever_authorised = true;
                auth_failures = 0;
                // A close after progress (fragments persisted), or with nothing left to send
                // (an idle session ended), is the service's routine: connect again at once.
                // Acks that persisted nothing (BUFFERING) are no progress.
                let (progress, idle) = {
                    let inner = shared.lock();
                    (
                        inner.fragments_persisted() > persisted_before,
                        inner.store.backlog().fragments == 0,
                    )
                };
                if acked && (progress || idle) {
                    attempt = 0;
                    told_attempt = None;
                    if progress {
                        shared.staleness_ms.store(
                            config.connection_staleness.as_millis() as u64,
                            Ordering::Relaxed,
                        );
                    }
                    continue;
                }
                "the service closed the connection".to_owned()
            }
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Stale) => {
                // Slower acks than that: the next connection waits twice as long, up to
                // STALENESS_GROWTH times connection-staleness, until one makes progress.
                let waited = shared.staleness_ms.load(Ordering::Relaxed);
                let most = config.connection_staleness.as_millis() as u64 * STALENESS_GROWTH;
                let next = waited.saturating_mul(2).min(most).max(waited);
                shared.staleness_ms.store(next, Ordering::Relaxed);
                format!(
                    "no acknowledgement for {:?} (the next connection waits {:?})",
                    Duration::from_millis(waited),
                    Duration::from_millis(next)
                )
            }
            Err(Failure::RetriableAck(message)) => message,
            Err(Failure::Api(error)) => {
                let streamed = shared.lock().ever_connected();
                if error.is_auth() {
                    auth_failures += 1;
                    // A wrong clock: sign again with the service's time (as the AWS SDKs do).
                    if let Some(skew) = error.correct_clock()
                        && auth_failures < MAX_AUTH_FAILURES
                    {
                        let reason = format!(
                            "{error}; {skew}: signing with the service's time from now on. \
                             Set this machine's clock right (NTP)"
                        );
                        retry(shared, &mut attempt, reason, None).await;
                        continue;
                    }
                    // The service's word on these credentials is final: a source that renews
                    // them is asked for new ones at the next attempt.
                    credentials::refused(&credentials);
                    if !ever_authorised || auth_failures >= MAX_AUTH_FAILURES {
                        return Err(fatal(shared, &error, &auth_advice(&error, &credentials)));
                    }
                } else if error.is_proxy_auth() {
                    // Not sent again and again: proxies lock accounts after a few wrong
                    // passwords. Once streaming, a refusal may be the proxy's hiccup: a few
                    // more tries, as for AWS credentials.
                    auth_failures += 1;
                    if !streamed || auth_failures >= MAX_AUTH_FAILURES {
                        return Err(fatal(shared, &error, ""));
                    }
                } else if error.needs_a_change() {
                    // A certificate not trusted, a proxy that cannot be used or refuses: the
                    // same at the next attempt. Once streaming it is an outage (a certificate
                    // or a proxy's rules being changed), retried as any.
                    if !streamed {
                        return Err(fatal(shared, &error, ""));
                    }
                } else if error.is_throttling() {
                    // The service answered: the endpoint and region are right. Keep trying, for
                    // a while at start.
                    let limit = config.connection_timeout * START_THROTTLING_FACTOR;
                    if !ever_authorised && started.elapsed() >= limit {
                        return Err(fatal(
                            shared,
                            &error,
                            &format!(
                                "the service throttled every attempt for {} s since start, with \
                                 backoff: too many requests for this stream or account (other \
                                 producers or applications using it; DescribeStream and \
                                 GetDataEndpoint allow 5 calls per second per stream, PutMedia \
                                 one connection per stream). Try again later, or raise \
                                 connection-timeout to keep trying longer ({START_THROTTLING_FACTOR} \
                                 x connection-timeout at start)",
                                limit.as_secs()
                            ),
                        ));
                    }
                } else if !error.is_retriable() && error.is_foreign() {
                    let advice = ApiError::foreign_advice(
                        &place.control_plane_url,
                        &place.control_plane_from,
                    );
                    return Err(fatal(shared, &error, &advice));
                } else if !error.is_retriable() {
                    let advice = match error.kind() {
                        // The service names the member it refused (CreateStream's
                        // parameters come from the properties).
                        Some("InvalidArgumentException") => {
                            "check the stream's settings: stream-name, retention-period, \
                             kms-key-id, content-type, stream-tags"
                        }
                        _ => "check the stream name and region",
                    };
                    return Err(fatal(shared, &error, advice));
                } else if error.is_unreached()
                    && !streamed
                    && reaching_since.elapsed() >= config.connection_timeout * START_ATTEMPT_FACTOR
                {
                    // Never reached since start: most likely a wrong endpoint, or a network
                    // (or proxy) that does not lead to it.
                    let called = data_endpoint.as_ref().unwrap_or(control.base());
                    let since = reaching_since.elapsed();
                    let advice = unreached_advice(&error, called, data_endpoint.is_some(), since);
                    return Err(fatal(shared, &error, &advice));
                } else if !error.is_unreached()
                    && !ever_authorised
                    && started.elapsed() >= config.connection_timeout * START_ATTEMPT_FACTOR
                {
                    return Err(fatal(
                        shared,
                        &error,
                        "the service answered with errors at every attempt since start: try \
                         again later, and check aws-region and control-plane-uri",
                    ));
                }
                if matches!(
                    error.kind(),
                    Some("InvalidEndpointException" | "ResourceNotFoundException")
                ) || error.is_unreached()
                {
                    // Ask the control plane again: the stream may have moved.
                    endpoint = None;
                }
                if error.is_throttling() {
                    format!("throttled by the service, retrying with backoff: {error}")
                } else {
                    error.to_string()
                }
            }
        };

        let took = unreached.then(|| attempt_started.elapsed());
        if shared.lock().fragments_persisted() > persisted_before {
            // The connection made progress before it failed: a new incident, not one more
            // attempt of the last (its backoff starts again, and it is told again).
            attempt = 0;
            shared.staleness_ms.store(
                config.connection_staleness.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        retry(shared, &mut attempt, reason, took).await;
    }
}

/// Counts a failed attempt, says why and when the next one comes, and waits for it: the
/// usual backoff, or, when the attempt did not reach the service (it ran `unreached_took`),
/// the outage pace.
async fn retry(
    shared: &Shared,
    attempt: &mut u32,
    reason: String,
    unreached_took: Option<Duration>,
) {
    *attempt += 1;
    let attempt = *attempt;
    let delay = match unreached_took {
        Some(took) => outage_backoff(attempt, took),
        None => backoff(attempt, shared.config.max_backoff),
    };
    shared
        .lock()
        .on_attempt_failed(&reason, unreached_took.is_some());
    shared.emit_state(ConnectionState::Reconnecting {
        attempt,
        delay,
        reason,
    });
    tokio::time::sleep(delay).await;
}

/// Tells the element where new credentials came from and until when they are valid.
fn describe_credentials(
    shared: &Shared,
    credentials: &Credentials,
    last: &mut Option<(&'static str, Option<std::time::SystemTime>)>,
) {
    let source = (credentials::source_of(credentials), credentials.expiry());
    if last.as_ref() == Some(&source) {
        return;
    }
    let until = match credentials.expiry() {
        Some(expiry) => aws_smithy_types::DateTime::from(expiry)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .map(|t| format!("valid until {t}"))
            .unwrap_or_default(),
        None => "with no expiry".to_owned(),
    };
    shared.emit(Event::Info(format!(
        "AWS credentials from {}, {until}",
        source.0
    )));
    *last = Some(source);
}

fn credentials_fatal(shared: &Shared, error: &CredentialsError) -> FatalError {
    let stream = &shared.config.stream_name;
    let message = if credentials::is_not_found(error) {
        about(
            stream,
            format_args!(
                "{}. Set access-key and secret-key, credential-path or iot-certificate, export \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, configure a profile (aws \
                 configure), or run with an instance, task or pod role",
                credentials::describe(error)
            ),
        )
    } else {
        about(
            stream,
            format_args!(
                "cannot get AWS credentials from {}",
                credentials::describe(error)
            ),
        )
    };
    FatalError::Auth {
        message,
        kind: None,
    }
}

/// Why the stream cannot take data, as the control plane tells.
enum Unusable {
    Api(ApiError),
    /// It does not exist and allow-create-stream is false.
    Missing,
    /// It is in this status, not ACTIVE.
    NotActive(String),
}

impl From<ApiError> for Unusable {
    fn from(error: ApiError) -> Self {
        Unusable::Api(error)
    }
}

/// DescribeStream, CreateStream when allowed, TagStream, GetDataEndpoint(PUT_MEDIA).
async fn prepare_stream(
    shared: &Arc<Shared>,
    control: &ControlPlane,
    credentials: &Credentials,
) -> Result<Url, Unusable> {
    let config = &shared.config;
    let timeout = config.connection_timeout;
    let stream = config.stream_name.as_str();
    let mut info = control
        .describe_stream(credentials, stream, timeout)
        .await?;
    if info.is_none() {
        if !config.allow_create_stream {
            return Err(Unusable::Missing);
        }
        let media_type = config.media_type.clone().unwrap_or_else(|| {
            let inner = shared.lock();
            inner
                .headers
                .front()
                .map(|h| h.media_type.clone())
                .unwrap_or_default()
        });
        let params = CreateStream {
            stream_name: stream,
            data_retention_in_hours: config.retention_hours,
            media_type: Some(&media_type),
            device_name: Some("kvssink"),
            kms_key_id: config.kms_key_id.as_deref(),
            tags: config.stream_tags.clone(),
        };
        match control.create_stream(credentials, &params, timeout).await {
            Ok(_) => {}
            // Another producer created it meanwhile.
            Err(e) if e.kind() == Some("ResourceInUseException") => {}
            Err(e) => return Err(e.into()),
        }
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            info = control
                .describe_stream(credentials, stream, timeout)
                .await?;
            let status = info.as_ref().and_then(|i| i.status.as_deref());
            if status == Some("ACTIVE") || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else if !config.stream_tags.is_empty() {
        control
            .tag_stream(credentials, stream, &config.stream_tags, timeout)
            .await?;
    }
    if let Some(status) = info.as_ref().and_then(|i| i.status.as_deref())
        && status != "ACTIVE"
        && status != "UPDATING"
    {
        return Err(Unusable::NotActive(status.to_owned()));
    }
    Ok(control
        .get_data_endpoint(credentials, stream, "PUT_MEDIA", timeout)
        .await?)
}

fn build_client(config: &super::Config) -> Result<reqwest::Client, String> {
    crate::control::http_client(&crate::control::ClientOptions {
        connect_timeout: config.connection_timeout,
        // reqwest gives up on a connection whose sent data stays unacknowledged for 30 s
        // (TCP_USER_TIMEOUT); a slow link is the element's to judge, by connection-staleness.
        tcp_user_timeout: config.connection_staleness,
        user_agent: &config.user_agent,
        ca_file: config.ca_file.as_deref(),
    })
}

/// What to do about credentials the service refused. AWS answers `UnrecognizedClientException`
/// "The security token included in the request is invalid" both for an unknown access key and
/// for a bad session token: which one it is follows from whether a token was sent, and from
/// the key's kind (`AKIA`: long-term, `ASIA`: temporary, from STS).
pub(crate) fn auth_advice(error: &ApiError, credentials: &Credentials) -> String {
    let source = credentials::source_of(credentials);
    let token_sent = credentials.session_token().is_some();
    let temporary_key = credentials.access_key_id().starts_with("ASIA");
    let long_term_key = credentials.access_key_id().starts_with("AKIA");
    if error.is_clock_skew() {
        return format!(
            "{}: set this machine's clock right (NTP, e.g. timedatectl set-ntp true). kvssink \
             signs with the service's time once it has measured it, yet the service still \
             refused the signature; if the clock is right, check the secret key (from {source})",
            crate::sigv4::CLOCK.skew()
        );
    }
    let at = |part| credentials::setting_of(source, part);
    match error.kind() {
        Some("UnrecognizedClientException") if token_sent && long_term_key => format!(
            "the session token is invalid: a session token was sent with a long-term access \
             key (AKIA...), which takes none. Remove it from {} (the credentials came from \
             {source})",
            at(Part::SessionToken)
        ),
        Some("UnrecognizedClientException") if token_sent => format!(
            "the session token is invalid (AWS gives this answer for an unknown key too, but a \
             token was sent): it is wrong, truncated, revoked or belongs to other temporary \
             credentials. Check {} (the credentials came from {source}); an expired token is \
             reported as ExpiredTokenException",
            at(Part::SessionToken)
        ),
        Some("UnrecognizedClientException") if temporary_key => format!(
            "the access key is temporary (ASIA...) but no session token was sent with it: set \
             {} as well (the credentials came from {source})",
            at(Part::SessionToken)
        ),
        Some("UnrecognizedClientException") => format!(
            "the access key is not known to AWS (no session token was sent, so it is the key): \
             check {} (the credentials came from {source})",
            at(Part::AccessKey)
        ),
        Some("InvalidSignatureException" | "SignatureDoesNotMatch")
            if error.to_string().contains("scoped to a valid region") =>
        {
            "the request was signed for another region than the endpoint's: check aws-region \
             (or AWS_REGION, or the profile's region) and control-plane-uri"
                .to_owned()
        }
        Some("InvalidSignatureException" | "SignatureDoesNotMatch") => format!(
            "the signature does not match: usually a wrong secret key; check {} (the \
             credentials came from {source})",
            at(Part::SecretKey)
        ),
        Some("ExpiredTokenException") => format!(
            "the credentials have expired (their session token is past its expiry; they came \
             from {source}): kvssink renews only credentials from a source that refreshes them (a profile with a role, \
             instance, task or pod roles, web identity, credential-path, iot-certificate), not \
             fixed keys; also check the clock"
        ),
        _ => "check the credentials and the IAM policy (kinesisvideo:PutMedia, DescribeStream, \
              GetDataEndpoint, CreateStream, TagStream)"
            .to_owned(),
    }
}

/// What to check when `called` (the data endpoint, or the control plane) was not reached
/// since start, `for_how_long`, the last time for `error`.
fn unreached_advice(
    error: &ApiError,
    called: &Url,
    data_endpoint: bool,
    for_how_long: Duration,
) -> String {
    if let ApiError::Proxy(e) = error
        && e.problem == crate::control::ProxyProblem::Unreachable
    {
        return format!(
            "not reached in {} s: check that the proxy runs and that {} names it right (or let \
             the endpoint's host go around it in no_proxy)",
            for_how_long.as_secs(),
            e.proxy.from
        );
    }
    let mut advice = if data_endpoint {
        format!(
            "the control plane answered, but the data endpoint it named (GetDataEndpoint), {}, \
             was not reached in {} s: check the network between here and it (DNS, firewall)",
            called.origin().ascii_serialization(),
            for_how_long.as_secs()
        )
    } else {
        "check the network, aws-region and control-plane-uri".to_owned()
    };
    if let Some(proxy) = crate::endpoint::proxy_for(called) {
        advice.push_str(&format!(
            ", and {proxy}, which the requests go through (or let the endpoint's host go \
             around it in no_proxy)"
        ));
    }
    advice
}

/// The element's error for `error`, with `advice` (none when the error says it).
fn fatal(shared: &Shared, error: &ApiError, advice: &str) -> FatalError {
    let message = if advice.is_empty() {
        about(&shared.config.stream_name, error)
    } else {
        about(
            &shared.config.stream_name,
            format_args!("{error}; {advice}"),
        )
    };
    let kind = error.kind().map(str::to_owned);
    if error.is_auth() {
        FatalError::Auth { message, kind }
    } else {
        FatalError::Service { message, kind }
    }
}

/// `BASE * 2^(attempt-1)`.
fn nominal_backoff(attempt: u32) -> Duration {
    BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
}

/// Exponential backoff with jitter: between half and all of `BASE * 2^(attempt-1)`, capped.
pub(crate) fn backoff(attempt: u32, max: Duration) -> Duration {
    let capped = nominal_backoff(attempt).min(max);
    let jitter = rand::rng().random_range(0.5..=1.0);
    capped.mul_f64(jitter)
}

/// The pause after an attempt that did not reach the service (`took` is how long that attempt
/// ran): the usual backoff at first, then attempts that start [`OUTAGE_RETRY`] apart, so that
/// there is never more than one a second and the first after the endpoint is back comes
/// within about a second.
fn outage_backoff(attempt: u32, took: Duration) -> Duration {
    if nominal_backoff(attempt) < OUTAGE_RETRY {
        backoff(attempt, OUTAGE_RETRY)
    } else {
        OUTAGE_RETRY.saturating_sub(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(10);
        for attempt in 1..30 {
            let d = backoff(attempt, max);
            assert!(d <= max, "{attempt}: {d:?}");
            let nominal = BASE_BACKOFF
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(max);
            assert!(d >= nominal / 2, "{attempt}: {d:?}");
        }
        assert!(backoff(1, max) <= BASE_BACKOFF);
        assert!(backoff(8, max) >= Duration::from_secs(5));
    }

    #[test]
    fn an_unreachable_service_is_tried_once_a_second_however_long_it_is_down() {
        // Attempts start a second apart: the time an attempt took is part of the second.
        for attempt in 3..40 {
            assert_eq!(outage_backoff(attempt, Duration::ZERO), OUTAGE_RETRY);
            assert_eq!(
                outage_backoff(attempt, Duration::from_millis(300)),
                Duration::from_millis(700)
            );
            assert_eq!(
                outage_backoff(attempt, Duration::from_secs(5)),
                Duration::ZERO
            );
        }
        // The first retries come sooner, as for any failure.
        assert!(outage_backoff(1, Duration::ZERO) <= BASE_BACKOFF);
        assert!(outage_backoff(2, Duration::ZERO) <= 2 * BASE_BACKOFF);
    }
}

//! GetMedia reader: follows a stream from a start selector, reconnecting with the last
//! continuation token so that no fragment is lost or repeated. GStreamer-free.
//!
//! The reader runs on the shared runtime and hands out [`Event`]s on a bounded channel: whole
//! fragments (see [`fragments`]) in order, connection news, and at most one end (a bounded
//! read finished) or fatal error. Backpressure is the channel's: a reader whose consumer is
//! slow stops reading the response, and TCP slows the service down.

pub mod fragments;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use tokio::sync::mpsc;
use url::Url;

use crate::about;
use crate::control::{self, ApiError, ControlPlane};
use crate::credentials;
use crate::sigv4::{self, Payload};
pub use fragments::{Fragment, FragmentTags, SplitError, Splitter};

/// Where reading starts (GetMedia's `StartSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The next fragment to arrive.
    Now,
    /// The oldest fragment kept.
    Earliest,
    /// The first fragment whose producer timestamp (ms since the epoch) is at or after this.
    ProducerTimestamp(u64),
    /// The first fragment whose server timestamp (ms since the epoch) is at or after this.
    ServerTimestamp(u64),
    /// The fragment after the one with this number.
    AfterFragmentNumber(String),
    /// Where an earlier GetMedia left off.
    ContinuationToken(String),
}

impl Start {
    /// The `StartSelector` JSON object.
    pub fn selector(&self) -> serde_json::Value {
        use serde_json::json;
        let seconds = |ms: &u64| *ms as f64 / 1000.0;
        match self {
            Start::Now => json!({"StartSelectorType": "NOW"}),
            Start::Earliest => json!({"StartSelectorType": "EARLIEST"}),
            Start::ProducerTimestamp(ms) => {
                json!({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": seconds(ms)})
            }
            Start::ServerTimestamp(ms) => {
                json!({"StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": seconds(ms)})
            }
            Start::AfterFragmentNumber(n) => {
                json!({"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": n})
            }
            Start::ContinuationToken(t) => {
                json!({"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": t})
            }
        }
    }
}

/// What a reader needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub stream_name: String,
    pub location: crate::endpoint::Location,
    pub start: Start,
    /// Bounded read: stop before the first fragment whose producer timestamp (ms since the
    /// epoch) is after this; also stop when the service has nothing more and this is past.
    pub end_ms: Option<u64>,
    pub user_agent: String,
    pub connection_timeout: Duration,
    /// Longest pause between reconnection attempts.
    pub max_backoff: Duration,
    pub ca_file: Option<std::path::PathBuf>,
}

/// What a reader tells its consumer.
#[derive(Debug)]
pub enum Event {
    /// Diagnostics (region, endpoint, credentials source).
    Info(String),
    /// Connected to GetMedia at this URL.
    Connected(String),
    /// A whole fragment, in stream order.
    Fragment(Box<Fragment>),
    /// The connection ended or failed; the next attempt comes after `delay`.
    Reconnecting {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// A bounded read is complete: nothing more will come.
    End,
    /// Reading cannot go on.
    Fatal(Fatal),
}

/// Why reading stopped for good.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    pub message: String,
    /// The service's error name, if the service refused.
    pub kind: Option<String>,
    /// Whether the credentials were refused or could not be had.
    pub auth: bool,
}

/// Starts a reader on `runtime`; it stops when `events` is dropped.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    config: Config,
    provider: SharedCredentialsProvider,
    events: mpsc::Sender<Event>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let mut reader = Reader {
            config,
            provider,
            events,
        };
        match reader.run().await {
            Ok(()) => {}
            Err(Stop::Fatal(fatal)) => {
                let _ = reader.events.send(Event::Fatal(fatal)).await;
            }
            Err(Stop::Closed) => {}
        }
    })
}

enum Stop {
    Fatal(Fatal),
    /// The consumer went away.
    Closed,
}

/// How one GetMedia connection ended.
enum Ended {
    /// The service ended the response (it does after a while, or when it has nothing more).
    Clean,
    /// The bounded read is complete.
    Done,
    Failed(String),
}

/// Consecutive refusals of the credentials after which reading fails.
const MAX_AUTH_FAILURES: u32 = 3;

struct Reader {
    config: Config,
    provider: SharedCredentialsProvider,
    events: mpsc::Sender<Event>,
}

impl Reader {
    async fn send(&self, event: Event) -> Result<(), Stop> {
        self.events.send(event).await.map_err(|_| Stop::Closed)
    }

    fn fatal(&self, what: impl std::fmt::Display, kind: Option<&str>, auth: bool) -> Stop {
        Stop::Fatal(Fatal {
            message: about(&self.config.stream_name, what),
            kind: kind.map(str::to_owned),
            auth,
        })
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let place = crate::endpoint::resolve(&self.config.location).await;
        self.send(Event::Info(format!(
            "region {} (from {}), control plane {} (from {})",
            place.region, place.region_from, place.control_plane_url, place.control_plane_from
        )))
        .await?;
        let region = place.region.clone();
        let client_options = control::ClientOptions {
            connect_timeout: self.config.connection_timeout,
            tcp_user_timeout: self.config.connection_timeout.max(Duration::from_secs(30)),
            user_agent: &self.config.user_agent,
            ca_file: self.config.ca_file.as_deref(),
        };
        let client =
            control::http_client(&client_options).map_err(|e| self.fatal(e, None, false))?;
        let control =
            ControlPlane::new(client, &place.control_plane_url, &region).map_err(|e| {
                self.fatal(
                    format_args!("the control-plane URL is invalid: {e}"),
                    None,
                    false,
                )
            })?;

        let mut start = self.config.start.clone();
        let mut endpoint: Option<Url> = None;
        let mut attempt = 0u32;
        let mut auth_failures = 0u32;
        let mut ever_authorised = false;
        // Until the first read begins: a reader that never reaches the service gives up.
        let mut unreached = Some(std::time::Instant::now());
        loop {
            // The client for the CA file as it is now (kept per file, built again when it
            // changes): a `ca-file` replaced while reading is what the next attempt trusts.
            let (client, control) = match control::http_client(&client_options) {
                Ok(client) => (client.clone(), control.with_client(client)),
                Err(reason) => {
                    self.retry(&mut attempt, unreached, reason).await?;
                    continue;
                }
            };
            let credentials = match self.provider.provide_credentials().await {
                Ok(c) => c,
                Err(e) => {
                    auth_failures += 1;
                    if !ever_authorised || auth_failures >= MAX_AUTH_FAILURES {
                        return Err(self.fatal(
                            format_args!(
                                "cannot get AWS credentials: {}. Set access-key and \
                                 secret-key, credential-path or iot-certificate, or the \
                                 standard AWS environment or profile",
                                credentials::describe(&e)
                            ),
                            None,
                            true,
                        ));
                    }
                    let reason = format!(
                        "cannot renew the AWS credentials: {}",
                        credentials::describe(&e)
                    );
                    self.retry(&mut attempt, unreached, reason).await?;
                    continue;
                }
            };
            let url = match &endpoint {
                Some(url) => url.clone(),
                None => match self.data_endpoint(&control, &credentials).await {
                    Ok(url) => {
                        ever_authorised = true;
                        auth_failures = 0;
                        endpoint = Some(url.clone());
                        url
                    }
                    Err(e) => {
                        if unreached.is_some() && e.needs_a_change() {
                            // Retrying cannot cure it (a certificate not trusted, a proxy).
                            return Err(self.fatal(&e, e.kind(), false));
                        }
                        self.judge(&e, &credentials, &mut auth_failures, &place)?;
                        self.retry(&mut attempt, unreached, e.to_string()).await?;
                        continue;
                    }
                },
            };
            match self
                .connect(&client, &url, &region, &credentials, &start)
                .await
            {
                Ok(response) => {
                    ever_authorised = true;
                    auth_failures = 0;
                    unreached = None;
                    self.send(Event::Connected(url.to_string())).await?;
                    match self.follow(response, &mut start, &mut attempt).await? {
                        Ended::Done => {
                            self.send(Event::End).await?;
                            return Ok(());
                        }
                        Ended::Clean => {
                            if self.config.end_ms.is_some_and(|end| end <= now_ms()) {
                                // Caught up with a stream that has nothing more before the end.
                                self.send(Event::End).await?;
                                return Ok(());
                            }
                            // The service ends long connections: carry on where it stopped.
                            attempt = 0;
                            continue;
                        }
                        Ended::Failed(reason) => {
                            self.retry(&mut attempt, unreached, reason).await?
                        }
                    }
                }
                Err(e) => {
                    if e.kind() == Some("InvalidEndpointException") {
                        endpoint = None;
                    }
                    if unreached.is_some() && e.needs_a_change() {
                        return Err(self.fatal(&e, e.kind(), false));
                    }
                    self.judge(&e, &credentials, &mut auth_failures, &place)?;
                    self.retry(&mut attempt, unreached, e.to_string()).await?;
                }
            }
        }
    }

    /// Fails for errors that trying again cannot fix.
    fn judge(
        &self,
        error: &ApiError,
        credentials: &Credentials,
        auth_failures: &mut u32,
        place: &crate::endpoint::Resolved,
    ) -> Result<(), Stop> {
        let kind = error.kind();
        if error.is_foreign() && !error.is_retriable() {
            let advice =
                ApiError::foreign_advice(&place.control_plane_url, &place.control_plane_from);
            return Err(self.fatal(format_args!("{error}; {advice}"), kind, false));
        }
        if kind == Some("ResourceNotFoundException") {
            return Err(self.fatal(
                format_args!(
                    "{error}; the stream does not exist: check the stream name and region"
                ),
                kind,
                false,
            ));
        }
        if error.is_auth() && !error.is_clock_skew() {
            *auth_failures += 1;
            crate::credentials::refused(credentials);
            if *auth_failures >= MAX_AUTH_FAILURES || !matches!(kind, Some("ExpiredTokenException"))
            {
                return Err(self.fatal(
                    format_args!(
                        "{error}; {}",
                        crate::uploader::auth_advice(error, credentials)
                    ),
                    kind,
                    true,
                ));
            }
        }
        if !error.is_retriable() && !error.is_auth() {
            return Err(self.fatal(error, kind, false));
        }
        Ok(())
    }

    /// Waits before the next attempt; fails instead once the service was never reached
    /// since `unreached` for as many `connection-timeout`s as kvssink allows at start. The
    /// wait ends by then (see [`pause`]), so that reading fails at that time, not a backoff
    /// later.
    async fn retry(
        &self,
        attempt: &mut u32,
        unreached: Option<std::time::Instant>,
        reason: String,
    ) -> Result<(), Stop> {
        let limit = self.config.connection_timeout * crate::uploader::START_ATTEMPT_FACTOR;
        let left = unreached.map(|since| limit.saturating_sub(since.elapsed()));
        if let Some(since) = unreached
            && left == Some(Duration::ZERO)
        {
            return Err(self.fatal(
                format_args!(
                    "{reason}; gave up after {} s without reaching the service: check the \
                     network, aws-region and control-plane-uri",
                    since.elapsed().as_secs()
                ),
                None,
                false,
            ));
        }
        *attempt += 1;
        let delay = pause(
            crate::uploader::backoff(*attempt, self.config.max_backoff),
            left,
        );
        self.send(Event::Reconnecting {
            attempt: *attempt,
            delay,
            reason,
        })
        .await?;
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// GetDataEndpoint(GET_MEDIA); a missing stream is the service's ResourceNotFoundException.
    async fn data_endpoint(
        &self,
        control: &ControlPlane,
        credentials: &Credentials,
    ) -> Result<Url, ApiError> {
        control
            .get_data_endpoint(
                credentials,
                &self.config.stream_name,
                "GET_MEDIA",
                self.config.connection_timeout,
            )
            .await
    }

    /// POST /getMedia; the response once its status says the body is media.
    async fn connect(
        &self,
        client: &reqwest::Client,
        endpoint: &Url,
        region: &str,
        credentials: &Credentials,
        start: &Start,
    ) -> Result<reqwest::Response, ApiError> {
        let url = endpoint
            .join("getMedia")
            .map_err(|e| ApiError::Decode(e.to_string()))?;
        let body = serde_json::to_vec(&serde_json::json!({
            "StreamName": self.config.stream_name,
            "StartSelector": start.selector(),
        }))
        .map_err(|e| ApiError::Decode(e.to_string()))?;
        let mut request = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body.clone())
            .build()
            .map_err(|e| ApiError::transport(&url, &e))?;
        sigv4::sign_request(
            &mut request,
            credentials,
            region,
            Payload::Bytes(&body),
            SystemTime::now(),
        )?;
        let answer = tokio::time::timeout(self.config.connection_timeout, client.execute(request))
            .await
            .map_err(|_| ApiError::Transport {
                url: url.to_string(),
                reason: format!(
                    "no answer in {} s",
                    self.config.connection_timeout.as_secs()
                ),
            })?
            .map_err(|e| ApiError::transport(&url, &e))?;
        let status = answer.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let error_type = answer
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = answer.bytes().await.unwrap_or_default();
        Err(
            ApiError::from_response(status, error_type.as_deref(), &bytes)
                .without_secrets_of(credentials)
                .through_proxy_of(&url),
        )
    }

    /// Reads one response to its end, handing on whole fragments and moving `start` past each.
    async fn follow(
        &self,
        mut response: reqwest::Response,
        start: &mut Start,
        attempt: &mut u32,
    ) -> Result<Ended, Stop> {
        let mut splitter = Splitter::new();
        loop {
            let chunk: Bytes = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(Ended::Clean),
                Err(e) => return Ok(Ended::Failed(format!("GetMedia connection lost: {e}"))),
            };
            splitter.push(&chunk);
            loop {
                let fragment = match splitter.next_fragment() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Ok(Ended::Failed(e.to_string())),
                };
                let tags = &fragment.tags;
                if let Some(code) = &tags.error_code {
                    return Ok(Ended::Failed(format!(
                        "GetMedia stopped with {code} ({})",
                        tags.error_id.as_deref().unwrap_or("no ErrorId")
                    )));
                }
                if let (Some(end), Some(producer)) = (self.config.end_ms, tags.producer_ms)
                    && producer > end
                {
                    return Ok(Ended::Done);
                }
                if let Some(token) = &tags.continuation_token {
                    *start = Start::ContinuationToken(token.clone());
                } else if let Some(number) = &tags.number {
                    *start = Start::AfterFragmentNumber(number.clone());
                }
                *attempt = 0;
                if fragment.has_cluster {
                    self.send(Event::Fragment(Box::new(fragment))).await?;
                }
            }
        }
    }
}

/// The wait before the next attempt: the `backoff`, but no longer than what is `left` before
/// reading gives up, so that the last attempt comes at that time and the failure with it.
fn pause(backoff: Duration, left: Option<Duration>) -> Duration {
    left.map_or(backoff, |left| backoff.min(left))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that never reaches the service waits no longer than its deadline in all: the
    /// last wait is cut at it (kvssrc gave up after 6 s of a 3 s deadline, 14 s of 12 s).
    #[test]
    fn the_waits_of_an_unreached_service_end_at_the_deadline() {
        let max = Duration::from_secs(5);
        for limit in [1, 3, 12, 30].map(Duration::from_secs) {
            let mut waited = Duration::ZERO;
            let mut attempt = 0;
            while waited < limit {
                attempt += 1;
                let backoff = crate::uploader::backoff(attempt, max);
                let wait = pause(backoff, Some(limit - waited));
                assert!(wait <= backoff);
                waited += wait;
            }
            assert_eq!(waited, limit, "{attempt} attempts");
        }
        // Once the service was reached, the backoff as it is.
        let backoff = Duration::from_secs(4);
        assert_eq!(pause(backoff, None), backoff);
    }

    #[test]
    fn selectors_in_the_service_form() {
        assert_eq!(
            Start::ProducerTimestamp(1_700_000_000_250).selector(),
            serde_json::json!({"StartSelectorType": "PRODUCER_TIMESTAMP", "StartTimestamp": 1_700_000_000.25})
        );
        assert_eq!(
            Start::ContinuationToken("9".into()).selector(),
            serde_json::json!({"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": "9"})
        );
    }
}

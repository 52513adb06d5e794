//! Keeps temporary credentials until shortly before they expire, then asks the source again.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};

use super::{refresh_margin, was_refused};
use crate::sigv4::{CLOCK, Skew};

/// Credentials and when they were obtained, by this machine's clock.
#[derive(Debug, Clone)]
struct Cached {
    credentials: Credentials,
    fetched: SystemTime,
}

impl Cached {
    /// Whether these are due for renewal at `now` (this machine's clock), the service's clock
    /// being `skew` ahead of it: they expire within the refresh margin, or the service refused
    /// them. Credentials without expiry are never cached (their sources are cheap: re-read
    /// them).
    fn due(&self, now: SystemTime, skew: Skew) -> bool {
        if self.refused() {
            return true;
        }
        let Some(expiry) = self.credentials.expiry() else {
            return true;
        };
        // The expiry is the service's time: so are the others, the skew measured once the
        // credentials were fetched applying to when they were fetched as well.
        let lifetime = expiry
            .duration_since(skew.apply(self.fetched))
            .unwrap_or_default();
        match expiry.duration_since(skew.apply(now)) {
            Ok(left) => left <= refresh_margin(lifetime),
            Err(_) => true,
        }
    }

    /// Whether these can no longer be used at `now`: past their expiry, or refused.
    fn expired(&self, now: SystemTime, skew: Skew) -> bool {
        self.refused()
            || self
                .credentials
                .expiry()
                .is_some_and(|e| e <= skew.apply(now))
    }

    fn refused(&self) -> bool {
        was_refused(self.credentials.access_key_id())
    }
}

/// A caching layer over a source of temporary credentials: the source is asked again once
/// the credentials are within [`refresh_margin`] of their expiry, or once the service refused
/// them; if it fails then, the credentials it gave last are used for as long as they are
/// valid. Expiry is judged by the service's time once a request has measured this machine's
/// clock against it ([`CLOCK`]): the expiry comes from an AWS service, and a camera whose
/// clock is minutes behind would otherwise keep expired credentials.
#[derive(Debug)]
pub struct Refreshing {
    source: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl Refreshing {
    pub fn new(source: SharedCredentialsProvider) -> Self {
        Refreshing {
            source,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<Credentials, CredentialsError> {
        // One refresh at a time; the others wait for its result.
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = &*cached
            && !c.due(now, CLOCK.skew())
        {
            return Ok(c.credentials.clone());
        }
        match self.source.provide_credentials().await {
            Ok(credentials) => {
                *cached = Some(Cached {
                    credentials: credentials.clone(),
                    fetched: now,
                });
                Ok(credentials)
            }
            Err(e) => match &*cached {
                Some(c) if !c.expired(SystemTime::now(), CLOCK.skew()) => Ok(c.credentials.clone()),
                _ => Err(e),
            },
        }
    }
}

impl ProvideCredentials for Refreshing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// Hands out a new key pair on every call, each valid for `lifetime`.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        lifetime: Option<Duration>,
        fail_after: u32,
        /// What the access keys start with (the refused keys are remembered process-wide).
        prefix: &'static str,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n >= self.fail_after {
                return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                    "down",
                )));
            }
            let expiry = self.lifetime.map(|l| SystemTime::now() + l);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("{}{n}", self.prefix),
                "secret",
                None,
                expiry,
                "test",
            )))
        }
    }

    fn refreshing(lifetime: Option<Duration>, fail_after: u32) -> (Refreshing, Arc<AtomicU32>) {
        refreshing_keys("AK", lifetime, fail_after)
    }

    fn refreshing_keys(
        prefix: &'static str,
        lifetime: Option<Duration>,
        fail_after: u32,
    ) -> (Refreshing, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let source = Counting {
            calls: calls.clone(),
            lifetime,
            fail_after,
            prefix,
        };
        (
            Refreshing::new(SharedCredentialsProvider::new(source)),
            calls,
        )
    }

    #[tokio::test]
    async fn temporary_credentials_are_kept_until_close_to_expiry() {
        let (cache, calls) = refreshing(Some(Duration::from_secs(3600)), u32::MAX);
        let a = cache.provide_credentials().await.unwrap();
        let b = cache.provide_credentials().await.unwrap();
        assert_eq!(a.access_key_id(), b.access_key_id());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn credentials_close_to_expiry_are_renewed() {
        // Four seconds of life: renewed in the last second.
        let (cache, calls) = refreshing(Some(Duration::from_secs(4)), u32::MAX);
        let a = cache.provide_credentials().await.unwrap();
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let b = cache.provide_credentials().await.unwrap();
        assert_ne!(a.access_key_id(), b.access_key_id());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn credentials_without_expiry_are_asked_for_every_time() {
        let (cache, calls) = refreshing(None, u32::MAX);
        cache.provide_credentials().await.unwrap();
        cache.provide_credentials().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_valid_credentials_and_fails_once_they_expire() {
        let (cache, _) = refreshing(Some(Duration::from_millis(1200)), 1);
        let a = cache.provide_credentials().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Due for renewal, the source fails: the old ones are still valid.
        let b = cache.provide_credentials().await.unwrap();
        assert_eq!(a.access_key_id(), b.access_key_id());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(cache.provide_credentials().await.is_err());
    }

    #[tokio::test]
    async fn credentials_the_service_refused_are_renewed_at_once() {
        // Valid for an hour by their expiry, but the service said ExpiredTokenException (a
        // clock behind the service's, or a token revoked).
        let (cache, calls) = refreshing_keys("REFUSED", Some(Duration::from_secs(3600)), 2);
        let a = cache.provide_credentials().await.unwrap();
        crate::credentials::refused(&a);
        let b = cache.provide_credentials().await.unwrap();
        assert_ne!(a.access_key_id(), b.access_key_id());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The new ones are kept; if their source fails later, refused ones are never given.
        cache.provide_credentials().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        crate::credentials::refused(&b);
        assert!(cache.provide_credentials().await.is_err());
    }

    #[test]
    fn expiry_is_judged_by_the_services_clock() {
        // Credentials for 10 minutes by the service's time, on a machine 5 minutes behind it
        // (the skew measured after they were fetched).
        let now = SystemTime::now();
        let behind = Skew(5 * 60 * 1000);
        let c = Cached {
            credentials: Credentials::new(
                "SKEWED",
                "secret",
                None,
                Some(behind.apply(now) + Duration::from_secs(600)),
                "test",
            ),
            fetched: now,
        };
        // By this machine's clock they would have 15 minutes left.
        assert!(!c.due(now, behind) && !c.expired(now, behind));
        assert!(!c.due(now + Duration::from_secs(8 * 60 + 50), behind));
        // Due within the last minute (a quarter of 10 minutes, at most 60 s), expired after.
        assert!(c.due(now + Duration::from_secs(9 * 60 + 5), behind));
        assert!(c.expired(now + Duration::from_secs(10 * 60), behind));
        assert!(!c.expired(now + Duration::from_secs(10 * 60), Skew(0)));
    }
}

//! Keeps temporary credentials until shortly before they expire, then asks the source again.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};

use super::refresh_margin;

/// Credentials and when they were obtained.
#[derive(Debug, Clone)]
struct Cached {
    credentials: Credentials,
    fetched: SystemTime,
}

impl Cached {
    /// Whether these are due for renewal at `now`: they expire within the refresh margin.
    /// Credentials without expiry are never cached (their sources are cheap: re-read them).
    fn due(&self, now: SystemTime) -> bool {
        let Some(expiry) = self.credentials.expiry() else {
            return true;
        };
        let lifetime = expiry.duration_since(self.fetched).unwrap_or_default();
        match expiry.duration_since(now) {
            Ok(left) => left <= refresh_margin(lifetime),
            Err(_) => true,
        }
    }

    fn expired(&self, now: SystemTime) -> bool {
        self.credentials.expiry().is_some_and(|e| e <= now)
    }
}

/// A caching layer over a source of temporary credentials: the source is asked again once
/// the credentials are within [`refresh_margin`] of their expiry; if it fails then, the
/// credentials it gave last are used for as long as they are valid.
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
            && !c.due(now)
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
                Some(c) if !c.expired(SystemTime::now()) => Ok(c.credentials.clone()),
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
                format!("AK{n}"),
                "secret",
                None,
                expiry,
                "test",
            )))
        }
    }

    fn refreshing(lifetime: Option<Duration>, fail_after: u32) -> (Refreshing, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let source = Counting {
            calls: calls.clone(),
            lifetime,
            fail_after,
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
}

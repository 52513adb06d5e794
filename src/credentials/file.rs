//! `credential-path`: the credentials file of AWS's C++ kvssink (producer-c's file credential
//! provider), kept up to date by some other program.
//!
//! The file holds whitespace-separated words, either
//!
//! ```text
//! CREDENTIALS <access key id> <secret access key>
//! CREDENTIALS <access key id> <expiration> <secret access key> [<session token>]
//! ```
//!
//! with the expiration in ISO 8601 UTC (`2030-01-02T03:04:05Z`). The file is read again when
//! it changes (size or modification time) and when the credentials it held come within the
//! refresh margin of their expiry. Nothing from the file is ever put in an error message.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_smithy_types::date_time::{DateTime, Format};

use super::refresh_margin;

/// The provider name credentials from the file carry.
pub const PROVIDER_NAME: &str = "credential-path";

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug)]
struct Loaded {
    credentials: Credentials,
    stamp: Stamp,
    read_at: SystemTime,
}

/// Credentials read from a file in the official kvssink format.
#[derive(Debug)]
pub struct FileProvider {
    path: PathBuf,
    loaded: std::sync::Mutex<Option<Loaded>>,
}

impl FileProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileProvider {
            path: path.into(),
            loaded: std::sync::Mutex::new(None),
        }
    }

    fn get(&self) -> Result<Credentials, CredentialsError> {
        // The expiry in the file is the service's time (STS's): judge it by that clock once
        // a request has measured this machine's.
        let now = crate::sigv4::CLOCK.now();
        let meta = std::fs::metadata(&self.path).map_err(|e| self.error(&e.to_string()))?;
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = &*loaded
            && l.stamp == stamp
            && !due(&l.credentials, l.read_at, now)
            && !super::was_refused(l.credentials.access_key_id())
        {
            return Ok(l.credentials.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.error(&e.to_string()))?;
        let credentials = parse(&text, now).map_err(|e| self.error(e))?;
        *loaded = Some(Loaded {
            credentials: credentials.clone(),
            stamp,
            read_at: now,
        });
        Ok(credentials)
    }

    fn error(&self, reason: &str) -> CredentialsError {
        CredentialsError::provider_error(format!(
            "credential-path {}: {reason}",
            self.path.display()
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether credentials read at `read_at` should be read again at `now`.
fn due(credentials: &Credentials, read_at: SystemTime, now: SystemTime) -> bool {
    let Some(expiry) = credentials.expiry() else {
        return false;
    };
    let lifetime = expiry.duration_since(read_at).unwrap_or_default();
    expiry
        .duration_since(now)
        .map_or(true, |left| left <= refresh_margin(lifetime))
}

impl ProvideCredentials for FileProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.get())
    }
}

const FORMAT_HINT: &str = "expected `CREDENTIALS <access key id> <expiration> <secret access key> \
     [<session token>]` or `CREDENTIALS <access key id> <secret access key>`";

/// Parses the file's text. Errors never quote the text: it holds secrets.
pub fn parse(text: &str, now: SystemTime) -> Result<Credentials, &'static str> {
    let mut words = text.split_whitespace();
    if words.next() != Some("CREDENTIALS") {
        return Err(FORMAT_HINT);
    }
    let rest: Vec<&str> = words.collect();
    let (access, expiration, secret, token) = match rest.as_slice() {
        [access, secret] => (*access, None, *secret, None),
        [access, expiration, secret] => (*access, Some(*expiration), *secret, None),
        [access, expiration, secret, token] => (*access, Some(*expiration), *secret, Some(*token)),
        _ => return Err(FORMAT_HINT),
    };
    let expiry = match expiration {
        Some(text) => {
            let at = DateTime::from_str(text, Format::DateTime)
                .ok()
                .and_then(|d| SystemTime::try_from(d).ok())
                .ok_or("the expiration is not an ISO 8601 UTC time such as 2030-01-02T03:04:05Z")?;
            if at <= now {
                return Err(
                    "the credentials in the file have expired; whatever writes the file \
                     must renew them",
                );
            }
            Some(at)
        }
        None => None,
    };
    Ok(super::from_source(
        Credentials::new(
            access,
            secret,
            token.map(str::to_owned),
            expiry,
            PROVIDER_NAME,
        ),
        SOURCE,
    ))
}

/// The source [`super::source_of`] names for credentials read from `credential-path`.
pub const SOURCE: &str = "credential-path";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: u64 = 1_900_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn both_official_forms_parse() {
        let c = parse("CREDENTIALS AKIDEXAMPLE wJalrXUtnFEMI\n", now()).unwrap();
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key(), "wJalrXUtnFEMI");
        assert_eq!(c.session_token(), None);
        assert_eq!(c.expiry(), None);

        let c = parse(
            "CREDENTIALS ASIAEXAMPLE 2030-05-06T07:08:09Z wJalrXUtnFEMI IQoJb3JpZ2luX2VjEJr\n",
            now(),
        )
        .unwrap();
        assert_eq!(c.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key(), "wJalrXUtnFEMI");
        assert_eq!(c.session_token(), Some("IQoJb3JpZ2luX2VjEJr"));
        let expiry = c.expiry().unwrap();
        assert_eq!(
            expiry
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_904_281_689
        );

        // Without a session token; any whitespace separates the words.
        let c = parse("CREDENTIALS\tAKID\n2030-05-06T07:08:09Z   SECRET", now()).unwrap();
        assert_eq!(c.secret_access_key(), "SECRET");
        assert_eq!(c.session_token(), None);
    }

    #[test]
    fn bad_files_are_refused_without_quoting_them() {
        for text in [
            "",
            "CREDENTIALS",
            "CREDENTIALS onlyonesecretword",
            "TOKENS AKID SECRET",
            "CREDENTIALS AKID notadate-hunter2 SECRET TOKEN",
            "CREDENTIALS AKID 2030-05-06T07:08:09Z SECRET TOKEN extra-hunter2",
            "CREDENTIALS AKID 2000-01-01T00:00:00Z SECRET TOKEN",
        ] {
            let e = parse(text, now()).unwrap_err();
            assert!(!e.contains("hunter2") && !e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential");
        std::fs::write(&path, "CREDENTIALS AK1 S1").unwrap();
        let provider = FileProvider::new(&path);
        assert_eq!(provider.get().unwrap().access_key_id(), "AK1");
        std::fs::write(&path, "CREDENTIALS AK22 S22").unwrap();
        assert_eq!(provider.get().unwrap().access_key_id(), "AK22");
        std::fs::remove_file(&path).unwrap();
        let e = provider.get().unwrap_err();
        assert!(format!("{:?}", e).contains("credential-path"), "{e:?}");
    }
}

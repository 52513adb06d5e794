//! The HTTP client aws-config's providers (instance metadata, container, STS) use: the same
//! reqwest/rustls stack as the rest of kvssink, with the `ca-file` certificates added, so that
//! aws-config brings no second HTTP or TLS implementation.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// Builds reqwest clients for aws-config, one per connect timeout asked for, from the
/// `ca-file` as it is now (a file replaced while the process runs is trusted from the next
/// request on).
#[derive(Clone, Debug)]
pub struct ReqwestHttpClient {
    ca_file: Option<std::path::PathBuf>,
    clients: Arc<PerFileVersion<Option<Duration>, reqwest::Client>>,
}

impl ReqwestHttpClient {
    /// A client trusting the platform's roots plus the PEM certificates in `ca_file` (read
    /// here, so that a bad file is an error at start).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        if let Some(path) = ca_file {
            load_pem_roots(path)?;
        }
        Ok(ReqwestHttpClient {
            ca_file: ca_file.map(Path::to_owned),
            clients: Arc::default(),
        })
    }

    fn client(&self, connect_timeout: Option<Duration>) -> Result<reqwest::Client, String> {
        let ca_file = self.ca_file.as_deref();
        self.clients.get_or_build(connect_timeout, &[ca_file], || {
            let mut builder = reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .redirect(reqwest::redirect::Policy::none());
            if let Some(timeout) = connect_timeout {
                builder = builder.connect_timeout(timeout);
            }
            if let Some(path) = ca_file {
                for cert in load_pem_roots(path)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
            builder
                .build()
                .map_err(|e| format!("cannot set up HTTPS: {e}"))
        })
    }
}

/// Reads the CA certificates of `ca-file` (or an IoT `ca-path`): a PEM bundle, or a directory
/// of PEM files such as `/etc/ssl/certs` (as the official element accepts). In a directory,
/// every file holding PEM certificates is read (a certificate found under several names, as
/// the hash links of `c_rehash` are, counts once) and other files are skipped; a directory
/// without any certificate is an error.
pub fn load_pem_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    load_pem_roots_der(path)?
        .iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))
        })
        .collect()
}

/// A file as it is now (path, modification time, size), such as the `ca-file` or an IoT
/// certificate: what clients built from it are keyed by, so that a file replaced while the
/// process runs is read again. A directory (a `ca-file` that is one) is as it is now when
/// every file in it is: the size stands for a digest of their names, times and sizes, so that
/// a certificate rewritten in place in it (which leaves the directory's own time alone)
/// counts as a change too.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileVersion(Option<(std::path::PathBuf, Option<std::time::SystemTime>, u64)>);

impl FileVersion {
    pub fn of(path: Option<&Path>) -> Self {
        Self(path.map(|path| {
            let meta = std::fs::metadata(path).ok();
            let size = match &meta {
                Some(m) if m.is_dir() => Self::digest_of_dir(path),
                Some(m) => m.len(),
                None => 0,
            };
            (
                path.to_owned(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                size,
            )
        }))
    }

    /// The names, modification times and sizes of the files in `dir` (links followed, as
    /// [`load_pem_roots`] reads them), in one number.
    fn digest_of_dir(dir: &Path) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|entry| {
                let meta = std::fs::metadata(entry.path()).ok();
                (
                    entry.file_name(),
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map_or(0, |m| m.len()),
                )
            })
            .collect();
        files.sort();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        files.hash(&mut hasher);
        hasher.finish()
    }
}

/// Values built from files (clients from the `ca-file`, or from an IoT certificate and key),
/// one per key: the one built from the files as they are now, built again when one of them
/// changes and then replacing the old one, so that a file rewritten every hour keeps one
/// value, not one per version.
pub struct PerFileVersion<K, V> {
    values: Mutex<HashMap<K, (Vec<FileVersion>, V)>>,
}

impl<K, V> std::fmt::Debug for PerFileVersion<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerFileVersion").finish_non_exhaustive()
    }
}

impl<K: Eq + std::hash::Hash, V: Clone> Default for PerFileVersion<K, V> {
    fn default() -> Self {
        PerFileVersion {
            values: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + std::hash::Hash, V: Clone> PerFileVersion<K, V> {
    /// The value for `key` built from `files` as they are now: the kept one, or `build`'s.
    pub fn get_or_build(
        &self,
        key: K,
        files: &[Option<&Path>],
        build: impl FnOnce() -> Result<V, String>,
    ) -> Result<V, String> {
        let version: Vec<FileVersion> = files.iter().map(|f| FileVersion::of(*f)).collect();
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((built_from, value)) = values.get(&key)
            && *built_from == version
        {
            return Ok(value.clone());
        }
        let value = build()?;
        values.insert(key, (version, value.clone()));
        Ok(value)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.values.lock().unwrap().len()
    }
}

/// [`load_pem_roots`], as DER for rustls.
pub fn load_pem_roots_der(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    if path.is_dir() {
        return load_pem_dir(path);
    }
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    let blocks = pem_certificates(&pem);
    if blocks.is_empty() {
        return Err(format!(
            "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    blocks
        .iter()
        .map(|block| {
            CertificateDer::from_pem_slice(block.as_bytes())
                .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))
        })
        .collect()
}

fn load_pem_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the CA directory {}: {e}", dir.display()))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut seen = std::collections::HashSet::new();
    let mut roots = Vec::new();
    for file in files {
        // Unreadable files and files of other kinds (keys, CRLs, READMEs) are not CAs.
        let Ok(pem) = std::fs::read(&file) else {
            continue;
        };
        for block in pem_certificates(&pem) {
            if !seen.insert(block.clone()) {
                continue;
            }
            if let Ok(cert) = CertificateDer::from_pem_slice(block.as_bytes()) {
                roots.push(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "the CA directory {} holds no PEM certificate (files with -----BEGIN \
             CERTIFICATE-----)",
            dir.display()
        ));
    }
    Ok(roots)
}

/// The `CERTIFICATE` blocks of a PEM text, each normalised (line ends, surrounding space) so
/// that one certificate written twice compares equal.
fn pem_certificates(pem: &[u8]) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    let mut blocks = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.find(END) else { break };
        let base64: String = body[..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(format!("{BEGIN}\n{base64}\n{END}\n"));
        rest = &body[end + END.len()..];
    }
    blocks
}

impl HttpClient for ReqwestHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let client = self.client(settings.connect_timeout());
        let timeout = match (settings.connect_timeout(), settings.read_timeout()) {
            (Some(connect), Some(read)) => Some(connect + read),
            _ => None,
        };
        SharedHttpConnector::new(ReqwestConnector { client, timeout })
    }
}

#[derive(Debug)]
struct ReqwestConnector {
    client: Result<reqwest::Client, String>,
    /// Whole-request limit: the connect timeout plus the read timeout.
    timeout: Option<Duration>,
}

impl HttpConnector for ReqwestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let timeout = self.timeout;
        HttpConnectorFuture::new(async move {
            let client = client.map_err(|e| ConnectorError::other(e.into(), None))?;
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            let body = body.bytes().map(<[u8]>::to_vec).ok_or_else(|| {
                ConnectorError::user("streaming request bodies are not supported".into())
            })?;
            let mut builder = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body);
            if let Some(timeout) = timeout {
                builder = builder.timeout(timeout);
            }
            let response = builder.send().await.map_err(connector_error)?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(connector_error)?;
            let mut out = http::Response::new(SdkBody::from(bytes));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            HttpResponse::try_from(out).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_rewritten_in_place_in_a_ca_directory_is_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("a.pem");
        std::fs::write(&cert, "first").unwrap();
        let v1 = FileVersion::of(Some(dir.path()));
        assert_eq!(FileVersion::of(Some(dir.path())), v1);
        let dir_time = std::fs::metadata(dir.path()).unwrap().modified().unwrap();
        std::fs::write(&cert, "second, rewritten in place").unwrap();
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().modified().unwrap(),
            dir_time,
            "the directory's own time did not move"
        );
        let v2 = FileVersion::of(Some(dir.path()));
        assert_ne!(v2, v1);
        std::fs::write(dir.path().join("b.pem"), "another").unwrap();
        assert_ne!(FileVersion::of(Some(dir.path())), v2);
    }

    #[test]
    fn a_value_is_built_again_when_its_file_changes_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "first").unwrap();
        let cache: PerFileVersion<&str, String> = PerFileVersion::default();
        let builds = std::cell::Cell::new(0);
        let get = |key| {
            cache
                .get_or_build(key, &[Some(&file)], || {
                    builds.set(builds.get() + 1);
                    Ok(std::fs::read_to_string(&file).unwrap())
                })
                .unwrap()
        };
        assert_eq!(get("a"), "first");
        assert_eq!(get("a"), "first");
        assert_eq!(builds.get(), 1, "built again for the same file");
        assert_eq!(get("b"), "first");
        assert_eq!(builds.get(), 2);
        // Replaced by rename, as certificate managers do (a new size and time).
        let staged = dir.path().join("ca.pem.new");
        std::fs::write(&staged, "second version").unwrap();
        std::fs::rename(&staged, &file).unwrap();
        assert_eq!(get("a"), "second version");
        assert_eq!(get("a"), "second version");
        assert_eq!(builds.get(), 3);
        assert_eq!(cache.len(), 2, "one value per key, whatever the versions");
        // A failed build keeps nothing new and is tried again next time.
        std::fs::remove_file(&file).unwrap();
        let failed = cache.get_or_build("a", &[Some(&file)], || Err("gone".to_owned()));
        assert_eq!(failed, Err("gone".to_owned()));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_directory_of_pem_files_is_a_ca_file() {
        // Debian's /etc/ssl/certs: a bundle, one file per CA and hash links to them.
        let system = Path::new("/etc/ssl/certs");
        if system.join("ca-certificates.crt").exists() {
            let bundle = load_pem_roots(&system.join("ca-certificates.crt")).unwrap();
            let dir = load_pem_roots(system).unwrap();
            assert!(bundle.len() > 50, "{}", bundle.len());
            // Every certificate once, though each is there three times.
            assert!(
                dir.len() >= bundle.len() && dir.len() < bundle.len() + bundle.len() / 4,
                "{} in the directory, {} in the bundle",
                dir.len(),
                bundle.len()
            );
        }

        let tmp = tempfile::tempdir().unwrap();
        let empty = load_pem_roots(tmp.path()).unwrap_err();
        assert!(empty.contains("holds no PEM certificate"), "{empty}");
        std::fs::write(tmp.path().join("README"), "not a certificate").unwrap();
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        assert!(load_pem_roots(tmp.path()).is_err());
        let not_pem = load_pem_roots(&tmp.path().join("README")).unwrap_err();
        assert!(not_pem.contains("holds no PEM certificate"), "{not_pem}");
        let missing = load_pem_roots(&tmp.path().join("nope.pem")).unwrap_err();
        assert!(missing.contains("cannot read the CA file"), "{missing}");
    }

    #[test]
    fn pem_blocks_are_found_and_normalised() {
        let a =
            "junk\r\n-----BEGIN CERTIFICATE-----\r\nQUJD\r\nREVG\r\n-----END CERTIFICATE-----\r\n";
        let b = "-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n\
                 -----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n\
                 -----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----";
        let a = pem_certificates(a.as_bytes());
        let b = pem_certificates(b.as_bytes());
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 2);
        assert_eq!(a[0], b[0]);
    }
}

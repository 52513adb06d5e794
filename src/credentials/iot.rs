//! `iot-certificate`: temporary credentials from the AWS IoT credentials provider, fetched
//! over mutual TLS with the device's X.509 certificate.
//!
//! `GET https://<endpoint>/role-aliases/<role alias>/credentials` with the header
//! `x-amzn-iot-thingname: <thing name>` answers
//! `{"credentials":{"accessKeyId","secretAccessKey","sessionToken","expiration"}}`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_smithy_types::date_time::{DateTime, Format};
use serde::Deserialize;
use url::Url;

use super::http::{PerFileVersion, load_pem_roots};

/// The provider name credentials from AWS IoT carry.
pub const PROVIDER_NAME: &str = "iot-certificate";
/// Connect timeout when the structure gives none (the official element's default).
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout when the structure gives none (the official element's default).
const DEFAULT_COMPLETION_TIMEOUT: Duration = Duration::from_secs(20);

/// The fields of the `iot-certificate` structure, as in AWS's C++ kvssink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotCertificate {
    /// The account's credentials-provider host (`<prefix>.credentials.iot.<region>.amazonaws.com`)
    /// or a full `https://` URL.
    pub endpoint: String,
    /// PEM certificate of the thing (a chain may follow it).
    pub cert_path: PathBuf,
    /// PEM private key of the certificate.
    pub key_path: PathBuf,
    /// PEM CA certificate(s) the endpoint's certificate chains to (Amazon Root CA 1).
    pub ca_path: Option<PathBuf>,
    pub role_alias: String,
    /// Defaults to the stream name, as in the official element.
    pub thing_name: String,
    pub connection_timeout: Option<Duration>,
    pub completion_timeout: Option<Duration>,
}

impl IotCertificate {
    /// The credentials URL.
    pub fn url(&self) -> Result<Url, String> {
        let base = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("https://{}", self.endpoint)
        };
        let mut url = Url::parse(&base).map_err(|e| {
            format!(
                "invalid endpoint {:?}: {e}",
                crate::endpoint::without_userinfo(&self.endpoint)
            )
        })?;
        if url.scheme() != "https" {
            return Err(format!(
                "the endpoint {:?} must be https: the certificate authenticates over TLS",
                crate::endpoint::without_userinfo(&self.endpoint)
            ));
        }
        url.path_segments_mut()
            .map_err(|_| {
                format!(
                    "invalid endpoint {:?}",
                    crate::endpoint::without_userinfo(&self.endpoint)
                )
            })?
            .pop_if_empty()
            .extend(["role-aliases", self.role_alias.as_str(), "credentials"]);
        Ok(url)
    }
}

/// Fetches credentials from the AWS IoT credentials provider.
#[derive(Debug)]
pub struct IotProvider {
    cert: IotCertificate,
    /// The `ca-file` bundle, trusted beside `ca-path`.
    extra_ca: Option<PathBuf>,
    url: Url,
    /// The mutual-TLS client for the files as they are: a certificate renewed on disk (AWS
    /// IoT certificates are rotated) is presented from the next fetch on.
    client: PerFileVersion<(), reqwest::Client>,
}

impl IotProvider {
    /// Reads the certificate, key and CA files (so that mistakes show at start) and builds the
    /// mutual-TLS client; `extra_ca` is the `ca-file` bundle.
    pub fn new(cert: &IotCertificate, extra_ca: Option<&std::path::Path>) -> Result<Self, String> {
        let url = cert.url()?;
        let provider = IotProvider {
            cert: cert.clone(),
            extra_ca: extra_ca.map(PathBuf::from),
            url,
            client: PerFileVersion::default(),
        };
        provider.client()?;
        Ok(provider)
    }

    /// The client for the files as they are now, built again if one of them changed.
    fn client(&self) -> Result<reqwest::Client, String> {
        let (cert, extra_ca) = (&self.cert, self.extra_ca.as_deref());
        let files = [
            Some(cert.cert_path.as_path()),
            Some(cert.key_path.as_path()),
            cert.ca_path.as_deref(),
            extra_ca,
        ];
        self.client
            .get_or_build((), &files, || build_client(cert, extra_ca))
    }

    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let origin = self.url.origin().ascii_serialization();
        let failed = |reason: String| {
            CredentialsError::provider_error(format!(
                "the AWS IoT credentials provider {origin} (iot-certificate): {reason}"
            ))
        };
        let client = self.client().map_err(failed)?;
        let response = client
            .get(self.url.clone())
            .header("x-amzn-iot-thingname", &self.cert.thing_name)
            .send()
            .await
            .map_err(|e| failed(transport_advice(&super::error_text(&e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            #[derive(Deserialize)]
            struct Refusal {
                message: Option<String>,
            }
            let message = serde_json::from_slice::<Refusal>(&body)
                .ok()
                .and_then(|r| r.message)
                .unwrap_or_default();
            return Err(failed(format!(
                "HTTP {} {message}; check role-aliases ({}), iot-thing-name ({}) and that the \
                 certificate is attached to the thing and allowed to assume the role alias",
                status.as_u16(),
                self.url
                    .path_segments()
                    .and_then(|mut s| s.nth(1))
                    .unwrap_or_default(),
                self.cert.thing_name,
            )));
        }
        parse(&body).map_err(|e| failed(e.to_owned()))
    }
}

/// The mutual-TLS client: the certificate and key as the identity, `ca-path` and `ca-file`
/// trusted beside the platform's roots.
fn build_client(cert: &IotCertificate, extra_ca: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut identity = std::fs::read(&cert.cert_path).map_err(|e| {
        format!(
            "cannot read the certificate cert-path {}: {e}",
            cert.cert_path.display()
        )
    })?;
    let key = std::fs::read(&cert.key_path).map_err(|e| {
        format!(
            "cannot read the private key key-path {}: {e}",
            cert.key_path.display()
        )
    })?;
    identity.push(b'\n');
    identity.extend_from_slice(&key);
    let identity = reqwest::Identity::from_pem(&identity).map_err(|_| {
        format!(
            "cert-path {} and key-path {} must hold a PEM certificate and its PEM private key",
            cert.cert_path.display(),
            cert.key_path.display()
        )
    })?;
    let mut builder = reqwest::Client::builder()
        .identity(identity)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(
            cert.connection_timeout
                .unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
        )
        .timeout(
            cert.completion_timeout
                .unwrap_or(DEFAULT_COMPLETION_TIMEOUT),
        );
    for path in cert.ca_path.iter().map(PathBuf::as_path).chain(extra_ca) {
        for root in load_pem_roots(path)? {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(|e| {
        let why = crate::credentials::error_text(&e);
        // rustls checks that the key is the certificate's ("builder error: ... key").
        if why.to_ascii_lowercase().contains("key") {
            format!(
                "cannot set up mutual TLS: the private key key-path {} does not go with the \
                 certificate cert-path {} (each device's key and certificate are made \
                 together; check that both files are this device's) ({why})",
                cert.key_path.display(),
                cert.cert_path.display()
            )
        } else {
            format!("cannot set up mutual TLS: {why}")
        }
    })
}

/// What a failed connection to the credentials provider most likely means.
fn transport_advice(reason: &str) -> String {
    let advice = if reason.contains("UnknownIssuer") || reason.contains("invalid peer certificate")
    {
        "; its certificate is not trusted: set ca-path (Amazon Root CA 1) or ca-file"
    } else if reason.contains("alert") || reason.contains("handshake") {
        "; it refused the TLS handshake: check cert-path and key-path, and that the \
         certificate is registered and active in AWS IoT"
    } else {
        ""
    };
    format!("cannot connect: {reason}{advice}")
}

impl ProvideCredentials for IotProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}

/// Parses the credentials provider's answer. Errors never quote it: it holds secrets.
pub fn parse(body: &[u8]) -> Result<Credentials, &'static str> {
    #[derive(Deserialize)]
    struct Answer {
        credentials: Fields,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fields {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        expiration: String,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|_| {
        "the answer is not {\"credentials\":{\"accessKeyId\",\"secretAccessKey\",\
         \"sessionToken\",\"expiration\"}}"
    })?;
    let f = answer.credentials;
    let expiry = DateTime::from_str(&f.expiration, Format::DateTime)
        .ok()
        .and_then(|d| SystemTime::try_from(d).ok())
        .ok_or("the expiration is not an ISO 8601 time")?;
    Ok(super::from_source(
        Credentials::new(
            f.access_key_id,
            f.secret_access_key,
            f.session_token,
            Some(expiry),
            PROVIDER_NAME,
        ),
        "the AWS IoT credentials provider (iot-certificate)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(endpoint: &str) -> IotCertificate {
        IotCertificate {
            endpoint: endpoint.into(),
            cert_path: "c.pem".into(),
            key_path: "k.pem".into(),
            ca_path: None,
            role_alias: "KvsCameraIoTRoleAlias".into(),
            thing_name: "cam1".into(),
            connection_timeout: None,
            completion_timeout: None,
        }
    }

    #[test]
    fn url_from_host_or_full_url() {
        assert_eq!(
            cert("c2abc.credentials.iot.eu-west-1.amazonaws.com")
                .url()
                .unwrap()
                .as_str(),
            "https://c2abc.credentials.iot.eu-west-1.amazonaws.com/role-aliases/\
             KvsCameraIoTRoleAlias/credentials"
        );
        assert_eq!(
            cert("https://127.0.0.1:8443/").url().unwrap().as_str(),
            "https://127.0.0.1:8443/role-aliases/KvsCameraIoTRoleAlias/credentials"
        );
        assert!(cert("http://127.0.0.1:8443").url().is_err());
    }

    #[test]
    fn answer_parses() {
        let c = parse(
            br#"{"credentials":{"accessKeyId":"ASIAIOT","secretAccessKey":"s3cret",
                "sessionToken":"tok","expiration":"2030-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(c.access_key_id(), "ASIAIOT");
        assert_eq!(c.session_token(), Some("tok"));
        assert!(c.expiry().is_some());
        let e = parse(br#"{"credentials":{"accessKeyId":"ASIAIOT","secretAccessKey":"hunter2"}}"#)
            .unwrap_err();
        assert!(!e.contains("hunter2"));
    }
}

//! Client-side SigV4 signing helpers for tests (built on `aws_sigv4`).
//!
//! These produce the headers a KVS client would send, in the styles real
//! clients use: hashed JSON bodies, `UNSIGNED-PAYLOAD`, and AWS's C producer
//! style (SHA-256 of the empty string, no `x-amz-content-sha256` header,
//! host signed without port, security token unsigned).

use crate::config::KeyPair;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SessionTokenMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use std::time::SystemTime;

/// How the payload is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignPayload {
    /// The SHA-256 of these bytes, sent as `x-amz-content-sha256` too.
    Hashed(Vec<u8>),
    /// The SHA-256 of these bytes without an `x-amz-content-sha256` header
    /// (what AWS SDKs do for JSON APIs).
    HashedNoHeader(Vec<u8>),
    /// `UNSIGNED-PAYLOAD`, sent as `x-amz-content-sha256: UNSIGNED-PAYLOAD`.
    Unsigned,
    /// The SHA-256 of the empty string without `x-amz-content-sha256`
    /// (AWS's C producer for PutMedia).
    EmptyHashNoHeader,
}

/// Signing options.
#[derive(Clone, Debug)]
pub struct SignOptions {
    /// Region of the credential scope.
    pub region: String,
    /// Service of the credential scope (normally `kinesisvideo`).
    pub service: String,
    /// Signing time (`X-Amz-Date`).
    pub time: SystemTime,
    /// Payload treatment.
    pub payload: SignPayload,
    /// Sign the `host` header without its port (C producer style).
    pub host_without_port: bool,
    /// Include `x-amz-security-token` in the signed headers.
    pub sign_token: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            region: "us-west-2".into(),
            service: crate::auth::sigv4::SERVICE.into(),
            time: SystemTime::now(),
            payload: SignPayload::Unsigned,
            host_without_port: false,
            sign_token: true,
        }
    }
}

impl SignOptions {
    /// Options for a JSON body hashed the way AWS SDKs do it.
    pub fn json(body: &[u8]) -> Self {
        SignOptions {
            payload: SignPayload::HashedNoHeader(body.to_vec()),
            ..Default::default()
        }
    }
}

/// Computes the headers to add to a request (`authorization`, `x-amz-date`,
/// and where applicable `x-amz-content-sha256`, `x-amz-security-token`).
///
/// `url` is the full URL; `headers` are the other headers that will be sent
/// and signed (lower-case names; `host` is derived from the URL).
pub fn sign_headers(
    key: &KeyPair,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    opts: &SignOptions,
) -> Vec<(String, String)> {
    let uri: http::Uri = url.parse().expect("valid URL");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let host = if opts.host_without_port {
        uri.host().unwrap_or(authority).to_string()
    } else {
        authority.to_string()
    };
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut extra: Vec<(String, String)> = Vec::new();
    let body_hash;
    let body = match &opts.payload {
        SignPayload::Hashed(b) => {
            body_hash = crate::auth::sigv4::sha256_hex(b);
            extra.push(("x-amz-content-sha256".into(), body_hash.clone()));
            SignableBody::Precomputed(body_hash)
        }
        SignPayload::HashedNoHeader(b) => SignableBody::Bytes(b),
        SignPayload::Unsigned => {
            extra.push((
                "x-amz-content-sha256".into(),
                crate::auth::sigv4::UNSIGNED_PAYLOAD.into(),
            ));
            SignableBody::UnsignedPayload
        }
        SignPayload::EmptyHashNoHeader => {
            SignableBody::Precomputed(crate::auth::sigv4::EMPTY_SHA256.into())
        }
    };
    let mut all: Vec<(&str, &str)> = vec![("host", host.as_str())];
    all.extend(headers.iter().copied());
    all.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let identity = Credentials::new(
        &key.access_key,
        &key.secret_key,
        key.session_token.clone(),
        None,
        "kvs-local",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.session_token_mode = if opts.sign_token {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&opts.region)
        .name(&opts.service)
        .time(opts.time)
        .settings(settings)
        .build()
        .expect("complete signing params")
        .into();
    let signable =
        SignableRequest::new(method, path_and_query, all.into_iter(), body).expect("signable");
    let (instructions, _sig) = sign(signable, &params).expect("signing").into_parts();
    let mut out: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.extend(extra);
    out
}

/// Signs with the demo key pair and default options for a JSON body.
pub fn sign_json(url: &str, body: &[u8]) -> Vec<(String, String)> {
    let headers = [("content-type", "application/json")];
    sign_headers(
        &KeyPair::demo(),
        "POST",
        url,
        &headers,
        &SignOptions::json(body),
    )
}

//! SigV4 request verification.
//!
//! The canonical request is rebuilt from the request as received and the
//! `SignedHeaders` list, then signed with the configured secret using
//! `aws_sigv4`'s key derivation and compared in constant time.

use crate::config::KeyPair;
use crate::util::{format_amz_date, parse_amz_date, parse_http_date};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// The signing name of Kinesis Video Streams.
pub const SERVICE: &str = "kinesisvideo";
/// Payload hash value for unsigned payloads.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const AWS_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What the body contributes to the canonical request.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// A fully read body (control plane).
    Body(&'a [u8]),
    /// A streaming body not read yet (PutMedia): without an
    /// `x-amz-content-sha256` header the hash of the empty string is used,
    /// as AWS's C producer signs it.
    Streaming,
}

/// The parts of a request the verifier looks at.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path as received (still percent-encoded).
    pub path: &'a str,
    /// Query string as received, if any.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Body treatment.
    pub payload: Payload<'a>,
}

/// A successfully verified request.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The access key id that signed it.
    pub access_key: String,
    /// The region of the credential scope.
    pub region: String,
    /// Notes on how it matched (e.g. host signed without port).
    pub note: Option<String>,
}

/// A rejected request: the AWS error to answer with and the detailed reason.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// `__type` / `x-amzn-ErrorType`.
    pub error_type: &'static str,
    /// Message returned to the client.
    pub message: String,
    /// Detailed reason for logs and the report.
    pub reason: String,
}

fn reject(status: u16, error_type: &'static str, message: impl Into<String>) -> Rejection {
    let message = message.into();
    Rejection {
        status,
        error_type,
        reason: message.clone(),
        message,
    }
}

/// Verifies signatures against a set of key pairs.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// Accepted key pairs.
    pub keys: Vec<KeyPair>,
    /// Region restriction.
    pub region: Option<String>,
    /// Allowed clock skew.
    pub max_skew: Duration,
}

struct AuthHeader<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<AuthHeader<'_>, Rejection> {
    let incomplete = |m: String| reject(400, "IncompleteSignatureException", m);
    let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256") else {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': {:?}; only AWS4-HMAC-SHA256 is supported",
            value.split_whitespace().next().unwrap_or("")
        )));
    };
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let need = |name: &str| {
        incomplete(format!(
            "Authorization header requires '{name}' parameter. Authorization={value}"
        ))
    };
    let cred = cred.ok_or_else(|| need("Credential"))?;
    let signed = signed.ok_or_else(|| need("SignedHeaders"))?;
    let sig = sig.ok_or_else(|| need("Signature"))?;
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{cred}'"
        )));
    }
    Ok(AuthHeader {
        access_key: parts[0],
        date: parts[1],
        region: parts[2],
        service: parts[3],
        terminator: parts[4],
        signed_headers: signed.split(';').collect(),
        signature: sig,
    })
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    // Services other than S3 encode the (already encoded) path once more.
    path.split('/')
        .map(|seg| percent_encode(seg.as_bytes(), AWS_SET).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let d: Vec<u8> = percent_decode_str(s).collect();
                percent_encode(&d, AWS_SET).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(h: &HeaderMap, name: &str) -> String {
    h.get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn format_skew_message(date: &str, t: SystemTime, now: SystemTime, max: Duration) -> String {
    let mins = max.as_secs() / 60;
    if t < now {
        format!(
            "Signature expired: {date} is now earlier than {} ({} - {mins} min.)",
            format_amz_date(now - max),
            format_amz_date(now)
        )
    } else {
        format!(
            "Signature not yet current: {date} is still later than {} ({} + {mins} min.)",
            format_amz_date(now + max),
            format_amz_date(now)
        )
    }
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

impl Verifier {
    /// Verifies `req` at time `now`.
    pub fn verify(&self, req: &Request<'_>, now: SystemTime) -> Result<Verified, Rejection> {
        let h = req.headers;
        let Some(auth) = h.get(http::header::AUTHORIZATION) else {
            return Err(reject(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let auth = auth.to_str().map_err(|_| {
            reject(
                400,
                "IncompleteSignatureException",
                "Authorization header is not valid ASCII",
            )
        })?;
        let a = parse_authorization(auth)?;
        // The request's time: X-Amz-Date, else Date (ISO 8601 basic, or an HTTP date; the
        // string to sign has the ISO 8601 form either way).
        let (amz_date, t) = match header_str(h, "x-amz-date") {
            Some(amz_date) => {
                let Some(t) = parse_amz_date(amz_date) else {
                    return Err(reject(
                        400,
                        "IncompleteSignatureException",
                        format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
                    ));
                };
                (amz_date.to_owned(), t)
            }
            None => {
                let Some(date) = header_str(h, "date") else {
                    return Err(reject(
                        400,
                        "IncompleteSignatureException",
                        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
                    ));
                };
                let Some(t) = parse_amz_date(date).or_else(|| parse_http_date(date)) else {
                    return Err(reject(
                        400,
                        "IncompleteSignatureException",
                        format!(
                            "Date must be in ISO-8601 'basic format' or an HTTP date. Got '{date}'."
                        ),
                    ));
                };
                (format_amz_date(t), t)
            }
        };
        let amz_date = amz_date.as_str();
        let Some(key) = self.keys.iter().find(|k| k.access_key == a.access_key) else {
            let mut r = reject(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
            r.reason = format!("unknown access key id '{}'", a.access_key);
            return Err(r);
        };
        let token = header_str(h, "x-amz-security-token");
        if key.session_token.as_deref() != token {
            let mut r = reject(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
            r.reason = match (&key.session_token, token) {
                (Some(_), None) => "session token required but x-amz-security-token missing",
                (None, Some(_)) => "x-amz-security-token sent for a key without session token",
                _ => "x-amz-security-token does not match",
            }
            .into();
            return Err(r);
        }
        if key.expires_at.is_some_and(|e| e <= now) {
            return Err(reject(
                403,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        let skew = if t > now {
            t.duration_since(now)
        } else {
            now.duration_since(t)
        }
        .unwrap_or_default();
        if skew > self.max_skew {
            return Err(reject(
                403,
                "InvalidSignatureException",
                format_skew_message(amz_date, t, now, self.max_skew),
            ));
        }
        if a.date != &amz_date[..8] {
            return Err(reject(
                403,
                "InvalidSignatureException",
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                    a.date,
                    &amz_date[..8]
                ),
            ));
        }
        if a.service != SERVICE {
            return Err(reject(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{SERVICE}'. (got '{}')",
                    a.service
                ),
            ));
        }
        if a.terminator != "aws4_request" {
            return Err(reject(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
                    a.terminator
                ),
            ));
        }
        if let Some(r) = &self.region
            && r != a.region
        {
            return Err(reject(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region, not '{}'. (this endpoint serves '{r}')",
                    a.region
                ),
            ));
        }
        if !a.signed_headers.contains(&"host") {
            return Err(reject(
                403,
                "InvalidSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        self.check_signature(req, &a, key, amz_date, t)
    }

    fn check_signature(
        &self,
        req: &Request<'_>,
        a: &AuthHeader<'_>,
        key: &KeyPair,
        amz_date: &str,
        t: SystemTime,
    ) -> Result<Verified, Rejection> {
        let h = req.headers;
        let content_sha = header_str(h, "x-amz-content-sha256");
        let payload_hash = match (content_sha, req.payload) {
            (Some(v), Payload::Body(body)) if v != UNSIGNED_PAYLOAD => {
                let actual = sha256_hex(body);
                if !v.eq_ignore_ascii_case(&actual) {
                    let mut r = reject(403, "InvalidSignatureException", SIGNATURE_MISMATCH);
                    r.reason = format!(
                        "x-amz-content-sha256 {v} does not match the SHA-256 of the body ({actual})"
                    );
                    return Err(r);
                }
                actual
            }
            (Some(v), _) => v.to_string(),
            (None, Payload::Body(body)) => sha256_hex(body),
            (None, Payload::Streaming) => EMPTY_SHA256.to_string(),
        };
        let host = header_str(h, "host").unwrap_or("");
        let host_no_port = strip_port(host);
        let signing_key =
            aws_sigv4::sign::v4::generate_signing_key(&key.secret_key, t, a.region, a.service);
        let scope = format!("{}/{}/{}/aws4_request", a.date, a.region, a.service);
        let compute = |host_value: &str, payload: &str| -> (String, String) {
            let creq = self.canonical_request(req, &a.signed_headers, host_value, payload);
            let sts = format!(
                "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
                sha256_hex(creq.as_bytes())
            );
            let sig =
                aws_sigv4::sign::v4::calculate_signature(signing_key.as_ref(), sts.as_bytes());
            (sig, creq)
        };
        let mut hosts = vec![(host, None)];
        if host_no_port != host {
            hosts.push((host_no_port, Some("host signed without port")));
        }
        let mut first_creq = None;
        for (hv, note) in &hosts {
            let (sig, creq) = compute(hv, &payload_hash);
            if constant_time_eq(sig.as_bytes(), a.signature.as_bytes()) {
                return Ok(Verified {
                    access_key: key.access_key.clone(),
                    region: a.region.to_string(),
                    note: note.map(str::to_string),
                });
            }
            first_creq.get_or_insert(creq);
        }
        // Diagnose common mistakes for the report (never accepted).
        let mut hints = Vec::new();
        for alt in [UNSIGNED_PAYLOAD, EMPTY_SHA256] {
            if alt != payload_hash
                && hosts.iter().any(|(hv, _)| {
                    constant_time_eq(compute(hv, alt).0.as_bytes(), a.signature.as_bytes())
                })
            {
                hints.push(format!(
                    "signature matches payload hash '{alt}', but the request implies '{payload_hash}' (send x-amz-content-sha256: {alt})"
                ));
            }
        }
        let creq = first_creq.unwrap_or_default();
        let mut r = reject(
            403,
            "InvalidSignatureException",
            format!(
                "{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{creq}'\n"
            ),
        );
        // The report and the log keep no secret: the session token is a credential.
        let creq = redact_token(&creq);
        r.reason = format!(
            "signature mismatch for key '{}'{}; canonical request: {creq:?}",
            key.access_key,
            if hints.is_empty() {
                String::new()
            } else {
                format!(" ({})", hints.join("; "))
            }
        );
        Err(r)
    }

    fn canonical_request(
        &self,
        req: &Request<'_>,
        signed: &[&str],
        host: &str,
        payload_hash: &str,
    ) -> String {
        let mut out = String::with_capacity(512);
        out.push_str(req.method);
        out.push('\n');
        out.push_str(&canonical_uri(req.path));
        out.push('\n');
        out.push_str(&canonical_query(req.query));
        out.push('\n');
        for name in signed {
            out.push_str(name);
            out.push(':');
            if *name == "host" {
                out.push_str(host.trim());
            } else {
                out.push_str(&canonical_header_value(req.headers, name));
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&signed.join(";"));
        out.push('\n');
        out.push_str(payload_hash);
        out
    }
}

/// `creq` with the value of a signed `x-amz-security-token` header replaced.
fn redact_token(creq: &str) -> String {
    creq.split('\n')
        .map(|line| match line.split_once(':') {
            Some(("x-amz-security-token", _)) => "x-amz-security-token:<redacted>",
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.rfind("]:") {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;

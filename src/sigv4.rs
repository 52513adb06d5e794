//! SigV4 signing of Kinesis Video Streams requests with `aws-sigv4`.
//!
//! Control-plane calls sign the hash of their JSON body; PutMedia signs its live, endless body as
//! `UNSIGNED-PAYLOAD` and sends `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as AWS advises for
//! streaming uploads.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use http::{HeaderName, HeaderValue};

/// The SigV4 signing name of every Kinesis Video Streams API.
pub const SERVICE: &str = "kinesisvideo";

/// What the signature covers of the body.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A body known in full (control plane): its SHA-256 is signed.
    Bytes(&'a [u8]),
    /// A live streaming body (PutMedia): signed as `UNSIGNED-PAYLOAD`.
    Unsigned,
}

/// Signing failed (bad URL or header values; never the credentials themselves).
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not sign the request: {0}")]
pub struct SignError(String);

/// Signs `request` in place for `region`, adding `Authorization`, `X-Amz-Date`,
/// `x-amz-content-sha256` and, with temporary credentials, `X-Amz-Security-Token`.
pub fn sign_request(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    payload: Payload<'_>,
    time: SystemTime,
) -> Result<(), SignError> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();

    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            value
                .to_str()
                .map(|v| (name.as_str(), v))
                .map_err(|_| SignError(format!("header {name} is not ASCII")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = match payload {
        Payload::Bytes(bytes) => SignableBody::Bytes(bytes),
        Payload::Unsigned => SignableBody::UnsignedPayload,
    };
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        body,
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let (new_headers, _) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_static(header.name());
        let mut value =
            HeaderValue::from_str(header.value()).map_err(|e| SignError(e.to_string()))?;
        value.set_sensitive(header.sensitive());
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn request(body: &'static str) -> reqwest::Request {
        let client = reqwest::Client::new();
        client
            .post("https://kinesisvideo.eu-west-1.amazonaws.com/describeStream")
            .header("content-type", "application/json")
            .body(body)
            .build()
            .unwrap()
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn signs_hashed_body_with_scope_and_checksum_header() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let mut req = request("{}");
        sign_request(&mut req, &creds, "eu-west-1", Payload::Bytes(b"{}"), at()).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/kinesisvideo/aws4_request"
            ),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date"));
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            // SHA-256 of "{}"
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(req.headers()["x-amz-date"], "20231114T221320Z");
    }

    #[test]
    fn streaming_body_is_unsigned_and_token_is_added() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("tok".into()), None, "test");
        let mut req = request("");
        sign_request(&mut req, &creds, "us-east-1", Payload::Unsigned, at()).unwrap();
        assert_eq!(req.headers()["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert_eq!(req.headers()["x-amz-security-token"], "tok");
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
    }

    #[test]
    fn signature_depends_on_secret_and_body() {
        let sig = |secret: &str, body: &'static str| {
            let creds = Credentials::new("AKIDEXAMPLE", secret, None, None, "test");
            let mut req = request(body);
            sign_request(
                &mut req,
                &creds,
                "eu-west-1",
                Payload::Bytes(body.as_bytes()),
                at(),
            )
            .unwrap();
            req.headers()["authorization"].to_str().unwrap().to_owned()
        };
        assert_eq!(sig("a", "{}"), sig("a", "{}"));
        assert_ne!(sig("a", "{}"), sig("b", "{}"));
        assert_ne!(sig("a", "{}"), sig("a", "{ }"));
    }
}

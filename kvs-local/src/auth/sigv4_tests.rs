use super::*;
use crate::auth::client::{SignOptions, SignPayload, sign_headers};
use http::HeaderValue;

const URL: &str = "http://127.0.0.1:4566/describeStream";

fn verifier() -> Verifier {
    Verifier {
        keys: vec![
            KeyPair::demo(),
            KeyPair::new("TESTKEYWITHTOKEN", "s3cr3t").with_session_token("tok-1"),
        ],
        region: None,
        max_skew: Duration::from_secs(300),
    }
}

fn headers_for(key: &KeyPair, opts: &SignOptions, host: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_str(host).unwrap());
    h.insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in sign_headers(
        key,
        "POST",
        URL,
        &[("content-type", "application/json")],
        opts,
    ) {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    h
}

fn check(h: &HeaderMap, body: &[u8], streaming: bool) -> Result<Verified, Rejection> {
    let req = Request {
        method: "POST",
        path: "/describeStream",
        query: None,
        headers: h,
        payload: if streaming {
            Payload::Streaming
        } else {
            Payload::Body(body)
        },
    };
    verifier().verify(&req, SystemTime::now())
}

const BODY: &[u8] = br#"{"StreamName":"s"}"#;

#[test]
fn accepts_sdk_style_hashed_body() {
    let h = headers_for(&KeyPair::demo(), &SignOptions::json(BODY), "127.0.0.1:4566");
    let v = check(&h, BODY, false).unwrap();
    assert_eq!(v.access_key, DEMO);
    assert_eq!(v.region, "us-west-2");
    // body altered after signing
    let e = check(&h, br#"{"StreamName":"t"}"#, false).unwrap_err();
    assert_eq!(e.error_type, "InvalidSignatureException");
}

const DEMO: &str = crate::config::DEMO_ACCESS_KEY;

#[test]
fn accepts_hashed_with_header_and_detects_mismatch() {
    let opts = SignOptions {
        payload: SignPayload::Hashed(BODY.to_vec()),
        ..Default::default()
    };
    let h = headers_for(&KeyPair::demo(), &opts, "127.0.0.1:4566");
    check(&h, BODY, false).unwrap();
    let e = check(&h, b"{}", false).unwrap_err();
    assert_eq!(e.status, 403);
    assert!(e.reason.contains("x-amz-content-sha256"), "{}", e.reason);
}

#[test]
fn unsigned_payload_and_c_producer_style() {
    let h = headers_for(&KeyPair::demo(), &SignOptions::default(), "127.0.0.1:4566");
    check(&h, BODY, false).unwrap();
    check(&h, b"", true).unwrap();
    // C producer: empty hash, no header, host without port
    let opts = SignOptions {
        payload: SignPayload::EmptyHashNoHeader,
        host_without_port: true,
        ..Default::default()
    };
    let h = headers_for(&KeyPair::demo(), &opts, "127.0.0.1:4566");
    assert!(h.get("x-amz-content-sha256").is_none());
    let v = check(&h, b"", true).unwrap();
    assert_eq!(v.note.as_deref(), Some("host signed without port"));
}

#[test]
fn unsigned_without_header_is_rejected_with_hint() {
    // Signed as UNSIGNED-PAYLOAD but the header was not sent.
    let mut h = headers_for(&KeyPair::demo(), &SignOptions::default(), "127.0.0.1:4566");
    h.remove("x-amz-content-sha256");
    let e = check(&h, b"", true).unwrap_err();
    assert_eq!(e.error_type, "InvalidSignatureException");
    assert!(e.message.starts_with(SIGNATURE_MISMATCH));
}

#[test]
fn rejections() {
    let good = headers_for(&KeyPair::demo(), &SignOptions::json(BODY), "127.0.0.1:4566");
    // missing
    let e = check(&HeaderMap::new(), BODY, false).unwrap_err();
    assert_eq!(
        (e.status, e.error_type),
        (403, "MissingAuthenticationTokenException")
    );
    // unknown key
    let h = headers_for(
        &KeyPair::new("NOSUCHKEY", "x"),
        &SignOptions::json(BODY),
        "h",
    );
    let e = check(&h, BODY, false).unwrap_err();
    assert_eq!(
        (e.status, e.error_type),
        (403, "UnrecognizedClientException")
    );
    // wrong secret
    let h = headers_for(
        &KeyPair::new(DEMO, "wrong"),
        &SignOptions::json(BODY),
        "127.0.0.1:4566",
    );
    let e = check(&h, BODY, false).unwrap_err();
    assert_eq!((e.status, e.error_type), (403, "InvalidSignatureException"));
    assert!(
        e.message
            .contains("does not match the signature you provided")
    );
    // skew
    let opts = SignOptions {
        time: SystemTime::now() - Duration::from_secs(600),
        ..SignOptions::json(BODY)
    };
    let h = headers_for(&KeyPair::demo(), &opts, "127.0.0.1:4566");
    let e = check(&h, BODY, false).unwrap_err();
    assert_eq!(e.error_type, "InvalidSignatureException");
    assert!(
        e.message.starts_with("Signature expired: "),
        "{}",
        e.message
    );
    let opts = SignOptions {
        time: SystemTime::now() + Duration::from_secs(600),
        ..SignOptions::json(BODY)
    };
    let h = headers_for(&KeyPair::demo(), &opts, "127.0.0.1:4566");
    let e = check(&h, BODY, false).unwrap_err();
    assert!(
        e.message.starts_with("Signature not yet current"),
        "{}",
        e.message
    );
    // wrong service
    let opts = SignOptions {
        service: "kinesis".into(),
        ..SignOptions::json(BODY)
    };
    let h = headers_for(&KeyPair::demo(), &opts, "127.0.0.1:4566");
    let e = check(&h, BODY, false).unwrap_err();
    assert!(e.message.contains("kinesisvideo"));
    // wrong host
    let mut h = good.clone();
    h.insert("host", HeaderValue::from_static("example.com"));
    assert!(check(&h, BODY, false).is_err());
    // malformed
    let mut h = good.clone();
    h.insert(
        "authorization",
        HeaderValue::from_static("AWS4-HMAC-SHA256 Foo=bar"),
    );
    let e = check(&h, BODY, false).unwrap_err();
    assert_eq!(
        (e.status, e.error_type),
        (400, "IncompleteSignatureException")
    );
}

#[test]
fn region_restriction() {
    let h = headers_for(&KeyPair::demo(), &SignOptions::json(BODY), "127.0.0.1:4566");
    let mut v = verifier();
    v.region = Some("eu-west-1".into());
    let req = Request {
        method: "POST",
        path: "/describeStream",
        query: None,
        headers: &h,
        payload: Payload::Body(BODY),
    };
    let e = v.verify(&req, SystemTime::now()).unwrap_err();
    assert!(e.message.contains("us-west-2"));
    v.region = Some("us-west-2".into());
    v.verify(&req, SystemTime::now()).unwrap();
}

#[test]
fn session_tokens() {
    let key = KeyPair::new("TESTKEYWITHTOKEN", "s3cr3t").with_session_token("tok-1");
    // signed token
    let h = headers_for(&key, &SignOptions::json(BODY), "127.0.0.1:4566");
    check(&h, BODY, false).unwrap();
    // unsigned token
    let opts = SignOptions {
        sign_token: false,
        ..SignOptions::json(BODY)
    };
    let h = headers_for(&key, &opts, "127.0.0.1:4566");
    assert!(h.get("x-amz-security-token").is_some());
    check(&h, BODY, false).unwrap();
    // wrong token
    let bad = KeyPair::new("TESTKEYWITHTOKEN", "s3cr3t").with_session_token("tok-2");
    let h = headers_for(&bad, &SignOptions::json(BODY), "127.0.0.1:4566");
    let e = check(&h, BODY, false).unwrap_err();
    assert_eq!(e.error_type, "UnrecognizedClientException");
    // missing token
    let none = KeyPair::new("TESTKEYWITHTOKEN", "s3cr3t");
    let h = headers_for(&none, &SignOptions::json(BODY), "127.0.0.1:4566");
    assert!(check(&h, BODY, false).is_err());
    // expired
    let mut v = verifier();
    v.keys[1].expires_at = Some(SystemTime::now() - Duration::from_secs(1));
    let h = headers_for(&key, &SignOptions::json(BODY), "127.0.0.1:4566");
    let req = Request {
        method: "POST",
        path: "/describeStream",
        query: None,
        headers: &h,
        payload: Payload::Body(BODY),
    };
    let e = v.verify(&req, SystemTime::now()).unwrap_err();
    assert_eq!((e.status, e.error_type), (403, "ExpiredTokenException"));
}

#[test]
fn canonical_pieces() {
    assert_eq!(canonical_uri("/a b/%2F"), "/a%20b/%252F");
    assert_eq!(canonical_query(Some("b=2&a=1&c")), "a=1&b=2&c=");
    assert_eq!(strip_port("127.0.0.1:4566"), "127.0.0.1");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("host"), "host");
}

#[test]
fn a_signature_mismatch_with_a_token_keeps_the_token_out_of_the_report() {
    // The right token signed with the wrong secret: the canonical request in the report (and
    // the log) names the token header but not its value.
    let wrong = KeyPair::new("TESTKEYWITHTOKEN", "not-the-secret").with_session_token("tok-1");
    let h = headers_for(&wrong, &SignOptions::json(BODY), "127.0.0.1:4566");
    let e = check(&h, BODY, false).unwrap_err();
    assert_eq!(e.error_type, "InvalidSignatureException");
    assert!(
        e.reason.contains("x-amz-security-token:<redacted>"),
        "{}",
        e.reason
    );
    assert!(!e.reason.contains("tok-1"), "{}", e.reason);
}

/// Headers of a request signed by hand with a `Date` header (`date`) and no `X-Amz-Date`.
fn signed_with_date_header(date: &str, iso: &str) -> HeaderMap {
    use sha2::Digest;
    let key = KeyPair::demo();
    let host = "127.0.0.1:4566";
    let signed = "content-type;date;host";
    let creq = format!(
        "POST\n/describeStream\n\ncontent-type:application/json\ndate:{date}\nhost:{host}\n\n{signed}\n{}",
        hex::encode(sha2::Sha256::digest(BODY))
    );
    let scope = format!("{}/us-west-2/kinesisvideo/aws4_request", &iso[..8]);
    let sts = format!(
        "AWS4-HMAC-SHA256\n{iso}\n{scope}\n{}",
        hex::encode(sha2::Sha256::digest(creq.as_bytes()))
    );
    let t = crate::util::parse_amz_date(iso).unwrap();
    let signing_key =
        aws_sigv4::sign::v4::generate_signing_key(&key.secret_key, t, "us-west-2", "kinesisvideo");
    let signature = aws_sigv4::sign::v4::calculate_signature(signing_key.as_ref(), sts.as_bytes());
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static(host));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("date", HeaderValue::from_str(date).unwrap());
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            key.access_key
        ))
        .unwrap(),
    );
    h
}

#[test]
fn the_time_may_come_in_a_date_header() {
    // SigV4 takes the time from Date when X-Amz-Date is absent, as an HTTP date or in ISO 8601
    // basic form; the string to sign has the ISO form.
    let now = SystemTime::now();
    let iso = crate::util::format_amz_date(now);
    let t = crate::util::parse_amz_date(&iso).unwrap();
    let http = http_date(t);
    check(&signed_with_date_header(&http, &iso), BODY, false).unwrap();
    check(&signed_with_date_header(&iso, &iso), BODY, false).unwrap();
    let e = check(&signed_with_date_header("yesterday", &iso), BODY, false).unwrap_err();
    assert_eq!(e.error_type, "IncompleteSignatureException");
    assert!(e.message.contains("Got 'yesterday'"), "{}", e.message);
}

/// `t` as an HTTP date (`Fri, 04 Dec 2026 02:25:00 GMT`).
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let iso = crate::util::format_amz_date(t);
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let month: usize = iso[4..6].parse().unwrap();
    format!(
        "{}, {} {} {} {}:{}:{} GMT",
        DAYS[(secs / 86400 % 7) as usize],
        &iso[6..8],
        MONTHS[month - 1],
        &iso[..4],
        &iso[9..11],
        &iso[11..13],
        &iso[13..15]
    )
}

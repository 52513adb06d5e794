//! Control plane and SigV4 over HTTP.

mod common;
use common::*;
use kvs_local::client::{SignOptions, SignPayload};
use kvs_local::report::AuthVerdict;
use kvs_local::{Config, KeyPair};
use serde_json::json;
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "multi_thread")]
async fn stream_lifecycle() {
    let s = server(Config {
        creating_delay: Duration::from_millis(300),
        ..cfg()
    });
    let u = s.url();
    let r = call(&u, "/describeStream", json!({"StreamName": "cam"})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "ResourceNotFoundException")
    );
    assert_eq!(
        r.headers["x-amzn-errortype"].to_str().unwrap(),
        "ResourceNotFoundException"
    );
    assert!(!r.message().is_empty());

    let r = call(
        &u,
        "/createStream",
        json!({"StreamName": "cam", "DataRetentionInHours": 2, "MediaType": "video/h264", "Tags": {"a": "1"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let arn = r.json["StreamARN"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:kinesisvideo:us-west-2:"), "{arn}");

    let r = call(&u, "/createStream", json!({"StreamName": "cam"})).await;
    assert_eq!((r.status, r.error_type()), (400, "ResourceInUseException"));

    let r = call(&u, "/describeStream", json!({"StreamName": "cam"})).await;
    assert_eq!(r.json["StreamInfo"]["Status"], "CREATING");
    // ACTIVE after the delay (bounded wait, polling the API like a producer)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let info = loop {
        let r = call(&u, "/describeStream", json!({"StreamARN": arn})).await;
        if r.json["StreamInfo"]["Status"] == "ACTIVE" || std::time::Instant::now() > deadline {
            break r.json["StreamInfo"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(info["Status"], "ACTIVE");
    assert_eq!(info["StreamName"], "cam");
    assert_eq!(info["MediaType"], "video/h264");
    assert_eq!(info["DeviceName"], serde_json::Value::Null);
    assert_eq!(info["DataRetentionInHours"], 2);
    assert!(info["CreationTime"].is_f64());
    assert!(info["Version"].is_string());

    // CreationTime in exponent form on the wire
    let raw = reqwest_raw_describe(&u).await;
    assert!(
        raw.contains("\"CreationTime\":1.") && raw.contains("E9"),
        "{raw}"
    );

    let r = call(
        &u,
        "/getDataEndpoint",
        json!({"StreamName": "cam", "APIName": "PUT_MEDIA"}),
    )
    .await;
    assert_eq!(r.json["DataEndpoint"], u.as_str());
    let r = call(
        &u,
        "/getDataEndpoint",
        json!({"StreamName": "cam", "APIName": "NOPE"}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidArgumentException")
    );
    let r = call(
        &u,
        "/getDataEndpoint",
        json!({"StreamName": "x", "APIName": "GET_MEDIA"}),
    )
    .await;
    assert_eq!(r.status, 404);

    let r = call(
        &u,
        "/tagStream",
        json!({"StreamName": "cam", "Tags": {"b": "2"}}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        &u,
        "/untagStream",
        json!({"StreamARN": arn, "TagKeyList": ["a"]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(&u, "/listTagsForStream", json!({"StreamName": "cam"})).await;
    assert_eq!(r.json["Tags"], json!({"b": "2"}));
    // more than 50 in one request breaks the model's limit (a validation error) ...
    let many: serde_json::Map<_, _> = (0..60).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = call(&u, "/tagStream", json!({"StreamName": "cam", "Tags": many})).await;
    assert_eq!(r.error_type(), "InvalidArgumentException");
    assert!(
        r.message()
            .contains("at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"),
        "{}",
        r.message()
    );
    // ... 50 in one request on top of the stream's one is the per-stream limit
    let fifty: serde_json::Map<_, _> = (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = call(
        &u,
        "/tagStream",
        json!({"StreamName": "cam", "Tags": fifty}),
    )
    .await;
    assert_eq!(r.error_type(), "TagsPerResourceExceededLimitException");

    let version = info["Version"].as_str().unwrap().to_string();
    let r = call(
        &u,
        "/updateDataRetention",
        json!({"StreamName": "cam", "CurrentVersion": "bogus", "Operation": "INCREASE_DATA_RETENTION", "DataRetentionChangeInHours": 1}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "VersionMismatchException")
    );
    let cur = s.stream("cam").unwrap().meta.version;
    assert_ne!(cur, version, "tagging bumped the version");
    let r = call(
        &u,
        "/updateDataRetention",
        json!({"StreamName": "cam", "CurrentVersion": cur, "Operation": "INCREASE_DATA_RETENTION", "DataRetentionChangeInHours": 3}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(s.stream("cam").unwrap().meta.data_retention_hours, 5);

    call(&u, "/createStream", json!({"StreamName": "cam2"})).await;
    call(&u, "/createStream", json!({"StreamName": "other"})).await;
    let r = call(&u, "/listStreams", json!({})).await;
    assert_eq!(r.json["StreamInfoList"].as_array().unwrap().len(), 3);
    let r = call(
        &u,
        "/listStreams",
        json!({"StreamNameCondition": {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "cam"}, "MaxResults": 1}),
    )
    .await;
    assert_eq!(r.json["StreamInfoList"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["StreamInfoList"][0]["StreamName"], "cam");
    let token = r.json["NextToken"].as_str().unwrap().to_string();
    let r = call(
        &u,
        "/listStreams",
        json!({"StreamNameCondition": {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "cam"}, "MaxResults": 1, "NextToken": token}),
    )
    .await;
    assert_eq!(r.json["StreamInfoList"][0]["StreamName"], "cam2");
    assert!(r.json.get("NextToken").is_none(), "{:?}", r.json);

    let r = call(&u, "/deleteStream", json!({"StreamName": "cam"})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidArgumentException")
    );
    let r = call(&u, "/deleteStream", json!({"StreamARN": arn})).await;
    assert_eq!(r.status, 200);
    assert!(s.stream("cam").is_none());
}

async fn reqwest_raw_describe(u: &str) -> String {
    let body = br#"{"StreamName":"cam"}"#;
    let url = format!("{u}/describeStream");
    let signed = kvs_local::client::sign_json(&url, body);
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in signed {
        req = req.header(k, v);
    }
    req.send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_errors() {
    let s = server(cfg());
    let u = s.url();
    let r = call(&u, "/createStream", json!({"StreamName": "bad name!"})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidArgumentException")
    );
    let r = call(&u, "/createStream", json!({})).await;
    assert_eq!(r.error_type(), "InvalidArgumentException");
    let r = call(
        &u,
        "/describeStream",
        json!({"StreamName": "a", "StreamARN": "b"}),
    )
    .await;
    assert_eq!(r.error_type(), "InvalidArgumentException");
    let b = b"{not json";
    let r = call_with(
        &u,
        "/describeStream",
        b,
        &KeyPair::demo(),
        &SignOptions::json(b),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (400, "SerializationException"));
    let r = call(&u, "/noSuchOperation", json!({})).await;
    assert_eq!(r.status, 404);
}

const BODY: &[u8] = br#"{"StreamName":"cam"}"#;

async fn describe_with(u: &str, key: &KeyPair, opts: SignOptions) -> Reply {
    call_with(u, "/describeStream", BODY, key, &opts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures() {
    let tok_key = KeyPair::new("TESTKEYTOKEN", "tok-secret").with_session_token("the-token");
    let expired = KeyPair::new("TESTKEYEXPIRED", "old-secret")
        .with_session_token("old-token")
        .with_expiry(SystemTime::now() - Duration::from_secs(5));
    let s = server(Config {
        keys: vec![KeyPair::demo(), tok_key.clone(), expired.clone()],
        ..cfg()
    });
    s.create_stream("cam").unwrap();
    let u = s.url();
    let demo = KeyPair::demo();

    // accepted styles
    let r = describe_with(&u, &demo, SignOptions::json(BODY)).await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let hashed = SignOptions {
        payload: SignPayload::Hashed(BODY.to_vec()),
        ..Default::default()
    };
    assert_eq!(describe_with(&u, &demo, hashed).await.status, 200);
    let unsigned = SignOptions::default();
    assert_eq!(describe_with(&u, &demo, unsigned).await.status, 200);
    let no_port = SignOptions {
        host_without_port: true,
        ..SignOptions::json(BODY)
    };
    assert_eq!(describe_with(&u, &demo, no_port).await.status, 200);
    assert_eq!(
        describe_with(&u, &tok_key, SignOptions::json(BODY))
            .await
            .status,
        200
    );
    let unsigned_token = SignOptions {
        sign_token: false,
        ..SignOptions::json(BODY)
    };
    assert_eq!(
        describe_with(&u, &tok_key, unsigned_token).await.status,
        200
    );

    // rejections
    let r = call_unsigned(&u, "/describeStream", BODY).await;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "MissingAuthenticationTokenException")
    );
    let r = describe_with(&u, &KeyPair::new("NOSUCHKEY", "x"), SignOptions::json(BODY)).await;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "UnrecognizedClientException")
    );
    assert_eq!(r.headers["x-amzn-errortype"], "UnrecognizedClientException");
    assert!(
        r.json["message"].is_string(),
        "SigV4 errors use lower-case message"
    );
    let r = describe_with(
        &u,
        &KeyPair::new(kvs_local::DEMO_ACCESS_KEY, "wrong"),
        SignOptions::json(BODY),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "InvalidSignatureException")
    );
    assert!(
        r.message()
            .starts_with("The request signature we calculated does not match")
    );
    let skewed = SignOptions {
        time: SystemTime::now() - Duration::from_secs(360),
        ..SignOptions::json(BODY)
    };
    let r = describe_with(&u, &demo, skewed).await;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "InvalidSignatureException")
    );
    assert!(r.message().contains("Signature expired"), "{}", r.message());
    let r = describe_with(&u, &expired, SignOptions::json(BODY)).await;
    assert_eq!((r.status, r.error_type()), (403, "ExpiredTokenException"));
    let wrong_token = KeyPair::new("TESTKEYTOKEN", "tok-secret").with_session_token("nope");
    let r = describe_with(&u, &wrong_token, SignOptions::json(BODY)).await;
    assert_eq!(r.error_type(), "UnrecognizedClientException");
    // body hash header that does not match the body
    let lying = SignOptions {
        payload: SignPayload::Hashed(b"{}".to_vec()),
        ..Default::default()
    };
    let r = describe_with(&u, &demo, lying).await;
    assert_eq!(r.error_type(), "InvalidSignatureException");

    // the report records verdicts and reasons
    let rep = s.report();
    let rejected: Vec<_> = rep
        .requests
        .iter()
        .filter(|r| r.auth == AuthVerdict::Rejected)
        .collect();
    assert_eq!(rejected.len(), 7);
    assert!(
        rejected
            .iter()
            .all(|r| r.auth_reason.is_some() && r.status >= 400)
    );
    assert!(rejected.iter().any(|r| {
        r.auth_reason
            .as_deref()
            .unwrap()
            .contains("unknown access key")
    }));
    let ok = rep
        .requests
        .iter()
        .filter(|r| r.auth == AuthVerdict::Accepted)
        .count();
    assert_eq!(ok, 6);
    assert!(
        rep.requests
            .iter()
            .any(|r| r.auth_reason.as_deref() == Some("host signed without port"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn region_restriction_and_custom_keys() {
    let s = server(Config {
        keys: vec![KeyPair::new("MYKEY", "mysecret")],
        region: Some("eu-west-1".into()),
        ..cfg()
    });
    s.create_stream("cam").unwrap();
    let u = s.url();
    // the demo key is not accepted once keys are configured
    let r = describe_with(&u, &KeyPair::demo(), SignOptions::json(BODY)).await;
    assert_eq!(r.error_type(), "UnrecognizedClientException");
    let key = KeyPair::new("MYKEY", "mysecret");
    let r = describe_with(&u, &key, SignOptions::json(BODY)).await;
    assert_eq!(r.error_type(), "InvalidSignatureException");
    assert!(r.message().contains("region"));
    let eu = SignOptions {
        region: "eu-west-1".into(),
        ..SignOptions::json(BODY)
    };
    assert_eq!(describe_with(&u, &key, eu).await.status, 200);
}

/// AWS's C producer sends `Host: 127.0.0.1` without the port: the data
/// endpoint must still carry the port the request reached.
#[tokio::test(flavor = "multi_thread")]
async fn data_endpoint_ignores_portless_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(cfg());
    s.create_stream("cam").unwrap();
    let addr = s.local_addr();
    let body = br#"{"StreamName":"cam","APIName":"PUT_MEDIA"}"#;
    let url = format!("http://{addr}/getDataEndpoint");
    let opts = SignOptions {
        payload: SignPayload::HashedNoHeader(body.to_vec()),
        host_without_port: true,
        ..Default::default()
    };
    let signed = kvs_local::client::sign_headers(
        &KeyPair::demo(),
        "POST",
        &url,
        &[("content-type", "application/json")],
        &opts,
    );
    let mut head = format!(
        "POST /getDataEndpoint HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        addr.ip(),
        body.len()
    );
    for (k, v) in signed {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(body).await.unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains(&format!("{{\"DataEndpoint\":\"{}\"}}", s.url())),
        "{resp}"
    );
}

/// `(path, body)` answered 400 InvalidArgumentException with a message containing `what`.
async fn rejected(u: &str, path: &str, body: serde_json::Value, what: &str) {
    let r = call(u, path, body.clone()).await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "InvalidArgumentException"),
        "{path} {body}: {:?}",
        r.json
    );
    assert!(
        r.message().contains(what),
        "{path} {body}: {} lacks {what}",
        r.message()
    );
    assert!(r.message().contains("validation error"), "{}", r.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_like_the_service() {
    let s = server(cfg());
    let u = s.url();
    let c = "/createStream";
    let pattern = "failed to satisfy constraint: Member must satisfy regular expression pattern";
    let longer = |n| {
        format!("failed to satisfy constraint: Member must have length less than or equal to {n}")
    };
    let shorter =
        "failed to satisfy constraint: Member must have length greater than or equal to 1";
    for (body, what) in [
        (json!({"StreamName": "a", "MediaType": "h264"}), format!("Value 'h264' at 'mediaType' {pattern}: [\\w\\-\\.\\+]+/[\\w\\-\\.\\+]+(,[\\w\\-\\.\\+]+/[\\w\\-\\.\\+]+)*")),
        (json!({"StreamName": "a", "MediaType": "video/h264,"}), format!("at 'mediaType' {pattern}")),
        (json!({"StreamName": "a", "MediaType": format!("video/{}", "x".repeat(123))}), format!("at 'mediaType' {}", longer(128))),
        (json!({"StreamName": "a", "MediaType": ""}), format!("Value '' at 'mediaType' {shorter}")),
        (json!({"StreamName": "a", "KmsKeyId": ""}), format!("at 'kmsKeyId' {shorter}")),
        (json!({"StreamName": "a", "KmsKeyId": "k".repeat(2049)}), format!("at 'kmsKeyId' {}", longer(2048))),
        (json!({"StreamName": "a", "DeviceName": "a b"}), format!("Value 'a b' at 'deviceName' {pattern}: [a-zA-Z0-9_.-]+")),
        (json!({"StreamName": "a", "DeviceName": "d".repeat(129)}), format!("at 'deviceName' {}", longer(128))),
        (json!({"StreamName": "a", "Tags": {"k".repeat(129): "v"}}), "at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 128]".into()),
        (json!({"StreamName": "a", "Tags": {"": "v"}}), "Map keys must satisfy constraint: [Member must have length greater than or equal to 1]".into()),
        (json!({"StreamName": "a", "Tags": {"k#!": "v"}}), "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$]".into()),
        (json!({"StreamName": "a", "Tags": {"k": "v".repeat(257)}}), "Map value must satisfy constraint: [Member must have length less than or equal to 256]".into()),
        (json!({"StreamName": "a", "Tags": {}}), format!("Value '{{}}' at 'tags' {shorter}")),
        (json!({"StreamName": "a", "DataRetentionInHours": -1}), "Value '-1' at 'dataRetentionInHours' failed to satisfy constraint: Member must have value greater than or equal to 0".into()),
        (json!({"StreamName": "a", "DataRetentionInHours": 1.5}), "Value '1.5' at 'dataRetentionInHours' failed to satisfy constraint: Member must be an integer".into()),
        (json!({"StreamName": "b".repeat(257)}), format!("at 'streamName' {}", longer(256))),
        (json!({}), "Value null at 'streamName' failed to satisfy constraint: Member must not be null".into()),
    ] {
        rejected(&u, c, body, &what).await;
    }
    // every broken constraint, in one answer
    let r = call(
        &u,
        c,
        json!({"StreamName": "", "MediaType": "x", "DataRetentionInHours": -2}),
    )
    .await;
    assert!(
        r.message().starts_with("4 validation errors detected: "),
        "{}",
        r.message()
    );
    // a type that is not a number at all stays a SerializationException
    let r = call(
        &u,
        c,
        json!({"StreamName": "a", "DataRetentionInHours": "x"}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (400, "SerializationException"));
    assert!(s.stream("a").is_none(), "nothing was created");

    // the limits themselves are fine
    let ok = json!({
        "StreamName": "ok", "MediaType": "video/h264,audio/aac", "DeviceName": "d".repeat(128),
        "KmsKeyId": "k".repeat(2048), "DataRetentionInHours": 0,
        "Tags": {"k".repeat(128): "v".repeat(256), "ключ 1:/=+-@": "", "ok": "a b"},
    });
    let r = call(&u, c, ok).await;
    assert_eq!(r.status, 200, "{:?}", r.json);

    // TagStream / UntagStream: the tags are required and checked before the stream is looked up
    let t = "/tagStream";
    rejected(
        &u,
        t,
        json!({"StreamName": "ok"}),
        "Value null at 'tags' failed to satisfy constraint: Member must not be null",
    )
    .await;
    rejected(
        &u,
        t,
        json!({"StreamName": "ok", "Tags": {}}),
        &format!("at 'tags' {shorter}"),
    )
    .await;
    rejected(
        &u,
        t,
        json!({"StreamName": "missing", "Tags": {"k!": "v"}}),
        "Map keys",
    )
    .await;
    rejected(
        &u,
        t,
        json!({"StreamName": "ok", "Tags": {"k": "<v>"}}),
        "Map value",
    )
    .await;
    let ut = "/untagStream";
    rejected(
        &u,
        ut,
        json!({"StreamName": "ok", "TagKeyList": []}),
        &format!("Value '[]' at 'tagKeyList' {shorter}"),
    )
    .await;
    rejected(
        &u,
        ut,
        json!({"StreamName": "ok"}),
        "Value null at 'tagKeyList'",
    )
    .await;
    rejected(
        &u,
        ut,
        json!({"StreamName": "ok", "TagKeyList": ["k".repeat(129)]}),
        &format!("at 'tagKeyList.1.member' {}", longer(128)),
    )
    .await;

    // ListStreams / ListFragments: operator and MaxResults are checked, not clamped
    let l = "/listStreams";
    rejected(&u, l, json!({"StreamNameCondition": {"ComparisonOperator": "EQUALS", "ComparisonValue": "ok"}}), "Value 'EQUALS' at 'streamNameCondition.comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [BEGINS_WITH]").await;
    rejected(&u, l, json!({"MaxResults": 0}), "Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1").await;
    rejected(&u, l, json!({"MaxResults": 10001}), "Value '10001' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 10000").await;
    rejected(
        &u,
        l,
        json!({"MaxResults": -1}),
        "Value '-1' at 'maxResults'",
    )
    .await;
    for max in [1, 10_000] {
        let r = call(&u, l, json!({"MaxResults": max})).await;
        assert_eq!(r.status, 200);
    }
    let r = call(&u, l, json!({"StreamNameCondition": {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "o"}})).await;
    assert_eq!(r.json["StreamInfoList"].as_array().unwrap().len(), 1);
    let f = "/listFragments";
    rejected(
        &u,
        f,
        json!({"StreamName": "ok", "MaxResults": 0}),
        "Value '0' at 'maxResults'",
    )
    .await;
    rejected(
        &u,
        f,
        json!({"StreamName": "ok", "MaxResults": 1001}),
        "Member must have value less than or equal to 1000",
    )
    .await;
    assert_eq!(
        call(&u, f, json!({"StreamName": "ok", "MaxResults": 1000}))
            .await
            .status,
        200
    );

    // UpdateDataRetention and DeleteStream: numbers and versions as the model says
    let v = s.stream("ok").unwrap().meta.version;
    let udr = "/updateDataRetention";
    rejected(&u, udr, json!({"StreamName": "ok", "CurrentVersion": v, "Operation": "INCREASE_DATA_RETENTION", "DataRetentionChangeInHours": 0}), "Value '0' at 'dataRetentionChangeInHours' failed to satisfy constraint: Member must have value greater than or equal to 1").await;
    rejected(&u, udr, json!({"StreamName": "ok", "CurrentVersion": v, "Operation": "GROW", "DataRetentionChangeInHours": 1}), "Value 'GROW' at 'operation' failed to satisfy constraint: Member must satisfy enum value set: [INCREASE_DATA_RETENTION, DECREASE_DATA_RETENTION]").await;
    rejected(
        &u,
        udr,
        json!({"StreamName": "ok"}),
        "3 validation errors detected",
    )
    .await;
    let arn = s.stream("ok").unwrap().meta.arn;
    rejected(&u, "/deleteStream", json!({"StreamARN": arn, "CurrentVersion": "not-hex!"}), "at 'currentVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9]+").await;
    assert!(s.stream("ok").is_some());
}

fn names(r: &Reply) -> Vec<String> {
    r.json["StreamInfoList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["StreamName"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn list_streams_pages_go_on_after_the_last_name_returned() {
    let s = server(cfg());
    let u = s.url();
    for n in ["pg-a", "pg-b", "pg-c", "pg-d", "pg-e", "pg-f", "other"] {
        s.create_stream(n).unwrap();
    }
    let cond = json!({"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "pg-"});
    let r = call(
        &u,
        "/listStreams",
        json!({"MaxResults": 3, "StreamNameCondition": cond}),
    )
    .await;
    assert_eq!(names(&r), ["pg-a", "pg-b", "pg-c"]);
    let token = r.json["NextToken"].as_str().unwrap().to_string();
    assert!(
        token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
            && token.len() <= 512
            && token.parse::<u64>().is_err(),
        "{token}"
    );
    // streams already returned are deleted, including the last one, and one is created
    s.delete_stream("pg-a").unwrap();
    s.delete_stream("pg-c").unwrap();
    s.create_stream("pg-0").unwrap();
    let r = call(
        &u,
        "/listStreams",
        json!({"MaxResults": 3, "StreamNameCondition": cond, "NextToken": token}),
    )
    .await;
    assert_eq!(names(&r), ["pg-d", "pg-e", "pg-f"], "none skipped");
    assert!(r.json.get("NextToken").is_none(), "{:?}", r.json);
    // a page that ends exactly at the last stream has no NextToken
    let r = call(&u, "/listStreams", json!({"MaxResults": 6})).await;
    assert_eq!(names(&r).len(), 6);
    assert!(r.json.get("NextToken").is_none(), "{:?}", r.json);
    let r = call(&u, "/listStreams", json!({"MaxResults": 5})).await;
    let token = r.json["NextToken"].as_str().unwrap().to_string();
    let r = call(
        &u,
        "/listStreams",
        json!({"MaxResults": 5, "NextToken": token}),
    )
    .await;
    assert_eq!(names(&r), ["pg-f"]);
    // tokens are ours: anything else is an InvalidArgumentException
    for bad in ["3", "Zm9v", "!!", "kvs-local:v1:pg-a"] {
        let r = call(&u, "/listStreams", json!({"NextToken": bad})).await;
        assert_eq!(
            (r.status, r.error_type()),
            (400, "InvalidArgumentException"),
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn update_stream_checks_the_version_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let s = server(config.clone());
    let u = s.url();
    let r = call(
        &u,
        "/createStream",
        json!({"StreamName": "cam", "MediaType": "video/h264", "DeviceName": "dev1"}),
    )
    .await;
    let arn = r.json["StreamARN"].as_str().unwrap().to_string();
    let v1 = s.stream("cam").unwrap().meta.version;
    let up = "/updateStream";

    let r = call(
        &u,
        up,
        json!({"StreamName": "cam", "CurrentVersion": "0abc", "MediaType": "video/h265"}),
    )
    .await;
    assert_eq!(
        (r.status, r.error_type()),
        (400, "VersionMismatchException")
    );
    let r = call(
        &u,
        up,
        json!({"StreamName": "cam", "MediaType": "video/h265"}),
    )
    .await;
    assert_eq!(r.error_type(), "InvalidArgumentException");
    assert!(
        r.message().contains("Value null at 'currentVersion'"),
        "{}",
        r.message()
    );
    let r = call(
        &u,
        up,
        json!({"StreamName": "cam", "CurrentVersion": v1, "MediaType": "h265"}),
    )
    .await;
    assert_eq!(r.error_type(), "InvalidArgumentException");
    let r = call(&u, up, json!({"StreamName": "nope", "CurrentVersion": v1})).await;
    assert_eq!(
        (r.status, r.error_type()),
        (404, "ResourceNotFoundException")
    );
    let r = call(
        &u,
        up,
        json!({"StreamName": "cam", "StreamARN": arn, "CurrentVersion": v1}),
    )
    .await;
    assert_eq!(r.error_type(), "InvalidArgumentException");
    assert_eq!(s.stream("cam").unwrap().meta.version, v1, "nothing changed");

    let r = call(
        &u,
        up,
        json!({"StreamName": "cam", "CurrentVersion": v1, "MediaType": "video/h265"}),
    )
    .await;
    assert_eq!((r.status, &r.json), (200, &json!({})));
    let info = call(&u, "/describeStream", json!({"StreamName": "cam"}))
        .await
        .json["StreamInfo"]
        .clone();
    assert_eq!(info["MediaType"], "video/h265");
    assert_eq!(info["DeviceName"], "dev1", "left out: unchanged");
    assert_eq!(info["Status"], "ACTIVE");
    let v2 = info["Version"].as_str().unwrap().to_string();
    assert_ne!(v2, v1);
    // the old version is stale now; by ARN with the new one
    let r = call(
        &u,
        up,
        json!({"StreamARN": arn, "CurrentVersion": v1, "DeviceName": "dev2"}),
    )
    .await;
    assert_eq!(r.error_type(), "VersionMismatchException");
    let r = call(
        &u,
        up,
        json!({"StreamARN": arn, "CurrentVersion": v2, "DeviceName": "dev2"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let meta = s.stream("cam").unwrap().meta;
    assert_eq!(
        (meta.device_name.as_deref(), meta.media_type.as_deref()),
        (Some("dev2"), Some("video/h265"))
    );
    s.shutdown();

    // persisted with the data dir
    let s = server(config);
    let after = s.stream("cam").unwrap().meta;
    assert_eq!(after, meta);
    s.shutdown();

    // a stream still CREATING cannot be updated yet
    let s = server(Config {
        creating_delay: Duration::from_secs(30),
        ..cfg()
    });
    let u = s.url();
    call(&u, "/createStream", json!({"StreamName": "slow"})).await;
    let v = s.stream("slow").unwrap().meta.version;
    let r = call(
        &u,
        up,
        json!({"StreamName": "slow", "CurrentVersion": v, "MediaType": "video/h264"}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (400, "ResourceInUseException"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unset_stream_fields_are_left_out() {
    let s = server(cfg());
    let u = s.url();
    call(&u, "/createStream", json!({"StreamName": "bare"})).await;
    call(
        &u,
        "/createStream",
        json!({"StreamName": "full", "MediaType": "video/h264", "DeviceName": "d", "KmsKeyId": "my-key"}),
    )
    .await;
    let info = call(&u, "/describeStream", json!({"StreamName": "bare"}))
        .await
        .json["StreamInfo"]
        .clone();
    let keys: Vec<_> = info.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "CreationTime",
            "DataRetentionInHours",
            "KmsKeyId",
            "Status",
            "StreamARN",
            "StreamName",
            "Version"
        ],
        "{info}"
    );
    assert!(
        info["KmsKeyId"]
            .as_str()
            .unwrap()
            .ends_with(":alias/aws/kinesisvideo")
    );
    let r = call(&u, "/listStreams", json!({})).await;
    let list = r.json["StreamInfoList"].as_array().unwrap();
    assert!(
        list.iter()
            .all(|i| i.as_object().unwrap().values().all(|v| !v.is_null())),
        "{list:?}"
    );
    assert!(list[0].get("MediaType").is_none() && list[0].get("DeviceName").is_none());
    assert_eq!(list[1]["MediaType"], "video/h264");
    assert_eq!(list[1]["DeviceName"], "d");
    assert_eq!(list[1]["KmsKeyId"], "my-key");
}

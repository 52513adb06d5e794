//! Shared helpers for the integration tests: a signed JSON client, a
//! streaming PutMedia client that reads acks while sending, and MKV data.
#![allow(dead_code)]

use bytes::Bytes;
use kvs_local::client::{SignOptions, SignPayload, sign_headers};
use kvs_local::{Config, KeyPair, Server};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Starts a server with a zero CREATING delay unless the test sets one.
pub fn server(cfg: Config) -> Server {
    Server::spawn(cfg).expect("server starts")
}

/// A default config with no CREATING delay.
pub fn cfg() -> Config {
    Config {
        creating_delay: Duration::ZERO,
        ..Config::default()
    }
}

/// Result of a JSON call.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Reply {
    /// `__type` of an error reply.
    pub fn error_type(&self) -> &str {
        self.json["__type"].as_str().unwrap_or("")
    }
    /// Message (either case).
    pub fn message(&self) -> &str {
        self.json["Message"]
            .as_str()
            .or(self.json["message"].as_str())
            .unwrap_or("")
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Signed POST with the demo key, SDK style.
pub async fn call(base: &str, path: &str, body: Value) -> Reply {
    let b = serde_json::to_vec(&body).unwrap();
    call_with(base, path, &b, &KeyPair::demo(), &SignOptions::json(&b)).await
}

/// Signed POST with explicit key and options.
pub async fn call_with(
    base: &str,
    path: &str,
    body: &[u8],
    key: &KeyPair,
    opts: &SignOptions,
) -> Reply {
    let url = format!("{base}{path}");
    let signed = sign_headers(
        key,
        "POST",
        &url,
        &[("content-type", "application/json")],
        opts,
    );
    let mut req = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in signed {
        req = req.header(k, v);
    }
    reply(req.send().await.expect("request")).await
}

/// Unsigned POST.
pub async fn call_unsigned(base: &str, path: &str, body: &[u8]) -> Reply {
    let req = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    reply(req.send().await.expect("request")).await
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        json,
    }
}

/// PutMedia request options.
#[derive(Clone)]
pub struct PutOpts {
    pub stream: String,
    pub timecode_type: Option<&'static str>,
    pub start_ts: Option<String>,
    pub key: KeyPair,
    pub sign: SignOptions,
    pub by_arn: Option<String>,
}

impl PutOpts {
    pub fn new(stream: &str) -> Self {
        PutOpts {
            stream: stream.into(),
            timecode_type: Some("RELATIVE"),
            start_ts: Some(format!(
                "{:.3}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            )),
            key: KeyPair::demo(),
            sign: SignOptions {
                payload: SignPayload::Unsigned,
                ..Default::default()
            },
            by_arn: None,
        }
    }
}

/// A live PutMedia session: send body chunks, read acks concurrently.
pub struct Put {
    pub status: u16,
    pub json: Value,
    tx: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    resp: Option<reqwest::Response>,
    buf: Vec<u8>,
    pub acks: Vec<Value>,
    pub ended: bool,
}

/// Starts PutMedia; returns once the response head arrived.
pub async fn put_media(base: &str, o: &PutOpts) -> Put {
    let url = format!("{base}/putMedia");
    let mut hs: Vec<(&str, String)> = Vec::new();
    match &o.by_arn {
        Some(a) => hs.push(("x-amzn-stream-arn", a.clone())),
        None => hs.push(("x-amzn-stream-name", o.stream.clone())),
    }
    if let Some(t) = o.timecode_type {
        hs.push(("x-amzn-fragment-timecode-type", t.into()));
    }
    if let Some(s) = &o.start_ts {
        hs.push(("x-amzn-producer-start-timestamp", s.clone()));
    }
    hs.push(("x-amzn-fragment-acknowledgment-required", "1".into()));
    let refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let signed = sign_headers(&o.key, "POST", &url, &refs, &o.sign);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut req = client().post(&url).body(reqwest::Body::wrap_stream(stream));
    for (k, v) in hs.iter() {
        req = req.header(*k, v);
    }
    for (k, v) in signed {
        req = req.header(k, v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
        .await
        .expect("PutMedia response head in time")
        .expect("PutMedia request");
    let status = resp.status().as_u16();
    if status != 200 {
        let r = reply(resp).await;
        return Put {
            status,
            json: r.json,
            tx: None,
            resp: None,
            buf: Vec::new(),
            acks: Vec::new(),
            ended: true,
        };
    }
    Put {
        status,
        json: Value::Null,
        tx: Some(tx),
        resp: Some(resp),
        buf: Vec::new(),
        acks: Vec::new(),
        ended: false,
    }
}

impl Put {
    /// Sends body bytes.
    pub async fn send(&mut self, b: impl Into<Bytes>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Ok(b.into())).await;
        }
    }

    /// Sends bytes in chunks of `n`.
    pub async fn send_chunked(&mut self, b: &[u8], n: usize) {
        for c in b.chunks(n) {
            self.send(Bytes::copy_from_slice(c)).await;
        }
    }

    /// Ends the request body.
    pub fn finish(&mut self) {
        self.tx = None;
    }

    /// Next ack, or None when the response ended or on timeout.
    pub async fn next_ack(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let v: Value = serde_json::from_slice(&line).expect("ack is JSON");
                self.acks.push(v.clone());
                return Some(v);
            }
            let resp = self.resp.as_mut()?;
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(c))) => self.buf.extend_from_slice(&c),
                Ok(_) => {
                    self.ended = true;
                    self.resp = None;
                    return None;
                }
            }
        }
    }

    /// Reads acks until one satisfies `pred`; returns it.
    pub async fn until(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let a = self.next_ack(left).await?;
            if pred(&a) {
                return Some(a);
            }
        }
    }

    /// Reads every remaining ack until the response ends (bounded).
    pub async fn drain(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let start = self.acks.len();
        while !self.ended {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.next_ack(left).await.is_none() {
                break;
            }
        }
        self.acks[start..].to_vec()
    }

    /// Event types of all acks read so far.
    pub fn events(&self) -> Vec<String> {
        self.acks
            .iter()
            .map(|a| {
                let t = a["EventType"].as_str().unwrap_or("?");
                match a["ErrorId"].as_u64() {
                    Some(id) => format!("{t}:{id}"),
                    None => t.to_string(),
                }
            })
            .collect()
    }
}

/// Is this ack of the given type (and timecode)?
pub fn is(a: &Value, ev: &str, tc: Option<u64>) -> bool {
    a["EventType"] == ev && tc.is_none_or(|t| a["FragmentTimecode"] == t)
}

pub const T: Duration = Duration::from_secs(10);

/// PutMedia's checks before any body is read, against a server with an ACTIVE stream
/// `stream`: a missing stream (404), a wrong secret (403), an unknown key (403), no timecode
/// type (400), each with the service's error name.
pub async fn assert_put_media_request_checks(url: &str, stream: &str) {
    let cases = [
        (PutOpts::new("missing"), 404, "ResourceNotFoundException"),
        (
            PutOpts {
                key: kvs_local::KeyPair::new(kvs_local::DEMO_ACCESS_KEY, "bad"),
                ..PutOpts::new(stream)
            },
            403,
            "InvalidSignatureException",
        ),
        (
            PutOpts {
                key: kvs_local::KeyPair::new("AKIA_UNKNOWN_KEY_ID0", "x"),
                ..PutOpts::new(stream)
            },
            403,
            "UnrecognizedClientException",
        ),
        (
            PutOpts {
                timecode_type: None,
                ..PutOpts::new(stream)
            },
            400,
            "InvalidArgumentException",
        ),
    ];
    for (opts, status, kind) in cases {
        let p = put_media(url, &opts).await;
        assert_eq!((p.status, p.json["__type"].as_str()), (status, Some(kind)));
    }
}

/// Reads the `kvs-local listening on URL` line a kvs-local binary prints first.
pub fn listening_url(child: &mut std::process::Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("kvs-local listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

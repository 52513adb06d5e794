//! Control-plane operations (`POST /createStream`, `/describeStream`, ...).

use crate::http::{ApiError, RespBody};
use crate::report::AuthVerdict;
use crate::server::{ConnCtl, Shared, new_record, record_error};
use crate::sigv4::{Payload, Verified};
use crate::store::{StoreError, StreamMeta, StreamSnapshot, new_version};
use crate::util::{epoch_seconds_json, now_ms};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Account id used in ARNs.
pub const ACCOUNT_ID: &str = "000000000000";
/// Most tags a stream may carry.
const MAX_TAGS: usize = 50;

/// How long a JSON request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body up to `limit` bytes (within [`BODY_TIMEOUT`]).
pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let collect = http_body_util::Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(ApiError::invalid_argument(format!(
            "cannot read request body: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            408,
            "RequestTimeoutException",
            "request body not received in time",
        )),
    }
}

/// The stream a JSON body refers to (for fault scoping and the report).
pub fn stream_hint(shared: &Shared, v: &Value) -> Option<String> {
    if let Some(n) = v.get("StreamName").and_then(Value::as_str) {
        return Some(n.to_string());
    }
    let arn = v.get("StreamARN").and_then(Value::as_str)?;
    shared
        .store
        .name_for_arn(arn)
        .or_else(|| Some(arn.to_string()))
}

/// Authenticates a request whose body has been read, applying credential
/// and request faults. Fills the record's auth fields.
pub fn authenticate(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    op: &str,
    stream: Option<&str>,
    rec: &mut crate::report::RequestRecord,
) -> Result<Verified, ApiError> {
    let req = crate::sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        payload: if op == "PutMedia" {
            Payload::Streaming
        } else {
            Payload::Body(body)
        },
    };
    crate::putmedia::check_auth(shared, &req, op, stream, rec)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    let text = if body.is_empty() {
        b"{}" as &[u8]
    } else {
        body
    };
    match serde_json::from_slice::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::new(
            400,
            "SerializationException",
            "Request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            400,
            "SerializationException",
            format!("Malformed JSON: {e}"),
        )),
    }
}

/// Handles one control-plane request.
pub async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    op: &'static str,
    req: Request<Incoming>,
    rid: String,
) -> Response<RespBody> {
    let mut rec = new_record(&req, &ctl, op);
    let (parts, body) = req.into_parts();
    let result = async {
        let body = read_body(Request::from_parts(parts.clone(), body), 1 << 20).await?;
        let json = parse_json(&body);
        let hint = json.as_ref().ok().and_then(|v| stream_hint(&shared, v));
        rec.stream = hint.clone();
        let verified = authenticate(&shared, &parts, &body, op, hint.as_deref(), &mut rec)?;
        let v = json?;
        dispatch(&shared, op, &v, &verified, &ctl)
    }
    .await;
    let resp = match result {
        Ok(v) => {
            rec.status = 200;
            crate::http::json_bytes_response(200, v, &rid)
        }
        Err(e) => {
            record_error(&mut rec, &e);
            e.response(&rid)
        }
    };
    shared.log(format_args!(
        "{op} stream={} -> {}{}",
        rec.stream.as_deref().unwrap_or("-"),
        rec.status,
        rec.error_type
            .as_deref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default()
    ));
    shared.recorder.request(rec);
    resp
}

fn store_err(e: StoreError, name: &str) -> ApiError {
    match e {
        StoreError::NotFound => not_found(name),
        StoreError::InUse => ApiError::new(
            400,
            "ResourceInUseException",
            format!("The stream {name} already exists."),
        ),
        StoreError::VersionMismatch => ApiError::new(
            400,
            "VersionMismatchException",
            "The stream version you specified is not the latest version.",
        ),
        StoreError::Io(e) => ApiError::new(500, "InternalFailure", format!("storage error: {e}")),
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested stream is not found or not active: {name}"
    ))
}

fn str_field<'a>(v: &'a Value, k: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::new(
            400,
            "SerializationException",
            format!("{k} must be a string"),
        )),
    }
}

/// Validates a stream name the way the service does.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(format!(
            "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and length 1-256"
        )))
    }
}

/// Resolves `StreamName` xor `StreamARN` to an existing stream name.
pub fn resolve(shared: &Shared, v: &Value) -> Result<String, ApiError> {
    match (str_field(v, "StreamName")?, str_field(v, "StreamARN")?) {
        (Some(_), Some(_)) => Err(ApiError::invalid_argument(
            "Specify either StreamName or StreamARN, not both.",
        )),
        (None, None) => Err(ApiError::invalid_argument(
            "Either StreamName or StreamARN must be specified.",
        )),
        (Some(n), None) => {
            validate_name(n)?;
            shared
                .store
                .describe(n)
                .map(|_| n.to_string())
                .ok_or_else(|| not_found(n))
        }
        (None, Some(a)) => shared.store.name_for_arn(a).ok_or_else(|| not_found(a)),
    }
}

/// The `StreamInfo` shape (serialized with `CreationTime` in exponent form).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct StreamInfo {
    creation_time: Box<serde_json::value::RawValue>,
    data_retention_in_hours: u64,
    device_name: Option<String>,
    kms_key_id: String,
    media_type: Option<String>,
    status: String,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    stream_name: String,
    version: String,
}

fn stream_info(s: &StreamSnapshot, region: &str) -> StreamInfo {
    let m = &s.meta;
    StreamInfo {
        creation_time: epoch_seconds_json(m.creation_time_ms),
        data_retention_in_hours: m.data_retention_hours,
        device_name: m.device_name.clone(),
        kms_key_id: m
            .kms_key_id
            .clone()
            .unwrap_or_else(|| format!("arn:aws:kms:{region}:{ACCOUNT_ID}:alias/aws/kinesisvideo")),
        media_type: m.media_type.clone(),
        status: s.status.clone(),
        stream_arn: m.arn.clone(),
        stream_name: m.name.clone(),
        version: m.version.clone(),
    }
}

/// Serializes a reply body.
fn body(v: &impl serde::Serialize) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::new(500, "InternalFailure", e.to_string()))
}

fn tags_field(v: &Value, k: &str) -> Result<Map<String, Value>, ApiError> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => Ok(m.clone()),
        Some(_) => Err(ApiError::new(
            400,
            "SerializationException",
            format!("{k} must be a map of strings"),
        )),
    }
}

fn arn_region(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or("us-east-1")
}

/// Builds the metadata of a stream created directly (lib API, tests).
pub fn new_meta(name: &str, region: &str) -> StreamMeta {
    let created = now_ms();
    StreamMeta {
        name: name.into(),
        arn: format!("arn:aws:kinesisvideo:{region}:{ACCOUNT_ID}:stream/{name}/{created}"),
        media_type: None,
        device_name: None,
        kms_key_id: None,
        data_retention_hours: 0,
        version: new_version(),
        creation_time_ms: created,
        tags: Default::default(),
    }
}

fn dispatch(
    shared: &Shared,
    op: &str,
    v: &Value,
    who: &Verified,
    ctl: &ConnCtl,
) -> Result<Vec<u8>, ApiError> {
    let store = &shared.store;
    match op {
        "CreateStream" => {
            let name = str_field(v, "StreamName")?.ok_or_else(|| {
                ApiError::invalid_argument("1 validation error detected: Value null at 'streamName' failed to satisfy constraint: Member must not be null")
            })?;
            validate_name(name)?;
            let retention = match v.get("DataRetentionInHours") {
                None | Some(Value::Null) => 0,
                Some(x) => x.as_u64().ok_or_else(|| {
                    ApiError::invalid_argument(
                        "DataRetentionInHours must be a non-negative integer",
                    )
                })?,
            };
            let tags = tags_field(v, "Tags")?;
            if tags.len() > MAX_TAGS {
                return Err(ApiError::new(
                    400,
                    "TagsPerResourceExceededLimitException",
                    "A stream can have at most 50 tags.",
                ));
            }
            let mut meta = new_meta(name, &who.region);
            meta.media_type = str_field(v, "MediaType")?.map(str::to_string);
            meta.device_name = str_field(v, "DeviceName")?.map(str::to_string);
            meta.kms_key_id = str_field(v, "KmsKeyId")?.map(str::to_string);
            meta.data_retention_hours = retention;
            meta.tags = tags
                .into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                .collect();
            let meta = store.create(meta, None).map_err(|e| store_err(e, name))?;
            body(&json!({ "StreamARN": meta.arn }))
        }
        "DescribeStream" => {
            let name = resolve(shared, v)?;
            let s = store.describe(&name).ok_or_else(|| not_found(&name))?;
            let region = arn_region(&s.meta.arn).to_string();
            #[derive(serde::Serialize)]
            struct Out {
                #[serde(rename = "StreamInfo")]
                info: StreamInfo,
            }
            body(&Out {
                info: stream_info(&s, &region),
            })
        }
        "ListStreams" => {
            let max = v
                .get("MaxResults")
                .and_then(Value::as_u64)
                .unwrap_or(10_000)
                .clamp(1, 10_000) as usize;
            let start: usize = match str_field(v, "NextToken")? {
                Some(t) => t
                    .parse()
                    .map_err(|_| ApiError::invalid_argument("invalid NextToken"))?,
                None => 0,
            };
            let prefix = v
                .get("StreamNameCondition")
                .and_then(|c| c.get("ComparisonValue"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let all: Vec<_> = store
                .list()
                .into_iter()
                .filter(|s| s.meta.name.starts_with(prefix))
                .collect();
            let page: Vec<StreamInfo> = all
                .iter()
                .skip(start)
                .take(max)
                .map(|s| stream_info(s, arn_region(&s.meta.arn)))
                .collect();
            #[derive(serde::Serialize)]
            struct Out {
                #[serde(rename = "StreamInfoList")]
                list: Vec<StreamInfo>,
                #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
                next: Option<String>,
            }
            body(&Out {
                list: page,
                next: (start + max < all.len()).then(|| (start + max).to_string()),
            })
        }
        "DeleteStream" => {
            let arn = str_field(v, "StreamARN")?.ok_or_else(|| {
                ApiError::invalid_argument("1 validation error detected: Value null at 'streamARN' failed to satisfy constraint: Member must not be null")
            })?;
            let name = store.name_for_arn(arn).ok_or_else(|| not_found(arn))?;
            store
                .delete(&name, str_field(v, "CurrentVersion")?)
                .map_err(|e| store_err(e, &name))?;
            body(&json!({}))
        }
        "GetDataEndpoint" => {
            resolve(shared, v)?;
            let api = str_field(v, "APIName")?.unwrap_or("");
            const APIS: [&str; 8] = [
                "PUT_MEDIA",
                "GET_MEDIA",
                "LIST_FRAGMENTS",
                "GET_MEDIA_FOR_FRAGMENT_LIST",
                "GET_HLS_STREAMING_SESSION_URL",
                "GET_DASH_STREAMING_SESSION_URL",
                "GET_CLIP",
                "GET_IMAGES",
            ];
            if !APIS.contains(&api) {
                return Err(ApiError::invalid_argument(format!(
                    "1 validation error detected: Value '{api}' at 'aPIName' failed to satisfy constraint: Member must satisfy enum value set: {APIS:?}"
                )));
            }
            // The address the request really reached, never the Host header:
            // AWS's C producer sends `Host: 127.0.0.1` without the port.
            let endpoint = format!("http://{}", ctl.local);
            body(&json!({ "DataEndpoint": endpoint }))
        }
        "TagStream" => {
            let name = resolve(shared, v)?;
            let tags = tags_field(v, "Tags")?;
            store
                .update(&name, |m| {
                    let mut merged = m.tags.clone();
                    for (k, val) in tags {
                        merged.insert(k, val.as_str().unwrap_or_default().to_string());
                    }
                    if merged.len() > MAX_TAGS {
                        return Err(StoreError::InUse);
                    }
                    m.tags = merged;
                    Ok(())
                })
                .map_err(|e| match e {
                    StoreError::InUse => ApiError::new(
                        400,
                        "TagsPerResourceExceededLimitException",
                        "A stream can have at most 50 tags.",
                    ),
                    e => store_err(e, &name),
                })?;
            body(&json!({}))
        }
        "UntagStream" => {
            let name = resolve(shared, v)?;
            let keys: Vec<String> = match v.get("TagKeyList") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(ApiError::invalid_argument(
                        "TagKeyList must be a non-empty list",
                    ));
                }
            };
            store
                .update(&name, |m| {
                    for k in &keys {
                        m.tags.remove(k);
                    }
                    Ok(())
                })
                .map_err(|e| store_err(e, &name))?;
            body(&json!({}))
        }
        "ListTagsForStream" => {
            let name = resolve(shared, v)?;
            let s = store.describe(&name).ok_or_else(|| not_found(&name))?;
            body(&json!({ "Tags": s.meta.tags }))
        }
        "UpdateDataRetention" => {
            let name = resolve(shared, v)?;
            let version = str_field(v, "CurrentVersion")?
                .ok_or_else(|| ApiError::invalid_argument("CurrentVersion is required"))?
                .to_string();
            let change = v
                .get("DataRetentionChangeInHours")
                .and_then(Value::as_u64)
                .filter(|c| *c >= 1)
                .ok_or_else(|| {
                    ApiError::invalid_argument(
                        "DataRetentionChangeInHours must be a positive integer",
                    )
                })?;
            let increase = match str_field(v, "Operation")? {
                Some("INCREASE_DATA_RETENTION") => true,
                Some("DECREASE_DATA_RETENTION") => false,
                other => {
                    return Err(ApiError::invalid_argument(format!(
                        "Operation must be INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION, not {other:?}"
                    )));
                }
            };
            let mut too_low = false;
            store
                .update(&name, |m| {
                    if m.version != version {
                        return Err(StoreError::VersionMismatch);
                    }
                    if increase {
                        m.data_retention_hours += change;
                    } else if change > m.data_retention_hours {
                        too_low = true;
                        return Err(StoreError::VersionMismatch);
                    } else {
                        m.data_retention_hours -= change;
                    }
                    Ok(())
                })
                .map_err(|e| {
                    if too_low {
                        ApiError::invalid_argument(
                            "Data retention cannot be decreased below 0 hours.",
                        )
                    } else {
                        store_err(e, &name)
                    }
                })?;
            body(&json!({}))
        }
        _ => Err(ApiError::new(
            404,
            "UnknownOperationException",
            op.to_string(),
        )),
    }
}

/// Shorthand used in record keeping.
pub fn accepted(rec: &mut crate::report::RequestRecord, v: &Verified) {
    rec.auth = AuthVerdict::Accepted;
    rec.access_key = Some(v.access_key.clone());
    rec.auth_reason = v.note.clone();
}

//! Control-plane operations (`POST /createStream`, `/describeStream`, ...).

use super::context::{ConnCtl, Shared, not_found, store_err};
use super::http::ApiError;
use super::operation::{
    CreateStreamInput, DeleteStreamInput, GetDataEndpointInput, ListStreamsInput, StreamRef,
    TagStreamInput, UntagStreamInput, UpdateDataRetentionInput, UpdateStreamInput,
};
use super::validate::{
    Checks, DEVICE_NAME, KMS_KEY_ID, MEDIA_TYPE, NEXT_TOKEN, RESOURCE_ARN, STREAM_NAME, VERSION,
};
use crate::auth::sigv4::Verified;
use crate::model::records::{ACCOUNT_ID, StoreError, StreamMeta, StreamSnapshot};
use crate::util::{base64_decode, base64_encode, epoch_seconds_json};
use serde::Serialize;
use serde_json::json;

/// Most tags a stream may carry.
const MAX_TAGS: usize = 50;

/// Every `APIName` GetDataEndpoint accepts.
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

/// A JSON reply body.
pub(crate) type Reply = Result<Vec<u8>, ApiError>;

/// Largest value of an `integer` member (a Java int in the service).
const MAX_INTEGER: i64 = i32::MAX as i64;

/// The `StreamInfo` shape (serialized with `CreationTime` in exponent form).
/// Unset optional members are left out, as the service does (AWS's C++
/// kvssink warns about a `"MediaType": null`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StreamInfo {
    creation_time: Box<serde_json::value::RawValue>,
    data_retention_in_hours: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_name: Option<String>,
    kms_key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    status: String,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    stream_name: String,
    version: String,
}

fn stream_info(s: &StreamSnapshot) -> StreamInfo {
    let m = &s.meta;
    let region = m.arn.split(':').nth(3).unwrap_or("us-east-1");
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
fn body(v: &impl Serialize) -> Reply {
    serde_json::to_vec(v).map_err(|e| ApiError::new(500, "InternalFailure", e.to_string()))
}

fn too_many_tags() -> ApiError {
    ApiError::new(
        400,
        "TagsPerResourceExceededLimitException",
        "A stream can have at most 50 tags.",
    )
}

/// `CreateStream`.
pub(crate) fn create_stream(shared: &Shared, r: CreateStreamInput, who: &Verified) -> Reply {
    Checks::new()
        .required("streamName", r.stream.stream_name.as_ref())
        .stream(&r.stream)
        .string("deviceName", r.device_name.as_deref(), &DEVICE_NAME)
        .string("mediaType", r.media_type.as_deref(), &MEDIA_TYPE)
        .string("kmsKeyId", r.kms_key_id.as_deref(), &KMS_KEY_ID)
        .integer(
            "dataRetentionInHours",
            r.data_retention_in_hours.as_ref(),
            0,
            MAX_INTEGER,
        )
        .tags("tags", r.tags.as_ref())
        .finish()?;
    let name = r.stream.stream_name.expect("checked");
    let mut meta = StreamMeta::new(&name, &who.region);
    meta.media_type = r.media_type;
    meta.device_name = r.device_name;
    meta.kms_key_id = r.kms_key_id;
    meta.data_retention_hours = r
        .data_retention_in_hours
        .and_then(|n| n.as_u64())
        .unwrap_or(0);
    meta.tags = r.tags.unwrap_or_default();
    let meta = shared
        .store
        .create(meta, None)
        .map_err(|e| store_err(e, &name))?;
    body(&json!({ "StreamARN": meta.arn }))
}

/// `DescribeStream`.
pub(crate) fn describe_stream(shared: &Shared, r: &StreamRef) -> Reply {
    let name = shared.resolve(r)?;
    let s = shared
        .store
        .describe(&name)
        .ok_or_else(|| not_found(&name))?;
    #[derive(Serialize)]
    struct Out {
        #[serde(rename = "StreamInfo")]
        info: StreamInfo,
    }
    body(&Out {
        info: stream_info(&s),
    })
}

/// What a ListStreams `NextToken` holds before base64: this, then the name
/// of the last stream returned.
const LIST_TOKEN_PREFIX: &[u8] = b"kvs-local:v1:";

/// The `NextToken` that resumes a listing after stream `last`.
fn list_token(last: &str) -> String {
    base64_encode(&[LIST_TOKEN_PREFIX, last.as_bytes()].concat())
}

/// The stream name a [`list_token`] resumes after.
fn list_token_name(token: &str) -> Result<String, ApiError> {
    base64_decode(token)
        .and_then(|raw| {
            let name = raw.strip_prefix(LIST_TOKEN_PREFIX)?;
            String::from_utf8(name.to_vec()).ok()
        })
        .ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "NextToken '{token}' is not valid: pass the NextToken a ListStreams response returned"
            ))
        })
}

/// `ListStreams` (paging, `BEGINS_WITH`). `NextToken` names the last stream
/// returned, so a page goes on after it in name order whatever was created or
/// deleted in between: a stream that exists throughout is listed once.
pub(crate) fn list_streams(shared: &Shared, r: ListStreamsInput) -> Reply {
    let condition = r.stream_name_condition.as_ref();
    Checks::new()
        .integer("maxResults", r.max_results.as_ref(), 1, 10_000)
        .string("nextToken", r.next_token.as_deref(), &NEXT_TOKEN)
        .one_of(
            "streamNameCondition.comparisonOperator",
            condition.and_then(|c| c.comparison_operator.as_deref()),
            &["BEGINS_WITH"],
        )
        .string(
            "streamNameCondition.comparisonValue",
            condition.and_then(|c| c.comparison_value.as_deref()),
            &STREAM_NAME,
        )
        .finish()?;
    let max = r.max_results.and_then(|n| n.as_u64()).unwrap_or(10_000) as usize;
    let after = match r.next_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(list_token_name(t)?),
    };
    let prefix = condition
        .and_then(|c| c.comparison_value.clone())
        .unwrap_or_default();
    let mut matching = shared.store.list().into_iter().filter(|s| {
        after.as_ref().is_none_or(|a| s.meta.name > *a) && s.meta.name.starts_with(&prefix)
    });
    let page: Vec<_> = matching.by_ref().take(max).collect();
    let next = match (matching.next(), page.last()) {
        (Some(_), Some(last)) => Some(list_token(&last.meta.name)),
        _ => None,
    };
    #[derive(Serialize)]
    struct Out {
        #[serde(rename = "StreamInfoList")]
        list: Vec<StreamInfo>,
        #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    }
    body(&Out {
        list: page.iter().map(stream_info).collect(),
        next,
    })
}

/// `DeleteStream` (by `StreamARN`, optional `CurrentVersion`).
pub(crate) fn delete_stream(shared: &Shared, r: DeleteStreamInput) -> Reply {
    Checks::new()
        .required("streamARN", r.stream.stream_arn.as_ref())
        .string("streamARN", r.stream.stream_arn.as_deref(), &RESOURCE_ARN)
        .string("currentVersion", r.current_version.as_deref(), &VERSION)
        .finish()?;
    let arn = r.stream.stream_arn.expect("checked");
    let name = shared
        .store
        .name_for_arn(&arn)
        .ok_or_else(|| not_found(&arn))?;
    shared
        .store
        .delete(&name, r.current_version.as_deref())
        .map_err(|e| store_err(e, &name))?;
    body(&json!({}))
}

/// `GetDataEndpoint`: the configured public URL, else the address the request
/// really reached, for every API, never the Host header (AWS's C producer sends
/// `Host: 127.0.0.1` without the port).
pub(crate) fn get_data_endpoint(shared: &Shared, r: GetDataEndpointInput, ctl: &ConnCtl) -> Reply {
    shared.resolve(&r.stream)?;
    let Some(api) = r.api_name else {
        return Err(ApiError::invalid_argument(
            "1 validation error detected: Value null at 'aPIName' failed to satisfy constraint: Member must not be null",
        ));
    };
    if !APIS.contains(&api.as_str()) {
        return Err(ApiError::invalid_argument(format!(
            "1 validation error detected: Value '{api}' at 'aPIName' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            APIS.join(", ")
        )));
    }
    body(&json!({ "DataEndpoint": data_endpoint(shared, ctl) }))
}

/// This endpoint's URL, as clients reach it: `--public-url`, or the address the connection
/// came to.
pub(super) fn data_endpoint(shared: &Shared, ctl: &ConnCtl) -> String {
    match &shared.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", ctl.local),
    }
}

/// `TagStream` (at most 50 tags in all).
pub(crate) fn tag_stream(shared: &Shared, r: TagStreamInput) -> Reply {
    Checks::new()
        .stream(&r.stream)
        .required("tags", r.tags.as_ref())
        .tags("tags", r.tags.as_ref())
        .finish()?;
    let name = shared.resolve(&r.stream)?;
    let tags = r.tags.unwrap_or_default();
    shared
        .store
        .update(&name, |m| {
            let mut merged = m.tags.clone();
            merged.extend(tags);
            if merged.len() > MAX_TAGS {
                return Err(StoreError::InUse);
            }
            m.tags = merged;
            Ok(())
        })
        .map_err(|e| match e {
            StoreError::InUse => too_many_tags(),
            e => store_err(e, &name),
        })?;
    body(&json!({}))
}

/// `UntagStream`.
pub(crate) fn untag_stream(shared: &Shared, r: UntagStreamInput) -> Reply {
    Checks::new()
        .stream(&r.stream)
        .required("tagKeyList", r.tag_key_list.as_ref())
        .tag_keys("tagKeyList", r.tag_key_list.as_ref())
        .finish()?;
    let name = shared.resolve(&r.stream)?;
    let keys = r.tag_key_list.unwrap_or_default();
    shared
        .store
        .update(&name, |m| {
            for k in &keys {
                m.tags.remove(k);
            }
            Ok(())
        })
        .map_err(|e| store_err(e, &name))?;
    body(&json!({}))
}

/// `ListTagsForStream`.
pub(crate) fn list_tags_for_stream(shared: &Shared, r: &StreamRef) -> Reply {
    let name = shared.resolve(r)?;
    let s = shared
        .store
        .describe(&name)
        .ok_or_else(|| not_found(&name))?;
    body(&json!({ "Tags": s.meta.tags }))
}

/// `UpdateDataRetention` (checks `CurrentVersion`).
pub(crate) fn update_data_retention(shared: &Shared, r: UpdateDataRetentionInput) -> Reply {
    let change_in_hours = r.data_retention_change_in_hours.as_ref();
    Checks::new()
        .stream(&r.stream)
        .required("currentVersion", r.current_version.as_ref())
        .string("currentVersion", r.current_version.as_deref(), &VERSION)
        .required("operation", r.operation.as_ref())
        .one_of(
            "operation",
            r.operation.as_deref(),
            &["INCREASE_DATA_RETENTION", "DECREASE_DATA_RETENTION"],
        )
        .required("dataRetentionChangeInHours", change_in_hours)
        .integer(
            "dataRetentionChangeInHours",
            change_in_hours,
            1,
            MAX_INTEGER,
        )
        .finish()?;
    let name = shared.resolve(&r.stream)?;
    let version = r.current_version.expect("checked");
    let change = change_in_hours.and_then(|n| n.as_u64()).expect("checked");
    let increase = r.operation.as_deref() == Some("INCREASE_DATA_RETENTION");
    let mut too_low = false;
    shared
        .store
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
                ApiError::invalid_argument("Data retention cannot be decreased below 0 hours.")
            } else {
                store_err(e, &name)
            }
        })?;
    body(&json!({}))
}

/// `UpdateStream`: `DeviceName` and/or `MediaType` of an ACTIVE stream whose
/// version is `CurrentVersion`; members left out keep their value. The
/// stream gets a new version (and stays ACTIVE: the update is done at once).
pub(crate) fn update_stream(shared: &Shared, r: UpdateStreamInput) -> Reply {
    Checks::new()
        .stream(&r.stream)
        .required("currentVersion", r.current_version.as_ref())
        .string("currentVersion", r.current_version.as_deref(), &VERSION)
        .string("deviceName", r.device_name.as_deref(), &DEVICE_NAME)
        .string("mediaType", r.media_type.as_deref(), &MEDIA_TYPE)
        .finish()?;
    let name = shared.resolve(&r.stream)?;
    let version = r.current_version.expect("checked");
    let status = shared.store.describe(&name).map(|s| s.status);
    if let Some(status) = status.filter(|s| s != "ACTIVE") {
        return Err(ApiError::new(
            400,
            "ResourceInUseException",
            format!("The stream {name} is {status}; it can be updated once it is ACTIVE."),
        ));
    }
    shared
        .store
        .update(&name, |m| {
            if m.version != version {
                return Err(StoreError::VersionMismatch);
            }
            if let Some(d) = r.device_name {
                m.device_name = Some(d);
            }
            if let Some(t) = r.media_type {
                m.media_type = Some(t);
            }
            Ok(())
        })
        .map_err(|e| store_err(e, &name))?;
    body(&json!({}))
}

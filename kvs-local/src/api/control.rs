//! Control-plane operations (`POST /createStream`, `/describeStream`, ...).

use super::context::{ConnCtl, Shared, not_found, store_err, validate_name};
use super::http::ApiError;
use super::operation::{
    CreateStreamInput, DeleteStreamInput, GetDataEndpointInput, ListStreamsInput, Page, StreamRef,
    TagStreamInput, UntagStreamInput, UpdateDataRetentionInput,
};
use crate::auth::sigv4::Verified;
use crate::model::records::{ACCOUNT_ID, StoreError, StreamMeta, StreamSnapshot};
use crate::util::epoch_seconds_json;
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

/// The `StreamInfo` shape (serialized with `CreationTime` in exponent form).
#[derive(Serialize)]
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

fn required(field: &str) -> ApiError {
    ApiError::invalid_argument(format!(
        "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
    ))
}

/// `CreateStream`.
pub(crate) fn create_stream(shared: &Shared, r: CreateStreamInput, who: &Verified) -> Reply {
    let name = r.stream.stream_name.ok_or_else(|| required("streamName"))?;
    validate_name(&name)?;
    let tags = r.tags.unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(too_many_tags());
    }
    let mut meta = StreamMeta::new(&name, &who.region);
    meta.media_type = r.media_type;
    meta.device_name = r.device_name;
    meta.kms_key_id = r.kms_key_id;
    meta.data_retention_hours = r.data_retention_in_hours.unwrap_or(0);
    meta.tags = tags;
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

/// `ListStreams` (paging, `BEGINS_WITH`).
pub(crate) fn list_streams(shared: &Shared, r: ListStreamsInput) -> Reply {
    let page = Page::new(r.max_results, r.next_token.as_deref(), 10_000)?;
    let prefix = r
        .stream_name_condition
        .and_then(|c| c.comparison_value)
        .unwrap_or_default();
    let all: Vec<_> = shared
        .store
        .list()
        .into_iter()
        .filter(|s| s.meta.name.starts_with(&prefix))
        .collect();
    #[derive(Serialize)]
    struct Out {
        #[serde(rename = "StreamInfoList")]
        list: Vec<StreamInfo>,
        #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    }
    body(&Out {
        list: all
            .iter()
            .skip(page.start)
            .take(page.max)
            .map(stream_info)
            .collect(),
        next: page.next_token(all.len()),
    })
}

/// `DeleteStream` (by `StreamARN`, optional `CurrentVersion`).
pub(crate) fn delete_stream(shared: &Shared, r: DeleteStreamInput) -> Reply {
    let arn = r.stream.stream_arn.ok_or_else(|| required("streamARN"))?;
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
    let api = r.api_name.unwrap_or_default();
    if !APIS.contains(&api.as_str()) {
        return Err(ApiError::invalid_argument(format!(
            "1 validation error detected: Value '{api}' at 'aPIName' failed to satisfy constraint: Member must satisfy enum value set: {APIS:?}"
        )));
    }
    let endpoint = match &shared.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", ctl.local),
    };
    body(&json!({ "DataEndpoint": endpoint }))
}

/// `TagStream` (at most 50 tags in all).
pub(crate) fn tag_stream(shared: &Shared, r: TagStreamInput) -> Reply {
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
    let name = shared.resolve(&r.stream)?;
    let keys = r
        .tag_key_list
        .ok_or_else(|| ApiError::invalid_argument("TagKeyList must be a non-empty list"))?;
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
    let name = shared.resolve(&r.stream)?;
    let version = r
        .current_version
        .ok_or_else(|| ApiError::invalid_argument("CurrentVersion is required"))?;
    let change = r
        .data_retention_change_in_hours
        .filter(|c| *c >= 1)
        .ok_or_else(|| {
            ApiError::invalid_argument("DataRetentionChangeInHours must be a positive integer")
        })?;
    let increase = match r.operation.as_deref() {
        Some("INCREASE_DATA_RETENTION") => true,
        Some("DECREASE_DATA_RETENTION") => false,
        other => {
            return Err(ApiError::invalid_argument(format!(
                "Operation must be INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION, not {other:?}"
            )));
        }
    };
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

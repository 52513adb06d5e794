//! The operations kvs-local serves and their typed request bodies.
//!
//! Each operation is `POST /<operation in lowerCamelCase>`; every one but
//! PutMedia has a JSON body, parsed here into its own struct so that a
//! field name lives in exactly one place and a misspelt one does not compile.

use super::http::ApiError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Number;
use std::collections::BTreeMap;

macro_rules! operations {
    ($($op:ident => $path:literal,)*) => {
        /// An operation, as named in the API reference.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Operation {
            $(#[doc = concat!("`POST ", $path, "`")] $op,)*
        }

        impl Operation {
            /// The operation served at `path`.
            pub(crate) fn from_path(path: &str) -> Option<Operation> {
                match path {
                    $($path => Some(Operation::$op),)*
                    _ => None,
                }
            }

            /// Its name (`DescribeStream`), used in records, logs and faults.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Operation::$op => stringify!($op),)*
                }
            }
        }
    };
}

operations! {
    CreateStream => "/createStream",
    DescribeStream => "/describeStream",
    ListStreams => "/listStreams",
    DeleteStream => "/deleteStream",
    GetDataEndpoint => "/getDataEndpoint",
    TagStream => "/tagStream",
    UntagStream => "/untagStream",
    ListTagsForStream => "/listTagsForStream",
    UpdateDataRetention => "/updateDataRetention",
    UpdateStream => "/updateStream",
    PutMedia => "/putMedia",
    GetMedia => "/getMedia",
    ListFragments => "/listFragments",
    GetMediaForFragmentList => "/getMediaForFragmentList",
    GetClip => "/getClip",
    GetHLSStreamingSessionURL => "/getHLSStreamingSessionURL",
    GetDASHStreamingSessionURL => "/getDASHStreamingSessionURL",
    GetImages => "/getImages",
}

/// `StreamName` and/or `StreamARN`, as most requests carry them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StreamRef {
    pub(crate) stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub(crate) stream_arn: Option<String>,
}

/// `CreateStream`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateStreamInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) data_retention_in_hours: Option<Number>,
    pub(crate) media_type: Option<String>,
    pub(crate) device_name: Option<String>,
    pub(crate) kms_key_id: Option<String>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
}

/// `ListStreams`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListStreamsInput {
    pub(crate) max_results: Option<Number>,
    pub(crate) next_token: Option<String>,
    pub(crate) stream_name_condition: Option<StreamNameCondition>,
}

/// `ListStreams.StreamNameCondition` (`BEGINS_WITH` is the only operator).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StreamNameCondition {
    pub(crate) comparison_operator: Option<String>,
    pub(crate) comparison_value: Option<String>,
}

/// `DeleteStream` (by `StreamARN` only, as the API requires).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteStreamInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) current_version: Option<String>,
}

/// `GetDataEndpoint`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetDataEndpointInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    #[serde(rename = "APIName")]
    pub(crate) api_name: Option<String>,
}

/// `TagStream`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TagStreamInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) tags: Option<BTreeMap<String, String>>,
}

/// `UntagStream`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UntagStreamInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) tag_key_list: Option<Vec<String>>,
}

/// `UpdateDataRetention`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateDataRetentionInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) current_version: Option<String>,
    pub(crate) operation: Option<String>,
    pub(crate) data_retention_change_in_hours: Option<Number>,
}

/// `UpdateStream`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateStreamInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) current_version: Option<String>,
    pub(crate) device_name: Option<String>,
    pub(crate) media_type: Option<String>,
}

/// `GetMedia`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetMediaInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) start_selector: Option<StartSelector>,
}

/// `GetMedia.StartSelector`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct StartSelector {
    pub(crate) start_selector_type: Option<String>,
    pub(crate) after_fragment_number: Option<String>,
    pub(crate) start_timestamp: Option<f64>,
    pub(crate) continuation_token: Option<String>,
}

/// `ListFragments`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListFragmentsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) max_results: Option<Number>,
    pub(crate) next_token: Option<String>,
    pub(crate) fragment_selector: Option<FragmentSelector>,
}

/// `ListFragments.FragmentSelector`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FragmentSelector {
    pub(crate) fragment_selector_type: Option<String>,
    pub(crate) timestamp_range: Option<TimestampRange>,
}

/// `FragmentSelector.TimestampRange` (epoch seconds).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TimestampRange {
    pub(crate) start_timestamp: Option<f64>,
    pub(crate) end_timestamp: Option<f64>,
}

/// `GetMediaForFragmentList`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetMediaForFragmentListInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) fragments: Option<Vec<String>>,
}

/// `GetClip`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetClipInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) clip_fragment_selector: Option<FragmentSelector>,
}

/// `GetImages`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetImagesInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) image_selector_type: Option<String>,
    pub(crate) start_timestamp: Option<f64>,
    pub(crate) end_timestamp: Option<f64>,
    pub(crate) sampling_interval: Option<Number>,
    pub(crate) format: Option<String>,
    pub(crate) format_config: Option<BTreeMap<String, String>>,
    pub(crate) width_pixels: Option<Number>,
    pub(crate) height_pixels: Option<Number>,
    pub(crate) max_results: Option<Number>,
    pub(crate) next_token: Option<String>,
}

/// `GetHLSStreamingSessionURL`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetHlsInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) playback_mode: Option<String>,
    #[serde(rename = "HLSFragmentSelector")]
    pub(crate) hls_fragment_selector: Option<FragmentSelector>,
    pub(crate) container_format: Option<String>,
    pub(crate) discontinuity_mode: Option<String>,
    pub(crate) display_fragment_timestamp: Option<String>,
    pub(crate) expires: Option<Number>,
    pub(crate) max_media_playlist_fragment_results: Option<Number>,
}

/// `GetDASHStreamingSessionURL`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetDashInput {
    #[serde(flatten)]
    pub(crate) stream: StreamRef,
    pub(crate) playback_mode: Option<String>,
    #[serde(rename = "DASHFragmentSelector")]
    pub(crate) dash_fragment_selector: Option<FragmentSelector>,
    pub(crate) display_fragment_timestamp: Option<String>,
    pub(crate) display_fragment_number: Option<String>,
    pub(crate) expires: Option<Number>,
    pub(crate) max_manifest_fragment_results: Option<Number>,
}

/// A page of a listing: `MaxResults` items (already validated to be 1 to
/// `limit`; `limit` when absent) from the offset in `NextToken`.
pub(crate) struct Page {
    pub(crate) start: usize,
    pub(crate) max: usize,
}

impl Page {
    pub(crate) fn new(
        max_results: Option<&Number>,
        next_token: Option<&str>,
        limit: u64,
    ) -> Result<Page, ApiError> {
        let start = match next_token {
            Some(t) => t
                .parse()
                .map_err(|_| ApiError::invalid_argument("invalid NextToken"))?,
            None => 0,
        };
        let max = max_results
            .and_then(Number::as_u64)
            .unwrap_or(limit)
            .clamp(1, limit) as usize;
        Ok(Page { start, max })
    }

    /// The `NextToken` to answer when `total` items exist.
    pub(crate) fn next_token(&self, total: usize) -> Option<String> {
        (self.start + self.max < total).then(|| (self.start + self.max).to_string())
    }
}

/// A parsed JSON request.
#[derive(Debug)]
pub(crate) enum ApiRequest {
    CreateStream(CreateStreamInput),
    DescribeStream(StreamRef),
    ListStreams(ListStreamsInput),
    DeleteStream(DeleteStreamInput),
    GetDataEndpoint(GetDataEndpointInput),
    TagStream(TagStreamInput),
    UntagStream(UntagStreamInput),
    ListTagsForStream(StreamRef),
    UpdateDataRetention(UpdateDataRetentionInput),
    UpdateStream(UpdateStreamInput),
    GetMedia(GetMediaInput),
    ListFragments(ListFragmentsInput),
    GetMediaForFragmentList(GetMediaForFragmentListInput),
    GetClip(GetClipInput),
    GetHLSStreamingSessionURL(GetHlsInput),
    GetDASHStreamingSessionURL(GetDashInput),
    GetImages(GetImagesInput),
}

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = body.trim_ascii();
    let body = if body.is_empty() { b"{}" } else { body };
    if !body.starts_with(b"{") {
        return Err(ApiError::new(
            400,
            "SerializationException",
            "Request body must be a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "SerializationException",
            format!("Malformed JSON: {e}"),
        )
    })
}

impl ApiRequest {
    /// Parses the JSON body of `op`.
    pub(crate) fn parse(op: Operation, body: &[u8]) -> Result<ApiRequest, ApiError> {
        use ApiRequest as R;
        Ok(match op {
            Operation::CreateStream => R::CreateStream(json(body)?),
            Operation::DescribeStream => R::DescribeStream(json(body)?),
            Operation::ListStreams => R::ListStreams(json(body)?),
            Operation::DeleteStream => R::DeleteStream(json(body)?),
            Operation::GetDataEndpoint => R::GetDataEndpoint(json(body)?),
            Operation::TagStream => R::TagStream(json(body)?),
            Operation::UntagStream => R::UntagStream(json(body)?),
            Operation::ListTagsForStream => R::ListTagsForStream(json(body)?),
            Operation::UpdateDataRetention => R::UpdateDataRetention(json(body)?),
            Operation::UpdateStream => R::UpdateStream(json(body)?),
            Operation::GetMedia => R::GetMedia(json(body)?),
            Operation::ListFragments => R::ListFragments(json(body)?),
            Operation::GetMediaForFragmentList => R::GetMediaForFragmentList(json(body)?),
            Operation::GetClip => R::GetClip(json(body)?),
            Operation::GetHLSStreamingSessionURL => R::GetHLSStreamingSessionURL(json(body)?),
            Operation::GetDASHStreamingSessionURL => R::GetDASHStreamingSessionURL(json(body)?),
            Operation::GetImages => R::GetImages(json(body)?),
            Operation::PutMedia => {
                return Err(ApiError::new(
                    500,
                    "InternalFailure",
                    "PutMedia has no JSON body",
                ));
            }
        })
    }

    /// The stream the request names (for the report and fault scoping),
    /// also when the body did not parse as the operation's shape.
    pub(crate) fn stream_ref(parsed: &Result<ApiRequest, ApiError>, body: &[u8]) -> StreamRef {
        use ApiRequest as R;
        let s = match parsed {
            Ok(R::CreateStream(r)) => &r.stream,
            Ok(R::DescribeStream(s) | R::ListTagsForStream(s)) => s,
            Ok(R::DeleteStream(r)) => &r.stream,
            Ok(R::GetDataEndpoint(r)) => &r.stream,
            Ok(R::TagStream(r)) => &r.stream,
            Ok(R::UntagStream(r)) => &r.stream,
            Ok(R::UpdateDataRetention(r)) => &r.stream,
            Ok(R::UpdateStream(r)) => &r.stream,
            Ok(R::GetMedia(r)) => &r.stream,
            Ok(R::ListFragments(r)) => &r.stream,
            Ok(R::GetMediaForFragmentList(r)) => &r.stream,
            Ok(R::GetClip(r)) => &r.stream,
            Ok(R::GetHLSStreamingSessionURL(r)) => &r.stream,
            Ok(R::GetDASHStreamingSessionURL(r)) => &r.stream,
            Ok(R::GetImages(r)) => &r.stream,
            Ok(R::ListStreams(_)) => return StreamRef::default(),
            Err(_) => return serde_json::from_slice(body).unwrap_or_default(),
        };
        StreamRef {
            stream_name: s.stream_name.clone(),
            stream_arn: s.stream_arn.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        let op = Operation::from_path("/getMediaForFragmentList").unwrap();
        assert_eq!(op, Operation::GetMediaForFragmentList);
        assert_eq!(op.name(), "GetMediaForFragmentList");
        assert_eq!(Operation::from_path("/nope"), None);
    }

    #[test]
    fn typed_bodies() {
        let r = ApiRequest::parse(
            Operation::CreateStream,
            br#"{"StreamName":"a","DataRetentionInHours":2,"Tags":{"k":"v"},"Unknown":1}"#,
        )
        .unwrap();
        let ApiRequest::CreateStream(c) = r else {
            panic!("{r:?}")
        };
        assert_eq!(c.stream.stream_name.as_deref(), Some("a"));
        assert_eq!(c.data_retention_in_hours, Some(2.into()));
        assert_eq!(c.tags.unwrap()["k"], "v");
        let e = ApiRequest::parse(Operation::DescribeStream, b"[1]").unwrap_err();
        assert_eq!(e.error_type, "SerializationException");
        let body = br#"{"StreamName":"cam","DataRetentionInHours":"x"}"#;
        let parsed = ApiRequest::parse(Operation::CreateStream, body);
        assert!(parsed.is_err());
        let hint = ApiRequest::stream_ref(&parsed, body);
        assert_eq!(hint.stream_name.as_deref(), Some("cam"));
        // numbers of any sign parse (the handler checks their range), strings do not
        assert!(ApiRequest::parse(Operation::ListStreams, br#"{"MaxResults":-1}"#).is_ok());
        let e = ApiRequest::parse(Operation::ListStreams, br#"{"MaxResults":"1"}"#).unwrap_err();
        assert_eq!(e.error_type, "SerializationException");
        let r = ApiRequest::parse(
            Operation::UpdateStream,
            br#"{"StreamARN":"arn","CurrentVersion":"v1","MediaType":"video/h265"}"#,
        )
        .unwrap();
        let ApiRequest::UpdateStream(u) = r else {
            panic!("{r:?}")
        };
        assert_eq!(u.stream.stream_arn.as_deref(), Some("arn"));
        assert_eq!(u.current_version.as_deref(), Some("v1"));
        assert_eq!(u.media_type.as_deref(), Some("video/h265"));
        assert_eq!(u.device_name, None);
    }
}

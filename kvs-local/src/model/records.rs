//! The records kvs-local keeps: stream metadata, fragment metadata, and
//! the views of them the library API returns.

use crate::util::now_ms;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;

/// Account id used in ARNs.
pub(crate) const ACCOUNT_ID: &str = "000000000000";

/// Persistent stream metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamMeta {
    /// StreamName.
    pub name: String,
    /// StreamARN.
    pub arn: String,
    /// MediaType (may be absent).
    pub media_type: Option<String>,
    /// DeviceName (may be absent).
    pub device_name: Option<String>,
    /// KmsKeyId.
    pub kms_key_id: Option<String>,
    /// DataRetentionInHours.
    pub data_retention_hours: u64,
    /// Version (changes on every update).
    pub version: String,
    /// Creation time in ms since the epoch.
    pub creation_time_ms: u64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// A view of a stream for the library API.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StreamSnapshot {
    /// Metadata.
    #[serde(flatten)]
    pub meta: StreamMeta,
    /// `CREATING` or `ACTIVE`.
    pub status: String,
    /// Number of stored fragments.
    pub fragment_count: usize,
}

/// Persistent per-fragment metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FragMeta {
    /// 47-digit fragment number.
    pub number: String,
    /// Cluster timecode as sent.
    pub timecode: u64,
    /// Producer timestamp (ms since epoch).
    pub producer_timestamp_ms: u64,
    /// Server timestamp (ms since epoch).
    pub server_timestamp_ms: u64,
    /// Duration (span of block timecodes) in ms.
    pub duration_ms: u64,
    /// Whether the fragment starts with a key frame.
    pub key_frame: bool,
    /// Digest of the stream header it was sent with.
    pub header_digest: String,
    /// Size of the raw cluster bytes.
    pub size: u64,
    /// Fragment metadata: (name, value) of the SimpleTags sent after the cluster, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
}

/// A stored fragment as returned by [`crate::Server::fragments`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFragment {
    /// 47-digit fragment number.
    pub number: String,
    /// Cluster timecode as sent (TimecodeScale units).
    pub timecode: u64,
    /// Producer timestamp (ms since epoch).
    pub producer_timestamp_ms: u64,
    /// Server timestamp (ms since epoch).
    pub server_timestamp_ms: u64,
    /// Duration (span of block timecodes) in ms.
    pub duration_ms: u64,
    /// Whether the fragment starts with a key frame.
    pub key_frame: bool,
    /// Raw cluster bytes as received.
    pub bytes: Bytes,
    /// Index into [`crate::Server::stream_headers`].
    pub header_index: usize,
    /// Fragment metadata: (name, value) of the SimpleTags sent after the cluster, in order.
    pub metadata: Vec<(String, String)>,
}

/// Errors of store operations, mapped to AWS errors by the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such stream.
    #[error("stream not found")]
    NotFound,
    /// Stream exists already.
    #[error("stream already exists")]
    InUse,
    /// CurrentVersion mismatch.
    #[error("version mismatch")]
    VersionMismatch,
    /// Disk failure.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

impl StreamMeta {
    /// The metadata of a new stream: ARN, version and creation time filled in.
    pub(crate) fn new(name: &str, region: &str) -> StreamMeta {
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
}

/// A fresh stream version string.
pub(crate) fn new_version() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:04x}", now_ms(), n & 0xffff)
}

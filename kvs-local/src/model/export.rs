//! `kvs-local export`: a stored stream as one MKV file.

use super::records::StoreError;
use super::store::Store;
use std::io;
use std::time::Duration;

/// Result of [`export_stream`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportStats {
    /// Fragments written.
    pub fragments: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Fragments left out because they were sent with a header of other tracks.
    pub skipped: usize,
    /// Times the fragments' timecodes were moved onto the first recording's timeline (a later
    /// PutMedia session, whose RELATIVE timecodes start again from 0).
    pub moved: usize,
}

/// Writes a stored stream as one MKV file: the stream header of the first
/// fragment followed by every fragment sent with a header of the same tracks
/// ([`kvs_format::matroska::same_tracks`]: a restarted muxer's), in order, each
/// Cluster at its producer time on one timeline ([`kvs_format::timeline`]), so
/// that the timestamps of a stream of several sessions never go back.
pub fn export_stream(
    data_dir: &std::path::Path,
    name: &str,
    out: &std::path::Path,
) -> Result<ExportStats, StoreError> {
    use std::io::Write;
    let store = Store::open(Some(data_dir.to_path_buf()), Duration::ZERO)?;
    if store.describe(name).is_none() {
        return Err(StoreError::NotFound);
    }
    let headers = store.headers(name);
    let frags = store.fragments_where(name, |_, _| true)?;
    let mut stats = ExportStats::default();
    let mut f = io::BufWriter::new(std::fs::File::create(out)?);
    if let Some(first) = frags.first() {
        let header = &headers[first.header_index];
        f.write_all(header)?;
        stats.bytes += header.len() as u64;
        let scale = kvs_format::matroska::header_timecode_scale(header);
        let mut timeline = kvs_format::timeline::Timeline::new();
        for fr in &frags {
            if fr.header_index != first.header_index
                && !kvs_format::matroska::same_tracks(header, &headers[fr.header_index])
            {
                stats.skipped += 1;
                continue;
            }
            let placed = timeline.place_cluster(&fr.bytes, scale, Some(fr.producer_timestamp_ms));
            stats.moved += usize::from(placed.moved_ns.is_some());
            let rest = match &placed.head {
                Some((head, replaced)) => {
                    f.write_all(head)?;
                    stats.bytes += head.len() as u64;
                    &fr.bytes[*replaced..]
                }
                None => &fr.bytes[..],
            };
            f.write_all(rest)?;
            stats.bytes += rest.len() as u64;
            stats.fragments += 1;
        }
    }
    f.flush()?;
    Ok(stats)
}

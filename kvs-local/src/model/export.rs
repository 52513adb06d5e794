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
    /// Fragments left out because they were sent with another stream header.
    pub skipped: usize,
}

/// Writes a stored stream as one MKV file: the stream header of the first
/// fragment followed by every fragment sent with that header, in order.
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
    let frags = store.fragments_where(name, |_, _| true);
    let mut stats = ExportStats::default();
    let mut f = io::BufWriter::new(std::fs::File::create(out)?);
    if let Some(first) = frags.first() {
        let header = &headers[first.header_index];
        f.write_all(header)?;
        stats.bytes += header.len() as u64;
        for fr in &frags {
            if fr.header_index != first.header_index {
                stats.skipped += 1;
                continue;
            }
            f.write_all(&fr.bytes)?;
            stats.bytes += fr.bytes.len() as u64;
            stats.fragments += 1;
        }
    }
    f.flush()?;
    Ok(stats)
}

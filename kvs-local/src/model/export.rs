//! `kvs-local export`: a stored stream as one MKV file.

use super::records::StoreError;
use super::store::Store;
use std::io;
use std::time::Duration;

/// Result of [`export_stream`].
#[derive(Clone, Debug, Default)]
pub struct ExportStats {
    /// Fragments written.
    pub fragments: usize,
    /// Bytes written.
    pub bytes: u64,
    /// The files written, in order, with how many fragments each: the output, then one more
    /// (`NAME-2.mkv`, `NAME-3.mkv`...) each time the stream header changes to other tracks
    /// (another codec or resolution), which one Matroska file cannot hold.
    pub files: Vec<(std::path::PathBuf, usize)>,
    /// Times the fragments' timecodes were moved onto the first recording's timeline (a later
    /// PutMedia session, whose RELATIVE timecodes start again from 0).
    pub moved: usize,
}

/// The file for the `n`th part (from 1) of an export to `out`: `out` itself, then
/// `STEM-n.EXT` beside it.
fn part_path(out: &std::path::Path, n: usize) -> std::path::PathBuf {
    if n == 1 {
        return out.to_path_buf();
    }
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let name = match out.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    out.with_file_name(name)
}

/// Writes a stored stream as MKV: the stream header of the first fragment followed by every
/// fragment sent with a header of the same tracks ([`kvs_format::matroska::same_tracks`]: a
/// restarted muxer's), in order, each Cluster at its producer time on one timeline
/// ([`kvs_format::timeline`]), so that the timestamps of a stream of several sessions never go
/// back. Where the header changes to other tracks, the rest goes to the next file (see
/// [`ExportStats::files`]), the same way.
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
    // The open part: its file, header, timecode scale and timeline.
    let mut part: Option<(
        io::BufWriter<std::fs::File>,
        usize,
        u64,
        kvs_format::timeline::Timeline,
    )> = None;
    if frags.is_empty() {
        std::fs::File::create(out)?;
        stats.files.push((out.to_path_buf(), 0));
    }
    for fr in &frags {
        let same = part.as_ref().is_some_and(|(_, index, _, _)| {
            *index == fr.header_index
                || kvs_format::matroska::same_tracks(&headers[*index], &headers[fr.header_index])
        });
        if !same {
            if let Some((mut f, ..)) = part.take() {
                f.flush()?;
            }
            let path = part_path(out, stats.files.len() + 1);
            let mut f = io::BufWriter::new(std::fs::File::create(&path)?);
            let header = &headers[fr.header_index];
            f.write_all(header)?;
            stats.bytes += header.len() as u64;
            let scale = kvs_format::matroska::header_timecode_scale(header);
            part = Some((
                f,
                fr.header_index,
                scale,
                kvs_format::timeline::Timeline::new(),
            ));
            stats.files.push((path, 0));
        }
        let (f, _, scale, timeline) = part.as_mut().expect("a part is open");
        let placed = timeline.place_cluster(&fr.bytes, *scale, Some(fr.producer_timestamp_ms));
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
        stats.files.last_mut().expect("a file").1 += 1;
    }
    if let Some((mut f, ..)) = part {
        f.flush()?;
    }
    Ok(stats)
}

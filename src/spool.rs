//! The spool: fragments on disk until the service has them, so that an outage longer than
//! the memory store, a crash or a restart loses nothing. Free of GStreamer.
//!
//! One directory per stream holds append-only segment files of records. A record is
//! `[len: u32 LE][kind: u8][payload][checksum: u64 LE]`, `len` counting kind and payload and
//! the checksum (FNV-1a constants over 64-bit words) covering them too. Kinds:
//! - header: `id u64, producer_start_ms u64, media type (u16 length + UTF-8), header bytes`;
//! - fragment: `id u64, header id u64, timecode u64, start_ns u64, end_ns u64, bytes`;
//! - done: `id u64`: the fragment was acknowledged (or rejected) and is never sent again.
//!
//! A whole fragment is one append and one fsync, made when the fragment ends. A done record
//! is appended without fsync: a crash of the process keeps it (the page cache survives); a
//! power cut may lose it and cost one fragment sent twice. A segment whose fragments are all
//! done is deleted. A torn last record (a crash during the append) fails its length or
//! checksum: it is cut off when the spool is opened, and reported, never sent.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const KIND_HEADER: u8 = 1;
const KIND_FRAGMENT: u8 = 2;
const KIND_DONE: u8 = 3;
/// A new segment file starts once the current one is this large.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// With nothing pending, the current segment is emptied once it is this large.
const RECLAIM_AT: u64 = 4 * 1024 * 1024;
/// Larger records are taken as garbage (the service's fragments are at most 50 MB).
const MAX_RECORD: u64 = 64 * 1024 * 1024;

/// The records' checksum: FNV-1a's constants over 8-byte little-endian words (the tail
/// zero-padded), fast enough to cost little next to the write.
fn checksum(parts: &[&[u8]]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut carry = [0u8; 8];
    let mut filled = 0;
    for part in parts {
        let mut bytes = *part;
        if filled > 0 {
            let take = (8 - filled).min(bytes.len());
            carry[filled..filled + take].copy_from_slice(&bytes[..take]);
            filled += take;
            bytes = &bytes[take..];
            if filled < 8 {
                continue;
            }
            h = (h ^ u64::from_le_bytes(carry)).wrapping_mul(PRIME);
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        let rest = words.remainder();
        carry[..rest.len()].copy_from_slice(rest);
        filled = rest.len();
    }
    if filled > 0 {
        carry[filled..].fill(0);
        h = (h ^ u64::from_le_bytes(carry)).wrapping_mul(PRIME);
    }
    h ^ (h >> 29)
}

/// The body of a header record (without the header's bytes, which follow it).
fn header_meta(id: u64, producer_start_ms: u64, media_type: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(18 + media_type.len());
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(&producer_start_ms.to_le_bytes());
    payload.extend_from_slice(&(media_type.len() as u16).to_le_bytes());
    payload.extend_from_slice(media_type.as_bytes());
    payload
}

/// A stream header kept in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledHeader {
    pub id: u64,
    pub producer_start_ms: u64,
    pub media_type: String,
    pub bytes: Bytes,
}

/// Where a fragment that is not yet done lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledFragment {
    pub id: u64,
    pub header_id: u64,
    pub timecode: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    segment: u64,
    /// Offset and length of the fragment's bytes in the segment.
    offset: u64,
    pub len: u64,
}

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Fragments from an earlier run that the service never acknowledged.
    pub fragments: u64,
    pub bytes: u64,
    /// Bytes of a torn last record (a crash during an append), cut off.
    pub torn_bytes: u64,
}

/// Fragments dropped to stay within the spool's size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolDropped {
    pub fragments: u64,
    pub bytes: u64,
}

struct Segment {
    n: u64,
    path: PathBuf,
    size: u64,
    /// Fragments in it that are not done.
    live: u64,
}

/// The spool of one stream.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    file: File,
    headers: BTreeMap<u64, SpooledHeader>,
    /// Fragments not done, in order.
    pending: BTreeMap<u64, SpooledFragment>,
    next_id: u64,
    next_header_id: u64,
}

impl Spool {
    /// Opens (creating it if needed) the spool of `stream` under `dir`, recovering what an
    /// earlier run left.
    pub fn open(dir: &Path, stream: &str, max_bytes: u64) -> io::Result<(Spool, Recovered)> {
        let safe: String = stream
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = dir.join(safe);
        fs::create_dir_all(&dir)?;
        let mut numbers: Vec<u64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut headers = BTreeMap::new();
        let mut pending = BTreeMap::new();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        // Ids keep growing across runs: a done record never names a later fragment.
        let (mut next_id, mut next_header_id) = (0, 0);
        for n in numbers {
            let path = dir.join(format!("seg-{n:020}.log"));
            let (size, torn) = scan(&path, n, &mut headers, &mut pending, &mut next_id)?;
            recovered.torn_bytes += torn;
            segments.push_back(Segment {
                n,
                path,
                size,
                live: 0,
            });
        }
        for f in pending.values() {
            recovered.fragments += 1;
            recovered.bytes += f.len;
        }
        for (&id, _) in headers.iter() {
            next_header_id = next_header_id.max(id + 1);
        }
        for seg in segments.iter_mut() {
            seg.live = pending.values().filter(|f| f.segment == seg.n).count() as u64;
        }
        let n = segments.back().map_or(0, |s| s.n + 1);
        let path = dir.join(format!("seg-{n:020}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        segments.push_back(Segment {
            n,
            path,
            size: 0,
            live: 0,
        });
        let mut spool = Spool {
            dir,
            max_bytes,
            segments,
            file,
            headers,
            pending,
            next_id,
            next_header_id,
        };
        spool.remove_finished_segments();
        Ok((spool, recovered))
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fragments not yet done, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &SpooledFragment> {
        self.pending.values()
    }

    /// A fragment, if it is not done (nor dropped).
    pub fn get(&self, id: u64) -> Option<&SpooledFragment> {
        self.pending.get(&id)
    }

    pub fn header(&self, id: u64) -> Option<&SpooledHeader> {
        self.headers.get(&id)
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Keeps a stream header (made durable with the next fragment). Returns its id.
    pub fn append_header(
        &mut self,
        producer_start_ms: u64,
        media_type: &str,
        bytes: &Bytes,
    ) -> io::Result<u64> {
        let id = self.next_header_id;
        self.next_header_id += 1;
        let meta = header_meta(id, producer_start_ms, media_type);
        self.write_record(KIND_HEADER, &[&meta, bytes], false)?;
        self.headers.insert(
            id,
            SpooledHeader {
                id,
                producer_start_ms,
                media_type: media_type.to_owned(),
                bytes: bytes.clone(),
            },
        );
        Ok(id)
    }

    /// Appends a whole fragment (its bytes in `chunks`) and makes it durable: one write, one
    /// fsync. Drops the oldest fragments first if the spool would outgrow its size.
    pub fn append_fragment(
        &mut self,
        header_id: u64,
        timecode: u64,
        (start_ns, end_ns): (u64, u64),
        chunks: &[Bytes],
    ) -> io::Result<(SpooledFragment, SpoolDropped)> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let dropped = self.make_room(len + 64);
        if self
            .segments
            .back()
            .is_some_and(|s| s.size >= SEGMENT_BYTES)
        {
            self.new_segment()?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut meta = Vec::with_capacity(40);
        for v in [id, header_id, timecode, start_ns, end_ns] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(chunks.len() + 1);
        parts.push(&meta);
        parts.extend(chunks.iter().map(|c| c.as_ref()));
        let at = self.segments.back().map_or(0, |s| s.size);
        self.write_record(KIND_FRAGMENT, &parts, true)?;
        let segment = self.segments.back_mut().expect("a current segment");
        segment.live += 1;
        let fragment = SpooledFragment {
            id,
            header_id,
            timecode,
            start_ns,
            end_ns,
            segment: segment.n,
            offset: at + 5 + meta.len() as u64,
            len,
        };
        self.pending.insert(id, fragment.clone());
        Ok((fragment, dropped))
    }

    /// The fragment was acknowledged (or refused for good): it is never sent again.
    pub fn mark_done(&mut self, id: u64) -> io::Result<()> {
        let Some(f) = self.pending.remove(&id) else {
            return Ok(());
        };
        self.write_record(KIND_DONE, &[&id.to_le_bytes()], false)?;
        if let Some(seg) = self.segments.iter_mut().find(|s| s.n == f.segment) {
            seg.live = seg.live.saturating_sub(1);
        }
        self.remove_finished_segments();
        if self.pending.is_empty() && self.segments.back().is_some_and(|s| s.size > RECLAIM_AT) {
            self.reclaim()?;
        }
        Ok(())
    }

    /// Nothing is pending: the current segment starts again empty, with the newest header
    /// (the live stream's, which later fragments name).
    fn reclaim(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        if let Some(seg) = self.segments.back_mut() {
            seg.size = 0;
        }
        let newest = self.headers.values().next_back().cloned();
        self.headers.clear();
        if let Some(h) = newest {
            let meta = header_meta(h.id, h.producer_start_ms, &h.media_type);
            self.write_record(KIND_HEADER, &[&meta, &h.bytes], false)?;
            self.headers.insert(h.id, h);
        }
        Ok(())
    }

    /// Reads a pending fragment's bytes back.
    pub fn read(&self, f: &SpooledFragment) -> io::Result<Bytes> {
        let path = self.dir.join(format!("seg-{:020}.log", f.segment));
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(f.offset))?;
        let mut buf = vec![0; f.len as usize];
        file.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Writes one record with a single vectored write (no copy of the fragment's bytes).
    fn write_record(&mut self, kind: u8, parts: &[&[u8]], sync: bool) -> io::Result<()> {
        let kind_byte = [kind];
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 3);
        all.push(&kind_byte);
        all.extend_from_slice(parts);
        let body: u64 = all.iter().map(|p| p.len() as u64).sum();
        let sum = checksum(&all).to_le_bytes();
        let len = (body as u32).to_le_bytes();
        all.insert(0, &len);
        all.push(&sum);
        write_all_vectored(&mut self.file, &all)?;
        if sync {
            self.file.sync_data()?;
        }
        if let Some(seg) = self.segments.back_mut() {
            seg.size += body + 12;
        }
        Ok(())
    }

    fn new_segment(&mut self) -> io::Result<()> {
        let n = self.segments.back().map_or(0, |s| s.n + 1);
        let path = self.dir.join(format!("seg-{n:020}.log"));
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.segments.push_back(Segment {
            n,
            path,
            size: 0,
            live: 0,
        });
        // Headers still needed must be in a live segment: write them again.
        let needed: Vec<SpooledHeader> = self
            .headers
            .values()
            .filter(|h| self.pending.values().any(|f| f.header_id == h.id))
            .cloned()
            .collect();
        for h in needed {
            let meta = header_meta(h.id, h.producer_start_ms, &h.media_type);
            self.write_record(KIND_HEADER, &[&meta, &h.bytes], false)?;
        }
        self.remove_finished_segments();
        Ok(())
    }

    /// Deletes segments (but the current one) whose fragments are all done.
    fn remove_finished_segments(&mut self) {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.live == 0) {
            let seg = self.segments.pop_front().expect("checked");
            let _ = fs::remove_file(&seg.path);
        }
    }

    /// Drops the oldest pending fragments, a segment at a time, until `extra` more bytes fit.
    fn make_room(&mut self, extra: u64) -> SpoolDropped {
        let mut dropped = SpoolDropped::default();
        while self.size() + extra > self.max_bytes && self.segments.len() > 1 {
            let seg = self.segments.pop_front().expect("checked");
            let gone: Vec<u64> = self
                .pending
                .values()
                .filter(|f| f.segment == seg.n)
                .map(|f| f.id)
                .collect();
            for id in gone {
                if let Some(f) = self.pending.remove(&id) {
                    dropped.fragments += 1;
                    dropped.bytes += f.len;
                }
            }
            let _ = fs::remove_file(&seg.path);
        }
        dropped
    }
}

impl Drop for Spool {
    /// A spool with nothing pending leaves no file behind.
    fn drop(&mut self) {
        if self.pending.is_empty() {
            for seg in &self.segments {
                let _ = fs::remove_file(&seg.path);
            }
        }
    }
}

/// `write_all` for a list of slices: one `writev` unless the kernel takes less.
fn write_all_vectored(file: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a segment's records; cuts off a torn tail. Returns (size kept, bytes cut).
fn scan(
    path: &Path,
    n: u64,
    headers: &mut BTreeMap<u64, SpooledHeader>,
    pending: &mut BTreeMap<u64, SpooledFragment>,
    next_id: &mut u64,
) -> io::Result<(u64, u64)> {
    let data = fs::read(path)?;
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(record) = record_at(&data, pos) else {
            break;
        };
        let (kind, payload) = record;
        let u = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        match kind {
            KIND_HEADER if payload.len() >= 18 => {
                let mlen = u16::from_le_bytes([payload[16], payload[17]]) as usize;
                if payload.len() >= 18 + mlen {
                    let id = u(0);
                    headers.insert(
                        id,
                        SpooledHeader {
                            id,
                            producer_start_ms: u(8),
                            media_type: String::from_utf8_lossy(&payload[18..18 + mlen])
                                .into_owned(),
                            bytes: Bytes::copy_from_slice(&payload[18 + mlen..]),
                        },
                    );
                }
            }
            KIND_FRAGMENT if payload.len() >= 40 => {
                let id = u(0);
                *next_id = (*next_id).max(id + 1);
                pending.insert(
                    id,
                    SpooledFragment {
                        id,
                        header_id: u(8),
                        timecode: u(16),
                        start_ns: u(24),
                        end_ns: u(32),
                        segment: n,
                        offset: (pos + 5 + 40) as u64,
                        len: (payload.len() - 40) as u64,
                    },
                );
            }
            KIND_DONE if payload.len() >= 8 => {
                *next_id = (*next_id).max(u(0) + 1);
                pending.remove(&u(0));
            }
            _ => {}
        }
        pos += 4 + payload.len() + 1 + 8;
    }
    let torn = (data.len() - pos) as u64;
    if torn > 0 {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(pos as u64)?;
        file.sync_all()?;
    }
    Ok((pos as u64, torn))
}

/// The record at `pos`: `(kind, payload)`, or `None` when it is torn or corrupt.
fn record_at(data: &[u8], pos: usize) -> Option<(u8, &[u8])> {
    let len = u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?) as usize;
    if len == 0 || len as u64 > MAX_RECORD {
        return None;
    }
    let body = data.get(pos + 4..pos + 4 + len)?;
    let sum = u64::from_le_bytes(data.get(pos + 4 + len..pos + 12 + len)?.try_into().ok()?);
    if checksum(&[body]) != sum {
        return None;
    }
    Some((body[0], &body[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, max: u64) -> (Spool, Recovered) {
        Spool::open(dir, "cam/1", max).unwrap()
    }

    #[test]
    fn the_checksum_does_not_depend_on_how_the_record_is_cut() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let whole = checksum(&[&data]);
        for cuts in [[1, 2], [7, 8], [8, 16], [3, 999], [500, 501], [0, 1000]] {
            let (a, rest) = data.split_at(cuts[0]);
            let (b, c) = rest.split_at(cuts[1] - cuts[0]);
            assert_eq!(checksum(&[a, b, c]), whole, "{cuts:?}");
        }
        let mut flipped = data.clone();
        flipped[999] ^= 1;
        assert_ne!(checksum(&[&flipped]), whole);
        assert_ne!(checksum(&[&data[..999]]), whole, "a shorter record differs");
    }

    #[test]
    fn fragments_survive_a_restart_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(r, Recovered::default());
        let h = s
            .append_header(1_000, "video/h264", &Bytes::from_static(b"HEADER"))
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..3u64 {
            let chunks = [Bytes::from(vec![i as u8; 10]), Bytes::from_static(b"tail")];
            let (f, d) = s
                .append_fragment(
                    h,
                    i * 2000,
                    (i * 2_000_000_000, i * 2_000_000_000 + 1),
                    &chunks,
                )
                .unwrap();
            assert_eq!(d, SpoolDropped::default());
            assert_eq!(s.read(&f).unwrap().len(), 14);
            ids.push(f.id);
        }
        s.mark_done(ids[0]).unwrap();
        drop(s);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.bytes, r.torn_bytes), (2, 28, 0));
        let pending: Vec<&SpooledFragment> = s.pending().collect();
        assert_eq!(
            pending.iter().map(|f| f.timecode).collect::<Vec<_>>(),
            [2000, 4000]
        );
        let mut expected = vec![1u8; 10];
        expected.extend_from_slice(b"tail");
        assert_eq!(s.read(pending[0]).unwrap(), Bytes::from(expected));
        let header = s.header(pending[0].header_id).unwrap();
        assert_eq!(
            (
                header.producer_start_ms,
                header.media_type.as_str(),
                &header.bytes[..]
            ),
            (1_000, "video/h264", &b"HEADER"[..])
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s
            .append_header(0, "video/h264", &Bytes::from_static(b"H"))
            .unwrap();
        s.append_fragment(h, 0, (0, 1), &[Bytes::from(vec![7u8; 100])])
            .unwrap();
        s.append_fragment(h, 2000, (2, 3), &[Bytes::from(vec![8u8; 100])])
            .unwrap();
        let seg = s.segments.back().unwrap().path.clone();
        drop(s);
        // A crash in the middle of the second fragment's append.
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 30)
            .unwrap();
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(r.fragments, 1);
        assert!(r.torn_bytes > 0);
        assert_eq!(s.pending().map(|f| f.timecode).collect::<Vec<_>>(), [0]);
        // A flipped bit is caught by the checksum too.
        let data_len = fs::metadata(&seg).unwrap().len();
        let mut data = fs::read(&seg).unwrap();
        let last = data.len() - 9;
        data[last] ^= 1;
        fs::write(&seg, &data).unwrap();
        drop(s);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(s.pending().count(), 0);
        assert!(r.torn_bytes > 0 && r.torn_bytes < data_len);
    }

    #[test]
    fn done_segments_are_deleted_and_a_full_spool_drops_its_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let (f, _) = s
            .append_fragment(h, 0, (0, 1), &[Bytes::from_static(b"x")])
            .unwrap();
        s.new_segment().unwrap();
        let dir_of_stream = s.dir().to_owned();
        let files = || fs::read_dir(&dir_of_stream).unwrap().count();
        assert_eq!(files(), 2);
        s.mark_done(f.id).unwrap();
        assert_eq!(files(), 1, "the finished segment is deleted");

        // Room for about two 1000-byte fragments.
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 2_500);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let mut dropped = SpoolDropped::default();
        for i in 0..4u64 {
            let (_, d) = s
                .append_fragment(h, i, (i, i), &[Bytes::from(vec![0u8; 1000])])
                .unwrap();
            dropped.fragments += d.fragments;
            s.new_segment().unwrap();
        }
        assert!(dropped.fragments >= 2, "{dropped:?}");
        assert!(s.size() <= 2_500 + 1_100);
        let left: Vec<u64> = s.pending().map(|f| f.timecode).collect();
        assert_eq!(left.last(), Some(&3), "the newest is kept: {left:?}");
    }
}

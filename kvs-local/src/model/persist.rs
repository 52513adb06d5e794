//! On-disk layout (used when a data directory is configured):
//!
//! ```text
//! DATA_DIR/streams/DIR/stream.json          stream metadata (atomic rewrite)
//! DATA_DIR/streams/DIR/headers/DIGEST.mkv   stream headers, by SHA-256
//! DATA_DIR/streams/DIR/fragments.log        append-only fragment records
//! ```
//!
//! `DIR` is the stream name when that is a safe file name (only
//! `[a-zA-Z0-9_.-]`, not `.` or `..`, at most [`MAX_PLAIN_DIR_NAME`] bytes),
//! else `~` and the SHA-256 of the name in hex ([`dir_name`]): `~` is not
//! allowed in stream names, so the two kinds never collide. The stream's
//! real name is the `name` in its `stream.json`.
//!
//! A fragment record is `"KVSF" | u32 LE meta length | meta JSON | u64 LE
//! data length | raw cluster bytes | "KEND"`. Each record is written and
//! fsynced before the fragment is acknowledged as PERSISTED; on start, an
//! incomplete trailing record (a crash mid-write) is cut off.

use super::records::{FragMeta, StreamMeta};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"KVSF";
const END: &[u8; 4] = b"KEND";

/// Open files of one stream.
pub struct StreamFiles {
    dir: PathBuf,
    log: File,
    len: u64,
    headers: HashSet<String>,
}

/// A stream as loaded from disk.
pub struct Loaded {
    pub meta: StreamMeta,
    pub headers: Vec<(String, Bytes)>,
    pub fragments: Vec<(FragMeta, u64)>,
    pub files: StreamFiles,
}

fn streams_dir(root: &Path) -> PathBuf {
    root.join("streams")
}

/// Longest stream name used as its directory name as it is (file names may
/// have 255 bytes; room is left for editors' and tools' suffixes).
pub const MAX_PLAIN_DIR_NAME: usize = 200;

/// The directory name (under `DATA_DIR/streams/`) of stream `name`: the name
/// itself when it is a safe, short file name, else `~` + hex SHA-256 of the
/// name. Always one normal path component, never `.` or `..`, whatever
/// `name` is (the library API does not validate names).
pub fn dir_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= MAX_PLAIN_DIR_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if plain {
        name.to_string()
    } else {
        format!("~{}", hex::encode(Sha256::digest(name.as_bytes())))
    }
}

/// `streams/DIR` of a stream, checked to be a direct child of `streams/`.
fn stream_dir(root: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = dir_name(name);
    let mut parts = Path::new(&dir).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(_)), None) => Ok(streams_dir(root).join(dir)),
        _ => Err(io::Error::other(format!(
            "unsafe directory name {dir:?} for stream {name:?}"
        ))),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

impl StreamFiles {
    /// Creates the directory of a new stream and writes its metadata.
    pub fn create(root: &Path, meta: &StreamMeta) -> io::Result<StreamFiles> {
        let dir = stream_dir(root, &meta.name)?;
        if dir.exists() {
            // left over by a stream whose creation did not complete (no
            // stream.json, so not loaded): the directory is this name's own
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(dir.join("headers"))?;
        sync_dir(&streams_dir(root))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(dir.join("fragments.log"))?;
        let files = StreamFiles {
            dir,
            log,
            len: 0,
            headers: HashSet::new(),
        };
        files.write_meta(meta)?;
        Ok(files)
    }

    /// Rewrites `stream.json`.
    pub fn write_meta(&self, meta: &StreamMeta) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("stream.json"), &json)
    }

    /// Stores a header once (by digest).
    pub fn ensure_header(&mut self, digest: &str, bytes: &[u8]) -> io::Result<()> {
        if self.headers.contains(digest) {
            return Ok(());
        }
        write_atomic(
            &self.dir.join("headers").join(format!("{digest}.mkv")),
            bytes,
        )?;
        self.headers.insert(digest.to_string());
        Ok(())
    }

    /// Appends a fragment record and fsyncs; returns the data offset.
    pub fn append(&mut self, meta: &FragMeta, data: &crate::mkv::Pieces) -> io::Result<u64> {
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let mut head = Vec::with_capacity(json.len() + 16);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let offset = self.len + head.len() as u64;
        let r = (|| {
            self.log.write_all(&head)?;
            for piece in data.iter() {
                self.log.write_all(piece)?;
            }
            self.log.write_all(END)?;
            self.log.sync_data()
        })();
        if let Err(e) = r {
            // cut off the partial record so later appends stay readable
            let _ = self.log.set_len(self.len);
            return Err(e);
        }
        self.len = offset + data.len() as u64 + END.len() as u64;
        Ok(offset)
    }

    /// Reads `len` bytes of fragment data at `offset`.
    pub fn read(&self, offset: u64, len: u64) -> io::Result<Bytes> {
        let mut f = File::open(self.dir.join("fragments.log"))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Deletes the stream directory (its own: `streams/DIR`, nothing else).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.dir)
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Loads every stream under `root`.
pub fn load_all(root: &Path) -> io::Result<Vec<Loaded>> {
    let dir = streams_dir(root);
    fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        let meta_path = path.join("stream.json");
        let Ok(json) = fs::read(&meta_path) else {
            continue; // half-created stream
        };
        let meta: StreamMeta = serde_json::from_slice(&json).map_err(io::Error::other)?;
        let expected = dir_name(&meta.name);
        if path.file_name() != Some(std::ffi::OsStr::new(&expected)) {
            // e.g. a copy of a stream directory under another name: loading it would
            // give two directories to one stream, and deleting it would leave one
            eprintln!(
                "kvs-local: ignoring {}: its stream.json names stream {:?}, whose directory is {expected:?}",
                path.display(),
                meta.name
            );
            continue;
        }
        out.push(load_stream(path, meta)?);
    }
    out.sort_by_key(|l| l.meta.creation_time_ms);
    Ok(out)
}

fn load_stream(dir: PathBuf, meta: StreamMeta) -> io::Result<Loaded> {
    fs::create_dir_all(dir.join("headers"))?;
    let mut headers = Vec::new();
    let mut known = HashSet::new();
    let log_path = dir.join("fragments.log");
    let mut fragments = Vec::new();
    let mut pos = 0u64;
    if let Ok(f) = File::open(&log_path) {
        let total = f.metadata()?.len();
        let mut r = io::BufReader::new(f);
        while let Some((m, off, next)) = read_record(&mut r, pos, total) {
            if !known.contains(&m.header_digest) {
                let hb = fs::read(dir.join("headers").join(format!("{}.mkv", m.header_digest)))?;
                known.insert(m.header_digest.clone());
                headers.push((m.header_digest.clone(), Bytes::from(hb)));
            }
            fragments.push((m, off));
            pos = next;
        }
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&log_path)?;
    if pos < log.metadata()?.len() {
        log.set_len(pos)?; // drop an incomplete trailing record
        log.sync_all()?;
    }
    Ok(Loaded {
        meta,
        headers,
        fragments,
        files: StreamFiles {
            dir,
            log,
            len: pos,
            headers: known,
        },
    })
}

/// Reads the record at `pos`; `None` at the end or at a damaged record.
fn read_record(r: &mut io::BufReader<File>, pos: u64, total: u64) -> Option<(FragMeta, u64, u64)> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).ok()?;
    if &head[..4] != MAGIC {
        return None;
    }
    let mlen = u32::from_le_bytes(head[4..8].try_into().ok()?) as u64;
    if pos + 8 + mlen + 8 > total {
        return None;
    }
    let mut mbuf = vec![0u8; mlen as usize];
    r.read_exact(&mut mbuf).ok()?;
    let meta: FragMeta = serde_json::from_slice(&mbuf).ok()?;
    let mut lbuf = [0u8; 8];
    r.read_exact(&mut lbuf).ok()?;
    let dlen = u64::from_le_bytes(lbuf);
    let data_at = pos + 8 + mlen + 8;
    let end_at = data_at.checked_add(dlen)?;
    if dlen != meta.size || end_at + 4 > total {
        return None;
    }
    r.seek_relative(dlen as i64).ok()?;
    let mut end = [0u8; 4];
    r.read_exact(&mut end).ok()?;
    if &end != END {
        return None;
    }
    Some((meta, data_at, end_at + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_safe_and_distinct() {
        assert_eq!(dir_name("cam-1_a.b"), "cam-1_a.b");
        assert_eq!(dir_name("..."), "...");
        let long = "x".repeat(MAX_PLAIN_DIR_NAME);
        assert_eq!(dir_name(&long), long);
        let names = [
            ".".to_string(),
            "..".to_string(),
            String::new(),
            "x".repeat(MAX_PLAIN_DIR_NAME + 1),
            "x".repeat(256),
            "a/../../b".to_string(),
            "/etc".to_string(),
        ];
        let mut seen = HashSet::new();
        for n in &names {
            let d = dir_name(n);
            assert!(d.starts_with('~') && d.len() == 65, "{n:?} -> {d}");
            assert!(seen.insert(d), "{n:?}");
            let root = Path::new("/data");
            assert_eq!(
                stream_dir(root, n).unwrap().parent(),
                Some(&*streams_dir(root))
            );
        }
    }

    #[test]
    fn create_and_remove_touch_only_the_stream_directory() {
        let root = tempfile::tempdir().unwrap();
        let keep = StreamFiles::create(root.path(), &StreamMeta::new("keep", "us-west-2")).unwrap();
        for name in [".", ".."] {
            let f = StreamFiles::create(root.path(), &StreamMeta::new(name, "us-west-2")).unwrap();
            assert_eq!(f.dir().parent(), Some(&*streams_dir(root.path())));
            f.remove().unwrap();
            assert!(keep.dir().join("stream.json").is_file());
        }
        let loaded = load_all(root.path()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].meta.name, "keep");
    }
}

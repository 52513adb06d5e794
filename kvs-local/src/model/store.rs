//! Streams and their fragments, in memory or backed by a data directory.

use super::persist::{self, StreamFiles};
use super::records::{
    FragMeta, StoreError, StoredFragment, StreamMeta, StreamSnapshot, new_version,
};
use crate::mkv::Pieces;
use crate::util::{format_fragment_number, next_fragment_counter, parse_fragment_number};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

enum Data {
    Mem(Pieces),
    File(u64),
}

struct Frag {
    meta: FragMeta,
    counter: u128,
    data: Data,
    header_index: usize,
}

struct Stream {
    meta: StreamMeta,
    incarnation: u64,
    active_at: Instant,
    headers: Vec<(String, Bytes)>,
    frags: Vec<Frag>,
    last_counter: u128,
    session: u64,
    files: Option<Arc<Mutex<StreamFiles>>>,
}

impl Stream {
    fn status(&self) -> &'static str {
        if Instant::now() < self.active_at {
            "CREATING"
        } else {
            "ACTIVE"
        }
    }

    fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            meta: self.meta.clone(),
            status: self.status().into(),
            fragment_count: self.frags.len(),
        }
    }
}

/// How a PutMedia session stands with its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Stream active and this session is the current one.
    Ok,
    /// Stream deleted (or re-created).
    Deleted,
    /// Stream not ACTIVE.
    NotActive,
    /// A newer PutMedia connection for the stream took over.
    Superseded,
}

/// Identifies a PutMedia session's stream.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// Stream name.
    pub name: String,
    /// Stream incarnation (changes when re-created).
    pub incarnation: u64,
    /// Session id.
    pub session: u64,
}

#[derive(Default)]
struct Inner {
    streams: BTreeMap<String, Stream>,
    next_incarnation: u64,
    generation: u64,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    inner: Mutex<Inner>,
    cond: Condvar,
    changed: tokio::sync::watch::Sender<u64>,
    dir: Option<PathBuf>,
    creating_delay: Duration,
}

impl Store {
    /// Opens the store, loading streams from `dir` when given.
    pub fn open(dir: Option<PathBuf>, creating_delay: Duration) -> io::Result<Store> {
        let mut inner = Inner::default();
        if let Some(d) = &dir {
            for l in persist::load_all(d)? {
                inner.next_incarnation += 1;
                let mut last = 0;
                let mut frags = Vec::new();
                for (m, off) in l.fragments {
                    let counter = parse_fragment_number(&m.number).unwrap_or(0);
                    last = last.max(counter);
                    let header_index = l
                        .headers
                        .iter()
                        .position(|(dg, _)| *dg == m.header_digest)
                        .unwrap_or(0);
                    frags.push(Frag {
                        meta: m,
                        counter,
                        data: Data::File(off),
                        header_index,
                    });
                }
                let name = l.meta.name.clone();
                inner.streams.insert(
                    name,
                    Stream {
                        meta: l.meta,
                        incarnation: inner.next_incarnation,
                        active_at: Instant::now(),
                        headers: l.headers,
                        frags,
                        last_counter: last,
                        session: 0,
                        files: Some(Arc::new(Mutex::new(l.files))),
                    },
                );
            }
        }
        Ok(Store {
            inner: Mutex::new(inner),
            cond: Condvar::new(),
            changed: tokio::sync::watch::channel(0).0,
            dir,
            creating_delay,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self, inner: &mut Inner) {
        inner.generation += 1;
        self.changed.send_replace(inner.generation);
        self.cond.notify_all();
    }

    /// A receiver notified on every change (new fragment, stream change).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Creates a stream. `delay` overrides the configured CREATING time.
    pub fn create(
        &self,
        mut meta: StreamMeta,
        delay: Option<Duration>,
    ) -> Result<StreamMeta, StoreError> {
        let mut inner = self.lock();
        if inner.streams.contains_key(&meta.name) {
            return Err(StoreError::InUse);
        }
        meta.creation_time_ms = meta.creation_time_ms.max(1);
        let files = match &self.dir {
            Some(d) => Some(Arc::new(Mutex::new(StreamFiles::create(d, &meta)?))),
            None => None,
        };
        inner.next_incarnation += 1;
        let stream = Stream {
            meta: meta.clone(),
            incarnation: inner.next_incarnation,
            active_at: Instant::now() + delay.unwrap_or(self.creating_delay),
            headers: Vec::new(),
            frags: Vec::new(),
            last_counter: 0,
            session: 0,
            files,
        };
        inner.streams.insert(meta.name.clone(), stream);
        self.bump(&mut inner);
        Ok(meta)
    }

    /// The name of the stream with this ARN.
    pub fn name_for_arn(&self, arn: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .streams
            .values()
            .find(|s| s.meta.arn == arn)
            .map(|s| s.meta.name.clone())
    }

    /// A snapshot of one stream.
    pub fn describe(&self, name: &str) -> Option<StreamSnapshot> {
        self.lock().streams.get(name).map(Stream::snapshot)
    }

    /// Snapshots of all streams, by name.
    pub fn list(&self) -> Vec<StreamSnapshot> {
        self.lock().streams.values().map(Stream::snapshot).collect()
    }

    /// Deletes a stream (optionally checking its version).
    pub fn delete(&self, name: &str, version: Option<&str>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let s = inner.streams.get(name).ok_or(StoreError::NotFound)?;
        if version.is_some_and(|v| v != s.meta.version) {
            return Err(StoreError::VersionMismatch);
        }
        let s = inner.streams.remove(name).expect("present");
        if let Some(f) = &s.files {
            f.lock().unwrap_or_else(|e| e.into_inner()).remove()?;
        }
        self.bump(&mut inner);
        Ok(())
    }

    /// Applies `f` to a stream's metadata, bumps its version, persists it.
    pub fn update<R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut StreamMeta) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut inner = self.lock();
        let s = inner.streams.get_mut(name).ok_or(StoreError::NotFound)?;
        let mut meta = s.meta.clone();
        let r = f(&mut meta)?;
        meta.version = new_version();
        if let Some(files) = &s.files {
            files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_meta(&meta)?;
        }
        s.meta = meta;
        self.bump(&mut inner);
        Ok(r)
    }

    /// Registers a new PutMedia session; the newest session of a stream wins.
    pub fn begin_session(&self, name: &str, session: u64) -> Option<(SessionHandle, SessionState)> {
        let mut inner = self.lock();
        let s = inner.streams.get_mut(name)?;
        s.session = session;
        let state = if s.status() == "ACTIVE" {
            SessionState::Ok
        } else {
            SessionState::NotActive
        };
        Some((
            SessionHandle {
                name: name.into(),
                incarnation: s.incarnation,
                session,
            },
            state,
        ))
    }

    /// Checks a session against its stream.
    pub fn session_state(&self, h: &SessionHandle) -> SessionState {
        let inner = self.lock();
        match inner.streams.get(&h.name) {
            Some(s) if s.incarnation == h.incarnation => {
                if s.session != h.session {
                    SessionState::Superseded
                } else if s.status() != "ACTIVE" {
                    SessionState::NotActive
                } else {
                    SessionState::Ok
                }
            }
            _ => SessionState::Deleted,
        }
    }

    /// Allocates the next fragment number of the session's stream.
    pub fn next_number(&self, h: &SessionHandle) -> Option<(u128, String)> {
        let mut inner = self.lock();
        let s = inner.streams.get_mut(&h.name)?;
        if s.incarnation != h.incarnation {
            return None;
        }
        let c = next_fragment_counter(s.last_counter);
        s.last_counter = c;
        Some((c, format_fragment_number(c)))
    }

    /// Stores a complete fragment durably (fsync when on disk). Blocking.
    pub fn append(
        &self,
        h: &SessionHandle,
        counter: u128,
        meta: FragMeta,
        header: &Bytes,
        data: Pieces,
    ) -> Result<(), StoreError> {
        let files = {
            let inner = self.lock();
            let s = inner.streams.get(&h.name).ok_or(StoreError::NotFound)?;
            if s.incarnation != h.incarnation {
                return Err(StoreError::NotFound);
            }
            s.files.clone()
        };
        let location = match files {
            Some(f) => {
                let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                f.ensure_header(&meta.header_digest, header)?;
                Data::File(f.append(&meta, &data)?)
            }
            None => Data::Mem(data),
        };
        let mut inner = self.lock();
        let s = inner.streams.get_mut(&h.name).ok_or(StoreError::NotFound)?;
        if s.incarnation != h.incarnation {
            return Err(StoreError::NotFound);
        }
        let header_index = match s.headers.iter().position(|(d, _)| *d == meta.header_digest) {
            Some(i) => i,
            None => {
                s.headers.push((meta.header_digest.clone(), header.clone()));
                s.headers.len() - 1
            }
        };
        let at = s.frags.partition_point(|f| f.counter < counter);
        s.frags.insert(
            at,
            Frag {
                meta,
                counter,
                data: location,
                header_index,
            },
        );
        self.bump(&mut inner);
        Ok(())
    }

    /// Distinct stream headers of a stream, in order of first use.
    pub fn headers(&self, name: &str) -> Vec<Bytes> {
        self.lock()
            .streams
            .get(name)
            .map(|s| s.headers.iter().map(|(_, b)| b.clone()).collect())
            .unwrap_or_default()
    }

    /// Fragment metadata (without bytes) of a stream, in order.
    pub fn fragment_metas(&self, name: &str) -> Vec<(FragMeta, usize)> {
        self.lock()
            .streams
            .get(name)
            .map(|s| {
                s.frags
                    .iter()
                    .map(|f| (f.meta.clone(), f.header_index))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fragments with their bytes, for those whose index passes `select`.
    /// A listed fragment whose bytes cannot be read from the data directory is
    /// an error (naming the fragment), never silently left out.
    pub fn fragments_where(
        &self,
        name: &str,
        select: impl Fn(usize, &FragMeta) -> bool,
    ) -> Result<Vec<StoredFragment>, StoreError> {
        let (picked, files) = {
            let inner = self.lock();
            let Some(s) = inner.streams.get(name) else {
                return Ok(Vec::new());
            };
            let picked: Vec<_> = s
                .frags
                .iter()
                .enumerate()
                .filter(|(i, f)| select(*i, &f.meta))
                .map(|(_, f)| {
                    let data = match &f.data {
                        Data::Mem(b) => Ok(b.to_bytes()),
                        Data::File(off) => Err(*off),
                    };
                    (f.meta.clone(), f.header_index, data)
                })
                .collect();
            (picked, s.files.clone())
        };
        picked
            .into_iter()
            .map(|(m, hi, data)| {
                let bytes = match data {
                    Ok(b) => b,
                    Err(off) => {
                        let read = match &files {
                            Some(f) => {
                                let f = f.lock().unwrap_or_else(|e| e.into_inner());
                                f.read(off, m.size).map_err(|e| {
                                    let log = f.dir().join("fragments.log");
                                    (e, log.display().to_string())
                                })
                            }
                            None => Err((
                                io::Error::other("the stream has no data files"),
                                String::new(),
                            )),
                        };
                        read.map_err(|(e, log)| {
                            StoreError::Io(io::Error::new(
                                e.kind(),
                                format!(
                                    "cannot read fragment {} of stream {name} ({} bytes at offset {off} of {log}): {e}",
                                    m.number, m.size
                                ),
                            ))
                        })?
                    }
                };
                Ok(StoredFragment {
                    number: m.number,
                    timecode: m.timecode,
                    producer_timestamp_ms: m.producer_timestamp_ms,
                    server_timestamp_ms: m.server_timestamp_ms,
                    duration_ms: m.duration_ms,
                    key_frame: m.key_frame,
                    bytes,
                    header_index: hi,
                    metadata: m.metadata,
                })
            })
            .collect()
    }

    /// Number of stored fragments.
    pub fn fragment_count(&self, name: &str) -> usize {
        self.lock()
            .streams
            .get(name)
            .map(|s| s.frags.len())
            .unwrap_or(0)
    }

    /// Blocks until the stream has at least `n` fragments or `timeout` passes.
    pub fn wait_for_fragments(&self, name: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if inner.streams.get(name).is_some_and(|s| s.frags.len() >= n) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = self
                .cond
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

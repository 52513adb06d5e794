//! # kvs-local
//!
//! A local, strict, Amazon Kinesis Video Streams compatible HTTP endpoint
//! for development and tests: the control plane (CreateStream,
//! DescribeStream, ...), SigV4 verification, PutMedia with streamed acks and
//! incremental MKV validation, storage in memory or in a data directory,
//! GetMedia/ListFragments/GetMediaForFragmentList, fault injection and a JSON
//! report of everything it saw.
//!
//! ```no_run
//! use kvs_local::{Config, Server};
//! let server = Server::spawn(Config::default()).unwrap();
//! server.create_stream("cam1").unwrap();
//! println!("point your producer at {}", server.url());
//! ```

mod api;
mod auth;
mod clip;
mod config;
mod faults;
pub mod mkv;
mod model;
pub mod report;
mod server;
mod util;

pub use auth::client;
pub use config::{Config, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, KeyPair};
pub use faults::Fault;
/// The synthetic Matroska stream builder (moved to the `kvs-format` crate).
pub use kvs_format::build as mkvbuild;
pub use model::export::{ExportStats, export_stream};
pub use model::records::{StoreError, StoredFragment, StreamMeta, StreamSnapshot};
pub use report::Report;
pub use util::{error_code_name, monotonic_ns, now_ms};

use api::context::Shared;
use server::{accept_loop, bind};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A running endpoint. Dropping it shuts it down.
pub struct Server {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    stopped: bool,
}

fn build_shared(config: Config, addr: SocketAddr) -> std::io::Result<Shared> {
    let store = model::store::Store::open(config.data_dir.clone(), config.creating_delay)?;
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let base_url = format!("http://{}", SocketAddr::new(host, addr.port()));
    Ok(Shared {
        verifier: auth::sigv4::Verifier {
            keys: config.effective_keys(),
            region: config.region.clone(),
            max_skew: config.max_clock_skew,
        },
        log: util::Logger::new(config.log),
        store,
        faults: faults::Faults::default(),
        recorder: report::Recorder::default(),
        base_url,
        session_ids: AtomicU64::new(0),
        epoch: tokio::sync::watch::channel(0).0,
        paused: tokio::sync::watch::channel(false).0,
        shutdown: tokio::sync::watch::channel(false).0,
        listening: (Mutex::new(true), Condvar::new()),
        digests: Mutex::new(HashMap::new()),
        config,
    })
}

impl Server {
    /// Starts the server on its own tokio runtime (background threads).
    /// Usable from synchronous code and from inside another runtime.
    pub fn spawn(config: Config) -> std::io::Result<Server> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kvs-local")
            .enable_all()
            .build()?;
        let listener = {
            let _g = rt.enter();
            bind(SocketAddr::new(config.bind, config.port))?
        };
        let addr = listener.local_addr()?;
        let shared = Arc::new(build_shared(config, addr)?);
        rt.spawn(accept_loop(shared.clone(), listener, addr));
        Ok(Server {
            shared,
            runtime: Some(rt),
            addr,
            stopped: false,
        })
    }

    /// Starts the server inside the current tokio runtime.
    pub async fn start(config: Config) -> std::io::Result<Server> {
        let listener = bind(SocketAddr::new(config.bind, config.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(build_shared(config, addr)?);
        tokio::spawn(accept_loop(shared.clone(), listener, addr));
        Ok(Server {
            shared,
            runtime: None,
            addr,
            stopped: false,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:43123`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Creates a stream directly (no HTTP), ACTIVE at once.
    pub fn create_stream(&self, name: &str) -> Result<StreamSnapshot, StoreError> {
        let region = self.shared.config.region.as_deref().unwrap_or("us-west-2");
        self.shared
            .store
            .create(StreamMeta::new(name, region), Some(Duration::ZERO))?;
        self.shared.store.describe(name).ok_or(StoreError::NotFound)
    }

    /// Deletes a stream directly (no HTTP).
    pub fn delete_stream(&self, name: &str) -> Result<(), StoreError> {
        self.shared.store.delete(name, None)
    }

    /// Status, tags, retention, media type... of a stream.
    pub fn stream(&self, name: &str) -> Option<StreamSnapshot> {
        self.shared.store.describe(name)
    }

    /// Stored fragments of a stream, in order, with their raw bytes.
    ///
    /// # Panics
    ///
    /// If a stored fragment cannot be read back from the data directory (the
    /// message names it); [`Server::try_fragments`] returns that error instead.
    pub fn fragments(&self, name: &str) -> Vec<StoredFragment> {
        self.try_fragments(name)
            .unwrap_or_else(|e| panic!("kvs-local: {e}"))
    }

    /// Stored fragments of a stream, in order, with their raw bytes; an error
    /// when one of them cannot be read back from the data directory.
    pub fn try_fragments(&self, name: &str) -> Result<Vec<StoredFragment>, StoreError> {
        self.shared.store.fragments_where(name, |_, _| true)
    }

    /// Number of stored fragments of a stream (cheap: no bytes are read).
    pub fn fragment_count(&self, name: &str) -> usize {
        self.shared.store.fragment_count(name)
    }

    /// Distinct stream headers of a stream, in order of first use
    /// (`StoredFragment::header_index` indexes this list).
    pub fn stream_headers(&self, name: &str) -> Vec<bytes::Bytes> {
        self.shared.store.headers(name)
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Clears all faults.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The report of all requests and sessions so far.
    pub fn report(&self) -> Report {
        self.shared.report()
    }

    /// Waits (blocking) until `name` has at least `n` stored fragments.
    pub fn wait_for_fragments(&self, name: &str, n: usize, timeout: Duration) -> bool {
        self.shared.store.wait_for_fragments(name, n, timeout)
    }

    /// Async form of [`Server::wait_for_fragments`].
    pub async fn wait_for_fragments_async(&self, name: &str, n: usize, timeout: Duration) -> bool {
        let mut changes = self.shared.store.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if self.shared.store.fragment_count(name) >= n {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.shared.store.fragment_count(name) >= n
    }

    /// Blocks until the listener state is `listening`, unless that would
    /// deadlock (server started with [`Server::start`] on a current-thread
    /// runtime, from inside it).
    fn wait_listening(&self, listening: bool) {
        let same_thread = self.runtime.is_none()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !same_thread {
            self.shared
                .wait_listening(listening, Duration::from_secs(5));
        }
    }

    /// Stops listening (new connections are refused) and closes every live
    /// connection. Returns once the listener is closed.
    pub fn pause_listening(&self) {
        self.shared.paused.send_replace(true);
        self.wait_listening(false);
    }

    /// Listens again on the same port. Returns once the listener is bound.
    pub fn resume_listening(&self) {
        self.shared.paused.send_replace(false);
        self.wait_listening(true);
    }

    /// Stops the server and closes every connection.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.shared.shutdown.send_replace(true);
        self.wait_listening(false);
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

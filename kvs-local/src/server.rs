//! Listener, connections, routing and the admin API.

use crate::config::Config;
use crate::faults::{Fault, Faults};
use crate::http::{ApiError, RespBody, full, json_response, operation_for_path};
use crate::report::{AuthVerdict, Recorder, RequestRecord};
use crate::sigv4::Verifier;
use crate::store::Store;
use crate::util::{Logger, now_ms, request_id};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, watch};

/// State shared by every connection.
pub struct Shared {
    /// Configuration.
    pub config: Config,
    /// Signature verifier.
    pub verifier: Verifier,
    /// Streams and fragments.
    pub store: Store,
    /// Injected faults.
    pub faults: Faults,
    /// The report.
    pub recorder: Recorder,
    /// Logger.
    pub log: Logger,
    /// Base URL (`http://host:port`).
    pub base_url: String,
    /// Session id counter.
    pub session_ids: AtomicU64,
    /// Bumped to close every live connection.
    pub epoch: watch::Sender<u64>,
    /// `true` while the listener should be down.
    pub paused: watch::Sender<bool>,
    /// `true` to stop the server.
    pub shutdown: watch::Sender<bool>,
    /// Whether the listener is currently bound (for pause/resume waits).
    pub listening: (Mutex<bool>, Condvar),
    /// Cache of fragment digests for the report.
    pub digests: Mutex<std::collections::HashMap<String, String>>,
}

impl Shared {
    /// Logs a line when logging is enabled.
    pub fn log(&self, msg: std::fmt::Arguments<'_>) {
        self.log.log(msg);
    }

    fn set_listening(&self, v: bool) {
        *self.listening.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
        self.listening.1.notify_all();
    }

    /// Waits (blocking) until the listener state is `v`.
    pub fn wait_listening(&self, v: bool, timeout: Duration) -> bool {
        let guard = self.listening.0.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .listening
            .1
            .wait_timeout_while(guard, timeout, |cur| *cur != v)
            .unwrap_or_else(|e| e.into_inner());
        *g == v
    }
}

/// Largest hyper read buffer: big reads keep syscalls and wakeups few on
/// fast PutMedia uploads.
const READ_BUF_MAX: usize = 2 * 1024 * 1024;

/// Per-connection control.
pub struct ConnCtl {
    /// Notified to drop the connection abruptly.
    pub kill: Notify,
    /// When the connection was accepted.
    pub started: Instant,
    /// Peer address.
    pub remote: SocketAddr,
    /// The address the connection reached (this server's side).
    pub local: SocketAddr,
}

/// Binds a listener with SO_REUSEADDR so that it can be re-bound at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// The accept loop: serves until shutdown, drops the listener while paused.
pub async fn accept_loop(shared: Arc<Shared>, first: TcpListener, addr: SocketAddr) {
    let mut listener = Some(first);
    let mut paused = shared.paused.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let Some(l) = listener.as_ref() else {
            if *paused.borrow_and_update() {
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            match bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    shared.set_listening(true);
                    shared.log(format_args!("listening again on {addr}"));
                }
                Err(e) => {
                    shared.log(format_args!("re-bind {addr} failed: {e}; retrying"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        tokio::select! {
            r = l.accept() => match r {
                Ok((sock, remote)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(serve_connection(shared.clone(), sock, remote));
                }
                Err(e) => {
                    shared.log(format_args!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = paused.changed() => {
                if *paused.borrow_and_update() {
                    listener = None;
                    shared.epoch.send_modify(|e| *e += 1);
                    shared.set_listening(false);
                    shared.log(format_args!("listener paused"));
                }
            }
            _ = shutdown.changed() => {}
        }
    }
    drop(listener);
    shared.epoch.send_modify(|e| *e += 1);
    shared.set_listening(false);
}

async fn serve_connection(shared: Arc<Shared>, sock: tokio::net::TcpStream, remote: SocketAddr) {
    let local = match sock.local_addr() {
        Ok(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        Err(_) => remote,
    };
    let ctl = Arc::new(ConnCtl {
        kill: Notify::new(),
        started: Instant::now(),
        remote,
        local,
    });
    let mut epoch = shared.epoch.subscribe();
    epoch.borrow_and_update();
    let svc_shared = shared.clone();
    let svc_ctl = ctl.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let ctl = svc_ctl.clone();
        async move { Ok::<_, std::convert::Infallible>(route(shared, ctl, req).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(READ_BUF_MAX)
        .serve_connection(TokioIo::new(sock), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                shared.log(format_args!("connection {remote}: {e}"));
            }
        }
        _ = ctl.kill.notified() => shared.log(format_args!("connection {remote} closed abruptly (fault)")),
        _ = epoch.changed() => shared.log(format_args!("connection {remote} closed (listener paused or shutdown)")),
    }
}

/// A request record with the common fields filled in.
pub fn new_record(req: &Request<Incoming>, ctl: &ConnCtl, operation: &str) -> RequestRecord {
    RequestRecord {
        id: 0,
        time_ms: now_ms(),
        remote: ctl.remote.to_string(),
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        operation: operation.into(),
        stream: None,
        access_key: None,
        auth: AuthVerdict::NotChecked,
        auth_reason: None,
        status: 0,
        error_type: None,
        error_message: None,
    }
}

/// Fills the outcome of an error into a record.
pub fn record_error(rec: &mut RequestRecord, e: &ApiError) {
    rec.status = e.status;
    rec.error_type = Some(e.error_type.clone());
    rec.error_message = Some(e.message.clone());
}

async fn route(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/__kvs-local/") {
        return admin(&shared, rest, req).await;
    }
    let rid = request_id();
    let op = operation_for_path(&path);
    let (Some(op), true) = (op, req.method() == http::Method::POST) else {
        let mut rec = new_record(&req, &ctl, "Unknown");
        let e = ApiError::new(
            404,
            "UnknownOperationException",
            format!("No operation at {} {path}", req.method()),
        );
        record_error(&mut rec, &e);
        shared.log(format_args!(
            "{} {path} -> 404 unknown operation",
            req.method()
        ));
        shared.recorder.request(rec);
        return e.response(&rid);
    };
    match op {
        "PutMedia" => crate::putmedia::handle(shared, ctl, req, rid).await,
        "GetMedia" | "ListFragments" | "GetMediaForFragmentList" => {
            crate::getmedia::handle(shared, ctl, op, req, rid).await
        }
        _ => crate::control::handle(shared, ctl, op, req, rid).await,
    }
}

async fn admin(shared: &Arc<Shared>, rest: &str, req: Request<Incoming>) -> Response<RespBody> {
    let rid = request_id();
    let method = req.method().clone();
    match (method.as_str(), rest) {
        ("GET", "report") => json_response(200, &crate::Server::report_of(shared), &rid),
        ("GET", "faults") => json_response(200, &shared.faults.list(), &rid),
        ("DELETE", "faults") => {
            shared.faults.clear();
            json_response(200, &serde_json::json!({"cleared": true}), &rid)
        }
        ("POST", "faults") => {
            let body = match http_body_util::Limited::new(req.into_body(), 1 << 20)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return ApiError::invalid_argument(format!("cannot read body: {e}"))
                        .response(&rid);
                }
            };
            // a single fault or a list of faults
            let parsed: Result<Vec<Fault>, _> = serde_json::from_slice::<Fault>(&body)
                .map(|f| vec![f])
                .or_else(|_| serde_json::from_slice::<Vec<Fault>>(&body));
            match parsed {
                Ok(list) => {
                    for f in &list {
                        shared.log(format_args!("fault injected: {f:?}"));
                        shared.faults.inject(f.clone());
                    }
                    json_response(200, &serde_json::json!({"injected": list.len()}), &rid)
                }
                Err(e) => {
                    ApiError::invalid_argument(format!("invalid fault JSON: {e}")).response(&rid)
                }
            }
        }
        ("GET", "streams") => json_response(200, &shared.store.list(), &rid),
        ("GET", "health") => {
            let mut r = Response::new(full("ok\n"));
            r.headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/plain"));
            r
        }
        _ => ApiError::new(
            404,
            "UnknownOperationException",
            format!("no admin route {method} /__kvs-local/{rest}"),
        )
        .response(&rid),
    }
}

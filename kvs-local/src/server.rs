//! Listener and connections; requests go to [`crate::api::route`].

use crate::api::context::{ConnCtl, Shared};
use crate::api::route;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;

/// Largest hyper read buffer: big reads keep syscalls and wakeups few on
/// fast PutMedia uploads.
const READ_BUF_MAX: usize = 2 * 1024 * 1024;

/// Binds a listener with SO_REUSEADDR so that it can be re-bound at once.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
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
pub(crate) async fn accept_loop(shared: Arc<Shared>, first: TcpListener, addr: SocketAddr) {
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
        _ = ctl.kill.notified() => shared.log(format_args!("connection {remote} closed abruptly (fault or unreadable fragment)")),
        _ = epoch.changed() => shared.log(format_args!("connection {remote} closed (listener paused or shutdown)")),
    }
}

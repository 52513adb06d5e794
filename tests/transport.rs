//! PutMedia's own connection, the way users reach the service: over HTTPS with a CA file, and
//! through the HTTP proxy the environment names (`https_proxy` and the like), in
//! `gst-launch-1.0`. kvs-local speaks plain HTTP; a TLS terminator and a proxy written here
//! stand in front of it.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::host::*;
use common::standins::{Pki, RotatingTerminator, spawn_server, tls_terminator};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(120);

/// kvs-local behind a TLS terminator, which GetDataEndpoint names: PutMedia goes through
/// the terminator whatever the control plane's URL.
fn behind_tls(pki: &Pki) -> (Server, SocketAddr) {
    let backend = Arc::new(OnceLock::new());
    let terminator = tls_terminator(pki, backend.clone());
    let server = Server::spawn(Config {
        public_url: Some(format!("https://127.0.0.1:{}", terminator.port())),
        ..Config::default()
    })
    .expect("start kvs-local");
    backend.set(server.local_addr()).unwrap();
    (server, terminator)
}

/// An HTTP proxy: CONNECT tunnels, and requests in absolute form (reqwest's for `http://`
/// URLs) forwarded in origin form. Records each request line.
fn http_proxy(log: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    spawn_server(move |mut client| {
        let log = log.clone();
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let end = loop {
                let Ok(n) = client.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
                if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            let line = text.lines().next().unwrap_or_default().to_owned();
            log.lock().unwrap().push(line.clone());
            let mut parts = line.split_whitespace();
            let (method, target) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if method == "CONNECT" {
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                upstream.write_all(&head[end..]).await.unwrap_or_default();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            } else {
                let url = url::Url::parse(target).expect("an absolute-form request");
                let authority = format!(
                    "{}:{}",
                    url.host_str().unwrap(),
                    url.port_or_known_default().unwrap()
                );
                let Ok(mut upstream) = TcpStream::connect(&authority).await else {
                    return;
                };
                let origin_form = &url[url::Position::BeforePath..];
                let rewritten = text.replacen(target, origin_form, 1);
                upstream
                    .write_all(rewritten.as_bytes())
                    .await
                    .unwrap_or_default();
                upstream.write_all(&head[end..]).await.unwrap_or_default();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        }
    })
}

/// Runs `filesrc ! kvssink` for a three-cluster recording in `gst-launch-1.0` with `env`
/// added and `extra` properties, and asserts that kvs-local stored every cluster, byte for
/// byte.
fn upload_and_check(server: &Server, control_plane: &str, env: &[(&str, &str)], extra: &str) {
    let dir = tempdir();
    let file = record(dir.path(), "three.mkv", 90, 30, "");
    let (_, clusters) = split_file(&file);
    assert_eq!(clusters.len(), 3);
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", control_plane, registry.path());
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(var).env_remove(var.to_uppercase());
    }
    cmd.envs(env.iter().copied());
    cmd.args(["-m", "-e"]).args(split_launch(&format!(
        "filesrc location={} ! kvssink stream-name=cam {extra}",
        file.display()
    )));
    let run = run_host(cmd, TIMEOUT);
    run.assert_success();
    run.assert_all_persisted();
    let stored: Vec<bytes::Bytes> = server
        .fragments("cam")
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    assert_eq!(
        stored, clusters,
        "kvs-local did not store the recording's clusters"
    );
}

#[test]
fn put_media_goes_over_https_checked_against_the_ca_file() {
    init();
    let pki = Pki::new();
    let (server, terminator) = behind_tls(&pki);
    let https = format!("https://127.0.0.1:{}", terminator.port());
    upload_and_check(
        &server,
        &https,
        &[],
        &format!("ca-file={}", pki.ca.display()),
    );
    let put_media = server
        .report()
        .requests
        .into_iter()
        .filter(|r| r.operation == "PutMedia" && r.status == 200)
        .count();
    assert!(put_media >= 1, "no PutMedia reached kvs-local through TLS");
}

#[test]
fn an_untrusted_certificate_is_refused_with_a_clear_error() {
    // The control plane over plain HTTP, the data endpoint over HTTPS with a certificate
    // from a CA the element was not given: PutMedia's own connection refuses it and says
    // why at every attempt (an outage to the element: the control plane answered), and the
    // run ends in an error once the EOS wait (stop-stream-timeout) is over.
    init();
    let pki = Pki::new();
    let (server, _) = behind_tls(&pki);
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(["-m", "-e"]).args(split_launch(
        "videotestsrc num-buffers=30 ! x264enc ! matroskamux ! kvssink stream-name=cam \
         stop-stream-timeout=5",
    ));
    let run = run_host(cmd, TIMEOUT);
    assert!(!run.status.success());
    let output = run.output();
    assert!(
        output.contains("TLS handshake failed: invalid peer certificate: UnknownIssuer"),
        "the error does not name the certificate:\n{output}"
    );
    assert!(server.fragments("cam").is_empty());
}

#[test]
fn put_media_goes_through_the_proxy_the_environment_names() {
    init();
    let server = server();
    let log = Arc::new(Mutex::new(Vec::new()));
    let proxy = http_proxy(log.clone());
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port());
    upload_and_check(
        &server,
        &server.url(),
        &[
            ("http_proxy", proxy_url.as_str()),
            ("https_proxy", proxy_url.as_str()),
        ],
        "",
    );
    let lines = log.lock().unwrap().clone();
    let tunnel = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.local_addr().port());
    assert!(
        lines.contains(&tunnel),
        "PutMedia did not go through the proxy's tunnel: {lines:?}"
    );
}

#[test]
fn a_ca_file_replaced_while_streaming_is_used_by_the_next_connections() {
    // A private endpoint's CA is rotated while a camera streams: the server restarts with a
    // certificate from the new CA, and the `ca-file` on disk is replaced by the new CA (by
    // rename, as certificate managers do). The element must read the file again for its
    // next connections, control plane and PutMedia alike, and lose nothing.
    init();
    let (old_ca, new_ca) = (Pki::new(), Pki::new());
    let backend = Arc::new(OnceLock::new());
    let terminator = RotatingTerminator::new(&old_ca, backend.clone());
    let https = format!("https://127.0.0.1:{}", terminator.addr.port());
    let server = Server::spawn(Config {
        public_url: Some(https.clone()),
        ..Config::default()
    })
    .expect("start kvs-local");
    backend.set(server.local_addr()).unwrap();
    let dir = tempdir();
    let ca_file = dir.path().join("ca.pem");
    std::fs::copy(&old_ca.ca, &ca_file).unwrap();

    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &https, registry.path());
    cmd.args(["-m", "-e"]).args(split_launch(&format!(
        "videotestsrc is-live=true num-buffers=210 ! video/x-raw,width=320,height=240 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! matroskamux \
         ! kvssink stream-name=cam stop-stream-timeout=15 ca-file={}",
        ca_file.display()
    )));
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(
                server.wait_for_fragments("cam", 2, TIMEOUT),
                "nothing stored before the rotation"
            );
            terminator.rotate_with_ca_file(&new_ca, &ca_file);
        });
        run_host(cmd, TIMEOUT)
    });
    run.assert_success();
    run.assert_all_persisted();
    terminator.assert_used_after_rotation();
    let stored = server.fragments("cam");
    assert!(
        stored.len() >= 7,
        "kvs-local stored {} fragments of 7 one-second clusters",
        stored.len()
    );
}

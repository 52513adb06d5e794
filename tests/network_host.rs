//! The network between kvssink (or kvssrc) and the service, as users meet it in
//! `gst-launch-1.0`: endpoint URLs, HTTP proxies (`tests/host/proxy.py`, the one the
//! reviewer used) and TLS. What the element says must name what is in the way.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::host::*;
use common::standins::{Pki, tls_terminator};
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);

/// `tests/host/proxy.py` running on a free port, with `args`; killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
    /// The request lines it saw (`CONNECT host:port HTTP/1.1 auth=no`...).
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(args: &[&str]) -> Proxy {
        let mut child = Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/proxy.py"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/host/proxy.py");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .strip_prefix("port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("proxy.py said {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line);
            }
        });
        Proxy { child, port, lines }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests it saw whose line starts with `method`, once it has told at least
    /// `at_least` of them (its lines are read as they come; waits 10 s at most).
    fn requests(&self, method: &str, at_least: usize) -> usize {
        let count = || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with(method))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count() < at_least && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// kvs-local whose GetDataEndpoint answers `public_url`.
fn server_naming(public_url: impl FnOnce(u16) -> String) -> Server {
    // The port is known once it listens: bind a second server on a known free port instead.
    let port = unused_port();
    Server::spawn(Config {
        port,
        public_url: Some(public_url(port)),
        ..Config::default()
    })
    .expect("start kvs-local")
}

fn assert_contains(run: &HostRun, text: &str) {
    assert!(
        run.output().contains(text),
        "no {text:?} in:\n{}",
        run.output()
    );
}

/// The run failed at start, after its first PutMedia attempt or before: no attempt was
/// made again.
fn assert_given_up_at_once(run: &HostRun) {
    assert!(!run.status.success(), "{}", run.output());
    assert_eq!(
        connection_states(&run.messages, "reconnecting"),
        0,
        "tried again:\n{}",
        run.output()
    );
}

/// `gst-launch-1.0 -m -e LINE` with kvssink's environment pointed at `control_plane` and
/// `env` added (no proxy variable but the ones in `env`), run to its end.
fn launch(control_plane: &str, env: &[(&str, &str)], line: &str) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", control_plane, registry.path());
    for var in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(var).env_remove(var.to_uppercase());
    }
    cmd.envs(env.iter().copied());
    cmd.args(["-m", "-e"]).args(split_launch(line));
    run_host(cmd, TIMEOUT)
}

/// A live camera into kvssink for `stream` (a few seconds of it).
fn camera(stream: &str, extra: &str) -> String {
    format!(
        "videotestsrc is-live=true num-buffers=90 ! video/x-raw,width=320,height=240 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! matroskamux \
         ! kvssink stream-name={stream} {extra}"
    )
}

#[test]
fn a_password_in_the_endpoint_url_is_not_repeated() {
    init();
    let server = server();
    let port = server.local_addr().port();
    let with_password = format!("http://user:Hunter2pw@127.0.0.1:{port}");
    let run = launch(
        &with_password,
        &[("GST_DEBUG", "kvssink:5,kvssrc:5")],
        &camera("cam", ""),
    );
    assert!(!run.status.success(), "{}", run.output());
    let output = run.output();
    assert!(!output.contains("Hunter2pw"), "{output}");
    assert!(
        output.contains(&format!(
            "the control-plane URL \"http://<redacted>@127.0.0.1:{port}\" holds a user name \
             or password"
        )),
        "{output}"
    );
    let run = launch(
        &with_password,
        &[("GST_DEBUG", "kvssink:5,kvssrc:5")],
        "kvssrc stream-name=cam start-selector=earliest ! fakesink",
    );
    assert!(!run.status.success(), "{}", run.output());
    assert!(!run.output().contains("Hunter2pw"), "{}", run.output());
}

#[test]
fn a_proxy_that_is_down_is_named_with_its_variable() {
    init();
    let server = server();
    let down = unused_port();
    let proxy = format!("http://127.0.0.1:{down}");
    let env = [("http_proxy", proxy.as_str())];
    let run = launch(&server.url(), &env, &camera("cam", "connection-timeout=1"));
    assert!(!run.status.success(), "{}", run.output());
    let named = format!("the proxy 127.0.0.1:{down} (from http_proxy)");
    assert_contains(
        &run,
        &format!("cannot reach {named} for {}: ", server.url()),
    );
    assert_contains(
        &run,
        "s: check that the proxy runs and that http_proxy names it right",
    );
    // kvssrc's requests take the same way, and say so.
    let run = launch(
        &server.url(),
        &env,
        "kvssrc stream-name=cam start-selector=earliest connection-timeout=1 ! fakesink",
    );
    assert!(!run.status.success(), "{}", run.output());
    assert_contains(&run, &format!("cannot reach {named} for "));
}

#[test]
fn a_proxy_asking_for_a_password_is_named_and_asked_once() {
    init();
    let server = server();
    let proxy = Proxy::start(&["--auth", "user:Right1pw"]);
    let named = format!("the proxy 127.0.0.1:{} (from http_proxy)", proxy.port);

    // No user name and password given.
    let run = launch(
        &server.url(),
        &[("http_proxy", proxy.url().as_str())],
        &camera("cam", ""),
    );
    assert!(!run.status.success(), "{}", run.output());
    assert_contains(
        &run,
        &format!(
            "{named} asks for a user name and password for {} (HTTP 407 Proxy Authentication \
             Required): give them in http_proxy, as http://USER:PASSWORD@127.0.0.1:{}/",
            server.url(),
            proxy.port
        ),
    );
    assert_eq!(proxy.requests("POST", 1), 1, "{:?}", proxy.lines);

    // Wrong ones: not sent again, and never shown.
    let wrong = format!("http://user:Wrong2pw@127.0.0.1:{}", proxy.port);
    let run = launch(
        &server.url(),
        &[("http_proxy", wrong.as_str())],
        &camera("cam", ""),
    );
    assert!(!run.status.success(), "{}", run.output());
    assert_contains(
        &run,
        &format!("{named} refused the user name and password given in http_proxy"),
    );
    assert!(!run.output().contains("Wrong2pw"), "{}", run.output());
    assert_eq!(proxy.requests("POST", 2), 2, "{:?}", proxy.lines);

    // kvssrc says the same.
    let run = launch(
        &server.url(),
        &[("http_proxy", wrong.as_str())],
        "kvssrc stream-name=cam start-selector=earliest ! fakesink",
    );
    assert!(!run.status.success(), "{}", run.output());
    assert_contains(
        &run,
        &format!("{named} refused the user name and password given in http_proxy"),
    );
    assert_eq!(proxy.requests("POST", 3), 3, "{:?}", proxy.lines);
}

#[test]
fn a_proxy_that_cannot_reach_the_endpoint_is_named() {
    init();
    let proxy = Proxy::start(&[]);
    // The control plane is a port nothing listens on: the proxy answers 502 Bad Gateway.
    let nowhere = format!("http://127.0.0.1:{}", unused_port());
    let run = launch(
        &nowhere,
        &[("http_proxy", proxy.url().as_str())],
        &camera("cam", "connection-timeout=1"),
    );
    assert!(!run.status.success(), "{}", run.output());
    let named = format!("the proxy 127.0.0.1:{} (from http_proxy)", proxy.port);
    assert_contains(
        &run,
        &format!(
            "cannot reach {nowhere} through {named}: the proxy could not (HTTP 502 Bad Gateway)"
        ),
    );
    assert_contains(
        &run,
        &format!(
            "check the network, aws-region and control-plane-uri, and {named}, which the \
             requests go through"
        ),
    );
}

#[test]
fn put_media_through_a_proxy_refusing_its_password_is_tried_once() {
    // The control plane is reached directly (no_proxy), the data endpoint it names through
    // the proxy's CONNECT, with a wrong password: corporate proxies lock an account after a
    // few of those, so it is not sent again and again.
    init();
    let server = server_naming(|port| format!("http://localhost:{port}"));
    let proxy = Proxy::start(&["--auth", "user:Right1pw"]);
    let wrong = format!("http://user:Wrong2pw@127.0.0.1:{}", proxy.port);
    let run = launch(
        &server.url(),
        &[("http_proxy", wrong.as_str()), ("no_proxy", "127.0.0.1")],
        &camera("cam", "stop-stream-timeout=5"),
    );
    assert_given_up_at_once(&run);
    let port = server.local_addr().port();
    assert_contains(
        &run,
        &format!(
            "the proxy 127.0.0.1:{} (from http_proxy) refused the user name and password given \
             in http_proxy for http://localhost:{port} (it answered the CONNECT with HTTP/1.1 \
             407 Proxy Authentication Required)",
            proxy.port
        ),
    );
    assert!(!run.output().contains("Wrong2pw"), "{}", run.output());
    assert_eq!(proxy.requests("CONNECT", 1), 1, "{:?}", proxy.lines);
}

#[test]
fn put_media_through_an_https_proxy_is_refused_at_once() {
    init();
    let server = server_naming(|port| format!("http://localhost:{port}"));
    let proxy = format!("https://127.0.0.1:{}", unused_port());
    let run = launch(
        &server.url(),
        &[("http_proxy", proxy.as_str()), ("no_proxy", "127.0.0.1")],
        &camera("cam", "stop-stream-timeout=5"),
    );
    assert_given_up_at_once(&run);
    assert_contains(&run, "(from http_proxy), used for http://localhost:");
    assert_contains(
        &run,
        "is an https:// proxy, which PutMedia's connection does not go through (only http:// \
         ones): give an http:// proxy in http_proxy",
    );
}

#[test]
fn a_data_endpoint_that_cannot_be_reached_ends_the_start() {
    // The control plane answers, but the data endpoint it names does not resolve: kvssink
    // gives up as it does for a control plane it cannot reach (kvssrc too).
    init();
    let server = server_naming(|port| format!("http://kvs.invalid:{port}"));
    let port = server.local_addr().port();
    let run = launch(
        &server.url(),
        &[],
        &camera("cam", "connection-timeout=1 stop-stream-timeout=30"),
    );
    assert!(!run.status.success(), "{}", run.output());
    assert_contains(
        &run,
        &format!(
            "the control plane answered, but the data endpoint it named (GetDataEndpoint), \
             http://kvs.invalid:{port}, was not reached in "
        ),
    );
}

/// kvs-local whose data endpoint is behind a TLS terminator with a certificate of a CA that
/// is trusted nowhere.
fn untrusted_data_endpoint() -> Server {
    let pki = Pki::new();
    let backend = Arc::new(OnceLock::new());
    let terminator = tls_terminator(&pki, backend.clone());
    let server = Server::spawn(Config {
        public_url: Some(format!("https://127.0.0.1:{}", terminator.port())),
        ..Config::default()
    })
    .expect("start kvs-local");
    backend.set(server.local_addr()).unwrap();
    server
}

#[test]
fn an_untrusted_data_endpoint_ends_the_start_at_once_and_says_what_to_trust() {
    init();
    let server = untrusted_data_endpoint();
    let run = launch(&server.url(), &[], &camera("cam", "stop-stream-timeout=5"));
    assert_given_up_at_once(&run);
    assert_contains(
        &run,
        "TLS handshake failed: invalid peer certificate: UnknownIssuer; the endpoint's \
         certificate is not issued by a CA trusted here: give that CA's certificate in ca-file \
         (PEM), or in SSL_CERT_FILE or SSL_CERT_DIR",
    );
}

#[test]
fn https_to_a_plain_http_endpoint_says_it_does_not_speak_tls() {
    init();
    let server = server();
    let https = server.url().replace("http://", "https://");
    let run = launch(&https, &[], &camera("cam", ""));
    assert_given_up_at_once(&run);
    assert_contains(
        &run,
        "received corrupt message of type InvalidContentType; what answered does not speak TLS: \
         if the endpoint is plain HTTP, its URL starts with http://, not https://",
    );
}

#[test]
fn no_proxy_star_goes_around_the_proxy_for_ip_addresses_too() {
    // As curl has it: `*` names every host.
    init();
    let server = server();
    let down = format!("http://127.0.0.1:{}", unused_port());
    let run = launch(
        &server.url(),
        &[("http_proxy", down.as_str()), ("no_proxy", "*")],
        &camera("cam", ""),
    );
    run.assert_all_persisted();
}

/// kvssrc against a data endpoint whose certificate is not trusted: an error at once, with
/// the same advice, not retried until 3 x connection-timeout has passed.
#[test]
fn kvssrc_ends_at_once_on_an_untrusted_data_endpoint() {
    init();
    let server = untrusted_data_endpoint();
    server.create_stream("cam").unwrap();
    let run = launch(
        &server.url(),
        &[],
        "kvssrc stream-name=cam start-selector=earliest ! fakesink",
    );
    assert_given_up_at_once(&run);
    assert_contains(
        &run,
        "give that CA's certificate in ca-file (PEM), or in SSL_CERT_FILE or SSL_CERT_DIR",
    );
}

/// Frames of a camera at a high bit rate (tens of KB each) reach the service as one HTTP chunk
/// each, with their block header: a lone 8-byte chunk per frame doubled the chunks the
/// service decodes. Counted at kvs-local, which records every body chunk as hyper hands it
/// over (a chunk split across socket reads may arrive in pieces, never merged with another).
#[test]
fn a_large_frame_and_its_block_header_are_one_http_chunk() {
    init();
    let server = Server::spawn(Config {
        record_body_reads: true,
        ..Config::default()
    })
    .expect("start kvs-local");
    let line = "videotestsrc is-live=true num-buffers=60 pattern=snow \
                ! video/x-raw,width=640,height=360,framerate=30/1 \
                ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=8000 key-int-max=30 \
                ! matroskamux ! kvssink stream-name=chunks";
    let run = launch(&server.url(), &[], line);
    run.assert_success();
    run.assert_all_persisted();
    // The frames of 16 KiB or more (which go out without a copy), from what was stored.
    let large: usize = server
        .fragments("chunks")
        .iter()
        .map(|f| {
            simple_blocks(&f.bytes)
                .iter()
                .filter(|(_, block)| block.len() >= 16 * 1024)
                .count()
        })
        .sum();
    assert!(large >= 30, "only {large} frames of 16 KiB or more");
    let report = server.report();
    let reads = &report.sessions[0].reads;
    let sizes: Vec<u64> = reads
        .iter()
        .scan(0, |before, r| {
            let size = r.bytes - *before;
            *before = r.bytes;
            Some(size)
        })
        .collect();
    let lone_headers = sizes.iter().filter(|&&s| s <= 16).count();
    assert!(
        lone_headers <= large / 10,
        "{lone_headers} chunks of at most 16 bytes for {large} large frames: {sizes:?}"
    );
}

//! Errors that point the right way: throttling is retried and named, a bad session token is
//! told from an unknown access key, a wrong clock is corrected (and named when it is the
//! cause), an unusable control-plane URL is refused at once, and `ca-file` may be a directory.
//!
//! The clock tests run `gst-launch-1.0` under libfaketime (Debian's `faketime`) with the
//! plugin built at target/debug, against kvs-local in this process, which refuses requests
//! signed more than 5 minutes off its clock as AWS does.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::standins::{self, Reply, Standin};
use common::*;
use gst::prelude::*;
use kvs_local::{Fault, KeyPair};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A live 3 s test stream (three fragments) into `sink`, recording what reached it.
fn testsrc(
    server: &Server,
    stream: &str,
) -> (
    gst::Pipeline,
    gst::Element,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let line = launch_line("testsrc", &[("STREAM", stream)]);
    let (pipeline, sink) = pipeline(&line, server, stream);
    sink.set_property("stop-stream-timeout", 30u32);
    let sent = capture(&sink);
    (pipeline, sink, sent)
}

fn reconnect_reasons(run: &Run) -> Vec<String> {
    run.named("kvs-connection")
        .iter()
        .filter_map(|s| s.get::<String>("reason").ok())
        .collect()
}

#[test]
fn throttling_at_start_is_retried_past_the_connection_timeouts_and_named() {
    init();
    let server = server();
    // Five throttled DescribeStream calls: with backoff from 250 ms doubling, more than
    // 3 x connection-timeout (3 s), the bound for an endpoint that never answers.
    server.inject(Fault::Throttle {
        stream: None,
        operation: "DescribeStream".into(),
        count: 5,
    });
    let (pipeline, sink, sent) = testsrc(&server, "throttled");
    sink.set_property("connection-timeout", 1u32);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    let reasons = reconnect_reasons(&run);
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for reason in &reasons {
        assert!(reason.contains("throttled by the service"), "{reason}");
        assert!(reason.contains("ClientLimitExceededException"), "{reason}");
    }
    assert!(
        run.warnings.iter().any(|w| w.contains("throttled")),
        "{:?}",
        run.warnings
    );
    assert_stored_exactly(&server, "throttled", &sent.lock().unwrap());
}

#[test]
fn throttling_that_does_not_end_is_an_error_that_names_throttling() {
    init();
    let server = server();
    server.inject(Fault::Throttle {
        stream: None,
        operation: "*".into(),
        count: 100_000,
    });
    let (pipeline, sink, _) = testsrc(&server, "throttledforever");
    sink.set_property("connection-timeout", 1u32);
    let run = run(&pipeline, TIMEOUT);
    let text = run.error_text();
    assert!(!run.eos);
    assert!(text.contains("ClientLimitExceededException"), "{text}");
    assert!(
        text.contains("the service throttled every attempt"),
        "{text}"
    );
    assert!(text.contains("12 x connection-timeout"), "{text}");
    assert!(!text.contains("check the network"), "{text}");
    // Retried with backoff well past 3 x connection-timeout, not a busy loop.
    let attempts = reconnect_reasons(&run).len();
    assert!((5..=15).contains(&attempts), "{attempts} attempts");
    assert!(server.fragments("throttledforever").is_empty());
}

fn server_with_keys(keys: Vec<KeyPair>) -> Server {
    Server::spawn(Config {
        keys,
        ..Config::default()
    })
    .unwrap()
}

/// Runs the test stream with these credential properties and returns the error.
fn refused(server: &Server, stream: &str, access: &str, secret: &str, token: Option<&str>) -> Run {
    let line = launch_line("testsrc", &[("STREAM", stream)]);
    let (pipeline, sink) = pipeline_without_keys(&line, server, stream);
    sink.set_property("access-key", access);
    sink.set_property("secret-key", secret);
    if let Some(token) = token {
        sink.set_property("session-token", token);
    }
    let run = run(&pipeline, TIMEOUT);
    assert!(!run.eos, "{stream}: the credentials were accepted");
    run
}

#[test]
fn a_bad_session_token_is_told_from_an_unknown_access_key() {
    init();
    let server = server_with_keys(vec![
        KeyPair::new("ASIA_TEMPORARYKEY0001", "temporary-secret").with_session_token("good-token"),
        KeyPair::new("AKIA_LONGTERMKEY00001", "long-term-secret"),
    ]);
    // AWS (and kvs-local) answer all of these with UnrecognizedClientException, "The
    // security token included in the request is invalid".
    let cases: [(&str, &str, &str, Option<&str>, &str); 5] = [
        (
            "badtoken",
            "ASIA_TEMPORARYKEY0001",
            "temporary-secret",
            Some("wrong-token"),
            "the session token is invalid",
        ),
        (
            "tokenonlongterm",
            "AKIA_LONGTERMKEY00001",
            "long-term-secret",
            Some("a-token"),
            "a session token was sent with a long-term access key",
        ),
        (
            "notoken",
            "ASIA_TEMPORARYKEY0001",
            "temporary-secret",
            None,
            "no session token was sent with it",
        ),
        (
            "unknownkey",
            "AKIA_NOBODYKNOWSTHIS1",
            "whatever",
            None,
            "the access key is not known to AWS",
        ),
        (
            "unknownwithtoken",
            "ASIA_NOBODYKNOWSTHIS1",
            "whatever",
            Some("some-token"),
            "the session token is invalid",
        ),
    ];
    for (stream, access, secret, token, says) in cases {
        let text = refused(&server, stream, access, secret, token).error_text();
        assert!(
            text.contains("UnrecognizedClientException"),
            "{stream}: {text}"
        );
        assert!(text.contains(says), "{stream}: {says:?} not in {text}");
        assert!(
            text.contains("the access-key/secret-key properties"),
            "{stream}: the source is named: {text}"
        );
        if token.is_some() {
            assert!(
                !text.contains("access key is not known"),
                "{stream}: {text}"
            );
        } else {
            assert!(
                !text.contains("session token is invalid"),
                "{stream}: {text}"
            );
        }
        assert!(!text.contains(secret), "{stream}: {text}");
        if let Some(token) = token {
            assert!(!text.contains(token), "{stream}: {text}");
        }
    }
    // A wrong secret is still a wrong secret, not the clock.
    let text = refused(&server, "badsecret", "AKIA_LONGTERMKEY00001", "nope", None).error_text();
    assert!(text.contains("InvalidSignatureException"), "{text}");
    assert!(text.contains("wrong secret key"), "{text}");
    assert!(text.contains("check the secret-key property"), "{text}");
    assert!(!text.contains("clock of this machine"), "{text}");
}

/// A wrong secret in a `credential-path` file: the advice names the file, not a property or
/// an environment variable that were never used.
#[test]
fn a_wrong_secret_in_the_credential_file_is_named_there() {
    init();
    let server = server_with_keys(vec![KeyPair::new(
        "AKIA_LONGTERMKEY00001",
        "long-term-secret",
    )]);
    let dir = tempdir();
    let path = dir.path().join("credential");
    std::fs::write(
        &path,
        "CREDENTIALS AKIA_LONGTERMKEY00001 2099-01-01T00:00:00Z not-the-secret\n",
    )
    .unwrap();
    let line = launch_line("testsrc", &[("STREAM", "filesecret")]);
    let (pipeline, sink) = pipeline_without_keys(&line, &server, "filesecret");
    sink.set_property("credential-path", path.to_str().unwrap());
    let run = run(&pipeline, TIMEOUT);
    assert!(!run.eos);
    let text = run.error_text();
    assert!(text.contains("check the credential-path file"), "{text}");
    assert!(
        !text.contains("secret-key") && !text.contains("AWS_SECRET_ACCESS_KEY"),
        "{text}"
    );
}

#[test]
fn an_expired_session_token_is_named() {
    init();
    let server = server_with_keys(vec![
        KeyPair::new("ASIA_EXPIREDKEY000001", "expired-secret")
            .with_session_token("expired-token")
            .with_expiry(SystemTime::now() - Duration::from_secs(60)),
    ]);
    let text = refused(
        &server,
        "expiredtoken",
        "ASIA_EXPIREDKEY000001",
        "expired-secret",
        Some("expired-token"),
    )
    .error_text();
    assert!(text.contains("ExpiredTokenException"), "{text}");
    assert!(text.contains("session token is past its expiry"), "{text}");
}

#[test]
fn an_unusable_control_plane_uri_is_an_error_at_once() {
    init();
    let server = server();
    for (stream, uri, says) in [
        (
            "ftp",
            "ftp://127.0.0.1:21",
            "is not http or https (ftp:// cannot be used)",
        ),
        (
            "nourl",
            "kinesisvideo.us-east-1.amazonaws.com",
            "is not a URL",
        ),
        ("unixsocket", "unix:/run/kvs.sock", "is not http or https"),
    ] {
        let line = launch_line("testsrc", &[("STREAM", stream)]);
        let (pipeline, sink) = pipeline(&line, &server, stream);
        sink.set_property("control-plane-uri", uri);
        let run = run_even_if_start_fails(&pipeline, TIMEOUT);
        let text = run.error_text();
        assert!(!run.eos, "{stream}");
        assert!(text.contains(uri), "{stream}: {text}");
        assert!(text.contains(says), "{stream}: {says:?} not in {text}");
        assert!(
            text.contains("https://kinesisvideo."),
            "{stream}: an example: {text}"
        );
        // Refused, not retried.
        assert!(reconnect_reasons(&run).is_empty(), "{stream}: {run:?}");
    }
    assert!(server.report().requests.is_empty());
}

#[test]
fn ca_file_may_be_a_directory_of_pem_files() {
    init();
    let pki = standins::Pki::new();
    // A directory like /etc/ssl/certs: the CA under its name and a hash link, other files.
    let dir = tempdir();
    std::fs::copy(&pki.ca, dir.path().join("kvssink-test-ca.pem")).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("kvssink-test-ca.pem"),
        dir.path().join("a1b2c3d4.0"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README"), "certificates for the tests\n").unwrap();
    std::fs::create_dir(dir.path().join("private")).unwrap();

    // The AWS IoT credentials provider over TLS, trusted only through the directory.
    let issued = standins::Issued::new("iotdir", SystemTime::now() + Duration::from_secs(3600));
    let server = server_with_keys(vec![issued.key_pair()]);
    let iot = standins::iot(&pki, move || issued.clone());
    let line = launch_line("testsrc", &[("STREAM", "cadir")]);
    let (pipeline, sink) = pipeline_without_keys(&line, &server, "cadir");
    sink.set_property(
        "iot-certificate",
        gst::Structure::builder("iot-certificate")
            .field("endpoint", iot.addr().to_string())
            .field("cert-path", pki.client_cert.to_str().unwrap())
            .field("key-path", pki.client_key.to_str().unwrap())
            .field("role-aliases", "kvs-role-alias")
            .build(),
    );
    sink.set_property("ca-file", dir.path().to_str().unwrap());
    let sent = capture(&sink);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_eq!(iot.requests().len(), 1);
    assert_stored_exactly(&server, "cadir", &sent.lock().unwrap());

    // The system's directory, as the official element is often given it.
    if Path::new("/etc/ssl/certs").is_dir() {
        let server = common::server();
        let line = launch_line("testsrc", &[("STREAM", "etcsslcerts")]);
        let (p, sink) = common::pipeline(&line, &server, "etcsslcerts");
        sink.set_property("ca-file", "/etc/ssl/certs");
        let run = common::run(&p, TIMEOUT);
        assert!(run.errors.is_empty(), "{}", run.error_text());
        assert_eq!(server.fragments("etcsslcerts").len(), 3);
    }

    // A directory without a certificate is an error that says so.
    let empty = tempdir();
    let server = common::server();
    let line = launch_line("testsrc", &[("STREAM", "emptycadir")]);
    let (p, sink) = common::pipeline(&line, &server, "emptycadir");
    sink.set_property("ca-file", empty.path().to_str().unwrap());
    let text = run_even_if_start_fails(&p, TIMEOUT).error_text();
    assert!(text.contains("holds no PEM certificate"), "{text}");
}

/// Runs the test stream with gst-launch-1.0 into `control_plane` with the key pair in the
/// environment; `faketime` (e.g. `+7m`) shifts the wall clock of gst-launch, not its
/// monotonic clock.
/// [`gst_launch`] with the demo keys, which must fail: what it printed.
fn failed_gst_launch(control_plane: &str, stream: &str) -> String {
    let tmp = tempdir();
    let out = gst_launch(control_plane, stream, &KeyPair::demo(), None, tmp.path());
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    text
}

fn gst_launch(
    control_plane: &str,
    stream: &str,
    keys: &KeyPair,
    faketime: Option<&str>,
    tmp: &Path,
) -> Output {
    let line = launch_line("testsrc", &[("STREAM", stream)]);
    let mut command = match faketime {
        Some(offset) => {
            let mut c = Command::new("faketime");
            c.args(["-f", offset, "gst-launch-1.0"]);
            c.env("DONT_FAKE_MONOTONIC", "1");
            c
        }
        None => Command::new("gst-launch-1.0"),
    };
    command
        .arg("-e")
        .args(line.split_whitespace())
        .arg(format!("control-plane-uri={control_plane}"))
        .arg("aws-region=us-east-1")
        .arg("connection-timeout=5")
        .env("GST_PLUGIN_PATH", common::host::plugin_dir())
        .env("GST_REGISTRY", tmp.join("registry.bin"))
        .env("AWS_ACCESS_KEY_ID", &keys.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("CONTROL_PLANE_URI")
        .output()
        .expect("run gst-launch-1.0 (and faketime: apt-get install faketime)")
}

/// Whether `text` says the clock is `minutes` `way` ("ahead of", "behind") the service's, to
/// within a second (the service's `Date` has whole seconds).
fn names_skew(text: &str, minutes: u32, way: &str) -> bool {
    [
        format!("{minutes} min 0 s"),
        format!("{minutes} min 1 s"),
        format!("{} min 59 s", minutes - 1),
    ]
    .iter()
    .any(|size| {
        text.contains(&format!(
            "the clock of this machine is {size} {way} the service's"
        ))
    })
}

#[test]
fn a_clock_minutes_off_is_corrected_from_the_service_time_and_named() {
    let tmp = tempdir();
    for (offset, way) in [("+7m", "ahead of"), ("-7m", "behind")] {
        let server = common::server();
        let stream = format!(
            "skew{}",
            &offset[..1].replace('+', "ahead").replace('-', "behind")
        );
        let out = gst_launch(
            &server.url(),
            &stream,
            &KeyPair::demo(),
            Some(offset),
            tmp.path(),
        );
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{offset}: {text}");
        // The first request was refused for its time, then signed with the service's.
        let refused: Vec<_> = server
            .report()
            .requests
            .into_iter()
            .filter(|r| r.auth == kvs_local::report::AuthVerdict::Rejected)
            .collect();
        assert_eq!(refused.len(), 1, "{offset}: {refused:?}");
        assert_eq!(refused[0].operation, "DescribeStream");
        assert!(
            text.contains("InvalidSignatureException"),
            "{offset}: {text}"
        );
        assert!(
            names_skew(&text, 7, way),
            "{offset}: the skew is not named in {text}"
        );
        assert!(
            text.contains("Set this machine's clock right"),
            "{offset}: {text}"
        );
        assert_eq!(server.fragments(&stream).len(), 3, "{offset}: {text}");
    }
}

#[test]
fn a_clock_off_by_less_than_the_signature_allows_is_named_as_it_dates_the_fragments() {
    // Two minutes behind: the service takes the signature, so nothing is refused, yet every
    // live fragment is dated two minutes early. That is said, once, with the fix.
    let tmp = tempdir();
    let server = common::server();
    let started_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = gst_launch(
        &server.url(),
        "behind2",
        &KeyPair::demo(),
        Some("-2m"),
        tmp.path(),
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        server
            .report()
            .requests
            .iter()
            .all(|r| r.auth != kvs_local::report::AuthVerdict::Rejected),
        "{text}"
    );
    assert!(
        names_skew(&text, 2, "behind"),
        "the skew is not named in {text}"
    );
    assert_eq!(
        text.matches("a live stream's producer timestamps come from this machine's clock")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("its fragments are dated that much earlier than they happen")
            && text.contains("Set the clock right (NTP"),
        "{text}"
    );
    // What it says is what happened: the fragments are dated by the clock, 2 minutes early.
    let fragments = server.fragments("behind2");
    assert_eq!(fragments.len(), 3, "{text}");
    let first = fragments[0].producer_timestamp_ms;
    assert!(
        first + 110_000 < started_ms && first + 130_000 > started_ms,
        "dated {} ms before the test started",
        started_ms as i64 - first as i64
    );
}

/// What a live stream made while this machine's clock was set from `from` to `to` (libfaketime
/// offsets, read from a file that is changed once 3 fragments are stored): gst-launch-1.0's
/// output, the stored fragments' producer times, when the clock was set (ms since the epoch)
/// and how many requests were refused.
fn stream_while_the_clock_is_set(
    stream: &str,
    from: &str,
    to: &str,
) -> (String, Vec<u64>, u64, usize) {
    let tmp = tempdir();
    let server = common::server();
    let offset = tmp.path().join("offset");
    std::fs::write(&offset, from).unwrap();
    let library = ["/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/faketime"]
        .iter()
        .map(|d| Path::new(d).join("libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime.so.1 (apt-get install faketime)");
    let line =
        launch_line("testsrc", &[("STREAM", stream)]).replace("num-buffers=90", "num-buffers=300");
    let child = Command::new("gst-launch-1.0")
        .args(["-m", "-e"])
        .args(line.split_whitespace())
        .arg(format!("control-plane-uri={}", server.url()))
        .arg("aws-region=us-east-1")
        .env("GST_PLUGIN_PATH", common::host::plugin_dir())
        .env("GST_REGISTRY", tmp.path().join("registry.bin"))
        .env("AWS_ACCESS_KEY_ID", &KeyPair::demo().access_key)
        .env("AWS_SECRET_ACCESS_KEY", &KeyPair::demo().secret_key)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("CONTROL_PLANE_URI")
        .env("LD_PRELOAD", &library)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_CACHE_DURATION", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run gst-launch-1.0");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.fragments(stream).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no fragments");
        std::thread::sleep(Duration::from_millis(50));
    }
    let set_at = epoch_ms(SystemTime::now());
    std::fs::write(&offset, to).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("outcome=(string)all-persisted"), "{text}");
    let times: Vec<u64> = server
        .fragments(stream)
        .iter()
        .map(|f| f.producer_timestamp_ms)
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let refused = server
        .report()
        .requests
        .into_iter()
        .filter(|r| r.auth == kvs_local::report::AuthVerdict::Rejected)
        .count();
    (text, times, set_at, refused)
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `source` of each `kvs-stream-start` in gst-launch-1.0 -m's output.
fn start_sources(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("kvs-stream-start"))
        .filter_map(|l| l.split("source=(string)").nth(1))
        .filter_map(|s| s.split(',').next())
        .collect()
}

#[test]
fn a_clock_set_forward_while_streaming_dates_the_fragments_after_it_by_it() {
    // A camera without a battery-backed clock starts an hour behind; NTP sets the clock
    // while it streams. The fragments after the setting are dated by the right time, in a
    // new session, said once; the requests after it are still signed right (none refused
    // but the very first, before the service's time was known).
    let (text, times, set_at, refused) = stream_while_the_clock_is_set("forward", "-1h", "+0");
    assert_eq!(
        text.matches("this machine's clock was set 3").count(),
        1,
        "the setting is not told once: {text}"
    );
    assert!(text.contains("s forward while streaming"), "{text}");
    assert_eq!(start_sources(&text), ["live", "clock-stepped"], "{text}");
    assert_eq!(refused, 1, "{text}");
    // Before the setting, dated an hour early; after it, by the right time.
    let early = times.iter().filter(|&&t| t + 1_800_000 < set_at).count();
    assert!(early >= 3 && early < times.len(), "{times:?}");
    for &t in &times[early..] {
        assert!(
            t + 3_000 > set_at && t < epoch_ms(SystemTime::now()),
            "a fragment after the setting is dated {} ms from it: {times:?}",
            t as i64 - set_at as i64
        );
    }
}

#[test]
fn a_clock_set_forward_away_from_the_services_is_not_followed() {
    // A wrong time set while streaming (15 minutes ahead): the service's answers say this
    // machine's clock is now ahead of it, so the step is not followed. Followed, every later
    // fragment was refused as dated in the future until the stream was started again.
    let (text, times, set_at, refused) = stream_while_the_clock_is_set("away", "+0", "+15m");
    // (900 or 901 s ahead: the service's Date has whole seconds.)
    assert_eq!(
        text.matches("s forward while streaming, to 90").count(),
        1,
        "the setting is not told once: {text}"
    );
    assert!(text.contains("s ahead of the service's clock"), "{text}");
    assert!(text.contains("the step is not followed"), "{text}");
    assert_eq!(start_sources(&text), ["live"], "{text}");
    assert_eq!(refused, 0, "{text}");
    let last = *times.last().unwrap();
    assert!(
        last > set_at && last < epoch_ms(SystemTime::now()),
        "{times:?}"
    );
}

#[test]
fn a_clock_set_back_while_streaming_is_told_and_the_dates_go_on() {
    // Set ten minutes back: the fragments keep their times (none dated before one already
    // sent), and the warning says what to do.
    let (text, times, set_at, refused) = stream_while_the_clock_is_set("back", "+0", "-10m");
    assert!(
        text.contains("this machine's clock was set 600.")
            && text.contains("s back while streaming")
            && text.contains("Start the stream again to date it by the clock"),
        "{text}"
    );
    assert_eq!(start_sources(&text), ["live"], "{text}");
    assert_eq!(refused, 0, "{text}");
    let last = *times.last().unwrap();
    assert!(
        last > set_at && last < epoch_ms(SystemTime::now()),
        "{times:?}"
    );
}

#[test]
fn a_signature_time_error_that_correction_does_not_cure_leads_with_the_clock() {
    // A service that says every signature has expired, ten minutes ahead of this machine.
    let service = Standin::http(|_| {
        let now = SystemTime::now() + Duration::from_secs(600);
        let stamp = |t: SystemTime| standins::iso8601(t).replace(['-', ':'], "");
        let message = format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            stamp(SystemTime::now()),
            stamp(now - Duration::from_secs(300)),
            stamp(now)
        );
        Reply::status(
            403,
            format!(r#"{{"__type":"InvalidSignatureException","message":"{message}"}}"#),
        )
        .header("x-amzn-ErrorType", "InvalidSignatureException")
    });
    let text = failed_gst_launch(&service.url(), "uncured");
    // gst-launch prints the error, then its debug text: the whole message.
    let error = text
        .split("ERROR: from element")
        .nth(1)
        .unwrap_or_else(|| panic!("no error in {text}"));
    assert!(error.contains("Signature expired"), "{error}");
    assert!(names_skew(error, 10, "behind"), "{error}");
    let advice = error.split("min.)").nth(1).unwrap_or_default();
    let clock = advice.find("clock right").expect(error);
    let secret = advice.find("secret key").expect(error);
    assert!(clock < secret, "the clock comes first: {error}");
    // Retried with the corrected time before giving up.
    assert_eq!(service.requests().len(), 3, "{text}");
}

/// `control-plane-uri` pointing at a web server that is not Kinesis Video Streams (an HTML
/// 404): the error says the answer is not the service's and names the control plane and
/// where it came from, instead of advising about the stream name and region.
#[test]
fn a_web_server_that_is_not_the_service_is_named() {
    let service = Standin::http(|_| {
        Reply::status(404, "<html><body><h1>404 Not Found</h1></body></html>")
            .header("content-type", "text/html")
    });
    let text = failed_gst_launch(&service.url(), "webserver");
    assert!(text.contains("HTTP404 (HTTP 404)"), "{text}");
    assert!(text.contains("not one of Kinesis Video Streams"), "{text}");
    assert!(text.contains(&service.url()), "{text}");
    assert!(text.contains("control-plane-uri"), "{text}");
    assert!(!text.contains("check the stream name and region"), "{text}");
}

/// An endpoint of one region signed for another (kvs-local with `--region`, as the service
/// answers): the advice is about the region, not a wrong secret key.
#[test]
fn a_signature_for_another_region_is_named() {
    init();
    let server = Server::spawn(Config {
        region: Some("us-west-2".into()),
        ..Config::default()
    })
    .unwrap();
    let line = launch_line("testsrc", &[("STREAM", "otherregion")]);
    let (pipeline, sink) = pipeline(&line, &server, "otherregion");
    sink.set_property("aws-region", "eu-west-1");
    let run = run(&pipeline, TIMEOUT);
    assert!(!run.eos);
    let text = run.error_text();
    assert!(text.contains("scoped to a valid region"), "{text}");
    assert!(text.contains("check aws-region"), "{text}");
    assert!(!text.contains("wrong secret key"), "{text}");
}

//! `credential-path` (the official element's credentials file) and `iot-certificate` (the AWS
//! IoT credentials provider over mutual TLS, stood in for on loopback with a CA made here),
//! each renewed while a stream runs without losing a fragment.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::host;
use common::standins::{self, Issued, Pki};
use common::*;
use gst::prelude::*;
use kvs_local::KeyPair;

const TIMEOUT: Duration = Duration::from_secs(60);

fn server_with(keys: Vec<KeyPair>) -> Server {
    Server::spawn(Config {
        keys,
        ..Config::default()
    })
    .unwrap()
}

fn far_future() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

fn credential_line(issued: &Issued) -> String {
    format!(
        "CREDENTIALS {} {} {} {}\n",
        issued.access_key,
        issued.expiration(),
        issued.secret_key,
        issued.token
    )
}

#[test]
fn the_credential_file_is_used_and_read_again_when_it_changes() {
    init();
    let dir = tempdir();
    let path = dir.path().join("credential");
    // The first key pair expires while the stream runs; the program that maintains the file
    // writes the next one a little before.
    let first = Issued::new("filefirst", SystemTime::now() + Duration::from_secs(5));
    let second = Issued::new("filesecond", far_future());
    std::fs::write(&path, credential_line(&first)).unwrap();
    let server = server_with(vec![first.key_pair(), second.key_pair()]);
    let (pipeline, sink) = pipeline_without_keys(&live_line(8), &server, "file");
    sink.set_property("credential-path", path.to_str().unwrap());
    sink.set_property("rotation-period", 1u32);
    let sent = capture(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    let early = collect(&pipeline, TIMEOUT, |r| r.acks("PERSISTED").len() >= 2);
    assert!(early.errors.is_empty(), "{}", early.error_text());
    std::fs::write(&path, credential_line(&second)).unwrap();
    let run = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_stored_exactly(&server, "file", &sent.lock().unwrap());
    let keys = put_media_keys(&server);
    assert_eq!(keys.first(), Some(&first.access_key), "{keys:?}");
    assert_eq!(keys.last(), Some(&second.access_key), "{keys:?}");
    assert!(
        refused_keys(&server).is_empty(),
        "{:?}",
        refused_keys(&server)
    );
}

#[test]
fn the_official_two_word_form_without_expiry_works() {
    init();
    let dir = tempdir();
    let path = dir.path().join("credential");
    std::fs::write(
        &path,
        format!("CREDENTIALS {} {}\n", DEMO_ACCESS_KEY, DEMO_SECRET_KEY),
    )
    .unwrap();
    let server = server();
    let line = launch_line("testsrc", &[("STREAM", "file2")]);
    let (pipeline, sink) = pipeline_without_keys(&line, &server, "file2");
    sink.set_property("credential-path", path.to_str().unwrap());
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_eq!(server.fragments("file2").len(), 3);
}

#[test]
fn a_bad_or_expired_credential_file_is_a_clear_error_without_its_content() {
    init();
    let dir = tempdir();
    let server = server();
    let cases = [
        ("missing", None, "No such file"),
        (
            "garbled",
            Some("CREDENTIALS onlyone-hunter2\n".to_owned()),
            "expected `CREDENTIALS",
        ),
        (
            "expired",
            Some(
                "CREDENTIALS AKIDEXPIRED 2001-01-01T00:00:00Z secret-hunter2 token-hunter2\n"
                    .to_owned(),
            ),
            "have expired",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let line = launch_line("testsrc", &[("STREAM", name)]);
        let (pipeline, sink) = pipeline_without_keys(&line, &server, name);
        sink.set_property("credential-path", path.to_str().unwrap());
        let run = run(&pipeline, TIMEOUT);
        let text = run.error_text();
        eprintln!("error: {text}");
        assert!(text.contains("credential-path"), "{text}");
        assert!(text.contains(expected), "{expected:?} not in {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

fn iot_structure(pki: &Pki, endpoint: &str, ca_path: bool) -> gst::Structure {
    let mut s = gst::Structure::builder("iot-certificate")
        .field("endpoint", endpoint)
        .field("cert-path", pki.client_cert.to_str().unwrap())
        .field("key-path", pki.client_key.to_str().unwrap())
        .field("role-aliases", "kvs-role-alias")
        .field("iot-thing-name", "front-door-camera")
        .build();
    if ca_path {
        s.set("ca-path", pki.ca.to_str().unwrap());
    }
    s
}

#[test]
fn iot_certificate_credentials_over_mutual_tls_are_renewed_during_the_stream() {
    init();
    let pki = Pki::new();
    let first = Issued::new("iotfirst", SystemTime::now() + Duration::from_secs(6));
    let second = Issued::new("iotsecond", far_future());
    let (a, b) = (first.clone(), second.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let iot = standins::iot(&pki, move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            a.clone()
        } else {
            b.clone()
        }
    });
    let server = server_with(vec![first.key_pair(), second.key_pair()]);
    let (pipeline, sink) = pipeline_without_keys(&live_line(10), &server, "iot");
    // The official form: the endpoint is a host name (here with the stand-in's port).
    sink.set_property(
        "iot-certificate",
        iot_structure(&pki, &iot.addr().to_string(), true),
    );
    // rotation-period stays at its default (40 min): the session ends because the
    // credentials it was signed with are about to expire.
    let sent = capture(&sink);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_stored_exactly(&server, "iot", &sent.lock().unwrap());
    let stats = sink.property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("connections").unwrap() >= 2, "{stats}");
    assert_eq!(
        stats.get::<u64>("fragments-replayed").unwrap(),
        0,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("reconnects").unwrap(), 0, "{stats}");
    let keys = put_media_keys(&server);
    assert_eq!(keys.first(), Some(&first.access_key), "{keys:?}");
    assert_eq!(keys.last(), Some(&second.access_key), "{keys:?}");
    assert!(
        refused_keys(&server).is_empty(),
        "{:?}",
        refused_keys(&server)
    );
    let requests = iot.requests();
    assert!(requests.len() >= 2, "renewed: {} requests", requests.len());
    assert!(
        requests
            .iter()
            .all(|r| r.header("x-amzn-iot-thingname") == Some("front-door-camera"))
    );
}

#[test]
fn a_device_certificate_renewed_on_disk_is_presented_at_the_next_renewal() {
    // AWS IoT device certificates are rotated: the new certificate and key replace the old
    // files (by rename) and the old certificate is deactivated. The credentials renewal
    // after that must present the new one, as the official element (which reads the files
    // at each request) does, or the stream dies when its credentials expire.
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::sync::atomic::AtomicBool;
    init();
    let pki = Pki::new();
    let dir = tempdir();
    let (cert_path, key_path) = (dir.path().join("device.pem"), dir.path().join("device.key"));
    std::fs::copy(&pki.client_cert, &cert_path).unwrap();
    std::fs::copy(&pki.client_key, &key_path).unwrap();
    let old_cert = CertificateDer::from_pem_file(&pki.client_cert)
        .unwrap()
        .to_vec();

    let first = Issued::new("iotold", SystemTime::now() + Duration::from_secs(6));
    let second = Issued::new("iotrenewed", far_future());
    let (a, b) = (first.clone(), second.clone());
    let deactivated = Arc::new(AtomicBool::new(false));
    let refused = deactivated.clone();
    let iot = standins::Standin::https(pki.server_config(), move |r| {
        if refused.load(Ordering::SeqCst) && r.client_cert.as_deref() == Some(&old_cert[..]) {
            return standins::Reply::status(403, r#"{"message":"Access Denied"}"#);
        }
        if r.header("x-amzn-iot-thingname") == Some("front-door-camera") {
            let issued = if refused.load(Ordering::SeqCst) {
                &b
            } else {
                &a
            };
            return standins::Reply::ok(issued.iot_json());
        }
        standins::Reply::status(400, r#"{"message":"missing thing name"}"#)
    });
    let server = server_with(vec![first.key_pair(), second.key_pair()]);
    let (pipeline, sink) = pipeline_without_keys(&live_line(10), &server, "renewed");
    let mut s = iot_structure(&pki, &iot.url(), true);
    s.set("cert-path", cert_path.to_str().unwrap());
    s.set("key-path", key_path.to_str().unwrap());
    sink.set_property("iot-certificate", s);
    let sent = capture(&sink);
    let run = std::thread::scope(|scope| {
        scope.spawn(|| {
            // A stored fragment: the first credentials were fetched with the old certificate.
            assert!(server.wait_for_fragments("renewed", 1, TIMEOUT));
            standins::replace_file(&pki.renewed_cert, &cert_path);
            standins::replace_file(&pki.renewed_key, &key_path);
            deactivated.store(true, Ordering::SeqCst);
        });
        run(&pipeline, TIMEOUT)
    });
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_stored_exactly(&server, "renewed", &sent.lock().unwrap());
    let keys = put_media_keys(&server);
    assert_eq!(keys.last(), Some(&second.access_key), "{keys:?}");
    let renewed = CertificateDer::from_pem_file(&pki.renewed_cert)
        .unwrap()
        .to_vec();
    let presented: Vec<bool> = iot
        .requests()
        .iter()
        .map(|r| r.client_cert.as_deref() == Some(&renewed[..]))
        .collect();
    assert_eq!(presented.first(), Some(&false), "{presented:?}");
    assert_eq!(presented.last(), Some(&true), "{presented:?}");
}

#[test]
fn ca_file_is_trusted_by_the_iot_client_and_the_thing_name_defaults_to_the_stream() {
    init();
    let pki = Pki::new();
    let issued = Issued::new("iotcafile", far_future());
    let answer = issued.clone();
    let iot = standins::iot(&pki, move || answer.clone());
    let server = server_with(vec![issued.key_pair()]);
    let line = launch_line("testsrc", &[("STREAM", "cafile")]);
    let (pipeline, sink) = pipeline_without_keys(&line, &server, "cafile");
    let mut s = iot_structure(&pki, &iot.url(), false);
    s.remove_field("iot-thing-name");
    sink.set_property("iot-certificate", s);
    sink.set_property("ca-file", pki.ca.to_str().unwrap());
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_eq!(server.fragments("cafile").len(), 3);
    assert_eq!(
        iot.requests()[0].header("x-amzn-iot-thingname"),
        Some("cafile")
    );
}

#[test]
fn iot_certificate_problems_are_clear_errors() {
    init();
    let pki = Pki::new();
    let iot = standins::iot(&pki, || {
        unreachable!("no certificate of ours was presented")
    });
    let server = server();

    // A certificate the credentials provider does not know: the TLS handshake fails.
    let mut stranger = iot_structure(&pki, &iot.url(), true);
    stranger.set("cert-path", pki.stranger_cert.to_str().unwrap());
    stranger.set("key-path", pki.stranger_key.to_str().unwrap());
    // No CA for the endpoint: its certificate is not trusted (TLS is always verified).
    let untrusted = iot_structure(&pki, &iot.url(), false);
    // A missing field is refused at start, naming it.
    let mut incomplete = iot_structure(&pki, &iot.url(), true);
    incomplete.remove_field("role-aliases");
    let mut misspelt = iot_structure(&pki, &iot.url(), true);
    misspelt.set("role-alias", "kvs-role-alias");
    // A key that is not the certificate's (another device's).
    let mut mismatched = iot_structure(&pki, &iot.url(), true);
    mismatched.set("key-path", pki.renewed_key.to_str().unwrap());
    let cases = [
        (
            "mismatched",
            mismatched,
            "does not go with the certificate cert-path",
        ),
        ("stranger", stranger, "cannot get AWS credentials from"),
        ("untrusted", untrusted, "cannot get AWS credentials from"),
        (
            "incomplete",
            incomplete,
            "iot-certificate needs role-aliases",
        ),
        ("misspelt", misspelt, "unknown field role-alias"),
    ];
    for (name, structure, expected) in cases {
        let line = launch_line("testsrc", &[("STREAM", name)]);
        let (pipeline, sink) = pipeline_without_keys(&line, &server, name);
        sink.set_property("iot-certificate", structure);
        let run = run_even_if_start_fails(&pipeline, TIMEOUT);
        let text = run.error_text();
        eprintln!("error: {text}");
        assert!(
            text.contains(expected),
            "{name}: {expected:?} not in {text}"
        );
    }
    assert!(iot.requests().is_empty());
}

#[test]
fn expired_credentials_are_a_clear_error() {
    init();
    let expired = Issued::new("expired", SystemTime::now() - Duration::from_secs(60));
    let server = server_with(vec![expired.key_pair()]);
    let line = launch_line("testsrc", &[("STREAM", "expired")]);
    let (pipeline, sink) = pipeline_without_keys(&line, &server, "expired");
    sink.set_property("access-key", &expired.access_key);
    sink.set_property("secret-key", &expired.secret_key);
    sink.set_property("session-token", &expired.token);
    let run = run(&pipeline, TIMEOUT);
    let text = run.error_text();
    assert!(text.contains("ExpiredTokenException"), "{text}");
    assert!(text.contains("the credentials have expired"), "{text}");
    assert!(!text.contains(&expired.secret_key) && !text.contains(&expired.token));
}

/// An IoT stand-in that hands out `first`, then `second` from its second request on.
fn iot_first_then(pki: &Pki, first: &Issued, second: &Issued) -> standins::Standin {
    let (a, b) = (first.clone(), second.clone());
    let calls = AtomicUsize::new(0);
    standins::iot(pki, move || {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            a.clone()
        } else {
            b.clone()
        }
    })
}

#[test]
fn credentials_the_service_refuses_are_renewed_at_once() {
    // The service says ExpiredTokenException for credentials whose expiry is an hour away
    // (revoked, or a clock wrong somewhere): kvssink asks the IoT endpoint for new ones at the
    // next attempt instead of offering the refused ones until they fail three times.
    init();
    let pki = Pki::new();
    let first = Issued::new("iotrefused", far_future());
    let second = Issued::new("iotreplaced", far_future());
    let iot = iot_first_then(&pki, &first, &second);
    let server = server_with(vec![first.key_pair(), second.key_pair()]);
    let (pipeline, sink) = pipeline_without_keys(&live_line(8), &server, "refused");
    sink.set_property(
        "iot-certificate",
        iot_structure(&pki, &iot.addr().to_string(), true),
    );
    let sent = capture(&sink);
    let run = std::thread::scope(|scope| {
        scope.spawn(|| {
            assert!(server.wait_for_fragments("refused", 2, TIMEOUT));
            // The session ends (the service's routine 4003), and the next request with the
            // first credentials is refused as expired.
            server.inject(kvs_local::Fault::RejectCredentials {
                stream: None,
                count: 1,
                error_type: Some("ExpiredTokenException".into()),
            });
            server.inject(kvs_local::Fault::MaxConnectionDuration {
                stream: None,
                after_ms: 1,
            });
            std::thread::sleep(Duration::from_millis(300));
            server.clear_faults();
        });
        run(&pipeline, TIMEOUT)
    });
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_stored_exactly(&server, "refused", &sent.lock().unwrap());
    assert_eq!(refused_keys(&server).len(), 1, "one refusal, not three");
    let keys = put_media_keys(&server);
    assert_eq!(keys.first(), Some(&first.access_key), "{keys:?}");
    assert_eq!(keys.last(), Some(&second.access_key), "{keys:?}");
    assert_eq!(iot.requests().len(), 2, "one renewal, after the refusal");
}

#[test]
fn a_camera_clock_minutes_behind_renews_iot_credentials_by_the_services_time() {
    // A camera without a real-time clock boots minutes behind: its IoT credentials expire by
    // the service's clock. gst-launch-1.0 under libfaketime, 5 minutes behind; the first
    // credentials live 10 s and the service ends sessions after 12 s. Judged by the camera's
    // clock they would still be good then, and the next session would be refused.
    init();
    let pki = Pki::new();
    let first = Issued::new("iotbehind", SystemTime::now() + Duration::from_secs(10));
    let second = Issued::new("iotbehindnext", far_future());
    let iot = iot_first_then(&pki, &first, &second);
    let server = server_with(vec![first.key_pair(), second.key_pair()]);
    server.inject(kvs_local::Fault::MaxConnectionDuration {
        stream: None,
        after_ms: 12_000,
    });
    let iot_certificate = format!(
        "iot-certificate,endpoint={},cert-path={},key-path={},ca-path={},role-aliases=kvs-role-alias",
        iot.addr(),
        pki.client_cert.display(),
        pki.client_key.display(),
        pki.ca.display()
    );
    let line = format!(
        "{} stream-name=behind aws-region=us-east-1 iot-certificate=\"{iot_certificate}\"",
        live_line(16)
    );
    let registry = tempdir();
    let mut cmd = host::host_command("faketime", &server.url(), registry.path());
    cmd.env("DONT_FAKE_MONOTONIC", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["-f", "-5m", "gst-launch-1.0", "-m", "-e"])
        .args(host::split_launch(&line));
    let run = host::run_host(cmd, TIMEOUT);
    run.assert_success();
    run.assert_all_persisted();
    assert!(
        run.output().contains("behind the service's"),
        "the skew is told: {}",
        run.output()
    );
    // Refused: only the first request, signed by the camera's clock (corrected from then on).
    let refused: Vec<_> = server
        .report()
        .requests
        .into_iter()
        .filter(|r| r.auth == kvs_local::report::AuthVerdict::Rejected)
        .map(|r| (r.operation, r.error_type, r.error_message))
        .collect();
    assert!(
        refused.len() <= 1
            && refused
                .iter()
                .all(|(_, _, m)| m.as_deref().unwrap_or("").contains("Signature expired")),
        "{refused:?}"
    );
    let keys = put_media_keys(&server);
    assert_eq!(keys.first(), Some(&first.access_key), "{keys:?}");
    assert_eq!(keys.last(), Some(&second.access_key), "{keys:?}");
    assert_eq!(server.fragments("behind").len(), 16);
}

//! No secret appears in any log line at the most verbose level, nor in any property read, bus
//! message or error, whether the credentials come from properties, the environment, a
//! credentials file (`credential-path`) or AWS IoT (`iot-certificate`).

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::standins;
use common::*;
use gst::prelude::*;
use kvs_local::KeyPair;

const ACCESS: &str = "KVSSECRETTESTACCESSKEY";
const SECRET: &str = "s3cr3t-never-to-be-seen-Zq9";
const TOKEN: &str = "t0k3n-never-to-be-seen-Xw7";

fn server_with_token() -> Server {
    Server::spawn(Config {
        keys: vec![KeyPair {
            access_key: ACCESS.into(),
            secret_key: SECRET.into(),
            session_token: Some(TOKEN.into()),
            expires_at: None,
        }],
        ..Config::default()
    })
    .unwrap()
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "the secret key appears in {what}");
    assert!(!text.contains(TOKEN), "the session token appears in {what}");
}

/// The debug log is process-wide: one test at a time captures it.
static LOG: Mutex<()> = Mutex::new(());

/// Runs `f` with every GStreamer debug category at the most verbose level, and returns the
/// log it produced.
fn capture_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let _lock = LOG.lock().unwrap_or_else(|e| e.into_inner());
    init();
    let lines = Arc::new(Mutex::new(String::new()));
    let sink_lines = lines.clone();
    // Only ours: the default one would print it all on stderr.
    gst::log::remove_default_log_function();
    gst::log::set_default_threshold(gst::DebugLevel::Memdump);
    let function =
        gst::log::add_log_function(move |cat, level, file, function, line, _obj, message| {
            let text = message.get().map(|m| m.to_string()).unwrap_or_default();
            let mut all = sink_lines.lock().unwrap();
            all.push_str(&format!(
                "{} {level:?} {file}:{function}:{line} {text}\n",
                cat.name()
            ));
        });
    let result = f();
    gst::log::set_default_threshold(gst::DebugLevel::None);
    gst::log::remove_log_function(function);
    let log = lines.lock().unwrap().clone();
    assert!(
        log.contains("kvssink"),
        "the log function saw kvssink's lines"
    );
    (result, log)
}

/// No property read gives a secret.
fn assert_properties_clean(sink: &gst::Element) {
    for p in sink.list_properties() {
        if p.flags().contains(glib::ParamFlags::READABLE) {
            let value = sink.property_value(p.name());
            // An unset structure is NULL, which GStreamer cannot serialize (and complains).
            if value
                .get::<Option<gst::Structure>>()
                .is_ok_and(|s| s.is_none())
            {
                continue;
            }
            assert_clean(p.name(), &format!("{value:?}"));
        }
    }
}

#[test]
fn properties_set_in_code_never_reach_the_debug_log_or_the_bus() {
    let server = server_with_token();
    let ((run, sink), log) = capture_log(|| {
        let line = launch_line("testsrc", &[("STREAM", "secrets")]);
        let (pipeline, sink) = pipeline(&line, &server, "secrets");
        sink.set_property("access-key", ACCESS);
        sink.set_property("secret-key", SECRET);
        sink.set_property("session-token", TOKEN);
        (run(&pipeline, Duration::from_secs(60)), sink)
    });
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_eq!(
        server.fragments("secrets").len(),
        3,
        "the token was sent and accepted"
    );
    assert_clean("the debug log", &log);
    assert_clean("the bus messages", &format!("{:?}", run.messages));
    assert_properties_clean(&sink);
}

#[test]
fn a_credential_file_never_reaches_the_debug_log_or_a_property() {
    let server = server_with_token();
    let dir = tempdir();
    let path = dir.path().join("credential");
    std::fs::write(
        &path,
        format!("CREDENTIALS {ACCESS} 2099-01-01T00:00:00Z {SECRET} {TOKEN}\n"),
    )
    .unwrap();
    let ((run, sink), log) = capture_log(|| {
        let line = launch_line("testsrc", &[("STREAM", "filesecrets")]);
        let (pipeline, sink) = pipeline_without_keys(&line, &server, "filesecrets");
        sink.set_property("credential-path", path.to_str().unwrap());
        sink.set_property("profile", "camera");
        (run(&pipeline, Duration::from_secs(60)), sink)
    });
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_eq!(server.fragments("filesecrets").len(), 3);
    assert_clean("the debug log", &log);
    assert_clean("the bus messages", &format!("{:?}", run.messages));
    assert_properties_clean(&sink);

    // A file that is not in the format: the error does not quote it.
    std::fs::write(&path, format!("CREDENTIALS {SECRET}\n")).unwrap();
    let ((failed, _), log) = capture_log(|| {
        let line = launch_line("testsrc", &[("STREAM", "filesecrets2")]);
        let (pipeline, sink) = pipeline_without_keys(&line, &server, "filesecrets2");
        sink.set_property("credential-path", path.to_str().unwrap());
        (common::run(&pipeline, Duration::from_secs(60)), sink)
    });
    assert!(!failed.errors.is_empty());
    assert_clean("the error", &failed.error_text());
    assert_clean("the debug log", &log);
}

#[test]
fn iot_credentials_never_reach_the_debug_log_or_a_property() {
    let server = server_with_token();
    let pki = standins::Pki::new();
    let iot = standins::iot(&pki, || standins::Issued {
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
        token: TOKEN.into(),
        expires: std::time::SystemTime::now() + Duration::from_secs(3600),
    });
    let ((run, sink), log) = capture_log(|| {
        let line = launch_line("testsrc", &[("STREAM", "iotsecrets")]);
        let (pipeline, sink) = pipeline_without_keys(&line, &server, "iotsecrets");
        let structure = gst::Structure::builder("iot-certificate")
            .field("endpoint", iot.addr().to_string())
            .field("cert-path", pki.client_cert.to_str().unwrap())
            .field("key-path", pki.client_key.to_str().unwrap())
            .field("ca-path", pki.ca.to_str().unwrap())
            .field("role-aliases", "kvs-role-alias")
            .build();
        sink.set_property("iot-certificate", structure);
        (run(&pipeline, Duration::from_secs(60)), sink)
    });
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert_eq!(server.fragments("iotsecrets").len(), 3);
    assert_clean("the debug log", &log);
    assert_clean("the bus messages", &format!("{:?}", run.messages));
    assert_properties_clean(&sink);
}

#[test]
fn gst_launch_with_credentials_from_the_environment_logs_no_secret() {
    // The plugin as gst-launch-1.0 loads it: built by `cargo build` next to the test binaries.
    let dir = std::env::current_exe().unwrap();
    let plugin_dir = dir.parent().unwrap().parent().unwrap();
    assert!(
        plugin_dir.join("libgstkvs.so").exists(),
        "build the plugin first (cargo build): {} has no libgstkvs.so",
        plugin_dir.display()
    );
    let server = server_with_token();
    let tmp = tempdir();
    let log = tmp.path().join("gst.log");
    let line = launch_line("testsrc", &[("STREAM", "envsecrets")]);
    let status = Command::new("gst-launch-1.0")
        .arg("-e")
        .args(line.split_whitespace())
        .arg(format!("control-plane-uri={}", server.url()))
        .arg("aws-region=us-east-1")
        .env("GST_PLUGIN_PATH", plugin_dir)
        .env("GST_REGISTRY", tmp.path().join("registry.bin"))
        .env("GST_DEBUG", "*:9")
        .env("GST_DEBUG_NO_COLOR", "1")
        .env("GST_DEBUG_FILE", &log)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(server.fragments("envsecrets").len(), 3);
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(text.contains("kvssink"));
    assert_clean("gst-launch's debug log", &text);
}

/// A wrong secret with a session token: AWS's answer (and kvs-local's) repeats the canonical
/// request it expected, whose signed `x-amz-security-token` header holds the token. The
/// error, the warnings, the bus messages and the debug log show `<redacted>` instead.
#[test]
fn a_refused_signature_does_not_repeat_the_session_token() {
    init();
    let server = server_with_token();
    let tmp = tempdir();
    let log = tmp.path().join("gst.log");
    let line = launch_line("testsrc", &[("STREAM", "refusedsecrets")]);
    let output = Command::new("gst-launch-1.0")
        .args(["-m", "-e"])
        .args(line.split_whitespace())
        .arg(format!("control-plane-uri={}", server.url()))
        .arg("aws-region=us-east-1")
        .env("GST_PLUGIN_PATH", common::host::plugin_dir())
        .env("GST_REGISTRY", tmp.path().join("registry.bin"))
        .env("GST_DEBUG", "*:9")
        .env("GST_DEBUG_NO_COLOR", "1")
        .env("GST_DEBUG_FILE", &log)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .env("AWS_SESSION_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let shown = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The service's message came through, the token's place in it redacted.
    assert!(
        shown.contains("InvalidSignatureException")
            && shown.contains("x-amz-security-token:<redacted>"),
        "{shown}"
    );
    assert_clean("gst-launch's output", &shown);
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(text.contains("InvalidSignatureException"));
    assert_clean("gst-launch's debug log", &text);
}

#[test]
fn a_password_in_the_control_plane_uri_is_not_read_back() {
    init();
    for factory in ["kvssink", "kvssrc"] {
        let element = gst::ElementFactory::make(factory).build().unwrap();
        element.set_property(
            "control-plane-uri",
            "http://camera:s3cr3t-in-url@127.0.0.1:4566/",
        );
        let read = element.property::<Option<String>>("control-plane-uri");
        assert_eq!(
            read.as_deref(),
            Some("http://<redacted>@127.0.0.1:4566/"),
            "{factory}"
        );
        element.set_property("control-plane-uri", "http://127.0.0.1:4566");
        let read = element.property::<Option<String>>("control-plane-uri");
        assert_eq!(read.as_deref(), Some("http://127.0.0.1:4566"), "{factory}");
    }
}

/// A control plane that answers with a redirect to another host (a misconfigured gateway, or
/// an attacker's): the session token must not follow it (reqwest drops Authorization on a
/// redirect, not x-amz-security-token), and the error says why kvssink does not follow.
#[test]
fn a_redirect_does_not_carry_the_session_token_elsewhere() {
    init();
    let elsewhere = standins::Standin::http(|_| standins::Reply::ok("{}"));
    let to = format!("{}/capture", elsewhere.url());
    let redirecting =
        standins::Standin::http(move |_| standins::Reply::status(307, "").header("location", &to));
    let registry = tempdir();
    let mut cmd = common::host::host_command("gst-launch-1.0", &redirecting.url(), registry.path());
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_SESSION_TOKEN", TOKEN)
        .args(["-m", "-e"])
        .args(common::host::split_launch(&format!(
            "{} stream-name=redirected connection-timeout=2",
            live_line(2)
        )));
    let run = common::host::run_host(cmd, Duration::from_secs(60));
    assert!(!run.status.success());
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    assert!(
        run.output().contains("kvssink does not follow redirects"),
        "{}",
        run.output()
    );
    assert_clean("the output", &run.output());
}

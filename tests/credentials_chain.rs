//! The standard AWS credential chain and the region rules, end to end against kvs-local, with
//! loopback stand-ins for the instance-metadata, container and STS endpoints.
//!
//! The environment is process-wide: every test here takes the `ENV` lock, starts from an
//! environment without any AWS variable (real credentials of the machine are never seen) and
//! points the instance-metadata client at loopback.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use common::standins::{self, Issued, Reply, Standin};
use common::*;
use gst::prelude::*;
use gstkvs::endpoint::{self, Location};
use kvs_local::KeyPair;

const TIMEOUT: Duration = Duration::from_secs(60);

static ENV: Mutex<()> = Mutex::new(());

/// Every variable that could bring credentials, a region or an endpoint from outside.
const AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ENDPOINT_URL_KINESIS_VIDEO",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "CONTROL_PLANE_URI",
    "KVSSINK_CA_CERT_PATH",
];

/// Holds the environment for one test; its config and credentials files live in `dir`.
struct TestEnv {
    dir: tempfile::TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl TestEnv {
    fn new() -> TestEnv {
        let lock = ENV.lock().unwrap_or_else(|e| e.into_inner());
        init();
        let dir = tempdir();
        for var in AWS_VARS {
            remove(var);
        }
        set("AWS_CONFIG_FILE", dir.path().join("config"));
        set(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("credentials"),
        );
        // Never the real instance-metadata address: a closed loopback port.
        set("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/");
        TestEnv { dir, _lock: lock }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for var in AWS_VARS {
            remove(var);
        }
    }
}

fn set(name: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: the tests of this binary hold the ENV lock while they touch the environment,
    // and no pipeline of another test is running then.
    unsafe { std::env::set_var(name, value) }
}

fn remove(name: &str) {
    // SAFETY: as in `set`.
    unsafe { std::env::remove_var(name) }
}

fn server_with(keys: Vec<KeyPair>, region: Option<&str>) -> Server {
    Server::spawn(Config {
        keys,
        region: region.map(str::to_owned),
        ..Config::default()
    })
    .unwrap()
}

fn run_testsrc(
    server: &Server,
    stream: &str,
    configure: impl FnOnce(&gst::Element),
) -> (Run, gst::Element) {
    let line = launch_line("testsrc", &[("STREAM", stream)]);
    let (pipeline, sink) = pipeline_without_keys(&line, server, stream);
    configure(&sink);
    let run = run(&pipeline, TIMEOUT);
    (run, sink)
}

fn assert_streamed(run: &Run, server: &Server, stream: &str) {
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert_eq!(server.fragments(stream).len(), 3, "all fragments stored");
}

fn far_future() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

#[test]
fn environment_credentials_with_a_session_token() {
    let _env = TestEnv::new();
    let issued = Issued::new("env", far_future());
    let server = server_with(vec![issued.key_pair()], None);
    set("AWS_ACCESS_KEY_ID", &issued.access_key);
    set("AWS_SECRET_ACCESS_KEY", &issued.secret_key);
    set("AWS_SESSION_TOKEN", &issued.token);
    let (run, _) = run_testsrc(&server, "env", |_| {});
    assert_streamed(&run, &server, "env");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == issued.access_key)
    );
}

fn write_profiles(env: &TestEnv, default: &Issued, camera: &Issued) {
    env.write(
        "credentials",
        &format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n\n\
             [camera]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
            default.access_key,
            default.secret_key,
            default.token,
            camera.access_key,
            camera.secret_key,
            camera.token
        ),
    );
    env.write(
        "config",
        "[default]\nregion = eu-central-1\n\n[profile camera]\nregion = ap-south-1\n",
    );
}

#[test]
fn the_profile_property_or_aws_profile_chooses_credentials_and_region() {
    let env = TestEnv::new();
    let default = Issued::new("default", far_future());
    let camera = Issued::new("camera", far_future());
    write_profiles(&env, &default, &camera);
    // The sink gets no aws-region: the profile's region must be the one kvs-local accepts.
    let unset_region = |sink: &gst::Element| sink.set_property("aws-region", None::<String>);

    let server = server_with(
        vec![default.key_pair(), camera.key_pair()],
        Some("ap-south-1"),
    );
    let (run, _) = run_testsrc(&server, "profile-property", |sink| {
        unset_region(sink);
        sink.set_property("profile", "camera");
    });
    assert_streamed(&run, &server, "profile-property");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == camera.access_key)
    );

    set("AWS_PROFILE", "camera");
    let server = server_with(
        vec![default.key_pair(), camera.key_pair()],
        Some("ap-south-1"),
    );
    let (run, _) = run_testsrc(&server, "aws-profile", unset_region);
    assert_streamed(&run, &server, "aws-profile");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == camera.access_key)
    );

    remove("AWS_PROFILE");
    let server = server_with(
        vec![default.key_pair(), camera.key_pair()],
        Some("eu-central-1"),
    );
    let (run, _) = run_testsrc(&server, "default-profile", unset_region);
    assert_streamed(&run, &server, "default-profile");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == default.access_key)
    );
}

#[test]
fn precedence_properties_then_environment_then_profile() {
    let env = TestEnv::new();
    let property = Issued::new("property", far_future());
    let environment = Issued::new("environment", far_future());
    let default = Issued::new("default", far_future());
    let camera = Issued::new("camera", far_future());
    write_profiles(&env, &default, &camera);
    set("AWS_ACCESS_KEY_ID", &environment.access_key);
    set("AWS_SECRET_ACCESS_KEY", &environment.secret_key);
    set("AWS_SESSION_TOKEN", &environment.token);
    let keys = || {
        vec![
            property.key_pair(),
            environment.key_pair(),
            default.key_pair(),
            camera.key_pair(),
        ]
    };

    // The properties win over everything.
    let server = server_with(keys(), None);
    let (run, _) = run_testsrc(&server, "props", |sink| {
        sink.set_property("access-key", &property.access_key);
        sink.set_property("secret-key", &property.secret_key);
        sink.set_property("session-token", &property.token);
    });
    assert_streamed(&run, &server, "props");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == property.access_key)
    );

    // Then the environment, over the default profile.
    let server = server_with(keys(), None);
    let (run, _) = run_testsrc(&server, "environment", |_| {});
    assert_streamed(&run, &server, "environment");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == environment.access_key)
    );

    // A profile named by the property wins over the environment, as `aws --profile` does.
    let server = server_with(keys(), None);
    let (run, _) = run_testsrc(&server, "named-profile", |sink| {
        sink.set_property("profile", "camera");
    });
    assert_streamed(&run, &server, "named-profile");
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == camera.access_key)
    );
}

fn resolve(location: &Location) -> endpoint::Resolved {
    gstkvs::runtime::RUNTIME.block_on(endpoint::resolve(location))
}

#[test]
fn region_property_then_aws_region_then_aws_default_region_then_profile() {
    let env = TestEnv::new();
    env.write(
        "config",
        "[default]\nregion = eu-central-1\n\n[profile gov]\nregion = us-gov-west-1\n\
         use_fips_endpoint = true\n",
    );
    let with_property = Location {
        region: Some("eu-west-1".into()),
        ..Location::default()
    };
    let without = Location::default();

    let r = resolve(&without);
    assert_eq!(
        (r.region.as_str(), r.region_from.as_str()),
        ("eu-central-1", "profile default")
    );
    assert_eq!(
        r.control_plane_url,
        "https://kinesisvideo.eu-central-1.amazonaws.com"
    );

    set("AWS_DEFAULT_REGION", "ca-central-1");
    assert_eq!(resolve(&without).region, "ca-central-1");
    set("AWS_REGION", "sa-east-1");
    assert_eq!(resolve(&without).region, "sa-east-1");
    // The property wins over the environment (the official element does the opposite).
    let r = resolve(&with_property);
    assert_eq!(r.region, "eu-west-1");
    assert_eq!(r.region_from, "the aws-region property");
    // ... and says so, naming the region AWS's element would have used.
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("aws-region=eu-west-1 is used")
                && n.contains("AWS_DEFAULT_REGION=ca-central-1")),
        "{:?}",
        r.notes
    );
    set("AWS_DEFAULT_REGION", "eu-west-1");
    assert!(resolve(&with_property).notes.is_empty());

    remove("AWS_REGION");
    remove("AWS_DEFAULT_REGION");
    // The profile property chooses the profile for the region and the FIPS setting too.
    let r = resolve(&Location {
        profile: Some("gov".into()),
        ..Location::default()
    });
    assert_eq!(r.region, "us-gov-west-1");
    assert_eq!(
        r.control_plane_url,
        "https://kinesisvideo-fips.us-gov-west-1.amazonaws.com"
    );

    // Nothing at all: us-west-2, as the official element.
    std::fs::remove_file(env.dir.path().join("config")).unwrap();
    let r = resolve(&without);
    assert_eq!(r.region, "us-west-2");
    assert_eq!(
        r.control_plane_url,
        "https://kinesisvideo.us-west-2.amazonaws.com"
    );

    // Also end to end: kvs-local accepts only eu-west-1, the environment says otherwise.
    set("AWS_REGION", "us-east-2");
    let server = Server::spawn(Config {
        region: Some("eu-west-1".into()),
        ..Config::default()
    })
    .unwrap();
    let (run, _) = run_testsrc(&server, "region", |sink| {
        sink.set_property("aws-region", "eu-west-1");
        sink.set_property("access-key", DEMO_ACCESS_KEY);
        sink.set_property("secret-key", DEMO_SECRET_KEY);
    });
    assert_streamed(&run, &server, "region");
}

#[test]
fn endpoints_follow_fips_dual_stack_and_endpoint_variables() {
    let _env = TestEnv::new();
    let china = Location {
        region: Some("cn-north-1".into()),
        ..Location::default()
    };
    assert_eq!(
        resolve(&china).control_plane_url,
        "https://kinesisvideo.cn-north-1.amazonaws.com.cn"
    );
    let both = Location {
        region: Some("us-east-1".into()),
        use_fips: true,
        use_dual_stack: true,
        ..Location::default()
    };
    assert_eq!(
        resolve(&both).control_plane_url,
        "https://kinesisvideo-fips.us-east-1.api.aws"
    );
    set("AWS_USE_DUALSTACK_ENDPOINT", "true");
    assert_eq!(
        resolve(&china).control_plane_url,
        "https://kinesisvideo.cn-north-1.api.amazonwebservices.com.cn"
    );
    set("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    assert_eq!(resolve(&china).control_plane_url, "http://127.0.0.1:1");
    set("AWS_ENDPOINT_URL_KINESIS_VIDEO", "http://127.0.0.1:2");
    assert_eq!(resolve(&china).control_plane_url, "http://127.0.0.1:2");
    set("CONTROL_PLANE_URI", "http://127.0.0.1:3");
    assert_eq!(resolve(&china).control_plane_url, "http://127.0.0.1:3");
    let explicit = Location {
        control_plane_uri: Some("http://127.0.0.1:4".into()),
        ..china.clone()
    };
    let r = resolve(&explicit);
    assert_eq!(r.control_plane_url, "http://127.0.0.1:4");
    assert_eq!(r.control_plane_from, "the control-plane-uri property");
}

#[test]
fn no_credentials_anywhere_is_an_error_naming_every_source_tried() {
    let _env = TestEnv::new();
    let server = server();
    let started = Instant::now();
    let (run, _) = run_testsrc(&server, "nothing", |_| {});
    assert!(!run.errors.is_empty(), "no error posted");
    let text = run.error_text();
    eprintln!("error: {text}");
    for part in [
        "no AWS credentials found",
        "access-key/secret-key, credential-path and iot-certificate properties",
        "the environment (AWS_ACCESS_KEY_ID",
        "profile default",
        "web identity",
        "container credentials",
        "EC2 instance metadata",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        server.report().requests.is_empty(),
        "nothing was sent unsigned"
    );
}

#[test]
fn web_identity_token_from_sts() {
    let env = TestEnv::new();
    let issued = Issued::new("webidentity", far_future());
    let answer = issued.clone();
    let sts = Standin::http(move |r| {
        let body = String::from_utf8_lossy(&r.body);
        if r.method == "POST" && body.contains("Action=AssumeRoleWithWebIdentity") {
            Reply::ok(answer.sts_xml()).header("content-type", "text/xml")
        } else {
            Reply::status(400, "")
        }
    });
    let token = env.write("token", "eyJhbGciOiJSUzI1NiJ9.web-identity-token.sig");
    set("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kvs-camera");
    set("AWS_ROLE_SESSION_NAME", "camera");
    set("AWS_ENDPOINT_URL_STS", sts.url());
    let server = server_with(vec![issued.key_pair()], None);
    let (run, _) = run_testsrc(&server, "web-identity", |_| {});
    assert_streamed(&run, &server, "web-identity");
    let requests = sts.requests();
    assert!(!requests.is_empty());
    let body = String::from_utf8_lossy(&requests[0].body).into_owned();
    assert!(
        body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkvs-camera"),
        "{body}"
    );
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == issued.access_key)
    );
}

/// The web identity token is a bearer credential (AssumeRoleWithWebIdentity is not signed):
/// an STS endpoint that does not parse (no scheme) makes aws-smithy print the whole request,
/// body and token included; the error shows neither. So with a password in a container
/// credentials URI that is refused.
#[test]
fn credential_errors_never_show_a_web_identity_token_or_a_password() {
    let env = TestEnv::new();
    let token = env.write("token", "eyJhbGciOiJSUzI1NiJ9.SECRETJWTBODY.sig");
    set("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kvs-camera");
    set("AWS_ENDPOINT_URL_STS", "sts.us-west-2.amazonaws.com");
    let server = server();
    let (run, _) = run_testsrc(&server, "webidentity-badsts", |_| {});
    let text = format!("{} {:?}", run.error_text(), run.messages);
    assert!(text.contains("web identity"), "{text}");
    assert!(!text.contains("SECRETJWTBODY"), "{text}");
    remove("AWS_WEB_IDENTITY_TOKEN_FILE");
    remove("AWS_ROLE_ARN");
    remove("AWS_ENDPOINT_URL_STS");

    set(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://camera:PrOxYpAsS@192.0.2.1/creds",
    );
    let (run, _) = run_testsrc(&server, "container-password", |_| {});
    let text = format!("{} {:?}", run.error_text(), run.messages);
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(!text.contains("PrOxYpAsS"), "{text}");
}

#[test]
fn container_credentials_with_an_authorization_token() {
    let _env = TestEnv::new();
    let issued = Issued::new("container", far_future());
    let answer = issued.clone();
    let endpoint = standins::container(Some("Bearer task-token"), move || answer.clone());
    set(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{}/creds", endpoint.url()),
    );
    set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer task-token");
    let server = server_with(vec![issued.key_pair()], None);
    let (run, _) = run_testsrc(&server, "container", |_| {});
    assert_streamed(&run, &server, "container");
    assert!(!endpoint.requests().is_empty());
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == issued.access_key)
    );
}

#[test]
fn instance_metadata_with_imdsv2() {
    let _env = TestEnv::new();
    let issued = Issued::new("instance", far_future());
    let answer = issued.clone();
    let imds = standins::imds(move || answer.clone());
    set(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("{}/", imds.url()),
    );
    let server = server_with(vec![issued.key_pair()], None);
    let (run, _) = run_testsrc(&server, "instance", |_| {});
    assert_streamed(&run, &server, "instance");
    let requests = imds.requests();
    assert_eq!(
        requests[0].method, "PUT",
        "IMDSv2 starts with a session token"
    );
    assert!(
        put_media_keys(&server)
            .iter()
            .all(|k| *k == issued.access_key)
    );
}

#[test]
fn a_source_that_fails_is_named_in_the_error() {
    let _env = TestEnv::new();
    let endpoint = standins::container(Some("Bearer right"), || unreachable!());
    set(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{}/creds", endpoint.url()),
    );
    set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer wrong");
    let server = server();
    let (run, _) = run_testsrc(&server, "failing-source", |_| {});
    let text = run.error_text();
    eprintln!("error: {text}");
    assert!(
        text.contains("cannot get AWS credentials from container credentials"),
        "{text}"
    );
}

/// Temporary credentials that expire while the stream runs: kvs-local refuses the first key
/// pair after its expiry, the container endpoint hands out a new one when asked again, and
/// not a fragment is lost.
#[test]
fn expiring_container_credentials_are_renewed_during_the_stream_without_loss() {
    let _env = TestEnv::new();
    let first = Issued::new("first", SystemTime::now() + Duration::from_secs(6));
    let second = Issued::new("second", far_future());
    let (a, b) = (first.clone(), second.clone());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let endpoint = standins::container(None, move || {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            a.clone()
        } else {
            b.clone()
        }
    });
    set(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{}/creds", endpoint.url()),
    );
    let server = server_with(vec![first.key_pair(), second.key_pair()], None);
    let (pipeline, sink) = pipeline_without_keys(&live_line(10), &server, "renewed");
    sink.set_property("rotation-period", 2u32);
    let sent = capture(&sink);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_stored_exactly(&server, "renewed", &sent.lock().unwrap());
    let keys = put_media_keys(&server);
    assert_eq!(keys.first(), Some(&first.access_key), "{keys:?}");
    assert_eq!(keys.last(), Some(&second.access_key), "{keys:?}");
    assert!(
        refused_keys(&server).is_empty(),
        "{:?}",
        refused_keys(&server)
    );
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u64>("fragments-replayed").unwrap(),
        0,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("reconnects").unwrap(), 0, "{stats}");
}

#[test]
fn a_profile_named_by_the_property_must_exist() {
    let env = TestEnv::new();
    let default = Issued::new("default", far_future());
    let camera = Issued::new("camera", far_future());
    write_profiles(&env, &default, &camera);
    let server = server_with(vec![default.key_pair()], None);
    let (run, _) = run_testsrc(&server, "no-such-profile", |sink| {
        sink.set_property("profile", "garage");
    });
    let text = run.error_text();
    assert!(
        text.contains("cannot get AWS credentials from profile garage"),
        "{text}"
    );
    assert!(put_media_keys(&server).is_empty());
}

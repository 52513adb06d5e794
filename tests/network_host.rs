//! The network between kvssink (or kvssrc) and the service, as users meet it in
//! `gst-launch-1.0`: endpoint URLs, HTTP proxies (`tests/host/proxy.py`, the one the
//! reviewer used) and TLS. What the element says must name what is in the way.

mod common;

use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(120);

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

/// A loopback port nothing listens on.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

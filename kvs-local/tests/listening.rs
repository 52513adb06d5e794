//! The line the binary prints first names the address it really listens on.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs the binary with `args` and returns its first two stdout lines.
fn first_lines(args: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-local"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    if first.contains("0.0.0.0") {
        out.read_line(&mut second).unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    (first.trim().to_owned(), second.trim().to_owned())
}

#[test]
fn bound_to_every_address_it_says_so() {
    let (first, second) = first_lines(&["--port", "0", "--bind", "0.0.0.0"]);
    let port = first
        .strip_prefix("kvs-local listening on http://0.0.0.0:")
        .unwrap_or_else(|| panic!("the first line does not name 0.0.0.0: {first:?}"));
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{first:?}");
    assert_eq!(
        second,
        format!(
            "kvs-local: on every address of this machine; from this machine: http://127.0.0.1:{port}"
        )
    );
}

#[test]
fn bound_to_loopback_it_names_loopback() {
    let (first, _) = first_lines(&["--port", "0"]);
    assert!(
        first.starts_with("kvs-local listening on http://127.0.0.1:"),
        "{first:?}"
    );
}

/// The first line it prints on stderr with `args`, once it listens.
fn first_warning(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-local"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // Listening: anything said at the start is on stderr by now; stop it to read it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = child.kill();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    let _ = child.wait();
    err.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn reachable_from_other_machines_it_warns_what_anyone_can_do() {
    let warning = first_warning(&["--port", "0", "--bind", "0.0.0.0"]);
    assert!(
        warning.contains("WARNING: reachable from other machines")
            && warning.contains("the demo key pair (public) is accepted"),
        "{warning:?}"
    );
    let warning = first_warning(&[
        "--port",
        "0",
        "--bind",
        "0.0.0.0",
        "--key",
        "AKIDOWN:own-secret",
    ]);
    assert!(warning.contains("takes no credentials"), "{warning:?}");
    assert!(!warning.contains("demo key"), "{warning:?}");
    assert!(!first_warning(&["--port", "0"]).contains("WARNING"));
}

//! `spool-dir` in an application that forks: a child that does not exec (a watchdog, a
//! pre-fork worker) must not keep the spool of a stopped kvssink locked. Run in Debian's
//! `python3` with PyGObject and `os.fork()`, as an application does it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The application: run 1 streams while the service acknowledges nothing, forks a child that
/// sleeps (and never execs), then stops its pipeline with fragments unacknowledged (they stay
/// in the spool). With acks back, run 2 starts in the same process with the same spool-dir and
/// stream-name while the child still lives, and streams to EOS. Every line it prints for run 2
/// comes after `== run 2`.
const APPLICATION: &str = r#"
import os, sys, time, urllib.request
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst

def report(msg):
    t = msg.type
    if t == Gst.MessageType.ELEMENT:
        s = msg.get_structure()
        if s is not None and s.get_name().startswith("kvs-"):
            print(f"(element): {s.to_string()}", flush=True)
    elif t in (Gst.MessageType.WARNING, Gst.MessageType.ERROR, Gst.MessageType.INFO):
        kind, parse = {Gst.MessageType.WARNING: ("WARNING", msg.parse_warning),
                       Gst.MessageType.ERROR: ("ERROR", msg.parse_error),
                       Gst.MessageType.INFO: ("INFO", msg.parse_info)}[t]
        err, debug = parse()
        print(f"{kind}: {err.message} ({debug})", flush=True)

def play(line, seconds=None, before_stop=None):
    pipeline = Gst.parse_launch(line)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    deadline = time.monotonic() + (seconds if seconds is not None else 60)
    while time.monotonic() < deadline:
        msg = bus.timed_pop(100 * Gst.MSECOND)
        if msg is None:
            continue
        report(msg)
        if msg.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
            break
    if before_stop:
        before_stop()
    pipeline.set_state(Gst.State.READY)
    while (msg := bus.pop()) is not None:
        report(msg)
    pipeline.set_state(Gst.State.NULL)

Gst.init(None)
spool, stream = sys.argv[1], sys.argv[2]
line = ("videotestsrc is-live=true {buffers} "
        "! video/x-raw,format=I420,width=320,height=240,framerate=30/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 "
        "! h264parse ! matroskamux streamable=true "
        f"! kvssink stream-name={stream} spool-dir={spool} "
        "stop-stream-timeout={timeout}")
child = None

def fork_watchdog():
    global child
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    time.sleep(0.3)

print("== run 1", flush=True)
play(line.format(buffers="", timeout=1), seconds=4, before_stop=fork_watchdog)
faults = os.environ["CONTROL_PLANE_URI"] + "/__kvs-local/faults"
urllib.request.urlopen(urllib.request.Request(faults, method="DELETE")).read()
print("== run 2", flush=True)
play(line.format(buffers="num-buffers=90", timeout=30))
print(f"child-alive={os.waitpid(child, os.WNOHANG) == (0, 0)}", flush=True)
os.kill(child, 9)
os.waitpid(child, 0)
"#;

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Before, the child shared the lock (a `flock` belongs to the open file, which a fork
/// shares): run 2 was told "the spool of stream X is in use by another kvssink (another
/// element of this process ...)", did not send what run 1 left on disk and streamed with no
/// spool, until the child ended.
#[test]
fn a_forked_child_does_not_keep_the_spool_locked() {
    init();
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let script = dir.path().join("application.py");
    std::fs::write(&script, APPLICATION).unwrap();
    let server = server();
    server.inject(kvs_local::Fault::StopAcks {
        stream: Some("forked".into()),
    });
    let registry = tempdir();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(&script).arg(&spool).arg("forked");
    let run = run_host(cmd, TIMEOUT);
    run.assert_success();
    let output = run.output();
    let (run1, run2) = run
        .stdout
        .split_once("== run 2")
        .unwrap_or_else(|| panic!("run 2 did not start:\n{output}"));
    let summary = |text: &str| -> gst::Structure {
        let s = parse_messages(text)
            .into_iter()
            .filter(|s| s.name() == "kvs-summary")
            .collect::<Vec<_>>();
        assert_eq!(s.len(), 1, "one kvs-summary per run:\n{output}");
        s[0].clone()
    };
    // The premise: run 1 left fragments in the spool, and the child lived through run 2.
    let spooled = summary(run1).get::<u64>("fragments-spooled").unwrap();
    assert!(spooled >= 1, "run 1 spooled nothing:\n{output}");
    assert!(run2.contains("child-alive=True"), "{output}");

    assert!(
        !run2.contains("in use by another kvssink"),
        "run 2 was refused the spool while the forked child lived:\n{output}"
    );
    // Run 1's fragments were sent first, from the spool, and persisted: those dated before
    // run 2's first fragment.
    let messages = parse_messages(run2);
    let run2_first = messages
        .iter()
        .find(|s| s.name() == "kvs-stream-start")
        .and_then(|s| s.get::<u64>("first-fragment-time").ok())
        .unwrap_or_else(|| panic!("run 2 did not start its stream:\n{output}"));
    let persisted_from_run1 = messages
        .iter()
        .filter(|s| {
            s.name() == "kvs-ack"
                && s.get::<&str>("event-type") == Ok("PERSISTED")
                && s.get::<u64>("producer-timestamp").unwrap() < run2_first
        })
        .count() as u64;
    assert_eq!(
        persisted_from_run1, spooled,
        "run 2 did not send run 1's {spooled} spooled fragments:\n{output}"
    );
    assert_eq!(
        summary(run2).get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{output}"
    );
    // Everything was acknowledged: nothing is left on disk, the lock included.
    assert_eq!(
        files_under(&spool),
        Vec::<std::path::PathBuf>::new(),
        "{output}"
    );
}

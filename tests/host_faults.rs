//! Faults seen from the host users run: `gst-launch-1.0` (a C program, SIGPIPE at its default
//! action) and Debian's python3 with the default SIGPIPE handler restored. The server closes,
//! resets, fails and throttles PutMedia while kvssink writes the body; the host must survive
//! (exit 0, no signal) and every fragment must be persisted.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::host::*;
use common::*;
use kvs_local::Fault;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Ten clusters of recorded H.264 (one key frame a second at 30 fps).
fn ten_clusters(dir: &Path) -> PathBuf {
    record(dir, "ten-clusters.mkv", 300, 30, "")
}

fn file_line(file: &Path, stream: &str) -> String {
    format!(
        "filesrc location={} ! kvssink stream-name={stream} stop-stream-timeout=60",
        file.display()
    )
}

/// Runs `filesrc ! kvssink` in gst-launch-1.0 with `fault` injected, and checks the host
/// survived and nothing was lost.
fn file_upload_survives(stream: &str, fault: Fault) -> HostRun {
    let dir = tempdir();
    let file = ten_clusters(dir.path());
    let server = server();
    server.inject(fault);
    // Error answers close the connection while kvssink still writes the body.
    server.inject(Fault::AbruptErrors { stream: None });
    let run = gst_launch(&server, &file_line(&file, stream), TIMEOUT);
    run.assert_success();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{:?}",
        run.summary()
    );
    assert_nothing_lost(&server, stream, &std::fs::read(&file).unwrap());
    run
}

/// PutMedia sessions that started streaming.
fn sessions(run: &HostRun) -> usize {
    connection_states(&run.messages, "streaming")
}

fn reconnects(run: &HostRun) -> usize {
    connection_states(&run.messages, "reconnecting")
}

#[test]
fn host_processes_start_with_sigpipe_at_its_default_action() {
    // Otherwise every test below would pass for the wrong reason.
    let (ignored, blocked) = child_signal_masks();
    let pipe = signal_bit(libc::SIGPIPE);
    assert_eq!(ignored & pipe, 0, "SIGPIPE ignored in children");
    assert_eq!(blocked & pipe, 0, "SIGPIPE blocked in children");
}

#[test]
fn put_media_answered_500_and_closed_does_not_kill_gst_launch() {
    init();
    let run = file_upload_survives(
        "fail500",
        Fault::FailRequests {
            stream: None,
            operation: "PutMedia".into(),
            count: 3,
            status: 500,
            error_type: None,
        },
    );
    assert!(reconnects(&run) >= 3, "the fault did not bite");
}

#[test]
fn throttled_put_media_does_not_kill_gst_launch() {
    init();
    let run = file_upload_survives(
        "throttled",
        Fault::Throttle {
            stream: None,
            operation: "PutMedia".into(),
            count: 3,
        },
    );
    assert!(reconnects(&run) >= 3, "the fault did not bite");
}

#[test]
fn connection_reset_mid_fragment_does_not_kill_gst_launch() {
    init();
    let run = file_upload_survives(
        "reset",
        Fault::CloseAfterBytes {
            stream: None,
            bytes: 150_000,
            sessions: 3,
        },
    );
    // Each cut session ends either in a write error (a reconnect) or, when the service had
    // acknowledged something first, as a closed session followed by a new one at once.
    assert!(
        reconnects(&run) + sessions(&run) >= 4,
        "the fault did not bite: {} reconnects, {} sessions",
        reconnects(&run),
        sessions(&run)
    );
}

#[test]
fn an_error_ack_that_ends_the_session_does_not_kill_gst_launch() {
    init();
    let run = live_upload_survives(
        "errorack",
        Fault::ErrorAck {
            stream: None,
            fragment: Some(2),
            timecode: None,
            error_id: 5000,
        },
    );
    assert!(reconnects(&run) >= 1, "the fault did not bite");
}

#[test]
fn an_endpoint_down_at_start_then_back_does_not_kill_gst_launch() {
    init();
    let dir = tempdir();
    let file = ten_clusters(dir.path());
    // Nothing listens on the port for the first 3 s: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        Server::spawn(Config {
            port,
            ..Config::default()
        })
        .expect("start kvs-local on the same port")
    });
    let registry = tempdir();
    let mut cmd = host_command(
        "gst-launch-1.0",
        &format!("http://127.0.0.1:{port}"),
        registry.path(),
    );
    cmd.args(["-m", "-e"])
        .args(split_launch(&file_line(&file, "down")));
    let run = run_host(cmd, TIMEOUT);
    let server = later.join().unwrap();
    run.assert_success();
    assert!(
        reconnects(&run) >= 1,
        "the outage did not bite: {}",
        run.stdout
    );
    assert_nothing_lost(&server, "down", &std::fs::read(&file).unwrap());
}

/// Streams 5 s of live video in gst-launch-1.0 through a `tee` into kvssink and into a file,
/// with `fault` injected. The user's other branch must not be cut short either: the file gets
/// everything, and kvs-local stores exactly the clusters the file has.
fn live_upload_survives(stream: &str, fault: Fault) -> HostRun {
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let server = server();
    server.inject(fault);
    let line = format!(
        "videotestsrc is-live=true num-buffers=150 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true ! tee name=t \
         ! queue ! kvssink stream-name={stream} stop-stream-timeout=60 \
         t. ! queue ! filesink location={}",
        copy.display()
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    run.assert_success();
    let written = std::fs::read(&copy).unwrap();
    assert_eq!(
        split_bytes(written.clone()).1.len(),
        5,
        "the file was cut short"
    );
    assert_nothing_lost(&server, stream, &written);
    run
}

#[test]
fn a_live_stream_with_a_tee_to_a_file_survives_resets_whole() {
    init();
    let run = live_upload_survives(
        "tee",
        Fault::CloseAfterBytes {
            stream: None,
            bytes: 100_000,
            sessions: 2,
        },
    );
    // Each cut session ends in a reconnect, or streamed before the cut and is followed by
    // another: with the last one, three at least.
    assert!(
        sessions(&run) + reconnects(&run) >= 3,
        "the fault did not bite: {} sessions, {} reconnects",
        sessions(&run),
        reconnects(&run)
    );
}

#[test]
fn a_python_app_with_the_default_sigpipe_handler_survives_a_500() {
    init();
    let dir = tempdir();
    let file = ten_clusters(dir.path());
    let server = server();
    server.inject(Fault::FailRequests {
        stream: None,
        operation: "PutMedia".into(),
        count: 3,
        status: 500,
        error_type: None,
    });
    server.inject(Fault::AbruptErrors { stream: None });
    let run = python_launch(
        &server,
        &["--default-sigpipe"],
        &file_line(&file, "python"),
        TIMEOUT,
    );
    run.assert_success();
    assert!(reconnects(&run) >= 3, "the fault did not bite");
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted"
    );
    assert_nothing_lost(&server, "python", &std::fs::read(&file).unwrap());
}

/// A service that takes every connection and drops it before a fragment is through (no
/// progress) is one incident, however many connections it accepts: its first reconnects are
/// warned about, then one a minute (the rest in kvs-connection messages). Before, each
/// accepted connection began a new "outage" and every attempt was a warning.
#[test]
fn connections_accepted_and_dropped_without_progress_are_warned_about_a_few_times() {
    init();
    let server = server();
    let line = "videotestsrc is-live=true num-buffers=900 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true \
         ! kvssink stream-name=no-progress stop-stream-timeout=60";
    let run = std::thread::scope(|s| {
        let run = s.spawn(|| gst_launch(&server, line, TIMEOUT));
        let deadline = std::time::Instant::now() + TIMEOUT;
        while server.fragments("no-progress").len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no fragment stored");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The next ten sessions are closed before a fragment is through; the running one
        // is ended by a moment of not listening.
        server.inject(Fault::CloseAfterBytes {
            stream: None,
            bytes: 2000,
            sessions: 10,
        });
        server.pause_listening();
        std::thread::sleep(Duration::from_millis(100));
        server.resume_listening();
        run.join().unwrap()
    });
    run.assert_success();
    let attempts = reconnects(&run);
    let reconnect_warnings = run
        .output()
        .lines()
        .filter(|l| l.starts_with("WARNING: from element") && l.contains("reconnecting in"))
        .inspect(|l| assert!(l.contains(": stream no-progress: "), "{l}"))
        .count();
    assert!(attempts >= 5, "the premise: {attempts} reconnects");
    assert!(
        reconnect_warnings <= 4,
        "{reconnect_warnings} reconnect warnings for {attempts} attempts:\n{}",
        run.output()
    );
}

/// A service that takes the data but stops acknowledging for 12 s: kvssink reconnects (stale
/// connections), and its small store drops new fragments. The drops are warned about a few
/// times, not anew at each connection the service accepts (before: a warning at every
/// reconnect); once fragments are persisted again, one line says so.
#[test]
fn a_service_that_stops_acknowledging_is_told_a_few_times_and_its_return_once() {
    init();
    let server = server();
    let line = "videotestsrc is-live=true num-buffers=720 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! matroskamux streamable=true ! kvssink stream-name=no-acks buffer-duration=2 \
         connection-staleness=2 stop-stream-timeout=30";
    let run = std::thread::scope(|s| {
        let run = s.spawn(|| gst_launch(&server, line, TIMEOUT));
        let deadline = std::time::Instant::now() + TIMEOUT;
        while server.fragments("no-acks").len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no fragment stored");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.inject(Fault::StopAcks { stream: None });
        std::thread::sleep(Duration::from_secs(12));
        server.clear_faults();
        run.join().unwrap()
    });
    let output = run.output();
    let warnings = |what: &str| {
        output
            .lines()
            .filter(|l| l.starts_with("WARNING: from element") && l.contains(what))
            .count()
    };
    let drop_warnings = warnings("dropped unsent");
    assert!(reconnects(&run) >= 3, "the premise: {output}");
    assert!(
        (1..=4).contains(&drop_warnings),
        "{drop_warnings} drop warnings:\n{output}"
    );
    assert_eq!(
        output
            .matches("stream no-acks: the service persists fragments again")
            .count(),
        1,
        "{output}"
    );
}

/// A service slower to acknowledge than `connection-staleness` (acks 3 s late, staleness 1 s):
/// each stale connection makes the next one wait twice as long, so the acks are received and
/// everything is persisted. Before, kvssink reconnected every second for ever, resending its
/// whole backlog each time, and never saw an ack.
#[test]
fn acks_slower_than_connection_staleness_are_waited_for() {
    init();
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 3000,
    });
    let line = "videotestsrc is-live=true num-buffers=240 \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true \
         ! kvssink stream-name=slow-acks connection-staleness=1 stop-stream-timeout=60";
    let run = gst_launch(&server, line, TIMEOUT);
    run.assert_all_persisted();
    let attempts = reconnects(&run);
    assert!(attempts <= 4, "{attempts} reconnects");
    assert!(
        run.output().contains("the next connection waits"),
        "{}",
        run.output()
    );
}

/// Ctrl-C without `-e` while the endpoint is down: gst-launch-1.0 stops the pipeline, kvssink
/// waits up to `stop-stream-timeout` for the last acks, then says what was lost in an error,
/// which gst-launch-1.0 prints while stopping, and it exits with status 1. Before, the loss
/// was a warning that gst-launch-1.0 no longer prints then: exit status 0, nothing said.
#[test]
fn ctrl_c_without_eos_while_the_endpoint_is_down_says_what_was_lost() {
    init();
    let server = server();
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.arg("-m").args(split_launch(
        "videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h264parse \
         ! matroskamux streamable=true ! kvssink stream-name=ctrl-c stop-stream-timeout=2",
    ));
    let run = run_host_then(cmd, TIMEOUT, |pid| {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while server.fragments("ctrl-c").len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no fragment stored");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.pause_listening();
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: signals the host process this test started, still running.
        unsafe { libc::kill(pid, libc::SIGINT) };
    });
    server.resume_listening();
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("ERROR: from element")
                && l.contains("stream ctrl-c: ")
                && l.contains("fragments were not persisted")
                && l.ends_with("(stopped without EOS)")),
        "{}",
        run.output()
    );
}

/// A camera (a live source that drops frames when it is held, as v4l2src does: here a leaky
/// queue) with a local branch on a tee, and an uplink slower than the stream (acks 2.5 s late,
/// 1 s of store). kvssink held the pipeline: the camera lost seconds of frames inside the
/// fragments it sent, uncounted ("all-persisted"), and the tee's other branch stopped with
/// it. Now new fragments are dropped whole, told and counted, and what is sent has no hole.
#[test]
fn a_camera_on_a_slow_uplink_loses_whole_fragments_told_never_frames_untold() {
    init();
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 2500,
    });
    let run = gst_launch(
        &server,
        "videotestsrc is-live=true num-buffers=240 ! video/x-raw,format=I420,width=320,\
         height=240,framerate=30/1 ! tee name=t ! queue ! fakesink t. ! queue leaky=downstream \
         max-size-buffers=3 max-size-time=0 max-size-bytes=0 ! x264enc tune=zerolatency \
         key-int-max=30 speed-preset=ultrafast ! h264parse ! matroskamux ! kvssink \
         stream-name=camera buffer-duration=1 fragment-duration=1000",
        TIMEOUT,
    );
    let output = run.output();
    let summary = run.summary();
    assert_eq!(
        summary.get::<&str>("outcome").unwrap(),
        "incomplete",
        "{output}"
    );
    let dropped = summary.get::<u64>("fragments-dropped").unwrap();
    assert!(dropped > 0, "{output}");
    assert!(
        run.messages
            .iter()
            .filter(|m| m.name() == "kvs-fragments-dropped")
            .all(|m| m.get::<&str>("from") == Ok("input")),
        "{output}"
    );
    let stored = server.fragments("camera");
    assert_eq!(
        stored.len() as u64 + dropped,
        summary.get::<u64>("fragments-produced").unwrap(),
        "{output}"
    );
    for f in &stored {
        let times: Vec<i64> = block_times(&f.bytes).into_iter().map(|(_, t)| t).collect();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] <= 100),
            "a hole in the fragment at {}: {times:?}",
            f.timecode
        );
    }
}

//! kvssink loses nothing: reconnects with replay against kvs-local's fault injection. Each test
//! streams live video and asserts that the fragments kvs-local persisted are exactly the
//! clusters matroskamux produced, byte for byte and in order, with duplicates only of fragments
//! that were in flight at the fault.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;
use kvs_local::Fault;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A live pipeline of `seconds` of video with a key frame every second.
fn live(server: &Server, stream: &str, seconds: u32) -> (gst::Pipeline, gst::Element) {
    let line = format!(
        "videotestsrc is-live=true num-buffers={} ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true ! kvssink name=sink",
        seconds * 30
    );
    let (pipeline, sink) = pipeline(&line, server, stream);
    sink.set_property("stop-stream-timeout", 30u32);
    (pipeline, sink)
}

/// Plays until `n` fragments are persisted, then calls `fault`, then runs to EOS.
fn stream_with_fault(
    server: &Server,
    stream: &str,
    seconds: u32,
    configure: impl FnOnce(&gst::Element),
    after: usize,
    fault: impl FnOnce(),
) -> (Run, Vec<u8>, gst::Structure) {
    let (pipeline, sink) = live(server, stream, seconds);
    configure(&sink);
    let sent = capture(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = collect(&pipeline, TIMEOUT, |r| r.acks("PERSISTED").len() >= after);
    assert!(first.errors.is_empty(), "{}", first.error_text());
    fault();
    let mut run = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    run.messages.splice(0..0, first.messages);
    run.warnings.splice(0..0, first.warnings);
    let stats = sink.property::<gst::Structure>("stats");
    let sent = sent.lock().unwrap().clone();
    (run, sent, stats)
}

fn reconnects(run: &Run) -> usize {
    connection_states(&run.messages, "reconnecting")
}

#[test]
fn connection_closed_mid_fragment() {
    init();
    let server = server();
    // The first session breaks in the middle of the second fragment.
    server.inject(Fault::CloseAfterBytes {
        stream: None,
        bytes: 300_000,
        sessions: 1,
    });
    let (run, sent, stats) = stream_with_fault(&server, "close", 5, |_| {}, 1, || {});
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    // The close either fails the connection (a reconnect with backoff) or ends it after
    // acks (a new session at once): either way a second connection replays what was lost.
    assert!(
        stats.get::<u64>("connections").unwrap() >= 2,
        "the fault did not bite"
    );
    assert!(stats.get::<u64>("fragments-resent").unwrap() >= 1);
    assert_nothing_lost(&server, "close", &sent);
}

/// Drops every live connection, so the next request meets the faults just injected.
fn drop_connections(server: &Server) {
    server.pause_listening();
    server.resume_listening();
}

#[test]
fn service_errors_and_throttling_are_retried() {
    init();
    let server = server();
    let (run, sent, _) = stream_with_fault(
        &server,
        "throttle",
        5,
        |_| {},
        1,
        || {
            server.inject(Fault::Throttle {
                stream: None,
                operation: "PutMedia".into(),
                count: 2,
            });
            server.inject(Fault::FailRequests {
                stream: None,
                operation: "PutMedia".into(),
                count: 2,
                status: 500,
                error_type: None,
            });
            drop_connections(&server);
        },
    );
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    let text = run.warnings.join("\n");
    assert!(text.contains("ClientLimitExceededException"), "{text}");
    assert!(text.contains("500"), "{text}");
    assert_nothing_lost(&server, "throttle", &sent);
}

#[test]
fn every_retriable_error_ack_is_retried() {
    for id in [4000u32, 4003, 5000, 5001] {
        init();
        let server = server();
        let stream = format!("ack{id}");
        let (run, sent, stats) = stream_with_fault(
            &server,
            &stream,
            4,
            |_| {},
            1,
            || {
                server.inject(Fault::ErrorAck {
                    stream: None,
                    fragment: Some(1),
                    timecode: None,
                    error_id: id,
                });
            },
        );
        assert!(run.errors.is_empty(), "{id}: {}", run.error_text());
        let errors = run.acks("ERROR");
        assert_eq!(errors.len(), 1, "{id}");
        assert_eq!(errors[0].get::<i32>("error-id").unwrap(), id as i32);
        assert!(stats.get::<u64>("fragments-replayed").unwrap() >= 1, "{id}");
        assert_nothing_lost(&server, &stream, &sent);
    }
}

#[test]
fn stalled_acks_make_the_connection_stale() {
    init();
    let server = server();
    let (pipeline, sink) = live(&server, "stale", 6);
    sink.set_property("connection-staleness", 1u32);
    let sent = capture(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = collect(&pipeline, TIMEOUT, |r| !r.acks("PERSISTED").is_empty());
    server.inject(Fault::StopAcks { stream: None });
    let stalled = collect(&pipeline, TIMEOUT, |r| reconnects(r) >= 1);
    assert!(
        stalled.warnings.join("\n").contains("no acknowledgement"),
        "{:?}",
        stalled.warnings
    );
    server.clear_faults();
    let rest = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        first.errors.is_empty() && stalled.errors.is_empty() && rest.errors.is_empty(),
        "{}",
        rest.error_text()
    );
    assert!(rest.eos);
    assert_nothing_lost(&server, "stale", &sent.lock().unwrap());
}

#[test]
fn the_service_ending_long_connections_is_survived() {
    init();
    let server = server();
    let (run, sent, stats) = stream_with_fault(
        &server,
        "maxdur",
        6,
        |_| {},
        1,
        || {
            server.inject(Fault::MaxConnectionDuration {
                stream: None,
                after_ms: 1500,
            });
        },
    );
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert!(stats.get::<u64>("connections").unwrap() >= 3, "{stats}");
    assert!(
        run.acks("ERROR")
            .iter()
            .all(|a| a.get::<i32>("error-id").unwrap() == 4003)
    );
    assert_nothing_lost(&server, "maxdur", &sent);
}

#[test]
fn credentials_rejected_once_are_retried() {
    init();
    let server = server();
    let (run, sent, _) = stream_with_fault(
        &server,
        "creds",
        5,
        |_| {},
        1,
        || {
            server.inject(Fault::RejectCredentials {
                stream: None,
                count: 1,
                error_type: None,
            });
            drop_connections(&server);
        },
    );
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert!(
        run.warnings
            .join("\n")
            .contains("UnrecognizedClientException"),
        "{:?}",
        run.warnings
    );
    assert_nothing_lost(&server, "creds", &sent);
}

#[test]
fn endpoint_down_for_ten_seconds_then_back() {
    init();
    let server = server();
    let (run, sent, _) = stream_with_fault(
        &server,
        "outage",
        16,
        |_| {},
        1,
        || {
            server.pause_listening();
            std::thread::sleep(Duration::from_secs(10));
            server.resume_listening();
        },
    );
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    // Not a busy loop: after the first quick retries, one attempt a second (10 s down: about
    // 3 + 9), which is also what brings the stream back within a second of the endpoint.
    let attempts = reconnects(&run);
    assert!((8..=14).contains(&attempts), "{attempts} attempts");
    // Each attempt is a kvs-connection message; only the first three are warnings too (then
    // one a minute), so that a camera offline for hours does not fill its log.
    let warned = run
        .warnings
        .iter()
        .filter(|w| w.contains("reconnecting"))
        .count();
    assert_eq!(warned, 3, "{:?}", run.warnings);
    assert_nothing_lost(&server, "outage", &sent);
}

#[test]
fn an_outage_longer_than_the_store_drops_only_whole_oldest_fragments() {
    init();
    let server = server();
    let (pipeline, sink) = live(&server, "overflow", 8);
    // Room for about two seconds of this video.
    sink.set_property("buffer-duration", 2u32);
    let sent = capture(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = collect(&pipeline, TIMEOUT, |r| !r.acks("PERSISTED").is_empty());
    server.pause_listening();
    let outage = collect(&pipeline, TIMEOUT, |r| {
        r.named("kvs-fragments-dropped").len() >= 2
    });
    server.resume_listening();
    let rest = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        first.errors.is_empty() && outage.errors.is_empty(),
        "{}",
        outage.error_text()
    );
    assert!(
        outage.warnings.join("\n").contains("dropped"),
        "{:?}",
        outage.warnings
    );
    // Lost data is never a success: the end of the stream is an error naming the loss.
    assert!(
        rest.error_text().contains("were not persisted")
            && rest
                .error_text()
                .contains("dropped from the full fragment store"),
        "{}",
        rest.error_text()
    );
    let summary = rest.named("kvs-summary");
    assert_eq!(summary[0].get::<&str>("outcome").unwrap(), "incomplete");

    let (_, produced) = split_bytes(sent.lock().unwrap().clone());
    let stored: Vec<_> = server
        .fragments("overflow")
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    let stats = sink.property::<gst::Structure>("stats");
    let dropped = stats.get::<u64>("fragments-dropped").unwrap() as usize;
    assert!(dropped >= 2);
    // Every stored fragment is a whole produced cluster, in order; what is missing is exactly
    // what was dropped.
    let mut unique: Vec<bytes::Bytes> = Vec::new();
    for f in stored {
        if !unique.contains(&f) {
            unique.push(f);
        }
    }
    let mut cursor = 0;
    for f in &unique {
        let at = produced[cursor..]
            .iter()
            .position(|p| p == f)
            .expect("a stored fragment is a whole produced cluster, in order");
        cursor += at + 1;
    }
    assert_eq!(unique.len() + dropped, produced.len());
    assert_eq!(
        summary[0].get::<u64>("fragments-lost").unwrap() as usize,
        dropped
    );
}

#[test]
fn sessions_are_renewed_at_fragment_boundaries_without_loss() {
    init();
    let server = server();
    let (run, sent, stats) = stream_with_fault(
        &server,
        "rotate",
        6,
        |sink| sink.set_property("rotation-period", 2u32),
        1,
        || {},
    );
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    assert!(stats.get::<u64>("connections").unwrap() >= 2, "{stats}");
    assert_eq!(
        stats.get::<u64>("fragments-replayed").unwrap(),
        0,
        "{stats}"
    );
    // A renewal is not a failure: no reconnect, no warning, no duplicate.
    assert_eq!(reconnects(&run), 0);
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_eq!(assert_nothing_lost(&server, "rotate", &sent), 0);
}

#[test]
fn an_idle_stream_ends_its_open_fragment_so_it_is_persisted() {
    init();
    let server = server();
    // A motion-triggered camera: the valve stops the frames for 3 s.
    let line = "videotestsrc is-live=true num-buffers=150 ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
                ! valve name=valve ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=60 ! h264parse \
                ! matroskamux streamable=true ! kvssink name=sink";
    let (pipeline, sink) = pipeline(line, &server, "idle");
    sink.set_property("fragment-duration", 1000u32);
    let valve = pipeline.by_name("valve").unwrap();
    let sent = capture(&sink);
    pipeline.set_state(gst::State::Playing).unwrap();
    let before = collect(&pipeline, TIMEOUT, |r| !r.acks("BUFFERING").is_empty());
    valve.set_property("drop", true);
    // The open fragment is ended by the tag and persisted while no frame comes.
    let idle = collect(&pipeline, TIMEOUT, |r| {
        !r.named("kvs-idle").is_empty() && !r.acks("PERSISTED").is_empty()
    });
    let idle_tc = idle.named("kvs-idle")[0]
        .get::<u64>("fragment-timecode")
        .unwrap();
    assert!(
        idle.acks("PERSISTED")
            .iter()
            .any(|a| a.get::<u64>("fragment-timecode").unwrap() == idle_tc)
    );
    valve.set_property("drop", false);
    let rest = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    for run in [&before, &idle, &rest] {
        assert!(run.errors.is_empty(), "{}", run.error_text());
        assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    }
    assert!(rest.eos);
    assert_nothing_lost(&server, "idle", &sent.lock().unwrap());
}

#[test]
fn a_stream_deleted_while_streaming_is_a_fatal_error() {
    init();
    let server = server();
    let (pipeline, _sink) = live(&server, "deleted", 10);
    pipeline.set_state(gst::State::Playing).unwrap();
    let first = collect(&pipeline, TIMEOUT, |r| !r.acks("PERSISTED").is_empty());
    assert!(first.errors.is_empty(), "{}", first.error_text());
    server.delete_stream("deleted").unwrap();
    let run = collect(&pipeline, TIMEOUT, |_| false);
    pipeline.set_state(gst::State::Null).unwrap();
    let text = run.error_text();
    assert!(!run.eos, "the stream cannot end normally");
    assert!(text.contains("deleted"), "{text}");
    assert!(
        text.contains("STREAM_NOT_ACTIVE") || text.contains("ResourceNotFoundException"),
        "{text}"
    );
}

#[test]
fn a_fast_producer_is_slowed_down_rather_than_losing_fragments() {
    init();
    let dir = tempdir();
    // About 4 MB of video pushed as fast as filesrc can, into a 1 MB store: kvssink must wait
    // for the service (also before the first connection is up) instead of dropping fragments.
    let line = format!(
        "videotestsrc num-buffers=240 pattern=snow ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
         ! x264enc speed-preset=ultrafast key-int-max=30 bitrate=4000 ! h264parse \
         ! matroskamux streamable=true ! filesink location={}",
        dir.path().join("fast.mkv").display()
    );
    let rec = gst::parse::launch(&line)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    assert!(run(&rec, TIMEOUT).eos);
    let file = dir.path().join("fast.mkv");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size > 2 * 1024 * 1024,
        "{size} bytes is too little to overflow the store"
    );

    let server = server();
    let line = launch_line(
        "file",
        &[("STREAM", "fast"), ("FILE", file.to_str().unwrap())],
    );
    let (pipeline, sink) = pipeline(&line, &server, "fast");
    sink.set_property("storage-size", 1u32);
    // Recorded an hour ago as far as the upload knows: nothing is held for real time, only
    // for the service.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    sink.set_property("file-start-time", an_hour_ago);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.errors.is_empty(), "{}", run.error_text());
    assert!(run.eos);
    // Held back, but a file upload is not "falling behind real time".
    let stats = sink.property::<gst::Structure>("stats");
    assert!(stats.get::<u64>("backpressure-time").unwrap() > 0);
    assert!(
        !run.warnings.join("\n").contains("uplink is slower"),
        "{:?}",
        run.warnings
    );
    assert!(
        run.named("kvs-fragments-dropped").is_empty(),
        "{:?}",
        run.warnings
    );
    assert_eq!(
        run.named("kvs-summary")[0].get::<&str>("outcome").unwrap(),
        "all-persisted"
    );
    assert_nothing_lost(&server, "fast", &std::fs::read(&file).unwrap());
}

#[test]
fn a_slow_service_drops_a_live_stream_s_new_fragments_and_never_holds_it() {
    // Acks come 2.5 s late and the store keeps 1 s: the uplink cannot keep up with the live
    // stream. A live source cannot wait (held, a camera loses frames where nothing counts
    // them, and every branch of a tee stops with it), so new fragments are dropped whole,
    // unsent, counted and told; what is sent is whole, and nothing is taken for idle.
    init();
    let server = server();
    server.inject(Fault::DelayAcks {
        stream: None,
        delay_ms: 2500,
    });
    let (pipeline, sink) = live(&server, "slow", 6);
    sink.set_property("buffer-duration", 1u32);
    sink.set_property("fragment-duration", 1000u32);
    // AWS's max-latency: told once that the stream falls behind.
    sink.set_property("max-latency", 1u32);
    let run = run(&pipeline, TIMEOUT);
    assert!(run.eos || !run.errors.is_empty(), "{run:?}");
    let behind: Vec<_> = run
        .warnings
        .iter()
        .filter(|w| w.contains("falling behind") && w.contains("more than max-latency (1 s)"))
        .collect();
    assert_eq!(behind.len(), 1, "{:?}", run.warnings);
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("backpressure-time").unwrap(), 0);
    let dropped: u64 = run
        .named("kvs-fragments-dropped")
        .iter()
        .map(|s| {
            assert_eq!(s.get::<&str>("from").unwrap(), "input");
            s.get::<u64>("fragments").unwrap()
        })
        .sum();
    assert!(dropped > 0, "{:?}", run.warnings);
    assert!(
        run.warnings
            .iter()
            .any(|w| w.contains("dropped unsent, so that the stream stays live")),
        "{:?}",
        run.warnings
    );
    let summary = run.named("kvs-summary")[0];
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    assert_eq!(summary.get::<u64>("fragments-dropped").unwrap(), dropped);
    let persisted = summary.get::<u64>("fragments-persisted").unwrap();
    assert_eq!(
        persisted + dropped,
        summary.get::<u64>("fragments-produced").unwrap(),
        "{summary}"
    );
    assert_eq!(server.fragments("slow").len() as u64, persisted);
    assert!(
        run.error_text().contains(&format!(
            "{dropped} dropped unsent while the uplink was slower than the live stream"
        )),
        "{}",
        run.error_text()
    );
    assert!(run.named("kvs-idle").is_empty(), "{run:?}");
}

#[test]
fn a_service_that_stops_acknowledging_is_not_an_outage_for_what_it_was_sent() {
    // The service takes the data but acknowledges nothing for a while (or the link is so slow
    // that a fragment takes longer than connection-staleness): kvssink reconnects, and the
    // next connections are answered with errors. The store dropped its oldest fragments
    // then, as in an outage: fragments the service had been sent, and stored, counted lost. Now, with the service reachable, a live stream drops
    // only its new fragments, unsent; every fragment stored is one kvssink counts.
    init();
    let server = server();
    let (run, _, stats) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(6));
            server.clear_faults();
        });
        stream_with_fault(
            &server,
            "unacknowledged",
            12,
            |sink| {
                sink.set_property("buffer-duration", 3u32);
                sink.set_property("connection-staleness", 2u32);
                sink.set_property("fragment-duration", 1000u32);
            },
            1,
            || {
                // Data taken, no ack; then the next connections answered with errors.
                server.inject(Fault::StopAcks { stream: None });
                server.inject(Fault::FailRequests {
                    stream: None,
                    operation: "PutMedia".into(),
                    count: 5,
                    status: 500,
                    error_type: None,
                });
            },
        )
    });
    assert!(reconnects(&run) >= 1, "the fault did not bite: {stats}");
    let dropped = run.named("kvs-fragments-dropped");
    assert!(
        dropped.iter().all(|s| s.get::<&str>("from") == Ok("input")),
        "sent fragments dropped: {dropped:?}"
    );
    let produced = stats.get::<u64>("fragments-produced").unwrap();
    let lost = stats.get::<u64>("fragments-dropped").unwrap();
    let mut stored: Vec<u64> = server
        .fragments("unacknowledged")
        .iter()
        .map(|f| f.timecode)
        .collect();
    // Replays after each reconnect store some twice.
    stored.sort_unstable();
    stored.dedup();
    assert_eq!(stored.len() as u64 + lost, produced, "{stored:?} {stats}");
}

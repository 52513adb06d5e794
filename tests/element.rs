//! kvssink as an element, in a `gst_check::Harness`: synthetic Matroska from
//! `kvs_format::build` pushed buffer by buffer into kvssink streaming to an in-process
//! kvs-local. No encoders and no clocks: every assertion is on what the element did after a
//! given buffer or event, and every wait is on a condition, with a generous bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;
use kvs_format::build::{cluster_start, simple_block, simple_header};
use kvs_format::kvs::{MAX_FRAGMENT_DURATION, MAX_FRAGMENT_SIZE};

/// Bound of every wait on a condition (they normally end within milliseconds).
const WAIT: Duration = Duration::from_secs(30);
/// `stop-stream-timeout` (s): kvs-local acks at once; this only bounds a failing run.
const STOP_TIMEOUT_S: u32 = 30;

/// A frame of track 1, `rel_ms` after its cluster's timecode.
fn frame(rel_ms: i16, key: bool) -> Vec<u8> {
    simple_block(1, rel_ms, key, &[0x5A; 64])
}

/// A cluster at `timecode` (ms) with a key frame at its start, then delta frames at the
/// given offsets.
fn cluster(timecode: u64, deltas: &[i16]) -> Vec<u8> {
    let mut out = cluster_start(timecode);
    out.extend(frame(0, true));
    for &rel in deltas {
        out.extend(frame(rel, false));
    }
    out
}

/// `cluster` as kvssink sends it: with AWS's cluster head (one track, number 1: nothing to
/// renumber).
fn sent(cluster: &[u8]) -> Vec<u8> {
    common::sent::sent_cluster(cluster, &Vec::new())
}

/// kvssink in a harness, with a bus of its own (a harness gives its element none).
struct Sink {
    h: gst_check::Harness,
    element: gst::Element,
    bus: gst::Bus,
    stream: String,
    /// Every message taken from the bus so far, in order.
    messages: Vec<gst::Message>,
    /// Upstream force-key-unit events received so far.
    key_units: Vec<gst_video::UpstreamForceKeyUnitEvent>,
    /// Other upstream events received so far (their type names).
    other_upstream: Vec<String>,
}

/// The warning that a live stream's fragments are dated ahead of the clock.
fn ahead_of_the_clock(warning: &str) -> bool {
    warning.contains("s ahead of this machine's clock: the input's timestamps")
}

impl Sink {
    /// kvssink on `stream` of `server`, `configure`d, then started by the harness with
    /// `video/x-matroska` caps and a segment.
    fn new(server: &Server, stream: &str, configure: impl FnOnce(&gst::Element)) -> Sink {
        let mut sink = Sink::without_caps(server, stream, configure);
        sink.h.set_src_caps_str("video/x-matroska");
        sink
    }

    fn without_caps(server: &Server, stream: &str, configure: impl FnOnce(&gst::Element)) -> Sink {
        init();
        let element = gst::ElementFactory::make("kvssink").build().unwrap();
        configure_sink(&element, server, stream);
        // A sink prerolls asynchronously; the harness wants its state change done at once.
        element.set_property("async", false);
        element.set_property("stop-stream-timeout", STOP_TIMEOUT_S);
        // The longest fragment-duration, so that a test thread held up for a moment is not
        // taken for an idle stream; the tests about it set their own.
        element.set_property("fragment-duration", 10_000u32);
        // The harness stands for a live encoder (its upstream answers no latency query).
        element.set_property_from_str("streaming-type", "realtime");
        configure(&element);
        let bus = gst::Bus::new();
        element.set_bus(Some(&bus));
        // The harness starts an element with a sink pad at once: configured before.
        let h = gst_check::Harness::with_element(&element, Some("sink"), None);
        Sink {
            h,
            element,
            bus,
            stream: stream.to_owned(),
            messages: Vec::new(),
            key_units: Vec::new(),
            other_upstream: Vec::new(),
        }
    }

    fn push(&mut self, data: Vec<u8>) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.h.push(gst::Buffer::from_slice(data))
    }

    /// Pushes `data`, which must be taken.
    fn feed(&mut self, data: Vec<u8>) {
        let result = self.push(data);
        if result != Ok(gst::FlowSuccess::Ok) {
            panic!("push: {result:?}; {}", self.describe());
        }
    }

    /// Pushes EOS; returns whether kvssink took it (it refuses it when the run failed).
    fn eos(&mut self) -> bool {
        self.h.push_event(gst::event::Eos::new())
    }

    /// Takes what is on the bus now.
    fn poll_bus(&mut self) {
        while let Some(msg) = self.bus.pop() {
            self.messages.push(msg);
        }
    }

    /// Takes the upstream events received so far; returns how many force-key-unit requests
    /// there have been in all.
    fn key_unit_requests(&mut self) -> usize {
        while let Some(event) = self.h.try_pull_upstream_event() {
            match gst_video::UpstreamForceKeyUnitEvent::parse(&event) {
                Ok(fku) => self.key_units.push(fku),
                // The harness asks for renegotiation as it links.
                Err(_) if event.type_() == gst::EventType::Reconfigure => {}
                Err(_) => self.other_upstream.push(format!("{:?}", event.type_())),
            }
        }
        assert!(
            self.other_upstream.is_empty(),
            "unexpected upstream events {:?}",
            self.other_upstream
        );
        self.key_units.len()
    }

    /// Waits until `done` holds for what was seen, taking bus messages as they come.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&mut Sink) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.poll_bus();
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {WAIT:?}; {}",
                self.describe()
            );
            if let Some(msg) = self.bus.timed_pop(gst::ClockTime::from_mseconds(20)) {
                self.messages.push(msg);
            }
        }
    }

    /// Element messages named `name` (`kvs-summary`, `kvs-idle`, ...).
    fn named(&mut self, name: &str) -> Vec<gst::Structure> {
        self.poll_bus();
        self.messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Element(e) => e.structure().map(|s| s.to_owned()),
                _ => None,
            })
            .filter(|s| s.name() == name)
            .collect()
    }

    /// The one `kvs-summary` posted.
    fn summary(&mut self) -> gst::Structure {
        let mut summaries = self.named("kvs-summary");
        assert_eq!(summaries.len(), 1, "{}", self.describe());
        summaries.remove(0)
    }

    /// `kvs-ack` messages of one event type: their fragment timecodes.
    fn acks(&mut self, event_type: &str) -> Vec<u64> {
        self.named("kvs-ack")
            .iter()
            .filter(|s| s.get::<&str>("event-type").ok() == Some(event_type))
            .map(|s| s.get::<u64>("fragment-timecode").unwrap())
            .collect()
    }

    /// The user-visible texts of the errors posted.
    fn errors(&mut self) -> Vec<String> {
        self.poll_bus();
        self.messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().message().to_owned()),
                _ => None,
            })
            .collect()
    }

    /// The user-visible texts of the warnings posted.
    /// The warnings posted so far. The harness feeds its "live" stream (`streaming-type=
    /// realtime`) faster than real time: the warning that the fragments are dated ahead of
    /// the clock, true of many tests here, is left out.
    fn warnings(&mut self) -> Vec<String> {
        self.poll_bus();
        self.messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Warning(w) => Some(w.error().message().to_owned()),
                _ => None,
            })
            .filter(|w| !ahead_of_the_clock(w))
            .collect()
    }

    /// The timecodes of the fragments kvs-local stored.
    fn stored(&self, server: &Server) -> Vec<u64> {
        server
            .fragments(&self.stream)
            .iter()
            .map(|f| f.timecode)
            .collect()
    }

    /// Stops the element (READY, then NULL) as an application does after an error.
    fn stop(&mut self) {
        self.element
            .set_state(gst::State::Null)
            .expect("kvssink stops");
        self.poll_bus();
    }

    /// What the application saw, in order: `error`, `warning` and kvssink's element
    /// messages other than acks and connection states (`kvs-summary`, `kvs-idle`, ...).
    fn sequence(&mut self) -> Vec<String> {
        self.poll_bus();
        self.messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Error(_) => Some("error".to_owned()),
                // (Not the one about a "live" stream fed faster than real time: see `warnings`.)
                gst::MessageView::Warning(w) if !ahead_of_the_clock(w.error().message()) => {
                    Some("warning".to_owned())
                }
                gst::MessageView::Element(e) => {
                    e.structure().map(|s| s.name().to_string()).filter(|n| {
                        !matches!(
                            n.as_str(),
                            "kvs-ack" | "kvs-connection" | "kvs-stream-start"
                        )
                    })
                }
                _ => None,
            })
            .collect()
    }

    fn describe(&mut self) -> String {
        self.poll_bus();
        let texts: Vec<String> = self
            .messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Error(e) => {
                    Some(format!("ERROR {} ({:?})", e.error(), e.debug()))
                }
                gst::MessageView::Warning(w) => {
                    Some(format!("WARNING {} ({:?})", w.error(), w.debug()))
                }
                gst::MessageView::Element(e) => e.structure().map(|s| s.to_string()),
                _ => None,
            })
            .collect();
        format!("messages so far:\n{}", texts.join("\n"))
    }
}

// 1. Key-unit requests.

/// The fragment asks for a key frame once it lasts `fragment-duration`, once, and the next
/// fragment asks again.
#[test]
fn a_key_unit_is_requested_once_per_fragment_at_fragment_duration() {
    let server = server();
    let mut s = Sink::new(&server, "fku", |e| {
        e.set_property("fragment-duration", 5000u32)
    });
    // The harness is a live source with no latency: no lead.
    s.feed(simple_header());
    s.feed(cluster(0, &[]));
    assert_eq!(s.key_unit_requests(), 0);
    for rel in [1000, 4000, 4999] {
        s.feed(frame(rel, false));
        assert_eq!(
            s.key_unit_requests(),
            0,
            "asked at {rel} ms, before 5000 ms"
        );
    }
    s.feed(frame(5000, false));
    assert_eq!(s.key_unit_requests(), 1, "5000 ms into the fragment");
    let fku = &s.key_units[0];
    assert!(fku.all_headers);
    assert_eq!(fku.running_time, None);
    for rel in [5033, 6000] {
        s.feed(frame(rel, false));
        assert_eq!(
            s.key_unit_requests(),
            1,
            "asked twice for one fragment ({rel} ms)"
        );
    }
    // The key frame came: a new cluster, a new fragment, which asks again. The encoder
    // answered 1000 ms after the request (the last frame before the key frame), so the
    // request comes that much earlier: at 4000 ms.
    s.feed(cluster(6033, &[]));
    assert_eq!(s.key_unit_requests(), 1);
    s.feed(frame(3999, false));
    assert_eq!(s.key_unit_requests(), 1);
    s.feed(frame(4000, false));
    assert_eq!(s.key_unit_requests(), 2);
    s.feed(frame(4500, false));
    assert_eq!(s.key_unit_requests(), 2);
    assert!(s.eos(), "{}", s.describe());
    assert_eq!(s.stored(&server), [0, 6033]);
    // Nothing else was said about it.
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
}

/// When the key frame comes as soon as asked, the next fragment is asked at
/// `fragment-duration` again; when it comes late, the delay (measured) is the new lead, at
/// most half of `fragment-duration`.
#[test]
fn the_encoder_s_measured_delay_moves_the_next_request_earlier() {
    let server = server();
    let mut s = Sink::new(&server, "fku-lead", |e| {
        e.set_property("fragment-duration", 4000u32)
    });
    s.feed(simple_header());
    s.feed(cluster(0, &[]));
    s.feed(frame(4000, false));
    assert_eq!(s.key_unit_requests(), 1);
    // Answered at once: no lead.
    s.feed(cluster(4033, &[]));
    s.feed(frame(3999, false));
    assert_eq!(s.key_unit_requests(), 1);
    s.feed(frame(4000, false));
    assert_eq!(s.key_unit_requests(), 2);
    // Answered 600 ms late: asked 600 ms early.
    s.feed(frame(4600, false));
    s.feed(cluster(8633, &[]));
    s.feed(frame(3399, false));
    assert_eq!(s.key_unit_requests(), 2);
    s.feed(frame(3400, false));
    assert_eq!(s.key_unit_requests(), 3);
    // Answered 5000 ms late: asked 2000 ms (half of 4000) early, no earlier.
    s.feed(frame(8400, false));
    s.feed(cluster(17033, &[]));
    s.feed(frame(1999, false));
    assert_eq!(s.key_unit_requests(), 3);
    s.feed(frame(2000, false));
    assert_eq!(s.key_unit_requests(), 4);
    assert!(s.eos(), "{}", s.describe());
    assert_eq!(s.stored(&server), [0, 4033, 8633, 17033]);
}

/// Upstream's latency (the LATENCY query kvssink makes at the stream header) is the first
/// lead, at most half of `fragment-duration`.
#[test]
fn upstream_latency_makes_the_first_request_earlier() {
    let server = server();
    // (latency, when the request is due): 1 s early; 4 s capped at 2.5 s early.
    for (latency_ms, due_ms) in [(1000u64, 4000i16), (4000, 2500)] {
        let stream = format!("fku-latency-{latency_ms}");
        let mut s = Sink::new(&server, &stream, |e| {
            e.set_property("fragment-duration", 5000u32)
        });
        s.h.set_upstream_latency(gst::ClockTime::from_mseconds(latency_ms));
        s.feed(simple_header());
        s.feed(cluster(0, &[due_ms - 1]));
        assert_eq!(s.key_unit_requests(), 0, "latency {latency_ms} ms");
        s.feed(frame(due_ms, false));
        assert_eq!(s.key_unit_requests(), 1, "latency {latency_ms} ms");
        s.feed(frame(due_ms + 1000, false));
        assert_eq!(s.key_unit_requests(), 1, "latency {latency_ms} ms");
    }
}

// 2. The service's limits.

/// A cluster that spans more than the service's 10 s is ended at the frame that would make
/// it longer: a warning naming the limit, the rest of the cluster not sent, and the EOS
/// account says so (and refuses to call the run a success).
#[test]
fn a_cluster_longer_than_10_s_is_cut_with_a_warning_and_accounted_at_eos() {
    let server = server();
    let limit_ms = i16::try_from(MAX_FRAGMENT_DURATION.as_millis()).unwrap();
    let after_ms = |rel: i16| rel as u64;
    let mut s = Sink::new(&server, "cut", |_| {});
    s.feed(simple_header());
    let kept = cluster(0, &[5000, limit_ms]);
    s.feed(kept.clone());
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let after_cut = [frame(limit_ms + 1, false), frame(limit_ms + 500, false)];
    s.feed(after_cut[0].clone());
    let warnings = s.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let text = &warnings[0];
    assert!(text.starts_with("stream cut: "), "{text}");
    assert!(
        text.contains("the fragment at timecode 0 reached the service's limits (10 s, 50 MB)"),
        "{text}"
    );
    assert!(text.contains(&format!("at {limit_ms} ms")), "{text}");
    s.feed(after_cut[1].clone());
    // The key frame after the cut starts a fragment as usual.
    s.feed(cluster(after_ms(limit_ms) + 600, &[33]));
    assert_eq!(s.warnings().len(), 1);

    assert!(!s.eos(), "EOS after a cut must not pass as a success");
    let fragments = server.fragments("cut");
    assert_eq!(fragments.len(), 2);
    assert_eq!(
        fragments[0].bytes,
        sent(&kept),
        "the first fragment ends before the cut"
    );
    assert_eq!(fragments[0].duration_ms, after_ms(limit_ms));
    assert_eq!(fragments[1].timecode, after_ms(limit_ms) + 600);

    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    assert_eq!(summary.get::<u64>("fragments-produced").unwrap(), 2);
    assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), 2);
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
    let not_sent = after_cut.iter().map(Vec::len).sum::<usize>();
    assert_eq!(
        summary.get::<&str>("loss-reasons").unwrap(),
        format!(
            "1 cut at the service's limits (10 s, 50 MB): {not_sent} bytes of frames after the \
             cut were not sent"
        )
    );
    assert_eq!(s.sequence(), ["warning", "kvs-summary", "error"]);
    let errors = s.errors();
    assert!(
        errors[0].contains("stream cut: not all of the stream was persisted: 1 cut"),
        "{}",
        errors[0]
    );
}

/// A cluster that grows past the service's 50 MB is ended before the block that would make
/// it larger, in the same way (about 50 MB through loopback: a few hundred ms).
#[test]
fn a_cluster_larger_than_50_mb_is_cut_with_a_warning_and_accounted_at_eos() {
    let server = server();
    let mut s = Sink::new(&server, "big", |_| {});
    s.feed(simple_header());
    let payload = vec![0x5Au8; 4 << 20];
    let block = |i: usize| simple_block(1, i as i16 * 33, i == 0, &payload);
    // The blocks that fit whole in the limit (in the bytes sent) are kept; the rest are not
    // sent.
    let mut kept = cluster_start(0);
    let mut size = sent(&kept).len();
    let mut i = 0;
    while (size + block(i).len()) as u64 <= MAX_FRAGMENT_SIZE {
        kept.extend(block(i));
        size += block(i).len();
        i += 1;
    }
    let kept = sent(&kept);
    assert_eq!(kept.len(), size);
    s.feed(cluster_start(0));
    for i in 0..i {
        s.feed(block(i));
    }
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    let not_sent = block(i).len() + block(i + 1).len();
    s.feed(block(i));
    s.feed(block(i + 1));
    let warnings = s.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&format!(
            "the fragment at timecode 0 reached the service's limits (10 s, 50 MB) at {} ms and \
             {} bytes",
            (i - 1) * 33,
            kept.len()
        )),
        "{}",
        warnings[0]
    );
    s.feed(cluster(1000, &[33]));

    assert!(!s.eos(), "EOS after a cut must not pass as a success");
    let fragments = server.fragments("big");
    assert_eq!(fragments.len(), 2);
    assert!(
        fragments[0].bytes == kept,
        "the first fragment ends before the cut"
    );
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), 2);
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
    assert_eq!(
        summary.get::<&str>("loss-reasons").unwrap(),
        format!(
            "1 cut at the service's limits (10 s, 50 MB): {not_sent} bytes of frames after the \
             cut were not sent"
        )
    );
    assert_eq!(s.sequence(), ["warning", "kvs-summary", "error"]);
}

// 3. Idle fragments.

/// No data for `fragment-duration`: the open fragment is ended with an END_OF_FRAGMENT tag
/// (kvs-local persists it while the session is still open), a `kvs-idle` message is posted
/// and a key frame is asked for, since the next data must start a new fragment.
#[test]
fn an_idle_fragment_is_ended_with_a_tag_after_fragment_duration() {
    let server = Server::spawn(Config {
        record_body_reads: true,
        ..Config::default()
    })
    .unwrap();
    let mut s = Sink::new(&server, "idle", |e| {
        e.set_property("fragment-duration", 300u32)
    });
    let header = simple_header();
    let first = cluster(0, &[33, 66]);
    s.feed(header.clone());
    let fed = Instant::now();
    s.feed(first.clone());

    s.wait_until("kvs-idle message", |s| !s.named("kvs-idle").is_empty());
    let idle_after = fed.elapsed();
    assert!(
        idle_after >= Duration::from_millis(300),
        "ended after {idle_after:?}, before fragment-duration"
    );
    let idle = s.named("kvs-idle");
    assert_eq!(idle.len(), 1);
    assert_eq!(idle[0].get::<u64>("fragment-timecode").unwrap(), 0);
    s.wait_until("force-key-unit request", |s| s.key_unit_requests() == 1);
    assert!(s.key_units[0].all_headers);
    assert_eq!(s.sequence(), ["kvs-idle"]);
    assert!(server.wait_for_fragments("idle", 1, WAIT));
    let fragments = server.fragments("idle");
    assert_eq!(fragments.len(), 1);
    assert_eq!(fragments[0].bytes, sent(&first));
    // Persisted while the session goes on: what closed the cluster was the tag, the last
    // bytes of the body so far.
    let report = server.report();
    let session = report.sessions.iter().find(|x| x.stream == "idle").unwrap();
    assert_eq!(session.ended_ms, None);
    let body = session.reads.last().unwrap().bytes as usize;
    let tag = kvs_format::kvs::end_of_fragment_tags();
    let sent_header = gstkvs::mkv::normalize_header(&header).unwrap();
    assert_eq!(body, sent_header.len() + sent(&first).len() + tag.len());
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());

    // The next cluster is a fragment of its own; nothing is lost.
    s.feed(cluster(1000, &[33]));
    assert!(s.eos(), "{}", s.describe());
    assert_eq!(s.stored(&server), [0, 1000]);
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), 2);
}

/// More frames of the same cluster after it was ended as idle (a source that stalled inside
/// a group of pictures, an encoder that did not start a new key frame when asked) cannot be
/// sent in it: a warning says so once, the run is `incomplete` and its loss reasons say why.
/// Before, they were dropped with a warning at every buffer and the run was `all-persisted`.
#[test]
fn frames_after_an_idle_end_are_lost_and_said_so() {
    let server = server();
    let mut s = Sink::new(&server, "late", |e| {
        e.set_property("fragment-duration", 300u32)
    });
    s.feed(simple_header());
    let mut open = cluster_start(0);
    open.extend(frame(0, true));
    open.extend(frame(33, false));
    s.feed(open);
    s.wait_until("kvs-idle message", |s| !s.named("kvs-idle").is_empty());
    // The source goes on inside the cluster that was ended, one frame a buffer.
    for rel in [66, 99, 133] {
        s.feed(frame(rel, false));
    }
    s.feed(cluster(1000, &[33]));
    s.eos();
    let warnings = s.warnings();
    let late: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("frames came for fragment 0 after it was ended"))
        .collect();
    assert_eq!(late.len(), 1, "{warnings:?}");
    assert_eq!(s.stored(&server), [0, 1000]);
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    let reasons = summary.get::<&str>("loss-reasons").unwrap();
    assert!(
        reasons.contains("1 fragment ended after no data came for fragment-duration")
            && reasons.contains(&format!(
                "{} bytes of them were not sent",
                3 * frame(0, false).len()
            )),
        "{reasons}"
    );
    // Said at EOS with what was lost (the fragments themselves were all persisted).
    let errors = s.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("stream late: not all of the stream was persisted: "),
        "{errors:?}"
    );
}

// 4. The account at EOS.

/// EOS waits for the service: the last PERSISTED ack and the summary are on the bus when
/// the EOS event returns.
#[test]
fn eos_accounts_for_every_fragment_persisted() {
    let server = server();
    let mut s = Sink::new(&server, "eos", |_| {});
    s.feed(simple_header());
    let clusters = [0u64, 1000, 2000];
    for tc in clusters {
        s.feed(cluster(tc, &[33, 66, 99]));
    }
    assert!(s.eos(), "{}", s.describe());
    assert_eq!(s.stored(&server), clusters);
    assert_eq!(s.acks("PERSISTED"), clusters);
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("stream-name").unwrap(), "eos");
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    for (field, n) in [
        ("fragments-produced", 3u64),
        ("fragments-persisted", 3),
        ("fragments-lost", 0),
        ("fragments-rejected", 0),
        ("fragments-dropped", 0),
        ("fragments-pending", 0),
    ] {
        assert_eq!(summary.get::<u64>(field).unwrap(), n, "{field}");
    }
    assert_eq!(summary.get::<&str>("loss-reasons").unwrap(), "");
    assert_eq!(s.sequence(), ["kvs-summary"]);
    let stats = s.element.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("fragments-persisted").unwrap(), 3);
}

/// A fragment the service answers with an ERROR ack is lost: a warning when it happens, an
/// `incomplete` account and an error at EOS, which kvssink refuses.
#[test]
fn a_rejected_fragment_makes_eos_incomplete_with_an_error() {
    let server = server();
    server.inject(kvs_local::Fault::ErrorAck {
        stream: Some("rejected".into()),
        fragment: None,
        timecode: Some(1000),
        error_id: 4006,
    });
    let mut s = Sink::new(&server, "rejected", |_| {});
    s.feed(simple_header());
    for tc in [0, 1000, 2000] {
        s.feed(cluster(tc, &[33]));
    }
    assert!(!s.eos(), "EOS after a loss must not pass as a success");
    assert_eq!(s.stored(&server), [0, 2000]);
    let warnings = s.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("rejected the fragment at timecode 1000 ms with INVALID_MKV_DATA (4006)"),
        "{}",
        warnings[0]
    );
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    for (field, n) in [
        ("fragments-produced", 3u64),
        ("fragments-persisted", 2),
        ("fragments-rejected", 1),
        ("fragments-lost", 1),
        ("fragments-pending", 0),
    ] {
        assert_eq!(summary.get::<u64>(field).unwrap(), n, "{field}");
    }
    assert_eq!(
        summary.get::<&str>("loss-reasons").unwrap(),
        "1 rejected by the service (INVALID_MKV_DATA x1)"
    );
    assert_eq!(s.sequence(), ["warning", "kvs-summary", "error"]);
    assert_eq!(
        s.errors()[0],
        "stream rejected: 1 of 3 fragments were not persisted: 1 rejected by the service \
         (INVALID_MKV_DATA x1)"
    );
}

// 5. Input kvssink cannot take.

/// A cluster that does not start with a key frame mid-stream is skipped whole, with the ones
/// after it until one does: said once (how many frames, how long), counted in the account
/// (`incomplete`), and the stream goes on at the next key frame instead of ending there.
#[test]
fn a_cluster_without_a_key_frame_is_skipped_until_the_next_key_frame() {
    let server = server();
    let mut s = Sink::new(&server, "nokey", |_| {});
    s.feed(simple_header());
    let first = cluster(0, &[33]);
    s.feed(first.clone());
    for start in [1000, 2000] {
        let mut keyless = cluster_start(start);
        keyless.extend(frame(0, false));
        keyless.extend(frame(33, false));
        s.feed(keyless);
    }
    let last = cluster(3000, &[33]);
    s.feed(last.clone());
    assert!(!s.eos(), "not all of the stream was persisted");
    assert_eq!(s.stored(&server), [0, 3000]);
    let fragments = server.fragments("nokey");
    assert_eq!(fragments[0].bytes, sent(&first));
    assert_eq!(fragments[1].bytes, sent(&last));
    let warnings = s.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "stream nokey: 2 clusters from timecode 1000 did not start with a key frame"
        ) && warnings[0].contains("their 4 frames (2000 ms, ")
            && warnings[0].contains("the stream goes on at the key frame at 3000")
            && warnings[0].contains("max-cluster-duration"),
        "{}",
        warnings[0]
    );
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "incomplete");
    assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), 2);
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
    let reasons = summary.get::<&str>("loss-reasons").unwrap();
    assert!(
        reasons.starts_with("4 frames (2000 ms, ")
            && reasons.contains("skipped until the next key frame"),
        "{reasons}"
    );
    let errors = s.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("stream nokey: not all of the stream was persisted: 4 frames"),
        "{}",
        errors[0]
    );
}

/// Bytes that are not Matroska are an error saying what they look like; the EOS after it is
/// refused and nothing is sent.
#[test]
fn bytes_that_are_not_matroska_are_an_error() {
    let server = server();
    let mut s = Sink::new(&server, "jpeg", |_| {});
    let jpeg = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0,
    ];
    assert_eq!(s.push(jpeg), Err(gst::FlowError::Error));
    let errors = s.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("stream jpeg: not a Matroska stream: the data starts with"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("JPEG"), "{}", errors[0]);
    // The EOS a source sends after the error is not a success either.
    assert!(!s.eos());
    s.stop();
    assert!(server.fragments("jpeg").is_empty());
    // Said once; nothing to account for.
    assert_eq!(s.sequence(), ["error", "kvs-summary"]);
    assert_eq!(s.summary().get::<u64>("fragments-produced").unwrap(), 0);
}

/// A cluster timecode lower than the previous one (upstream's time went back) is not an
/// error: a warning says so, and from there on every time is sent later by as much as it
/// went back and one frame's spacing, right after the last frame sent. Every fragment is
/// persisted, in order. Before, the upload ended there with an error.
#[test]
fn time_going_backwards_is_sent_on_after_the_last_frame() {
    let server = server();
    let mut s = Sink::new(&server, "backwards", |_| {});
    s.feed(simple_header());
    s.feed(cluster(0, &[33]));
    s.feed(cluster(2000, &[33]));
    // Back to 1000 (the last frame sent is at 2033, 33 after the one before it), then on.
    s.feed(cluster(1000, &[33]));
    s.feed(cluster(2000, &[33]));
    assert!(s.eos(), "{}", s.describe());
    let warnings = s.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("stream backwards: upstream timestamps went back")
            && warnings[0].contains("from timecode 2066 on the frames are sent 1.066 s later"),
        "{}",
        warnings[0]
    );
    assert_eq!(s.stored(&server), [0, 2000, 2066, 3066]);
    let stored: Vec<_> = server
        .fragments("backwards")
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    // The frames as they came, under the shifted cluster timecodes.
    let want = [0, 2000, 2066, 3066].map(|tc| sent(&cluster(tc, &[33])));
    assert_eq!(stored, want);
    let summary = s.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "all-persisted");
    assert_eq!(summary.get::<u64>("fragments-persisted").unwrap(), 4);
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
}

// 6. Caps.

/// Caps other than Matroska, WebM, or H.264/H.265 access units (avc/hvc1/hev1 or
/// byte-stream form) are refused: the buffers after them are not negotiated, and nothing reaches kvssink until
/// caps it takes come.
#[test]
fn the_sink_pad_takes_matroska_caps_only() {
    let server = server();
    let mut s = Sink::without_caps(&server, "caps", |_| {});
    let pad = s.element.static_pad("sink").unwrap();
    for refused in ["video/x-h264", "image/jpeg", "video/x-raw"] {
        assert!(
            !pad.query_accept_caps(&gst::Caps::builder(refused).build()),
            "{refused}"
        );
    }
    let byte_stream = |name: &str| {
        gst::Caps::builder(name)
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build()
    };
    assert!(
        pad.query_accept_caps(&byte_stream("video/x-h264")),
        "byte-stream H.264, as cameras give it"
    );
    assert!(
        pad.query_accept_caps(&byte_stream("video/x-h265")),
        "byte-stream H.265, as cameras give it"
    );
    let avc = gst::Caps::builder("video/x-h264")
        .field("stream-format", "avc")
        .field("alignment", "au")
        .build();
    assert!(
        pad.query_accept_caps(&avc),
        "H.264 access units, as AWS's kvssink takes"
    );
    for accepted in [
        "video/x-matroska",
        "audio/x-matroska",
        "video/webm",
        "audio/webm",
    ] {
        assert!(
            pad.query_accept_caps(&gst::Caps::builder(accepted).build()),
            "{accepted}"
        );
    }
    // A sticky event: the harness's pad keeps it (push_event says true) but kvssink refuses
    // it, so the first buffer after it fails.
    s.h.push_event(gst::event::Caps::new(
        &gst::Caps::builder("video/x-h264").build(),
    ));
    assert_eq!(pad.current_caps(), None);
    assert_eq!(s.push(simple_header()), Err(gst::FlowError::NotNegotiated));

    let mkv = gst::Caps::builder("video/x-matroska").build();
    assert!(s.h.push_event(gst::event::Caps::new(&mkv)));
    assert_eq!(pad.current_caps(), Some(mkv));
    let segment = gst::FormattedSegment::<gst::format::Bytes>::new();
    assert!(s.h.push_event(gst::event::Segment::new(&segment)));
    s.feed(simple_header());
    s.feed(cluster(0, &[33]));
    assert!(s.eos(), "{}", s.describe());
    assert_eq!(s.stored(&server), [0]);
    assert!(s.errors().is_empty(), "{:?}", s.errors());
}

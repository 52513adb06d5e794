//! The uploads: `appsrc ! kvssink` (each measured upload in a fresh copy of this binary),
//! `curl` with the same writes through a pipe, `appsrc ! fakesink`; the throughput and CPU
//! per MB figures into kvs-local, storing and discarding.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use serde_json::json;

use crate::process::{cpu_of, cpu_self, exited_ok, monotonic_ns, wait4};
use crate::report::{Report, Row, mbps, ms_per_mb};
use crate::server::{ACCESS_KEY, KvsLocal, Mode, REGION, SECRET_KEY, curl_auth_args, signed_call};
use crate::stream::{FPS, Piece, Throughput, payload, stream_pieces, total_len};

/// Set in the environment of a copy of this binary that runs one kvssink upload.
pub const ROLE_ENV: &str = "KVSSINK_BENCH_ROLE";

pub struct SinkRun {
    pub wall: Duration,
    pub cpu: Duration,
    pub bytes: u64,
    /// (`CLOCK_MONOTONIC` ns just before `push_buffer`, stream offset at the buffer's end),
    /// when paced.
    pub pushes: Vec<(u64, u64)>,
    /// `CLOCK_MONOTONIC` ns when the clock started.
    pub start_ns: u64,
}

/// `appsrc ! kvssink` for the endpoint at `url`, PLAYING; `configure` sets extra properties.
pub fn kvssink_pipeline(
    url: &str,
    stream: &str,
    max_bytes: u64,
    configure: impl FnOnce(&gst::Element),
) -> Result<(gst::Pipeline, gst_app::AppSrc, gst::Element), String> {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&gst::Caps::new_empty_simple("video/x-matroska"))
        .format(gst::Format::Bytes)
        .stream_type(gst_app::AppStreamType::Stream)
        .block(true)
        .max_bytes(max_bytes)
        .build();
    let sink = gst::ElementFactory::make("kvssink")
        .property("stream-name", stream)
        .property("aws-region", REGION)
        .property("control-plane-uri", url)
        .property("access-key", ACCESS_KEY)
        .property("secret-key", SECRET_KEY)
        // Measures the client at full speed: as a live source, not an offline upload paced
        // to the service's 12.5 MB/s.
        .property_from_str("streaming-type", "realtime")
        .build()
        .map_err(|e| format!("kvssink: {e}"))?;
    configure(&sink);
    pipeline
        .add_many([src.upcast_ref(), &sink])
        .map_err(|e| e.to_string())?;
    src.link(&sink).map_err(|e| e.to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    Ok((pipeline, src, sink))
}

/// Pushes `pieces` through `appsrc ! kvssink` into the endpoint at `url` and waits for EOS
/// (kvssink returns from EOS once every fragment is PERSISTED). With `paced`, frames are
/// pushed live at 30 fps.
pub fn run_kvssink(
    url: &str,
    stream: &str,
    pieces: &[Piece],
    paced: bool,
) -> Result<SinkRun, String> {
    let (pipeline, src, _sink) = kvssink_pipeline(url, stream, 4 << 20, |_| {})?;

    let bus = pipeline.bus().unwrap();
    let mut pushes = Vec::with_capacity(if paced { pieces.len() } else { 0 });
    let mut offset = 0u64;
    let mut failure = None;
    let mut cpu0 = cpu_self();
    let mut start = Instant::now();
    let mut start_ns = monotonic_ns();
    // Unpaced, the stream is pushed far faster than real time; until the first PutMedia
    // connection is up kvssink would drop the oldest fragments once its store is full. So
    // the header and first cluster go first, and the clock starts once kvssink streams.
    let mut waiting = !paced;
    for piece in pieces {
        if waiting && piece.frame.is_some_and(|f| f > 0 && f % FPS == 0) {
            waiting = false;
            if let Err(e) = wait_streaming(&bus) {
                failure = Some(e);
                break;
            }
            cpu0 = cpu_self();
            start = Instant::now();
            start_ns = monotonic_ns();
        }
        if paced && let Some(frame) = piece.frame {
            let due = start + Duration::from_nanos(frame * 1_000_000_000 / FPS);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = monotonic_ns();
        if let Err(e) = src.push_buffer(gst::Buffer::from_slice(piece.bytes.clone())) {
            failure = Some(format!("push_buffer: {e:?}"));
            break;
        }
        offset += piece.bytes.len() as u64;
        if paced {
            pushes.push((t, offset));
        }
    }
    let _ = src.end_of_stream();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut summary = None;
    while failure.is_none() {
        if Instant::now() > deadline {
            failure = Some("no EOS within 300 s".into());
            break;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                failure = Some(format!("{} ({:?})", e.error(), e.debug()));
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "kvs-summary"
                {
                    summary = Some(s.to_owned());
                }
            }
            _ => {}
        }
    }
    let wall = start.elapsed();
    let cpu = cpu_self() - cpu0;
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(f) = failure {
        return Err(f);
    }
    let summary = summary.ok_or("no kvs-summary message")?;
    let outcome = summary.get::<String>("outcome").unwrap_or_default();
    if outcome != "all-persisted" {
        return Err(format!("kvssink: outcome {outcome}"));
    }
    Ok(SinkRun {
        wall,
        cpu,
        bytes: offset,
        pushes,
        start_ns,
    })
}

/// The same buffers through `appsrc ! fakesink`: what making and pushing them costs without
/// kvssink. Returns (wall, CPU).
fn run_fakesink(pieces: &[Piece]) -> Result<(Duration, Duration), String> {
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&gst::Caps::new_empty_simple("video/x-matroska"))
        .format(gst::Format::Bytes)
        .stream_type(gst_app::AppStreamType::Stream)
        .block(true)
        .max_bytes(4 << 20)
        .build();
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .map_err(|e| e.to_string())?;
    pipeline
        .add_many([src.upcast_ref(), &sink])
        .map_err(|e| e.to_string())?;
    src.link(&sink).map_err(|e| e.to_string())?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let cpu0 = cpu_self();
    let start = Instant::now();
    for piece in pieces {
        src.push_buffer(gst::Buffer::from_slice(piece.bytes.clone()))
            .map_err(|e| format!("push_buffer: {e:?}"))?;
    }
    let _ = src.end_of_stream();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let (wall, cpu) = (start.elapsed(), cpu_self() - cpu0);
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok((wall, cpu)),
        _ => Err("appsrc ! fakesink did not reach EOS".into()),
    }
}

/// Waits for kvssink's `kvs-connection` message with state `streaming`.
pub fn wait_streaming(bus: &gst::Bus) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Element, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => {
                return Err(format!("{} ({:?})", e.error(), e.debug()));
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "kvs-connection"
                    && s.get::<&str>("state") == Ok("streaming")
                {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Err("kvssink did not start streaming within 30 s".into())
}

/// CreateStream through curl (signed), then DescribeStream until ACTIVE.
pub fn create_stream_with_curl(url: &str, stream: &str) -> Result<(), String> {
    let create =
        json!({"StreamName": stream, "DataRetentionInHours": 2, "MediaType": "video/h264"});
    signed_call(url, "createStream", &create)?;
    for _ in 0..100 {
        let reply = signed_call(url, "describeStream", &json!({"StreamName": stream}))?;
        if reply["StreamInfo"]["Status"] == "ACTIVE" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("stream {stream} did not become ACTIVE"))
}

/// `curl` uploading `source` (`-` for its standard input, or a file) as one chunked PutMedia
/// of `stream` with kvssink's headers; the acks go to `acks`, `HTTP-code bytes-uploaded` to
/// stdout.
pub fn curl_put_media(url: &str, stream: &str, source: &str, acks: &Path) -> Command {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start_ts = format!("{}.{:03}", now.as_secs(), now.subsec_millis());
    let mut cmd = Command::new("curl");
    cmd.args(curl_auth_args())
        .args(["-X", "POST", "-T", source])
        .args(["-H", "Transfer-Encoding: chunked"])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(["-H", &format!("x-amzn-stream-name: {stream}")])
        .args(["-H", "x-amzn-fragment-timecode-type: RELATIVE"])
        .args([
            "-H",
            &format!("x-amzn-producer-start-timestamp: {start_ts}"),
        ])
        .args(["-H", "x-amzn-fragment-acknowledgment-required: 1"])
        .args(["-w", "%{http_code} %{size_upload}\n", "-o"])
        .arg(acks)
        .arg(format!("{url}/putMedia"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Checks how a `curl_put_media` upload of `clusters` clusters went (its exit status, its
/// stdout, the acks file); the bytes it uploaded.
pub fn curl_outcome(status: i32, out: &str, acks: &Path, clusters: usize) -> Result<u64, String> {
    let acks = std::fs::read_to_string(acks).unwrap_or_default();
    let persisted = acks.matches("\"PERSISTED\"").count();
    let errors = acks.matches("\"ERROR\"").count();
    let mut fields = out.split_whitespace();
    let code = fields.next().unwrap_or("");
    let bytes: u64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if !exited_ok(status) || code != "200" || errors > 0 || persisted != clusters {
        return Err(format!(
            "curl: exit status {status:#x}, HTTP {code}, {persisted}/{clusters} PERSISTED, \
             {errors} ERROR acks: {}",
            acks.lines().find(|l| l.contains("ERROR")).unwrap_or("")
        ));
    }
    Ok(bytes)
}

/// Writes `pieces` (one write each) into a pipe to `curl -T -`, which uploads them as a
/// chunked PutMedia. Measures curl's own CPU (not the writer's) and the wall time from
/// starting curl to its exit (after the last ack).
fn run_curl(url: &str, stream: &str, pieces: &[Piece]) -> Result<Upload, String> {
    create_stream_with_curl(url, stream)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let acks_file = dir.path().join("acks");
    let start = Instant::now();
    let mut child = curl_put_media(url, stream, "-", &acks_file)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let (status, ru) = std::thread::scope(|s| {
        s.spawn(move || {
            for p in pieces {
                if stdin.write_all(&p.bytes).is_err() {
                    break;
                }
            }
        });
        wait4(child.id())
    });
    let wall = start.elapsed();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    let clusters = pieces
        .iter()
        .filter(|p| p.bytes.starts_with(&[0x1F, 0x43]))
        .count();
    let bytes = curl_outcome(status, &out, &acks_file, clusters)?;
    Ok(Upload {
        wall,
        cpu: cpu_of(&ru),
        bytes,
        server_cpu: Duration::ZERO,
    })
}

/// One measured upload of the throughput stream.
#[derive(Clone, Copy)]
struct Upload {
    wall: Duration,
    /// CPU of the uploader: the process running kvssink (appsrc and GStreamer included), or
    /// curl alone.
    cpu: Duration,
    bytes: u64,
    /// CPU of the server process over the upload.
    server_cpu: Duration,
}

/// glibc settings under which freed memory is kept rather than returned to the kernel at
/// once (see benches/README.md).
const NO_TRIM: &str = "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=4194304";

/// Runs the throughput stream through `appsrc ! kvssink` in a fresh copy of this binary
/// (every measurement starts from the same process state: allocator, runtime, GStreamer),
/// after a short warm-up upload. `no_trim` sets [`NO_TRIM`].
fn kvssink_in_child(
    url: &str,
    stream: &str,
    shape: (u64, u64),
    no_trim: bool,
) -> Result<Upload, String> {
    let mut cmd = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    cmd.env(ROLE_ENV, "kvssink")
        .env("KVSSINK_BENCH_URL", url)
        .env("KVSSINK_BENCH_STREAM", stream)
        .env("KVSSINK_BENCH_CLUSTERS", shape.0.to_string())
        .env("KVSSINK_BENCH_FRAME_MS", shape.1.to_string())
        .stderr(Stdio::inherit());
    if no_trim {
        cmd.env("GLIBC_TUNABLES", NO_TRIM);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let f: Vec<u64> = line
        .split_whitespace()
        .map_while(|x| x.parse().ok())
        .collect();
    match f[..] {
        [wall, cpu, bytes] => Ok(Upload {
            wall: Duration::from_nanos(wall),
            cpu: Duration::from_nanos(cpu),
            bytes,
            server_cpu: Duration::ZERO,
        }),
        _ => Err(line),
    }
}

/// Body of the `kvssink` role: one warm-up upload, then the measured one; prints
/// `wall-ns cpu-ns bytes`.
pub fn kvssink_child() -> ! {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let number = |k: &str| var(k).parse::<u64>().unwrap_or(1);
    gst::init().expect("GStreamer");
    gstkvs::plugin_register_static().expect("register the kvs plugin");
    let (url, stream) = (var("KVSSINK_BENCH_URL"), var("KVSSINK_BENCH_STREAM"));
    let frame_ms = number("KVSSINK_BENCH_FRAME_MS");
    let payload = payload();
    let warm = stream_pieces(3, frame_ms, 100, &payload);
    let pieces = stream_pieces(number("KVSSINK_BENCH_CLUSTERS"), frame_ms, 100, &payload);
    let line = run_kvssink(&url, &format!("{stream}-warm-up"), &warm, false)
        .and_then(|_| run_kvssink(&url, &stream, &pieces, false))
        .map_or_else(
            |e| format!("ERROR {e}"),
            |r| format!("{} {} {}", r.wall.as_nanos(), r.cpu.as_nanos(), r.bytes),
        );
    println!("{line}");
    std::process::exit(0)
}

/// Checks that kvs-local got the whole stream: every cluster, byte for byte in total; when
/// discarding, also every body byte (header included).
fn verify(server: &KvsLocal, mode: Mode, stream: &str, pieces: &[Piece]) -> Result<(), String> {
    let fragments = pieces
        .iter()
        .filter(|p| p.bytes.starts_with(&[0x1F, 0x43]))
        .count() as u64;
    let total = total_len(pieces);
    let expected = crate::server::Received {
        fragments,
        cluster_bytes: total - pieces[0].bytes.len() as u64,
        body_bytes: (mode == Mode::Discarding).then_some(total),
    };
    let got = server.received(stream)?;
    if got != expected {
        return Err(format!(
            "{} holds {got:?} for {stream}; expected {expected:?}",
            mode.name()
        ));
    }
    Ok(())
}

/// Uploads the throughput stream with `upload` into a fresh kvs-local, then checks that it
/// got all of it.
fn upload_once(
    mode: Mode,
    who: &str,
    run: usize,
    pieces: &[Piece],
    upload: &dyn Fn(&str, &str) -> Result<Upload, String>,
) -> Result<Upload, String> {
    let server = KvsLocal::spawn(mode, false)?;
    let stream = format!("{who}-{}-{run}", std::process::id());
    let cpu0 = server.cpu();
    let r = upload(&server.url, &stream);
    let server_cpu = server.cpu().saturating_sub(cpu0);
    let r = r.and_then(|r| verify(&server, mode, &stream, pieces).map(|()| r));
    server.stop();
    let r = Upload { server_cpu, ..r? };
    eprintln!(
        "  {who:<16} -> {:<9}: {:5.0} MB/s, {:.3} ms CPU/MB, server {:.3} ms CPU/MB",
        mode.name(),
        mbps(r.bytes, r.wall),
        ms_per_mb(r.cpu, r.bytes),
        ms_per_mb(r.server_cpu, r.bytes)
    );
    Ok(r)
}

/// Medians of wall time, CPU and server CPU, each taken separately.
fn medians(runs: &[Upload]) -> Upload {
    let median = |key: fn(&Upload) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(key).collect();
        v.sort();
        v[v.len() / 2]
    };
    Upload {
        wall: median(|r| r.wall),
        cpu: median(|r| r.cpu),
        bytes: runs[0].bytes,
        server_cpu: median(|r| r.server_cpu),
    }
}

/// Median of `reps` runs of: `f`, as (wall, CPU).
fn median_of(
    reps: usize,
    mut f: impl FnMut() -> Result<(Duration, Duration), String>,
) -> Result<(Duration, Duration), String> {
    let mut runs = (0..reps).map(|_| f()).collect::<Result<Vec<_>, _>>()?;
    runs.sort();
    Ok(runs[runs.len() / 2])
}

/// Throughput and CPU per MB of kvssink next to curl into kvs-local in `mode`: `reps` rounds,
/// each upload into a fresh kvs-local, the uploaders interleaved; medians.
pub fn throughput(mode: Mode, stream: &Throughput, reps: usize, report: &mut Report) {
    let into = match mode {
        Mode::Storing => "into kvs-local",
        Mode::Discarding => "into a reading server",
    };
    let server = match mode {
        Mode::Storing => "kvs-local",
        Mode::Discarding => "kvs-local --discard-media",
    };
    eprintln!("throughput {into} ({server}, median of {reps}, interleaved):");
    let pieces = &stream.pieces;
    let shape = (stream.clusters, stream.frame_ms);
    type Uploader<'a> = Box<dyn Fn(&str, &str) -> Result<Upload, String> + 'a>;
    let uploaders: [(&str, Uploader); 3] = [
        (
            "kvssink",
            Box::new(|url, stream| kvssink_in_child(url, stream, shape, false)),
        ),
        (
            "curl",
            Box::new(|url, stream| run_curl(url, stream, pieces)),
        ),
        (
            "kvssink-no-trim",
            Box::new(|url, stream| kvssink_in_child(url, stream, shape, true)),
        ),
    ];
    // The first server after a pause is slower (the kernel finds it fresh huge pages for
    // kvs-local's arenas): one untimed upload first.
    let mut failed = upload_once(mode, "warm-up", 0, pieces, &*uploaders[1].1).err();
    let mut runs: [Vec<Upload>; 3] = Default::default();
    'reps: for i in 0..reps {
        for (k, (who, upload)) in uploaders.iter().enumerate() {
            if failed.is_some() {
                break 'reps;
            }
            match upload_once(mode, who, i, pieces, &**upload) {
                Ok(r) => runs[k].push(r),
                Err(e) => failed = Some(format!("{who}: {e}")),
            }
        }
    }
    if let Some(e) = failed {
        report.failed(&format!("throughput {into}"), e);
        return;
    }
    let (s, c, n) = (medians(&runs[0]), medians(&runs[1]), medians(&runs[2]));
    let (s_mbps, c_mbps) = (mbps(s.bytes, s.wall), mbps(c.bytes, c.wall));
    let (s_cpu, c_cpu) = (ms_per_mb(s.cpu, s.bytes), ms_per_mb(c.cpu, c.bytes));
    let target = mode == Mode::Storing;
    report.row(Row {
        metric: format!("throughput {into}"),
        kvssink: format!("{s_mbps:.0} MB/s"),
        reference: format!("curl {c_mbps:.0} MB/s"),
        target: if target { ">= 1000 MB/s" } else { "-" }.into(),
        ok: target.then_some(s_mbps >= 1000.0),
    });
    report.row(Row {
        metric: format!("CPU per MB {into}"),
        kvssink: format!("{s_cpu:.3} ms"),
        reference: format!("curl {c_cpu:.3} ms ({:.2}x)", s_cpu / c_cpu),
        target: if target { "<= 1.5x curl" } else { "-" }.into(),
        ok: target.then_some(s_cpu <= 1.5 * c_cpu),
    });
    report.row(Row {
        metric: "  kvssink, heap not trimmed".into(),
        kvssink: format!(
            "{:.0} MB/s, {:.3} ms",
            mbps(n.bytes, n.wall),
            ms_per_mb(n.cpu, n.bytes)
        ),
        reference: format!("({:.2}x curl)", ms_per_mb(n.cpu, n.bytes) / c_cpu),
        target: "-".into(),
        ok: None,
    });
    report.note(format!(
        "{into}: server CPU per MB {:.3} ms (kvssink run), {:.3} ms (curl run)",
        ms_per_mb(s.server_cpu, s.bytes),
        ms_per_mb(c.server_cpu, c.bytes)
    ));
}

/// CPU per MB of the same buffers through `appsrc ! fakesink`: the producer side alone.
pub fn push(pieces: &[Piece], reps: usize, report: &mut Report) {
    eprintln!("the same buffers into appsrc ! fakesink:");
    let total = total_len(pieces);
    match median_of(reps, || run_fakesink(pieces)) {
        Ok((wall, cpu)) => report.row(Row {
            metric: "CPU per MB, appsrc ! fakesink".into(),
            kvssink: format!("{:.3} ms", ms_per_mb(cpu, total)),
            reference: format!("{:.0} MB/s", mbps(total, wall)),
            target: "-".into(),
            ok: None,
        }),
        Err(e) => report.failed("appsrc ! fakesink", e),
    }
}

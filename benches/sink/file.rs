//! A file uploaded at full speed: `filesrc ! matroskademux ! h264parse ! matroskamux
//! streamable=true ! kvssink` (gst-launch-1.0, the plugin of this build) into kvs-local, next to
//! the same pipeline ending in `fakesink` and to `curl` uploading that pipeline's matroskamux
//! output from a file into the same kvs-local. Per MB of stream: system calls (counted with
//! `perf stat` on the `raw_syscalls:sys_enter` tracepoint, every thread), CPU; and peak RSS.
//!
//! The file is a 640x360 30 fps `x264enc` stream of `videotestsrc pattern=snow` at 8 Mb/s
//! (frames of about 33 KB, a key frame every 30), made once and kept in `target/bench-data/`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstkvs::producer::{MAX_BYTES_PER_SECOND, MAX_FRAGMENTS_PER_SECOND};

use crate::process::{cpu_of, exited_ok, status_kib, wait4};
use crate::report::{MB, Report, Row, mib, ms_per_mb};
use crate::rss::PluginEnv;
use crate::server::{KvsLocal, Mode};
use crate::uploads::{create_stream_with_curl, curl_outcome, curl_put_media};

/// The system calls counted one by one, besides the total.
pub const CALLS: [&str; 15] = [
    "writev",
    "write",
    "sendto",
    "futex",
    "epoll_wait",
    "epoll_ctl",
    "read",
    "recvfrom",
    "poll",
    "ppoll",
    "sched_yield",
    "mmap",
    "munmap",
    "madvise",
    "brk",
];

pub struct Files {
    /// x264 in Matroska: what `filesrc ! matroskademux` reads.
    pub source: PathBuf,
    /// The pipeline's matroskamux output (`streamable=true`): what curl uploads.
    pub muxed: PathBuf,
    pub muxed_bytes: u64,
    pub clusters: usize,
}

pub fn data_dir() -> PathBuf {
    std::env::var_os("KVSSINK_BENCH_DATA").map_or_else(
        || {
            // target/<profile>/deps/sink-<hash> -> target/bench-data
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().join("bench-data")
        },
        PathBuf::from,
    )
}

pub fn gst_launch(args: &str) -> Result<(), String> {
    let out = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| format!("gst-launch-1.0: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gst-launch-1.0 {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The short file whose counts are taken off the long one's.
pub const SHORT_FRAMES: u32 = 60;

pub const DEMUX: &str = "matroskademux ! h264parse ! matroskamux streamable=true";

/// The source file of `frames` frames and its matroskamux output, made once.
pub fn prepare(frames: u32) -> Result<Files, String> {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let source = dir.join(format!("snow-360p-8M-{frames}.mkv"));
    let muxed = dir.join(format!("snow-360p-8M-{frames}.muxed.mkv"));
    if !source.exists() {
        eprintln!("making {} (once)...", source.display());
        let partial = source.with_extension("partial");
        gst_launch(&format!(
            "videotestsrc num-buffers={frames} pattern=snow ! \
             video/x-raw,width=640,height=360,framerate=30/1 ! x264enc speed-preset=ultrafast \
             tune=zerolatency bitrate=8000 key-int-max=30 ! h264parse ! matroskamux ! \
             filesink location={}",
            partial.display()
        ))?;
        std::fs::rename(&partial, &source).map_err(|e| e.to_string())?;
    }
    if !muxed.exists() {
        gst_launch(&format!(
            "filesrc location={} ! {DEMUX} ! filesink location={}",
            source.display(),
            muxed.display()
        ))?;
    }
    let bytes = Bytes::from(std::fs::read(&muxed).map_err(|e| e.to_string())?);
    let mut splitter = gstkvs::mkv::Splitter::new(gstkvs::mkv::Limits::default());
    let mut events = Vec::new();
    splitter
        .push(bytes.clone(), &mut events)
        .and_then(|()| splitter.finish(&mut events))
        .map_err(|e| format!("{}: {e}", muxed.display()))?;
    let clusters = events
        .iter()
        .filter(|e| matches!(e, gstkvs::mkv::Event::FragmentStart(_)))
        .count();
    Ok(Files {
        source,
        muxed,
        muxed_bytes: bytes.len() as u64,
        clusters,
    })
}

#[derive(Clone, Default)]
pub struct Run {
    pub wall: Duration,
    pub cpu: Duration,
    /// ru_maxrss, KiB.
    pub peak_kib: u64,
    /// System calls by name ("total" for all of them).
    pub calls: BTreeMap<String, u64>,
}

/// Runs `cmd` to its end, optionally under `perf stat` counting system calls; its wall time,
/// CPU and peak RSS (of perf and the command together, when counted).
pub fn measure(mut cmd: Command, count: bool) -> Result<(Run, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let perf_out = dir.path().join("perf");
    let mut cmd = if count {
        let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
        events.extend(CALLS.iter().map(|c| format!("syscalls:sys_enter_{c}")));
        let perf = ["perf", "stat", "-x", ",", "-e", &events.join(","), "-o"]
            .map(String::from)
            .into_iter()
            .chain([perf_out.display().to_string(), "--".into()]);
        let mut perf = under(&perf.collect::<Vec<_>>(), &cmd);
        perf.stdout(Stdio::piped()).stderr(Stdio::piped());
        perf
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    };
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // ru_maxrss would start from the forking process's own peak: read the child's VmHWM
    // (of the program that perf runs, when counting) until it exits.
    let pid = child.id();
    let peak = std::thread::spawn(move || {
        let mut hwm = 0;
        loop {
            let target = if count {
                first_child(pid).unwrap_or(pid)
            } else {
                pid
            };
            let Ok(status) = std::fs::read_to_string(format!("/proc/{target}/status")) else {
                return hwm;
            };
            if status.contains("State:\tZ") {
                return hwm;
            }
            hwm = hwm.max(status_kib(&status, "VmHWM:").unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut out = String::new();
    let _ = stdout.read_to_string(&mut out);
    let (status, ru) = wait4(child.id());
    let peak_kib = peak.join().unwrap();
    let wall = start.elapsed();
    let errors = errors.join().unwrap();
    if !exited_ok(status) {
        return Err(format!(
            "{:?} failed ({status:#x}): {errors}",
            cmd.get_program()
        ));
    }
    let mut calls = BTreeMap::new();
    if count {
        let text = std::fs::read_to_string(&perf_out).map_err(|e| format!("perf: {e}"))?;
        for line in text.lines() {
            let f: Vec<&str> = line.split(',').collect();
            if let (Some(n), Some(event)) = (f.first().and_then(|n| n.parse().ok()), f.get(2)) {
                let name = match event.strip_prefix("syscalls:sys_enter_") {
                    Some(name) => name,
                    None if *event == "raw_syscalls:sys_enter" => "total",
                    None => continue,
                };
                calls.insert(name.to_owned(), n);
            }
        }
        if !calls.contains_key("total") {
            return Err(format!("perf stat counted nothing: {text}"));
        }
    }
    Ok((
        Run {
            wall,
            cpu: cpu_of(&ru),
            peak_kib,
            calls,
        },
        out,
    ))
}

/// `cmd` run by `wrapper` (a program and its arguments: `perf stat ...`, `valgrind ...`), with
/// the command's environment and working directory.
pub fn under(wrapper: &[String], cmd: &Command) -> Command {
    let mut run = Command::new(&wrapper[0]);
    run.args(&wrapper[1..])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        run.current_dir(dir);
    }
    run
}

/// The first child of `pid` (the program perf runs).
fn first_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

pub fn pipeline(env: &[(&'static str, String)], files: &Files, tail: &str) -> Command {
    paced_pipeline(env, files, tail, false)
}

/// With `paced`, `identity sync=true` before matroskamux lets frames through at their
/// timestamps (30 fps), as from a camera: what kvssink does per frame of a live stream.
fn paced_pipeline(
    env: &[(&'static str, String)],
    files: &Files,
    tail: &str,
    paced: bool,
) -> Command {
    let demux = if paced {
        "matroskademux ! h264parse ! identity sync=true ! matroskamux streamable=true"
    } else {
        DEMUX
    };
    launch(env, files, &format!("{demux} ! {tail}"))
}

/// `gst-launch-1.0 -q filesrc location=<the source file> ! <chain>` with `env`.
pub fn launch(env: &[(&'static str, String)], files: &Files, chain: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", files.source.display()))
        .arg("!")
        .args(chain.split_whitespace())
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// System calls per MB kvssink adds to a paced (live-like) pipeline: `frames` frames at
/// 30 fps, less a short file's counts, `reps` rounds.
pub fn measure_paced(frames: u32, reps: usize, report: &mut Report) {
    eprintln!("paced upload ({frames} frames at 30 fps, {reps} rounds):");
    if let Err(e) = paced_rounds(frames, reps, report) {
        report.failed("paced upload", e);
    }
}

fn paced_rounds(frames: u32, reps: usize, report: &mut Report) -> Result<(), String> {
    let (long, short) = (prepare(frames)?, prepare(SHORT_FRAMES)?);
    let mb = (long.muxed_bytes - short.muxed_bytes) as f64 / MB;
    let plugin = PluginEnv::new("http://127.0.0.1:1")?;
    let mut added = Vec::new();
    let mut per_call: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for n in 0..reps {
        let mut counts = Vec::new();
        for files in [&short, &long] {
            let (fakesink, _) = measure(
                paced_pipeline(&plugin.env, files, "fakesink sync=false", true),
                true,
            )?;
            let server = KvsLocal::spawn(Mode::Storing, false)?;
            let stream = format!("paced-{}-{n}-{}", std::process::id(), files.clusters);
            let cmd = paced_pipeline(
                &plugin.with_url(&server.url),
                files,
                &format!("kvssink stream-name={stream}"),
                true,
            );
            let (kvssink, _) = measure(cmd, true)?;
            server.stop();
            counts.push((fakesink, kvssink));
        }
        let calls = |k: &str| {
            let c = |r: &Run| r.calls.get(k).copied().unwrap_or(0) as f64;
            let ((fs, ks), (fl, kl)) = (&counts[0], &counts[1]);
            ((c(kl) - c(ks)) - (c(fl) - c(fs))) / mb
        };
        eprintln!("  syscalls/MB kvssink adds: {:.1}", calls("total"));
        added.push(calls("total"));
        for c in CALLS {
            per_call.entry(c.to_owned()).or_default().push(calls(c));
        }
    }
    report.row(Row {
        metric: "paced 30 fps: syscalls per MB over fakesink".into(),
        kvssink: format!("{:.1} ({})", median(added.clone()), spread(&added)),
        reference: format!("{:.0} frames/MB", f64::from(frames - SHORT_FRAMES) / mb),
        // The 58 per MB is what AWS's element adds to a file upload; paced, it adds
        // about 160 (the side-by-side row, with KVSSINK_OFFICIAL_PLUGIN_DIR).
        target: "<= AWS's (side by side)".into(),
        ok: None,
    });
    report.note(format!(
        "paced 30 fps ({mb:.0} MB counted): per MB kvssink adds {}",
        per_call
            .into_iter()
            .map(|(c, v)| format!("{c} {:.1}", median(v)))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// One upload of each kind (`count`: under perf). Each into a fresh kvs-local.
fn round(files: &Files, plugin: &PluginEnv, n: usize, count: bool) -> Result<[Run; 3], String> {
    let (fakesink, _) = measure(pipeline(&plugin.env, files, "fakesink sync=false"), count)?;

    let stream = format!("file-{}-{n}", std::process::id());
    // At full speed: by default (`streaming-type=auto`) a file is an offline upload, which
    // kvssink paces to the service's limits (the `offline` part).
    let kvssink = upload_checked(
        plugin,
        files,
        &format!("{DEMUX} ! kvssink stream-name={stream} streaming-type=realtime"),
        &stream,
        count,
    )?;

    let server = KvsLocal::spawn(Mode::Storing, false)?;
    let stream = format!("file-curl-{}-{n}", std::process::id());
    create_stream_with_curl(&server.url, &stream)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let acks = dir.path().join("acks");
    let source = files.muxed.display().to_string();
    let cmd = curl_put_media(&server.url, &stream, &source, &acks);
    let (curl, out) = measure(cmd, count)?;
    server.stop();
    curl_outcome(0, &out, &acks, files.clusters)?;
    Ok([fakesink, kvssink, curl])
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn spread(v: &[f64]) -> String {
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    if hi < 10.0 {
        format!("{lo:.2}-{hi:.2}")
    } else {
        format!("{lo:.1}-{hi:.1}")
    }
}

/// `frames` frames uploaded `reps` times by each; medians and spreads.
pub fn measure_all(frames: u32, reps: usize, report: &mut Report) {
    eprintln!("file upload ({frames} frames, x264 8 Mb/s in Matroska, {reps} rounds):");
    match measure_rounds(frames, reps, report) {
        Ok(()) => {}
        Err(e) => report.failed("file upload", e),
    }
}

fn measure_rounds(frames: u32, reps: usize, report: &mut Report) -> Result<(), String> {
    let files = prepare(frames)?;
    // System calls per MB are the difference between this file and a short one, over the
    // difference in bytes: what each MB adds, without what starting and stopping cost.
    let short = prepare(SHORT_FRAMES)?;
    let mb = (files.muxed_bytes - short.muxed_bytes) as f64 / MB;
    let plugin = PluginEnv::new("http://127.0.0.1:1")?;
    let perf = Command::new("perf")
        .args(["stat", "-e", "raw_syscalls:sys_enter", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut timed: Vec<[Run; 3]> = Vec::new();
    let mut timed_short: Vec<[Run; 3]> = Vec::new();
    let mut counted: Vec<[Run; 3]> = Vec::new();
    for n in 0..reps {
        let r = round(&files, &plugin, 2 * n, false)?;
        eprintln!(
            "  kvssink {:.0} MB/s; CPU/MB fakesink {:.3} ms, kvssink {:.3} ms, curl {:.3} ms; peak RSS {:.1} / {:.1} \
             / {:.1} MiB",
            crate::report::mbps(files.muxed_bytes, r[1].wall),
            ms_per_mb(r[0].cpu, files.muxed_bytes),
            ms_per_mb(r[1].cpu, files.muxed_bytes),
            ms_per_mb(r[2].cpu, files.muxed_bytes),
            mib(r[0].peak_kib),
            mib(r[1].peak_kib),
            mib(r[2].peak_kib)
        );
        timed.push(r);
        timed_short.push(round(&short, &plugin, 2000 + n, false)?);
        if perf {
            let small = round(&short, &plugin, 1000 + n, true)?;
            let mut r = round(&files, &plugin, 2 * n + 1, true)?;
            for (big, small) in r.iter_mut().zip(&small) {
                for (k, v) in &mut big.calls {
                    *v = v.saturating_sub(small.calls.get(k).copied().unwrap_or(0));
                }
            }
            let per_mb = |r: &Run, k: &str| r.calls.get(k).copied().unwrap_or(0) as f64 / mb;
            eprintln!(
                "  syscalls/MB fakesink {:.1}, kvssink {:.1} (+{:.1}), curl {:.1}",
                per_mb(&r[0], "total"),
                per_mb(&r[1], "total"),
                per_mb(&r[1], "total") - per_mb(&r[0], "total"),
                per_mb(&r[2], "total")
            );
            counted.push(r);
        }
    }
    // CPU per MB that kvssink adds to the pipeline, next to curl's.
    let added_cpu: Vec<f64> = timed
        .iter()
        .map(|r| ms_per_mb(r[1].cpu.saturating_sub(r[0].cpu), files.muxed_bytes))
        .collect();
    let curl_cpu: Vec<f64> = timed
        .iter()
        .map(|r| ms_per_mb(r[2].cpu, files.muxed_bytes))
        .collect();
    let ratios: Vec<f64> = added_cpu
        .iter()
        .zip(&curl_cpu)
        .map(|(a, c)| a / c)
        .collect();
    report.row(Row {
        metric: "file upload: CPU per MB kvssink adds over fakesink".into(),
        kvssink: format!("{:.3} ms", median(added_cpu.clone())),
        reference: format!(
            "curl {:.3} ms ({:.2}x, {})",
            median(curl_cpu.clone()),
            median(ratios.clone()),
            spread(&ratios)
        ),
        target: "<= 1.0x curl".into(),
        ok: Some(median(ratios) <= 1.0),
    });
    // The same per MB of the difference with the short file: without what starting and
    // stopping cost (loading the plugin and the CA certificates, the control plane, TLS).
    let slope = |who: usize, r: &[Run; 3], s: &[Run; 3]| {
        ms_per_mb(
            r[who].cpu.saturating_sub(s[who].cpu),
            files.muxed_bytes - short.muxed_bytes,
        )
    };
    let added_slope: Vec<f64> = timed
        .iter()
        .zip(&timed_short)
        .map(|(r, s)| slope(1, r, s) - slope(0, r, s))
        .collect();
    let curl_slope: Vec<f64> = timed
        .iter()
        .zip(&timed_short)
        .map(|(r, s)| slope(2, r, s))
        .collect();
    let slope_ratios: Vec<f64> = added_slope
        .iter()
        .zip(&curl_slope)
        .map(|(a, c)| a / c)
        .collect();
    report.row(Row {
        metric: "  the same, per MB over a short file's".into(),
        kvssink: format!("{:.3} ms", median(added_slope)),
        reference: format!(
            "curl {:.3} ms ({:.2}x, {})",
            median(curl_slope),
            median(slope_ratios.clone()),
            spread(&slope_ratios)
        ),
        target: "<= 1.0x curl".into(),
        ok: Some(median(slope_ratios) <= 1.0),
    });
    let peaks: Vec<f64> = timed.iter().map(|r| mib(r[1].peak_kib)).collect();
    let fake_peaks: Vec<f64> = timed.iter().map(|r| mib(r[0].peak_kib)).collect();
    let curl_peaks: Vec<f64> = timed.iter().map(|r| mib(r[2].peak_kib)).collect();
    report.row(Row {
        metric: "file upload: peak RSS".into(),
        kvssink: format!("{:.1} MiB ({})", median(peaks.clone()), spread(&peaks)),
        reference: format!(
            "fakesink {:.1} MiB, curl {:.1} MiB",
            median(fake_peaks),
            median(curl_peaks)
        ),
        target: "-".into(),
        ok: None,
    });
    if counted.is_empty() {
        report.note("file upload: perf is missing, no system call counts".into());
        return Ok(());
    }
    let per_mb = |r: &Run, k: &str| r.calls.get(k).copied().unwrap_or(0) as f64 / mb;
    let added: Vec<f64> = counted
        .iter()
        .map(|r| per_mb(&r[1], "total") - per_mb(&r[0], "total"))
        .collect();
    report.row(Row {
        metric: "file upload: syscalls per MB over fakesink".into(),
        kvssink: format!("{:.1} ({})", median(added.clone()), spread(&added)),
        reference: format!(
            "fakesink {:.1}, curl {:.1}",
            median(counted.iter().map(|r| per_mb(&r[0], "total")).collect()),
            median(counted.iter().map(|r| per_mb(&r[2], "total")).collect())
        ),
        target: "<= 58".into(),
        ok: Some(median(added) <= 58.0),
    });
    let detail = |who: usize| {
        CALLS
            .iter()
            .map(|c| {
                let v: Vec<f64> = counted
                    .iter()
                    .map(|r| per_mb(&r[who], c) - if who == 1 { per_mb(&r[0], c) } else { 0.0 })
                    .collect();
                format!("{c} {:.1}", median(v))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    report.note(format!(
        "file upload ({:.0} MB, {} clusters; syscalls counted per MB over the difference \
         with a {SHORT_FRAMES}-frame file): per MB kvssink adds {}; curl makes {}",
        files.muxed_bytes as f64 / MB,
        files.clusters,
        detail(1),
        detail(2)
    ));
    Ok(())
}

/// The file as AWS's kvssink is fed: `matroskademux ! h264parse ! kvssink`, H.264 access
/// units that kvssink muxes itself, next to the Matroska path (`... ! h264parse !
/// matroskamux streamable=true ! kvssink`) and the same two pipelines ending in `fakesink`.
/// Per MB: the CPU of the whole pipeline, and what kvssink adds over its `fakesink`.
pub fn measure_es(frames: u32, reps: usize, report: &mut Report) {
    eprintln!("elementary-stream input ({frames} frames, {reps} rounds):");
    if let Err(e) = es_rounds(frames, reps, report) {
        report.failed("elementary-stream input", e);
    }
}

fn es_rounds(frames: u32, reps: usize, report: &mut Report) -> Result<(), String> {
    let files = prepare(frames)?;
    let plugin = PluginEnv::new("http://127.0.0.1:1")?;
    let upload = |chain: &str, n: usize| {
        let stream = format!("es-{}-{n}", std::process::id());
        upload_checked(
            &plugin,
            &files,
            &format!("{chain} ! kvssink stream-name={stream} streaming-type=realtime"),
            &stream,
            false,
        )
    };
    const ES: &str = "matroskademux ! h264parse";
    let (mut es_total, mut mkv_total, mut es_added, mut mkv_added) =
        (vec![], vec![], vec![], vec![]);
    for n in 0..reps {
        let es_fake = measure(
            launch(&plugin.env, &files, &format!("{ES} ! fakesink sync=false")),
            false,
        )?
        .0;
        let mkv_fake = measure(
            launch(
                &plugin.env,
                &files,
                &format!("{DEMUX} ! fakesink sync=false"),
            ),
            false,
        )?
        .0;
        let es = upload(ES, 2 * n)?;
        let mkv = upload(DEMUX, 2 * n + 1)?;
        let per_mb = |d: Duration| ms_per_mb(d, files.muxed_bytes);
        eprintln!(
            "  CPU/MB: h264parse ! kvssink {:.3} ms (fakesink {:.3}), h264parse ! matroskamux ! \
             kvssink {:.3} ms (fakesink {:.3})",
            per_mb(es.cpu),
            per_mb(es_fake.cpu),
            per_mb(mkv.cpu),
            per_mb(mkv_fake.cpu)
        );
        es_total.push(per_mb(es.cpu));
        mkv_total.push(per_mb(mkv.cpu));
        es_added.push(per_mb(es.cpu.saturating_sub(es_fake.cpu)));
        mkv_added.push(per_mb(mkv.cpu.saturating_sub(mkv_fake.cpu)));
    }
    let ratios: Vec<f64> = es_total
        .iter()
        .zip(&mkv_total)
        .map(|(e, m)| e / m)
        .collect();
    report.row(Row {
        metric: "elementary-stream input: CPU per MB of the whole pipeline".into(),
        kvssink: format!("{:.3} ms ({})", median(es_total), spread(&ratios)),
        reference: format!(
            "matroskamux ! kvssink {:.3} ms ({:.2}x)",
            median(mkv_total),
            median(ratios.clone())
        ),
        target: "-".into(),
        ok: None,
    });
    report.row(Row {
        metric: "  CPU per MB kvssink adds over fakesink".into(),
        kvssink: format!("{:.3} ms, muxing included", median(es_added.clone())),
        reference: format!("Matroska input {:.3} ms", median(mkv_added)),
        target: "-".into(),
        ok: None,
    });
    Ok(())
}

/// A recording uploaded as users type it: `filesrc ! matroskademux ! h264parse ! matroskamux
/// ! kvssink`, offline by default (a file is not live), so at the service's pace (5 fragments
/// and 12.5 MB a second); next to the same upload with `streaming-type=realtime` (at full
/// speed). Per MB: the CPU of the whole pipeline; and the offline upload's wall time.
pub fn measure_offline(frames: u32, reps: usize, report: &mut Report) {
    eprintln!("offline upload ({frames} frames, {reps} rounds):");
    if let Err(e) = offline_rounds(frames, reps, report) {
        report.failed("offline upload", e);
    }
}

fn offline_rounds(frames: u32, reps: usize, report: &mut Report) -> Result<(), String> {
    let files = prepare(frames)?;
    let plugin = PluginEnv::new("http://127.0.0.1:1")?;
    let upload = |extra: &str, n: usize| {
        let stream = format!("offline-{}-{n}", std::process::id());
        upload_checked(
            &plugin,
            &files,
            &format!("{DEMUX} ! kvssink stream-name={stream} {extra}"),
            &stream,
            false,
        )
    };
    let per_mb = |d: Duration| ms_per_mb(d, files.muxed_bytes);
    let (mut offline, mut realtime, mut ratios, mut walls) = (vec![], vec![], vec![], vec![]);
    for n in 0..reps {
        let off = upload("", 2 * n)?;
        let rt = upload("streaming-type=realtime", 2 * n + 1)?;
        eprintln!(
            "  CPU/MB offline {:.3} ms in {:.1} s, realtime {:.3} ms in {:.1} s",
            per_mb(off.cpu),
            off.wall.as_secs_f64(),
            per_mb(rt.cpu),
            rt.wall.as_secs_f64()
        );
        offline.push(per_mb(off.cpu));
        realtime.push(per_mb(rt.cpu));
        ratios.push(per_mb(off.cpu) / per_mb(rt.cpu));
        walls.push(off.wall.as_secs_f64());
    }
    let mb = files.muxed_bytes as f64 / MB;
    let fps = MAX_FRAGMENTS_PER_SECOND;
    report.row(Row {
        metric: "offline upload (the default for a file): CPU per MB of the whole pipeline".into(),
        kvssink: format!("{:.3} ms", median(offline)),
        reference: format!(
            "realtime {:.3} ms: {:.2}x ({})",
            median(realtime),
            median(ratios.clone()),
            spread(&ratios)
        ),
        target: "-".into(),
        ok: None,
    });
    report.row(Row {
        metric: "  its wall time, at the service's pace".into(),
        kvssink: format!("{:.1} s ({})", median(walls.clone()), spread(&walls)),
        reference: format!(
            "{} fragments at {fps} a second: {:.1} s; {mb:.0} MB at {:.1} MB/s: {:.1} s",
            files.clusters,
            files.clusters as f64 / fps as f64,
            MAX_BYTES_PER_SECOND / MB,
            mb * MB / MAX_BYTES_PER_SECOND
        ),
        target: "-".into(),
        ok: None,
    });
    Ok(())
}

/// `filesrc ! <chain>` (ending in `kvssink stream-name=<stream>`) into a fresh kvs-local,
/// which must then hold every cluster of the file; `count`: under perf.
fn upload_checked(
    plugin: &PluginEnv,
    files: &Files,
    chain: &str,
    stream: &str,
    count: bool,
) -> Result<Run, String> {
    let server = KvsLocal::spawn(Mode::Storing, false)?;
    let (run, _) = measure(launch(&plugin.with_url(&server.url), files, chain), count)?;
    let got = server.received(stream)?;
    server.stop();
    if got.fragments != files.clusters as u64 {
        return Err(format!(
            "{chain}: kvs-local holds {} of {} fragments",
            got.fragments, files.clusters
        ));
    }
    Ok(run)
}

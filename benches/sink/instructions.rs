//! Instructions per MB of the file upload, counted rather than timed: valgrind's cachegrind
//! (no cache simulation) counts every user-space instruction a process executes, all threads
//! together, so the same build gives the same figure within about 0.1 % however loaded the
//! machine is, where CPU time spreads by tens of per cent on a shared one (and this VM has no
//! hardware counters for `perf stat -e instructions`).
//!
//! Counted: the file upload into fakesink, into kvssink, and curl uploading the same bytes;
//! and kvs-local (discard mode, itself under cachegrind) receiving kvssink's upload and
//! curl's. Per MB, from the difference between the long file and the short one, so that
//! starting and stopping are left out. What the counts leave out is the kernel's work (the
//! socket writes, page faults, context switches): that is in the CPU rows of the `file`
//! part, which these rows explain, not replace.

use std::process::{Command, Stdio};

use crate::file::{DEMUX, Files, SHORT_FRAMES, launch, pipeline, prepare, under};
use crate::report::{MB, Report, Row};
use crate::rss::PluginEnv;
use crate::server::{KvsLocal, Mode};
use crate::uploads::{create_stream_with_curl, curl_outcome, curl_put_media};

/// Instructions of one file's uploads.
#[derive(Clone, Copy, Default)]
struct Counts {
    fakesink: u64,
    kvssink: u64,
    curl: u64,
    /// kvs-local receiving kvssink's upload, and curl's.
    server_kvssink: u64,
    server_curl: u64,
}

fn valgrind(log: &std::path::Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=cachegrind".into(),
        "--cache-sim=no".into(),
        "--cachegrind-out-file=/dev/null".into(),
        format!("--log-file={}", log.display()),
    ]
}

/// The instruction total valgrind wrote to `log`.
fn total(log: &std::path::Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    text.lines()
        .find_map(|l| {
            l.split_once("I   refs:")
                .or_else(|| l.split_once("I refs:"))
        })
        .and_then(|(_, n)| n.trim().replace(',', "").parse().ok())
        .ok_or_else(|| format!("no instruction count in {}: {text}", log.display()))
}

/// Runs `cmd` to its end under cachegrind: its instructions and its standard output.
fn counted(cmd: &Command) -> Result<(u64, String), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = dir.path().join("log");
    let out = under(&valgrind(&log), cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !out.status.success() {
        return Err(format!("{:?} failed under valgrind: {}", cmd, out.status));
    }
    Ok((
        total(&log)?,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// kvs-local in discard mode under cachegrind, `upload` run against its URL, then kvs-local's
/// instructions.
fn with_counted_server(
    upload: impl FnOnce(&str) -> Result<u64, String>,
) -> Result<(u64, u64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = dir.path().join("log");
    // Its report (written at exit) is not needed.
    let report = vec![
        "--report".into(),
        dir.path().join("report").display().to_string(),
    ];
    let server = KvsLocal::spawn_under(&valgrind(&log), &report, Mode::Discarding, false)?;
    let client = upload(&server.url);
    server.terminate();
    Ok((client?, total(&log)?))
}

fn count(files: &Files, plugin: &PluginEnv, n: usize) -> Result<Counts, String> {
    let (fakesink, _) = counted(&pipeline(&plugin.env, files, "fakesink sync=false"))?;
    let stream = format!("instructions-{}-{n}", std::process::id());
    let (kvssink, server_kvssink) = with_counted_server(|url| {
        let chain = format!("{DEMUX} ! kvssink stream-name={stream} streaming-type=realtime");
        let (n, _) = counted(&launch(&plugin.with_url(url), files, &chain))?;
        Ok(n)
    })?;
    let (curl, server_curl) = with_counted_server(|url| {
        let stream = format!("{stream}-curl");
        create_stream_with_curl(url, &stream)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let acks = dir.path().join("acks");
        let cmd = curl_put_media(url, &stream, &files.muxed.display().to_string(), &acks);
        let (n, out) = counted(&cmd)?;
        curl_outcome(0, &out, &acks, files.clusters)?;
        Ok(n)
    })?;
    Ok(Counts {
        fakesink,
        kvssink,
        curl,
        server_kvssink,
        server_curl,
    })
}

/// Instructions per MB: kvssink's next to curl's, and kvs-local's receiving each.
pub fn measure(frames: u32, report: &mut Report) {
    let has_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_valgrind {
        report.note(
            "instructions part skipped: valgrind is not installed \
             (apt-get install --no-install-recommends valgrind)"
                .into(),
        );
        return;
    }
    eprintln!("instructions (cachegrind) of the file upload, {frames} and {SHORT_FRAMES} frames:");
    if let Err(e) = rows(frames, report) {
        report.failed("instructions", e);
    }
}

fn rows(frames: u32, report: &mut Report) -> Result<(), String> {
    let long = prepare(frames)?;
    let short = prepare(SHORT_FRAMES)?;
    let mb = (long.muxed_bytes - short.muxed_bytes) as f64 / MB;
    let plugin = PluginEnv::new("http://127.0.0.1:1")?;
    let big = count(&long, &plugin, 0)?;
    let small = count(&short, &plugin, 1)?;
    let per_mb = |f: fn(&Counts) -> u64| (f(&big) as f64 - f(&small) as f64) / mb;
    let added = per_mb(|c| c.kvssink) - per_mb(|c| c.fakesink);
    let curl = per_mb(|c| c.curl);
    eprintln!(
        "  per MB: fakesink {:.0}, kvssink {:.0}, curl {curl:.0}; kvs-local receiving kvssink's \
         {:.0}, curl's {:.0}",
        per_mb(|c| c.fakesink),
        per_mb(|c| c.kvssink),
        per_mb(|c| c.server_kvssink),
        per_mb(|c| c.server_curl)
    );
    let k = |n: f64| format!("{:.0} k", n / 1e3);
    report.row(Row {
        metric: "file upload: user-space instructions per MB kvssink adds over fakesink".into(),
        kvssink: k(added),
        reference: format!("curl {} ({:.1}x)", k(curl), added / curl),
        target: "- (counted, not timed)".into(),
        ok: None,
    });
    let on_start = small.kvssink as f64 - small.fakesink as f64;
    report.row(Row {
        metric: "  and once, at start (the short file's)".into(),
        kvssink: format!("{:.1} M", on_start / 1e6),
        reference: format!("curl {:.1} M in all", small.curl as f64 / 1e6),
        target: "-".into(),
        ok: None,
    });
    let from_kvssink = per_mb(|c| c.server_kvssink);
    let from_curl = per_mb(|c| c.server_curl);
    report.row(Row {
        metric: "  kvs-local (discard mode) receiving it, per MB".into(),
        kvssink: k(from_kvssink),
        reference: format!(
            "from curl {} ({:.2}x)",
            k(from_curl),
            from_kvssink / from_curl
        ),
        target: "-".into(),
        ok: None,
    });
    Ok(())
}

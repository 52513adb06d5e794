//! AWS's own kvssink next to ours: the GStreamer element of AWS's C++ producer SDK
//! (`libgstkvssink.so`, element `kvssink`), when `KVSSINK_OFFICIAL_PLUGIN_DIR` names a directory
//! holding a build of it (nothing of AWS's is built or shipped here; `benches/README.md` says how
//! to build one).
//!
//! The same H.264 file goes through the same pipeline into a fresh kvs-local, each run in its own
//! `gst-launch-1.0` process: `filesrc ! qtdemux ! h264parse [! identity sync=true] !
//! video/x-h264,stream-format=avc,alignment=au !` then `fakesink`, our kvssink
//! (`streaming-type=realtime`, as AWS's element streams by default) or AWS's kvssink, as typed
//! (no log configuration: it logs at DEBUG level to its standard output) and with a log4cplus
//! configuration at WARN level. AWS's element takes H.264 frames and makes the Matroska itself,
//! and it drops the first frames of `matroskademux` (no DTS), hence MP4 and `qtdemux`, the input
//! of AWS's own file example. Both elements are measured as `file.rs` measures ours: CPU from
//! `wait4`, system calls with `perf stat`, per MB over the difference with a 60-frame file.
//!
//! Our plugin is also named `kvssink`: AWS's is loaded from its directory alone, with a
//! registry of its own, and the bench checks that the `kvssink` it gets is AWS's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::file::{
    CALLS, Files, Run, SHORT_FRAMES, data_dir, gst_launch, measure, median, prepare, spread,
};
use crate::report::{MB, Report, Row, mib};
use crate::rss::PluginEnv;
use crate::server::{ACCESS_KEY, KvsLocal, Mode, REGION, SECRET_KEY, signed_call};

/// The directory holding AWS's `libgstkvssink.so`.
pub const DIR_ENV: &str = "KVSSINK_OFFICIAL_PLUGIN_DIR";
const SO: &str = "libgstkvssink.so";

/// log4cplus at WARN on the console: AWS's element without its DEBUG lines.
const WARN_CONFIG: &str = "log4cplus.rootLogger=WARN, Console\n\
    log4cplus.appender.Console=log4cplus::ConsoleAppender\n\
    log4cplus.appender.Console.layout=log4cplus::PatternLayout\n\
    log4cplus.appender.Console.layout.ConversionPattern=[%-5p] %m%n\n";

/// A build of AWS's element, with its own registry and log configuration.
pub struct Official {
    dir: PathBuf,
    tmp: tempfile::TempDir,
}

/// AWS's element from `KVSSINK_OFFICIAL_PLUGIN_DIR`; `None` when that is unset; an error when it
/// is set but does not give AWS's element.
pub fn from_env() -> Result<Option<Official>, String> {
    let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    if !dir.join(SO).is_file() {
        return Err(format!("{DIR_ENV}={}: no {SO} there", dir.display()));
    }
    if dir.join("libgstkvs.so").exists() {
        return Err(format!(
            "{DIR_ENV}={} also holds our libgstkvs.so: give AWS's element a directory of its own",
            dir.display()
        ));
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    // Its working directory: AWS's element reads `../kvs_log_configuration` when no
    // log-config is given, and there is none above this one.
    std::fs::create_dir(tmp.path().join("run")).map_err(|e| e.to_string())?;
    std::fs::write(tmp.path().join("warn.log4cplus"), WARN_CONFIG).map_err(|e| e.to_string())?;
    let official = Official { dir, tmp };
    // Builds its registry, and checks that this kvssink is AWS's.
    let out = Command::new("gst-inspect-1.0")
        .arg("kvssink")
        .envs(official.env("http://127.0.0.1:1"))
        .output()
        .map_err(|e| format!("gst-inspect-1.0: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains(SO) {
        return Err(format!(
            "gst-inspect-1.0 kvssink with GST_PLUGIN_PATH={} did not give AWS's element: {}{}",
            official.dir.display(),
            text.lines().find(|l| l.contains("Filename")).unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Some(official))
}

impl Official {
    /// The environment of a `gst-launch-1.0` running AWS's element against kvs-local at `url`.
    fn env(&self, url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("GST_PLUGIN_PATH", self.dir.display().to_string()),
            (
                "GST_REGISTRY",
                self.tmp.path().join("registry.bin").display().to_string(),
            ),
            ("CONTROL_PLANE_URI", url.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ]
    }

    pub fn describe(&self) -> String {
        self.dir.join(SO).display().to_string()
    }
}

/// The sinks compared, in the order each round runs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    Fakesink,
    Ours,
    /// AWS's element as typed: no log configuration (DEBUG lines on its standard output).
    Aws,
    /// AWS's element with `log-config` at WARN.
    AwsWarn,
}

const SINKS: [Sink; 4] = [Sink::Fakesink, Sink::Ours, Sink::Aws, Sink::AwsWarn];

/// The H.264 file of `files` in MP4 (the same frames), made once next to it.
fn mp4(files: &Files) -> Result<PathBuf, String> {
    let stem = files
        .source
        .file_stem()
        .ok_or("source file without a name")?
        .to_string_lossy();
    let mp4 = data_dir().join(format!("{stem}.mp4"));
    if !mp4.exists() {
        let partial = mp4.with_extension("mp4.partial");
        gst_launch(&format!(
            "filesrc location={} ! matroskademux ! h264parse ! mp4mux ! filesink location={}",
            files.source.display(),
            partial.display()
        ))?;
        std::fs::rename(&partial, &mp4).map_err(|e| e.to_string())?;
    }
    Ok(mp4)
}

fn h264_pipeline(mp4: &Path, paced: bool, tail: &str) -> Command {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", mp4.display()))
        .args(["!", "qtdemux", "!", "h264parse", "!"]);
    if paced {
        cmd.args(["identity", "sync=true", "!"]);
    }
    cmd.args(["video/x-h264,stream-format=avc,alignment=au", "!"])
        .args(tail.split_whitespace());
    cmd
}

/// Fragments kvs-local holds for `stream` (ListFragments): all of them, and how many distinct
/// producer timestamps (AWS's element sends some fragments again on a new connection).
fn fragments(url: &str, stream: &str) -> Result<(usize, usize), String> {
    let (mut total, mut distinct) = (0, BTreeSet::new());
    let mut next: Option<String> = None;
    loop {
        let mut request = json!({"StreamName": stream, "MaxResults": 1000});
        if let Some(token) = &next {
            request["NextToken"] = token.as_str().into();
        }
        let page = signed_call(url, "listFragments", &request)?;
        let list = page["Fragments"]
            .as_array()
            .ok_or_else(|| format!("ListFragments: {page}"))?;
        total += list.len();
        for f in list {
            let ts = f["ProducerTimestamp"].as_f64().unwrap_or(-1.0);
            distinct.insert((ts * 1000.0).round() as i64);
        }
        next = page["NextToken"].as_str().map(str::to_owned);
        if next.is_none() {
            return Ok((total, distinct.len()));
        }
    }
}

struct Context<'a> {
    official: &'a Official,
    ours: &'a PluginEnv,
    paced: bool,
    /// Fragments sent again by AWS's element, over every run.
    resent: usize,
    /// AWS's user agent, from its DEBUG lines.
    user_agent: Option<String>,
}

impl Context<'_> {
    /// One run of `sink` on `files` (`count`: under perf).
    fn run(
        &mut self,
        sink: Sink,
        files: &Files,
        mp4: &Path,
        tag: &str,
        count: bool,
    ) -> Result<Run, String> {
        if sink == Sink::Fakesink {
            let cmd = h264_pipeline(mp4, self.paced, "fakesink sync=false");
            let mut cmd = cmd;
            cmd.envs(self.ours.env.iter().map(|(k, v)| (k, v)));
            return measure(cmd, count).map(|(r, _)| r);
        }
        let server = KvsLocal::spawn(Mode::Storing, false)?;
        let stream = format!("official-{}-{tag}", std::process::id());
        let (run, out) = match sink {
            Sink::Ours => {
                let tail = format!("kvssink stream-name={stream} streaming-type=realtime");
                let mut cmd = h264_pipeline(mp4, self.paced, &tail);
                cmd.envs(self.ours.with_url(&server.url));
                measure(cmd, count)?
            }
            _ => {
                let mut tail = format!("kvssink stream-name={stream} aws-region={REGION}");
                if sink == Sink::AwsWarn {
                    let config = self.official.tmp.path().join("warn.log4cplus");
                    tail.push_str(&format!(" log-config={}", config.display()));
                }
                let mut cmd = h264_pipeline(mp4, self.paced, &tail);
                cmd.envs(self.official.env(&server.url))
                    .env_remove("AWS_SESSION_TOKEN")
                    .current_dir(self.official.tmp.path().join("run"));
                measure(cmd, count)?
            }
        };
        let (total, distinct) = fragments(&server.url, &stream)?;
        server.stop();
        let who = if sink == Sink::Ours {
            "our kvssink"
        } else {
            "AWS's kvssink"
        };
        if distinct != files.clusters || (sink == Sink::Ours && total != files.clusters) {
            return Err(format!(
                "{who}: kvs-local holds {total} fragments ({distinct} distinct) of {}",
                files.clusters
            ));
        }
        self.resent += total - distinct;
        if self.user_agent.is_none()
            && let Some(at) = out.find("AWS-SDK-KVS-CPP-CLIENT/")
        {
            let ua = out[at..].split_whitespace().next().unwrap_or_default();
            self.user_agent = Some(ua.to_owned());
        }
        Ok(run)
    }
}

/// Per-sink figures of one round, per MB over the difference between the long and the short
/// file (start-up excluded).
struct Round {
    /// CPU the sink adds over fakesink, ms per MB (over the difference with the short file).
    cpu: [f64; 4],
    /// The same over the whole long file (start-up included).
    cpu_whole: [f64; 4],
    /// MB/s over the whole long file (start-up included).
    rate: [f64; 4],
    peak_mib: [f64; 4],
    /// System calls the sink adds over fakesink per MB, by name ("total" for all).
    calls: Option<[BTreeMap<String, f64>; 4]>,
}

/// AWS's element next to ours on `frames` frames, `reps` rounds; `paced`: at 30 fps.
pub fn compare(official: &Official, frames: u32, reps: usize, paced: bool, report: &mut Report) {
    let part = if paced { "paced 30 fps" } else { "file upload" };
    eprintln!(
        "{part}, our kvssink next to AWS's ({frames} frames of H.264 from MP4, {reps} rounds):"
    );
    if let Err(e) = compare_rounds(official, frames, reps, paced, part, report) {
        report.failed(&format!("{part} against AWS's kvssink"), e);
    }
}

fn compare_rounds(
    official: &Official,
    frames: u32,
    reps: usize,
    paced: bool,
    part: &str,
    report: &mut Report,
) -> Result<(), String> {
    let (long, short) = (prepare(frames)?, prepare(SHORT_FRAMES)?);
    let (long_mp4, short_mp4) = (mp4(&long)?, mp4(&short)?);
    let mb = (long.muxed_bytes - short.muxed_bytes) as f64 / MB;
    let long_mb = long.muxed_bytes as f64 / MB;
    let ours = PluginEnv::new("http://127.0.0.1:1")?;
    let perf = Command::new("perf")
        .args(["stat", "-e", "raw_syscalls:sys_enter", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cx = Context {
        official,
        ours: &ours,
        paced,
        resent: 0,
        user_agent: None,
    };
    let mut rounds = Vec::new();
    for n in 0..reps {
        // [count][short, long][sink]
        let mut runs: Vec<[[Run; 4]; 2]> = Vec::new();
        for count in [false, true] {
            if count && !perf {
                continue;
            }
            let mut pair: [[Run; 4]; 2] = Default::default();
            for (i, (files, mp4)) in [(&short, &short_mp4), (&long, &long_mp4)]
                .into_iter()
                .enumerate()
            {
                for (k, sink) in SINKS.into_iter().enumerate() {
                    let tag = format!("{n}-{i}-{k}-{}", u8::from(count));
                    pair[i][k] = cx.run(sink, files, mp4, &tag, count)?;
                }
            }
            runs.push(pair);
        }
        let [s, l] = &runs[0];
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let slope = |k: usize| (ms(l[k].cpu) - ms(s[k].cpu)) / mb;
        let cpu = std::array::from_fn(|k| slope(k) - slope(0));
        let cpu_whole = std::array::from_fn(|k| (ms(l[k].cpu) - ms(l[0].cpu)) / long_mb);
        let rate = std::array::from_fn(|k| long_mb / l[k].wall.as_secs_f64());
        let peak_mib = std::array::from_fn(|k| mib(l[k].peak_kib));
        let calls = runs.get(1).map(|[s, l]| {
            let per_mb = |k: usize, c: &str| {
                let n = |r: &Run| r.calls.get(c).copied().unwrap_or(0) as f64;
                (n(&l[k]) - n(&s[k])) / mb
            };
            std::array::from_fn(|k| {
                std::iter::once("total")
                    .chain(CALLS)
                    .map(|c| (c.to_owned(), per_mb(k, c) - per_mb(0, c)))
                    .collect()
            })
        });
        let r = Round {
            cpu,
            cpu_whole,
            rate,
            peak_mib,
            calls,
        };
        eprintln!(
            "  CPU/MB over fakesink: ours {:.3} ms, AWS {:.3} ms, AWS at WARN {:.3} ms{}",
            r.cpu[1],
            r.cpu[2],
            r.cpu[3],
            r.calls.as_ref().map_or(String::new(), |c| format!(
                "; syscalls/MB over fakesink: ours {:.1}, AWS {:.1}, AWS at WARN {:.1}",
                c[1]["total"], c[2]["total"], c[3]["total"]
            ))
        );
        rounds.push(r);
    }
    // One row per figure: ours, AWS's as typed, AWS's at WARN, and ours / AWS's per round;
    // `limit`: the target for ours / AWS's as typed (CPU 0.8x, system calls 1.0x).
    let row = |report: &mut Report,
               metric: &str,
               unit: &str,
               limit: Option<f64>,
               v: &dyn Fn(&Round) -> [f64; 4]| {
        let col = |k: usize| rounds.iter().map(|r| v(r)[k]).collect::<Vec<f64>>();
        let ratio = |k: usize| {
            rounds
                .iter()
                .map(|r| v(r)[1] / v(r)[k])
                .collect::<Vec<f64>>()
        };
        let fmt = |x: Vec<f64>| {
            let m = median(x.clone());
            if m < 10.0 {
                format!("{m:.3}{unit} ({})", spread(&x))
            } else {
                format!("{m:.1}{unit} ({})", spread(&x))
            }
        };
        let (r_aws, r_warn) = (ratio(2), ratio(3));
        let ok = limit.map(|l| median(r_aws.clone()) <= l);
        report.row(Row {
            metric: format!("vs AWS's kvssink, {part}: {metric}"),
            kvssink: fmt(col(1)),
            reference: format!(
                "AWS {} = {:.2}x ({}); AWS, log at WARN {} = {:.2}x ({})",
                fmt(col(2)),
                median(r_aws.clone()),
                spread(&r_aws),
                fmt(col(3)),
                median(r_warn.clone()),
                spread(&r_warn)
            ),
            target: limit.map_or("-".into(), |l| format!("<= {l:.1}x AWS")),
            ok,
        });
    };
    row(report, "CPU per MB over fakesink", " ms", Some(0.8), &|r| {
        r.cpu
    });
    if !paced {
        row(
            report,
            "  the same over the whole file (start-up included)",
            " ms",
            Some(0.8),
            &|r| r.cpu_whole,
        );
        row(report, "throughput, whole file", " MB/s", None, &|r| r.rate);
        row(report, "peak RSS", " MiB", None, &|r| r.peak_mib);
    }
    if rounds.iter().all(|r| r.calls.is_some()) {
        row(
            report,
            "syscalls per MB over fakesink",
            "",
            Some(1.0),
            &|r| {
                let c = r.calls.as_ref().unwrap();
                std::array::from_fn(|k| c[k]["total"])
            },
        );
        let detail = |k: usize| {
            CALLS
                .iter()
                .map(|c| {
                    let v = rounds
                        .iter()
                        .map(|r| r.calls.as_ref().unwrap()[k][*c])
                        .collect();
                    format!("{c} {:.1}", median(v))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        report.note(format!(
            "{part} against AWS's kvssink, system calls per MB over fakesink: ours {}; AWS's as \
             typed {}; AWS's at WARN {}",
            detail(1),
            detail(2),
            detail(3)
        ));
    } else {
        report.note(format!(
            "{part} against AWS's kvssink: perf is missing, no system call counts"
        ));
    }
    report.note(format!(
        "{part} against AWS's kvssink ({}, {}): {frames} frames, {:.0} MB as Matroska, \
         {} clusters; per MB over the difference with the {SHORT_FRAMES}-frame file; AWS's element \
         sent {} fragments twice over all runs (kvs-local kept both copies; every producer \
         timestamp was there)",
        official.describe(),
        cx.user_agent.as_deref().unwrap_or("user agent not seen"),
        long_mb,
        long.clusters,
        cx.resent
    ));
    Ok(())
}

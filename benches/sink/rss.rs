//! Peak RSS of a live `x264enc ! matroskamux ! kvssink` pipeline (gst-launch-1.0, the plugin
//! from this build) streaming into kvs-local, next to the same pipeline ending in `fakesink`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::process::{exited_ok, status_kib, wait4};
use crate::report::{Report, Row, mib};
use crate::server::{ACCESS_KEY, KvsLocal, Mode, REGION, SECRET_KEY};

struct Rss {
    /// Largest VmRSS seen by sampling every 50 ms, KiB.
    sampled_kib: u64,
    /// Peak RSS from the kernel (ru_maxrss, = VmHWM), KiB.
    hwm_kib: u64,
    /// Largest RssAnon seen, KiB.
    anon_kib: u64,
}

/// Runs a live 720p30 x264 pipeline through matroskamux into `tail`, sampling its RSS.
fn rss_run(env: &[(&'static str, String)], buffers: u32, tail: &[&str]) -> Result<Rss, String> {
    let num_buffers = format!("num-buffers={buffers}");
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-q", "videotestsrc", "is-live=true", &num_buffers, "!"])
        .args(["video/x-raw,width=1280,height=720,framerate=30/1", "!"])
        .args(["x264enc", "tune=zerolatency", "speed-preset=ultrafast"])
        .args(["key-int-max=30", "bitrate=4000", "!", "h264parse", "!"])
        .args(["matroskamux", "streamable=true", "!"])
        .args(tail)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("gst-launch-1.0: {e}"))?;
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (peak, anon) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, peak, anon) = (done.clone(), peak.clone(), anon.clone());
        std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while !done.load(Ordering::Acquire) {
                let Ok(status) = std::fs::read_to_string(&path) else {
                    break;
                };
                if let Some(kib) = status_kib(&status, "VmRSS:") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                if let Some(kib) = status_kib(&status, "RssAnon:") {
                    anon.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (status, ru) = wait4(pid);
    done.store(true, Ordering::Release);
    sampler.join().unwrap();
    let errors = errors.join().unwrap();
    if !exited_ok(status) {
        return Err(format!("gst-launch-1.0 ... ! {}: {errors}", tail.join(" ")));
    }
    Ok(Rss {
        sampled_kib: peak.load(Ordering::Relaxed),
        hwm_kib: ru.ru_maxrss as u64,
        anon_kib: anon.load(Ordering::Relaxed),
    })
}

/// The plugin from this build: the cdylib cargo built next to the rlib this binary links
/// (`target/<profile>/deps/libgstkvs.so`), else the one `cargo build` placed in
/// `target/<profile>/`.
fn plugin_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [
        deps.join("libgstkvs.so"),
        deps.parent()?.join("libgstkvs.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

struct RssPair {
    kvssink: Rss,
    fakesink: Rss,
}

/// A private plugin directory holding the `libgstkvs.so` of this build, and the environment
/// for `gst-launch-1.0` to load it and reach kvs-local at `url` with the demo key.
pub struct PluginEnv {
    _dir: tempfile::TempDir,
    pub env: Vec<(&'static str, String)>,
}

impl PluginEnv {
    pub fn new(url: &str) -> Result<PluginEnv, String> {
        let so = plugin_path().ok_or(
            "libgstkvs.so not found next to the bench binary: build it with \
             `cargo build --release -p gst-plugin-kvs --lib`",
        )?;
        // `cargo bench` builds the library the bench links, not always the plugin itself:
        // an old plugin would be measured as if it were this tree.
        if crate::server::older_than_sources(&so, &["src", "kvs-format/src"]) {
            return Err(format!(
                "{} is older than the plugin's sources: rebuild it with \
                 `cargo build --release -p gst-plugin-kvs --lib`",
                so.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).map_err(|e| e.to_string())?;
        std::fs::copy(&so, plugins.join("libgstkvs.so")).map_err(|e| e.to_string())?;
        let env = vec![
            ("GST_PLUGIN_PATH", plugins.display().to_string()),
            (
                "GST_REGISTRY",
                dir.path().join("registry.bin").display().to_string(),
            ),
            ("CONTROL_PLANE_URI", url.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ];
        // Builds the registry, and checks that the plugin loads.
        let inspect = Command::new("gst-inspect-1.0")
            .arg("kvssink")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|e| format!("gst-inspect-1.0: {e}"))?;
        if !inspect.status.success() {
            return Err(format!(
                "gst-inspect-1.0 kvssink failed with {}: {}",
                so.display(),
                String::from_utf8_lossy(&inspect.stderr)
            ));
        }
        Ok(PluginEnv { _dir: dir, env })
    }

    /// The same environment for another kvs-local.
    pub fn with_url(&self, url: &str) -> Vec<(&'static str, String)> {
        let mut env = self.env.clone();
        for (k, v) in &mut env {
            if *k == "CONTROL_PLANE_URI" {
                *v = url.to_owned();
            }
        }
        env
    }
}

fn rss_pair(buffers: u32) -> Result<RssPair, String> {
    let server = KvsLocal::spawn(Mode::Storing, false)?;
    let plugin = PluginEnv::new(&server.url)?;
    let stream = format!("stream-name=rss-{}", std::process::id());
    let fakesink = rss_run(&plugin.env, buffers, &["fakesink", "sync=false"])?;
    let kvssink = rss_run(&plugin.env, buffers, &["kvssink", &stream])?;
    server.stop();
    Ok(RssPair { kvssink, fakesink })
}

/// `buffers` frames of live 720p30 x264 through each pipeline; the peak RSS difference.
pub fn measure(buffers: u32, report: &mut Report) {
    eprintln!("RSS ({buffers} frames of live 720p30 x264, each pipeline)...");
    match rss_pair(buffers) {
        Ok(r) => {
            let diff = mib(r.kvssink.hwm_kib) - mib(r.fakesink.hwm_kib);
            report.row(Row {
                metric: "peak RSS over fakesink".into(),
                kvssink: format!("{diff:+.1} MiB"),
                reference: format!(
                    "{:.1} vs {:.1} MiB",
                    mib(r.kvssink.hwm_kib),
                    mib(r.fakesink.hwm_kib)
                ),
                target: "< 10 MiB".into(),
                ok: Some(diff < 10.0),
            });
            report.note(format!(
                "RSS: sampled VmRSS peak {:.1} MiB (kvssink) vs {:.1} MiB (fakesink); RssAnon \
                 peak {:.1} vs {:.1} MiB",
                mib(r.kvssink.sampled_kib),
                mib(r.fakesink.sampled_kib),
                mib(r.kvssink.anon_kib),
                mib(r.fakesink.anon_kib)
            ));
        }
        Err(e) => report.failed("RSS", e),
    }
}

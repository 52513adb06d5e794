//! Pipelines run where users run them: in `gst-launch-1.0` (a C program that keeps SIGPIPE at
//! its default action) and in Debian's `python3` with PyGObject, loading the plugin this build
//! produced, against a kvs-local in the test process.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use std::os::unix::process::ExitStatusExt;

use super::{DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Server};

/// `target/debug` (or wherever this test binary lives), where `cargo build` puts
/// `libgstkvs.so`.
pub fn plugin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_owned();
    assert!(
        dir.join("libgstkvs.so").exists(),
        "build the plugin first (cargo build): {} has no libgstkvs.so",
        dir.display()
    );
    dir
}

/// What a host process did.
#[derive(Debug)]
pub struct HostRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// `kvs-*` element messages, parsed back from `gst-launch-1.0 -m` (or the Python
    /// example's) output.
    pub messages: Vec<gst::Structure>,
}

impl HostRun {
    /// Exit code 0, and not killed by a signal (SIGPIPE would show here as 13).
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "host process failed: {} (signal {:?})\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.status.signal(),
            tail(&self.stdout),
            tail(&self.stderr)
        );
    }

    /// Exit code 0 and a `kvs-summary` saying every fragment was persisted.
    pub fn assert_all_persisted(&self) {
        self.assert_success();
        assert_eq!(
            self.summary().get::<&str>("outcome").unwrap(),
            "all-persisted",
            "{}",
            self.output()
        );
    }

    /// A time the host printed as `NAME=MS` (ms since the epoch), e.g. `playing-at=`.
    pub fn printed_ms(&self, name: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {}", self.output()))
    }

    /// How long the host's stop took (`run_pipeline.py --stop-after-seconds` prints it).
    pub fn stop_took_ms(&self) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("stop-took-ms="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the pipeline did not stop:\n{}", self.output()))
    }

    pub fn named(&self, name: &str) -> Vec<&gst::Structure> {
        self.messages.iter().filter(|s| s.name() == name).collect()
    }

    /// The `kvs-summary` message (exactly one is expected).
    pub fn summary(&self) -> &gst::Structure {
        let s = self.named("kvs-summary");
        assert_eq!(
            s.len(),
            1,
            "expected one kvs-summary, got {s:?}; {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        );
        s[0]
    }

    /// Everything the process printed.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(6000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    &s[start..]
}

/// Parses the element messages out of `gst-launch-1.0 -m` output lines such as
/// `Got message #42 from element "sink" (element): kvs-ack, event-type=(string)PERSISTED, ...;`.
pub fn parse_messages(stdout: &str) -> Vec<gst::Structure> {
    stdout
        .lines()
        .filter_map(|line| line.split_once("(element): ").map(|(_, s)| s))
        .filter(|s| s.starts_with("kvs-"))
        .filter_map(|s| gst::Structure::from_str(s.trim_end_matches(';')).ok())
        .collect()
}

/// The environment that points any kvssink in the host at `server` with the demo keys, the
/// way a user would: `CONTROL_PLANE_URI` and the standard AWS variables.
pub fn server_env(url: &str) -> Vec<(String, String)> {
    vec![
        ("CONTROL_PLANE_URI".into(), url.to_owned()),
        ("AWS_ACCESS_KEY_ID".into(), DEMO_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), DEMO_SECRET_KEY.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ]
}

/// A host command with the plugin path, an isolated registry and the environment that points
/// kvssink at the endpoint `url`.
pub fn host_command(program: &str, url: &str, registry_dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("GST_PLUGIN_PATH", plugin_dir())
        .env("GST_REGISTRY", registry_dir.join("registry.bin"))
        .env_remove("GST_DEBUG")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        // A Python host that hangs prints where (every thread's stack) when it is aborted.
        .env("PYTHONFAULTHANDLER", "1")
        .envs(server_env(url))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `gst-launch-1.0 -m -e LINE` (the launch line as one argument, as a shell would pass
/// it after quoting) and waits for it, killing it after `timeout`.
pub fn gst_launch(server: &Server, line: &str, timeout: Duration) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(["-m", "-e"]).args(split_launch(line));
    run_host(cmd, timeout)
}

/// Runs LINE in Debian's python3 the way a PyGObject application does
/// (`tests/host/run_pipeline.py`, which prints every `kvs-*` message), with `flags` before it.
pub fn python_launch(server: &Server, flags: &[&str], line: &str, timeout: Duration) -> HostRun {
    let registry = tempfile::tempdir().unwrap();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/run_pipeline.py"))
        .args(flags)
        .arg(line);
    run_host(cmd, timeout)
}

/// Runs `host` (a launch of a pipeline streaming to `stream`); once `server` holds `fragments`
/// of it, the service goes (it stops listening, open connections closed) until the host
/// ends. Returns the host's run.
pub fn with_outage_after(
    server: &Server,
    stream: &str,
    fragments: usize,
    timeout: Duration,
    host: impl FnOnce() -> HostRun + Send,
) -> HostRun {
    outage(server, stream, fragments, None, timeout, host)
}

/// [`with_outage_after`], the service back after `outage` while the host runs on.
pub fn with_outage_between(
    server: &Server,
    stream: &str,
    fragments: usize,
    outage: Duration,
    timeout: Duration,
    host: impl FnOnce() -> HostRun + Send,
) -> HostRun {
    self::outage(server, stream, fragments, Some(outage), timeout, host)
}

fn outage(
    server: &Server,
    stream: &str,
    fragments: usize,
    back_after: Option<Duration>,
    timeout: Duration,
    host: impl FnOnce() -> HostRun + Send,
) -> HostRun {
    let run = std::thread::scope(|s| {
        let run = s.spawn(host);
        let deadline = Instant::now() + timeout;
        while server.fragments(stream).len() < fragments {
            assert!(Instant::now() < deadline, "no {fragments} fragments stored");
            std::thread::sleep(Duration::from_millis(50));
        }
        server.pause_listening();
        if let Some(outage) = back_after {
            std::thread::sleep(outage);
            server.resume_listening();
        }
        run.join().unwrap()
    });
    server.resume_listening();
    run
}

/// Splits a launch line into arguments the way a shell would for an unquoted line: on
/// whitespace, keeping `"..."` together.
pub fn split_launch(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// Starts `cmd`, collects its output and waits for it, killing it after `timeout` (the test
/// then fails with what it printed).
pub fn run_host(cmd: Command, timeout: Duration) -> HostRun {
    run_host_then(cmd, timeout, |_| {})
}

/// [`run_host`], with `meanwhile` given the host's pid on another thread as it runs (to
/// signal it, as a user's Ctrl-C does).
pub fn run_host_then(
    mut cmd: Command,
    timeout: Duration,
    meanwhile: impl FnOnce(libc::pid_t) + Send,
) -> HostRun {
    let child = cmd.spawn().expect("start the host process");
    let pid = child.id() as libc::pid_t;
    std::thread::scope(|s| {
        s.spawn(move || meanwhile(pid));
        wait_host(child, timeout)
    })
}

fn wait_host(mut child: std::process::Child, timeout: Duration) -> HostRun {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            // SIGABRT first: a Python host then prints its threads' stacks (faulthandler).
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGABRT) };
            let grace = Instant::now() + Duration::from_secs(3);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_reader.join().unwrap();
            let stderr = err_reader.join().unwrap();
            panic!(
                "host process still running after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                tail(&stdout),
                tail(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    HostRun {
        status,
        messages: parse_messages(&stdout),
        stdout,
        stderr,
    }
}

/// Signals a process started by this harness ignores or blocks, read from
/// `/proc/<pid>/status` of a child started the same way (`cat /proc/self/status`): the
/// SigIgn and SigBlk masks.
pub fn child_signal_masks() -> (u64, u64) {
    let out = Command::new("cat")
        .arg("/proc/self/status")
        .output()
        .expect("run cat");
    let text = String::from_utf8_lossy(&out.stdout);
    let mask = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    (mask("SigIgn:"), mask("SigBlk:"))
}

/// The bit of a signal in a /proc signal mask.
pub fn signal_bit(signal: i32) -> u64 {
    1 << (signal - 1)
}

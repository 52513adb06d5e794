//! kvs-local as the server: the `kvs-local` binary of this build in a child process, storing
//! (its defaults: in memory, SigV4 checked) or in discard mode (`--discard-media`: requests
//! checked and every fragment acked, the body only scanned for fragment boundaries).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{cpu_of_process, wait4};

/// kvs-local's demo key pair, which it accepts when it has no key configured.
pub const ACCESS_KEY: &str = "KVSLOCALDEMOACCESSKEY";
pub const SECRET_KEY: &str = "kvs-local-demo-secret-key";
pub const REGION: &str = "us-east-1";

/// `KVSSINK_BENCH_DEBUG=1`: kvs-local logs every request and how each body ended.
static DEBUG: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("KVSSINK_BENCH_DEBUG").is_some());

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// kvs-local's defaults: every fragment checked and stored in memory.
    Storing,
    /// `--discard-media`: the ceiling without kvs-local's work on the other core.
    Discarding,
}

impl Mode {
    /// The name of the `KVSSINK_BENCH_ONLY` part and of the progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Storing => "kvs-local",
            Mode::Discarding => "discard",
        }
    }
}

/// A running kvs-local; killed when dropped.
pub struct KvsLocal {
    pub url: String,
    mode: Mode,
    child: Child,
}

/// What kvs-local got of one stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// Fragments stored, or (discarding) acked.
    pub fragments: u64,
    /// Their bytes: the clusters as received.
    pub cluster_bytes: u64,
    /// Every PutMedia body byte, stream header included (discarding only: from the report).
    pub body_bytes: Option<u64>,
}

/// The `kvs-local` binary: `KVS_LOCAL_BIN`, else the one `cargo build -p kvs-local --release`
/// puts next to this bench's profile directory (`target/release/kvs-local`).
fn binary() -> Result<PathBuf, String> {
    if let Some(program) = std::env::var_os("KVS_LOCAL_BIN") {
        return Ok(program.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let program = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("kvs-local"))
        .ok_or("no directory above the bench binary")?;
    if !program.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build -p kvs-local --release` (or set KVS_LOCAL_BIN)",
            program.display()
        ));
    }
    warn_if_stale(&program);
    Ok(program)
}

/// Says so (once) when kvs-local's sources are newer than the binary.
fn warn_if_stale(program: &std::path::Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if older_than_sources(program, &["kvs-local/src"]) {
            eprintln!(
                "WARNING: {} is older than kvs-local/src: rebuild it with \
                 `cargo build -p kvs-local --release`",
                program.display()
            );
        }
    });
}

/// Whether a file of `dirs` (relative to the workspace) was changed after `built` was.
pub fn older_than_sources(built: &std::path::Path, dirs: &[&str]) -> bool {
    let Ok(built) = std::fs::metadata(built).and_then(|m| m.modified()) else {
        return false;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    let mut newest = None;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    newest.is_some_and(|newest| newest > built)
}

impl KvsLocal {
    /// Starts kvs-local on a free port; `record_reads` adds `--record-body-reads`.
    pub fn spawn(mode: Mode, record_reads: bool) -> Result<KvsLocal, String> {
        KvsLocal::spawn_under(&[], &[], mode, record_reads)
    }

    /// [`KvsLocal::spawn`] with kvs-local run by `wrapper` (a program and its arguments, such
    /// as `valgrind ...`) and given `args` as well; see [`KvsLocal::terminate`].
    pub fn spawn_under(
        wrapper: &[String],
        args: &[String],
        mode: Mode,
        record_reads: bool,
    ) -> Result<KvsLocal, String> {
        let program = binary()?;
        let mut cmd = match wrapper {
            [] => Command::new(&program),
            [first, rest @ ..] => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(&program);
                cmd
            }
        };
        cmd.args(["--port", "0"]).args(args);
        if mode == Mode::Discarding {
            cmd.arg("--discard-media");
        }
        if record_reads {
            cmd.arg("--record-body-reads");
        }
        if *DEBUG {
            cmd.arg("--verbose");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let Some(url) = line.trim().strip_prefix("kvs-local listening on ") else {
            let _ = child.kill();
            wait4(child.id());
            return Err(format!("kvs-local did not start: {read:?} {line:?}"));
        };
        Ok(KvsLocal {
            url: url.to_owned(),
            mode,
            child,
        })
    }

    /// CPU kvs-local has used so far.
    pub fn cpu(&self) -> Duration {
        cpu_of_process(self.child.id())
    }

    /// What kvs-local holds for `stream`: storing, its fragments (ListFragments); discarding,
    /// the fragments it acked and the body bytes it read (the report).
    pub fn received(&self, stream: &str) -> Result<Received, String> {
        match self.mode {
            Mode::Storing => {
                let (mut fragments, mut cluster_bytes) = (0, 0);
                let mut next: Option<String> = None;
                loop {
                    let mut request = json!({"StreamName": stream, "MaxResults": 1000});
                    if let Some(token) = &next {
                        request["NextToken"] = token.as_str().into();
                    }
                    let page = signed_call(&self.url, "listFragments", &request)?;
                    let list = page["Fragments"]
                        .as_array()
                        .ok_or_else(|| format!("ListFragments: {page}"))?;
                    fragments += list.len() as u64;
                    cluster_bytes += list
                        .iter()
                        .map(|f| f["FragmentSizeInBytes"].as_u64().unwrap_or(0))
                        .sum::<u64>();
                    next = page["NextToken"].as_str().map(str::to_owned);
                    if next.is_none() {
                        break;
                    }
                }
                Ok(Received {
                    fragments,
                    cluster_bytes,
                    body_bytes: None,
                })
            }
            Mode::Discarding => {
                let sessions = self.sessions(stream)?;
                let acked = sessions
                    .iter()
                    .flat_map(|s| s["fragments"].as_array().into_iter().flatten())
                    .filter(|f| f["outcome"] == "discarded");
                let (fragments, cluster_bytes) = acked.fold((0, 0), |(n, b), f| {
                    (n + 1, b + f["size"].as_u64().unwrap_or(0))
                });
                let body_bytes = sessions.iter().map(|s| s["bytes"].as_u64().unwrap_or(0));
                Ok(Received {
                    fragments,
                    cluster_bytes,
                    body_bytes: Some(body_bytes.sum()),
                })
            }
        }
    }

    /// With `record_reads`: the reads of the one PutMedia body of `stream`, each as
    /// (`CLOCK_MONOTONIC` ns when kvs-local got the chunk, body bytes received so far).
    pub fn body_reads(&self, stream: &str) -> Result<Vec<(u64, u64)>, String> {
        let sessions = self.sessions(stream)?;
        let [session] = &sessions[..] else {
            return Err(format!("{} PutMedia sessions for {stream}", sessions.len()));
        };
        let reads = session["reads"]
            .as_array()
            .ok_or("no body reads recorded")?;
        Ok(reads
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_u64().unwrap_or(0);
                (field("monotonic_ns"), field("bytes"))
            })
            .collect())
    }

    /// The PutMedia sessions of `stream` in kvs-local's report.
    fn sessions(&self, stream: &str) -> Result<Vec<Value>, String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail"])
            .arg(format!("{}/__kvs-local/report", self.url))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let mut report: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("kvs-local's report: {e}"))?;
        let Value::Array(sessions) = report["sessions"].take() else {
            return Err("kvs-local's report has no sessions".into());
        };
        Ok(sessions
            .into_iter()
            .filter(|s| s["stream"] == stream)
            .collect())
    }

    /// Stops kvs-local (SIGKILL: nothing of it is needed any more).
    pub fn stop(self) {
        drop(self);
    }

    /// Stops kvs-local with SIGTERM and waits for it to exit, so that what runs it (a
    /// wrapper of [`KvsLocal::spawn_under`]) ends as well and says what it has to say.
    pub fn terminate(mut self) {
        // SAFETY: signals our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for KvsLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        wait4(self.child.id());
    }
}

/// `curl` options signing a request with SigV4 as kvssink does, for kvs-local's demo key.
pub fn curl_auth_args() -> Vec<String> {
    vec![
        "-sS".into(),
        "--aws-sigv4".into(),
        format!("aws:amz:{REGION}:kinesisvideo"),
        "--user".into(),
        format!("{ACCESS_KEY}:{SECRET_KEY}"),
    ]
}

/// A signed JSON call (`POST {url}/{op}`) through curl; the reply's JSON.
pub fn signed_call(url: &str, op: &str, body: &Value) -> Result<Value, String> {
    let out = Command::new("curl")
        .args(curl_auth_args())
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ])
        .arg(format!("{url}/{op}"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{op}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

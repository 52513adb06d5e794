//! End-to-end benchmark of kvssink on loopback; results and how to read them are in
//! `benches/README.md`.
//!
//! 1. Throughput and CPU per MB of `appsrc ! kvssink` pushing matroskamux-shaped buffers into
//!    kvs-local (run as a separate process), next to `curl` uploading the same bytes with the
//!    same writes through a pipe; the same two again into a server that only reads the body
//!    (the ceiling without kvs-local's work on the other core).
//! 2. Buffer-to-socket latency: live-paced buffers into an in-process HTTP server that
//!    timestamps every read of the PutMedia body.
//! 3. Peak RSS of a live `x264enc ! matroskamux ! kvssink` pipeline (gst-launch-1.0, the plugin
//!    from this build) next to the same pipeline ending in `fakesink`.
//!
//! `cargo bench --bench sink` runs everything (a few minutes); `cargo bench --bench sink --
//! --quick` or `KVSSINK_BENCH_QUICK=1` runs a small version as a smoke test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gst::prelude::*;

#[path = "sink/soak.rs"]
mod soak;

const ACCESS_KEY: &str = "KVSLOCALDEMOACCESSKEY";
const SECRET_KEY: &str = "kvs-local-demo-secret-key";
const REGION: &str = "us-east-1";
/// Set in the environment of a copy of this binary that only runs a server.
const ROLE_ENV: &str = "KVSSINK_BENCH_ROLE";
const FPS: u64 = 30;
const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;

// ---------------------------------------------------------------------------------------
// A matroskamux-shaped stream
// ---------------------------------------------------------------------------------------

const ID_EBML: u32 = 0x1A45_DFA3;
const ID_SEGMENT: u32 = 0x1853_8067;
const ID_INFO: u32 = 0x1549_A966;
const ID_TRACKS: u32 = 0x1654_AE6B;
const ID_CLUSTER: u32 = 0x1F43_B675;
const ID_TIMECODE: u32 = 0xE7;
const ID_SIMPLE_BLOCK: u32 = 0xA3;
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// A plausible avcC (profile High, level 3.1, one SPS, one PPS); the bytes are not decoded.
const AVCC: [u8; 19] = [
    0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x04, 0x67, 0x64, 0x00, 0x1F, 0x01, 0x00, 0x04, 0x68,
    0xEE, 0x3C, 0x80,
];

fn put_id(out: &mut Vec<u8>, id: u32) {
    let skip = (id.leading_zeros() / 8) as usize;
    out.extend_from_slice(&id.to_be_bytes()[skip..]);
}

fn put_size(out: &mut Vec<u8>, size: u64, len: usize) {
    let v = size | (1u64 << (7 * len));
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

fn put_element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(out, id);
    let mut len = 1;
    while (1u64 << (7 * len)) - 1 <= body.len() as u64 {
        len += 1;
    }
    put_size(out, body.len() as u64, len);
    out.extend_from_slice(body);
}

fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let skip = ((value.leading_zeros() / 8) as usize).min(7);
    put_element(out, id, &value.to_be_bytes()[skip..]);
}

fn put_str(out: &mut Vec<u8>, id: u32, value: &str) {
    put_element(out, id, value.as_bytes());
}

/// EBML header, Segment of unknown size, Info (1 ms timecodes), Tracks (one H.264 track):
/// everything matroskamux sends before the first Cluster.
fn stream_header() -> Vec<u8> {
    let mut ebml = Vec::new();
    put_uint(&mut ebml, 0x4286, 1); // EBMLVersion
    put_uint(&mut ebml, 0x42F7, 1); // EBMLReadVersion
    put_uint(&mut ebml, 0x42F2, 4); // EBMLMaxIDLength
    put_uint(&mut ebml, 0x42F3, 8); // EBMLMaxSizeLength
    put_str(&mut ebml, 0x4282, "matroska"); // DocType
    put_uint(&mut ebml, 0x4287, 4); // DocTypeVersion
    put_uint(&mut ebml, 0x4285, 2); // DocTypeReadVersion
    let mut out = Vec::new();
    put_element(&mut out, ID_EBML, &ebml);
    put_id(&mut out, ID_SEGMENT);
    out.extend_from_slice(&UNKNOWN_SIZE);
    let mut info = Vec::new();
    put_uint(&mut info, 0x2A_D7B1, 1_000_000); // TimecodeScale
    put_str(&mut info, 0x4D80, "kvssink-bench"); // MuxingApp
    put_str(&mut info, 0x5741, "kvssink-bench"); // WritingApp
    put_element(&mut out, ID_INFO, &info);
    let mut video = Vec::new();
    put_uint(&mut video, 0xB0, 1280); // PixelWidth
    put_uint(&mut video, 0xBA, 720); // PixelHeight
    let mut entry = Vec::new();
    put_uint(&mut entry, 0xD7, 1); // TrackNumber
    put_uint(&mut entry, 0x73C5, 1); // TrackUID
    put_uint(&mut entry, 0x83, 1); // TrackType: video
    put_str(&mut entry, 0x86, "V_MPEG4/ISO/AVC"); // CodecID
    put_element(&mut entry, 0x63A2, &AVCC); // CodecPrivate
    put_element(&mut entry, 0xE0, &video); // Video
    let mut tracks = Vec::new();
    put_element(&mut tracks, 0xAE, &entry); // TrackEntry
    put_element(&mut out, ID_TRACKS, &tracks);
    out
}

/// One buffer as matroskamux pushes it.
struct Piece {
    bytes: Bytes,
    /// Set on the first buffer of a frame (a cluster start, or a block header): the frame's
    /// index, for live pacing.
    frame: Option<u64>,
}

/// Frame sizes between 40 and 60 KB (the key frame 60 KB), deterministic.
fn frame_len(cluster: u64, frame: u64) -> usize {
    if frame == 0 {
        60_000
    } else {
        40_000 + ((cluster * 7919 + frame * 3571) % 20_000) as usize
    }
}

/// About this many bytes of stream per cluster (30 frames of ~50 KB).
const CLUSTER_BYTES: u64 = 1_500_000;

/// The stream, cut as matroskamux cuts it: the header; then per cluster a buffer with the
/// Cluster ID, unknown size and Timecode; then per frame a buffer with the SimpleBlock header
/// (ID, 8-byte size, track, relative timecode, flags) and a buffer with the frame. Frames
/// share one payload, so making the stream costs next to nothing. Clusters hold 30 frames
/// `frame_ms` apart; frames are `frame_len` scaled by `scale_pct` percent.
fn stream_pieces(clusters: u64, frame_ms: u64, scale_pct: usize, payload: &Bytes) -> Vec<Piece> {
    let mut pieces = Vec::with_capacity(1 + clusters as usize * (2 * FPS as usize + 1));
    pieces.push(Piece {
        bytes: Bytes::from(stream_header()),
        frame: None,
    });
    for c in 0..clusters {
        for f in 0..FPS {
            let index = c * FPS + f;
            let len = frame_len(c, f) * scale_pct / 100;
            if f == 0 {
                let mut start = Vec::with_capacity(24);
                put_id(&mut start, ID_CLUSTER);
                start.extend_from_slice(&UNKNOWN_SIZE);
                put_uint(&mut start, ID_TIMECODE, c * FPS * frame_ms);
                pieces.push(Piece {
                    bytes: Bytes::from(start),
                    frame: Some(index),
                });
            }
            let mut block = Vec::with_capacity(16);
            put_id(&mut block, ID_SIMPLE_BLOCK);
            put_size(&mut block, len as u64 + 4, 8);
            block.push(0x81); // track 1
            block.extend_from_slice(&((f * frame_ms) as i16).to_be_bytes());
            block.push(if f == 0 { 0x80 } else { 0 });
            pieces.push(Piece {
                bytes: Bytes::from(block),
                frame: (f != 0).then_some(index),
            });
            pieces.push(Piece {
                bytes: payload.slice(..len),
                frame: None,
            });
        }
    }
    pieces
}

/// Incompressible filler for frames.
fn payload() -> Bytes {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(64_000);
    while v.len() < 64_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

fn total_len(pieces: &[Piece]) -> u64 {
    pieces.iter().map(|p| p.bytes.len() as u64).sum()
}

// ---------------------------------------------------------------------------------------
// CPU and processes
// ---------------------------------------------------------------------------------------

fn cpu_of(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU of this process (every thread) so far.
fn cpu_self() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        cpu_of(&ru)
    }
}

/// Waits for a child and returns its exit status and resource usage (its own CPU, peak RSS).
fn wait4(pid: u32) -> (i32, libc::rusage) {
    // SAFETY: wait4 on our own child; status and rusage are plain out-parameters.
    unsafe {
        let mut status = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        loop {
            let r = libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru);
            if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        (status, ru)
    }
}

fn exited_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// A server running in a copy of this binary (`ROLE_ENV` set), until its stdin closes.
struct ServerProcess {
    url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ServerProcess {
    fn spawn(role: &str) -> ServerProcess {
        let exe = std::env::current_exe().expect("path of this binary");
        let mut child = Command::new(exe)
            .env(ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a server process");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the server's URL");
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://"), "{role} did not start: {line:?}");
        let stdin = child.stdin.take();
        ServerProcess {
            url,
            child,
            stdin,
            stdout,
        }
    }

    /// What the server holds for `stream`: (fragments, bytes). kvs-local counts stored
    /// cluster bytes; the reading server counts every body byte and cluster it received.
    fn stored(&mut self, stream: &str) -> (u64, u64) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{stream}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let mut fields = line.split_whitespace().map(|f| f.parse().unwrap_or(0));
        (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
    }

    /// CPU the server has used so far.
    fn cpu(&mut self) -> Duration {
        Duration::from_micros(self.stored("#cpu").0)
    }

    /// Stops the server.
    fn stop(mut self) {
        self.stdin.take();
        wait4(self.child.id());
    }
}

/// Body of a server process: serves until the parent closes our stdin, answering each
/// stream name read from stdin with what was stored for it.
fn serve_role(role: &str) -> ! {
    type Stored = Box<dyn Fn(&str) -> (u64, u64)>;
    let (url, stored): (String, Stored) = match role {
        "kvs-local" => {
            let server =
                kvs_local::Server::spawn(kvs_local::Config::default()).expect("start kvs-local");
            (
                server.url(),
                Box::new(move |name| {
                    let fragments = server.fragments(name);
                    let bytes = fragments.iter().map(|f| f.bytes.len() as u64).sum();
                    (fragments.len() as u64, bytes)
                }),
            )
        }
        "discard" => {
            let stub = Stub::start(false);
            let counters = stub.counters.clone();
            (
                stub.url,
                Box::new(move |name| {
                    let counters = counters.lock().unwrap();
                    counters.get(name).copied().unwrap_or_default()
                }),
            )
        }
        other => panic!("unknown role {other}"),
    };
    println!("{url}");
    std::io::stdout().flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (fragments, bytes) = match line.trim() {
            "#cpu" => (cpu_self().as_micros() as u64, 0),
            name => stored(name),
        };
        println!("{fragments} {bytes}");
        std::io::stdout().flush().unwrap();
    }
    // Exits without freeing what was stored.
    std::process::exit(0)
}

// ---------------------------------------------------------------------------------------
// A minimal KVS endpoint: control plane answers, PutMedia body read and timestamped
// ---------------------------------------------------------------------------------------

/// `KVSSINK_BENCH_DEBUG=1`: the stub says how each PutMedia body ended.
static DEBUG: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("KVSSINK_BENCH_DEBUG").is_some());

/// (time of a read, payload bytes of the PutMedia body received so far) after every read.
type Reads = Vec<(Instant, u64)>;

/// Answers the control plane without checking signatures and reads PutMedia bodies, sending
/// a PERSISTED ack for every cluster once the next one starts (or the body ends).
struct Stub {
    url: String,
    /// The reads of each finished PutMedia body (when recording).
    bodies: mpsc::Receiver<Reads>,
    counters: Arc<Counters>,
}

/// Per stream: clusters and payload bytes received over all its PutMedia bodies.
type Counters = Mutex<HashMap<String, (u64, u64)>>;

impl Stub {
    fn start(record: bool) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub server");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, bodies) = mpsc::channel();
        let base = url.clone();
        let counters = Arc::new(Counters::default());
        let all = counters.clone();
        std::thread::Builder::new()
            .name("stub-accept".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let tx = tx.clone();
                    let base = base.clone();
                    let all = all.clone();
                    std::thread::spawn(move || {
                        let _ = serve_connection(conn, &base, record, &tx, &all);
                    });
                }
            })
            .unwrap();
        Stub {
            url,
            bodies,
            counters,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn serve_connection(
    mut conn: TcpStream,
    base_url: &str,
    record: bool,
    tx: &mpsc::Sender<Reads>,
    counters: &Counters,
) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = conn.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("/")
            .to_owned();
        let (mut content_length, mut expect, mut stream) = (0usize, false, String::new());
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("expect") {
                    expect = v.eq_ignore_ascii_case("100-continue");
                } else if k.eq_ignore_ascii_case("x-amzn-stream-name") {
                    stream = v.to_owned();
                }
            }
        }
        if expect {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        if path.ends_with("/putMedia") {
            return put_media(conn, buf, record, tx, (counters, stream));
        }
        while buf.len() < content_length {
            let n = conn.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body: Vec<u8> = buf.drain(..content_length).collect();
        let name = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("StreamName")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "bench".to_owned());
        let arn = format!("arn:aws:kinesisvideo:{REGION}:000000000000:stream/{name}/1");
        let reply = match path.trim_start_matches('/') {
            "describeStream" => serde_json::json!({"StreamInfo": {
                "StreamName": name, "StreamARN": arn, "Status": "ACTIVE",
                "MediaType": "video/h264", "DataRetentionInHours": 2, "Version": "1",
                "CreationTime": 1.7E9}}),
            "getDataEndpoint" => serde_json::json!({ "DataEndpoint": base_url }),
            "createStream" => serde_json::json!({ "StreamARN": arn }),
            _ => serde_json::json!({}),
        }
        .to_string();
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n\
             Content-Length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
    }
}

fn put_media(
    mut conn: TcpStream,
    pending: Vec<u8>,
    record: bool,
    tx: &mpsc::Sender<Reads>,
    (counters, stream): (&Counters, String),
) -> std::io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    let mut dechunk = Dechunker::default();
    let mut scan = ClusterScan::default();
    let mut reads = Reads::with_capacity(if record { 1 << 16 } else { 0 });
    let mut received = 0u64;
    let mut clusters = 0u64;
    let mut done_clusters = Vec::new();
    let count = |clusters: u64, bytes: u64| {
        let mut counters = counters.lock().unwrap();
        let c = counters.entry(stream.clone()).or_default();
        *c = (c.0 + clusters, c.1 + bytes);
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = pending.len();
    buf[..n].copy_from_slice(&pending);
    loop {
        let now = Instant::now();
        let finished = dechunk.feed(&buf[..n], &mut |payload| {
            scan.feed(payload, &mut done_clusters);
            received += payload.len() as u64;
        });
        clusters += done_clusters.len() as u64;
        if record && n > 0 {
            reads.push((now, received));
        }
        if finished {
            break;
        }
        send_acks(&mut conn, &mut done_clusters)?;
        n = conn.read(&mut buf)?;
        if n == 0 {
            if *DEBUG {
                eprintln!("stub: body cut after {received} bytes");
            }
            count(clusters, received);
            return Ok(());
        }
    }
    if *DEBUG {
        eprintln!("stub: body of {received} bytes");
    }
    scan.finish(&mut done_clusters);
    count(clusters + done_clusters.len() as u64, received);
    if record {
        let _ = tx.send(reads);
    }
    send_acks(&mut conn, &mut done_clusters)?;
    conn.write_all(b"0\r\n\r\n")?;
    let _ = conn.shutdown(Shutdown::Write);
    while conn.read(&mut buf)? > 0 {}
    Ok(())
}

fn send_acks(conn: &mut TcpStream, timecodes: &mut Vec<u64>) -> std::io::Result<()> {
    if timecodes.is_empty() {
        return Ok(());
    }
    let mut acks = String::new();
    for tc in timecodes.drain(..) {
        acks.push_str(&format!(
            "{{\"EventType\":\"PERSISTED\",\"FragmentTimecode\":{tc},\
             \"FragmentNumber\":\"91343852333181432392682062607743920146264{tc:06}\"}}\n"
        ));
    }
    write!(conn, "{:x}\r\n{acks}\r\n", acks.len())
}

/// Decodes an HTTP/1.1 chunked body, passing on payload bytes only.
#[derive(Default)]
struct Dechunker {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data: this many bytes left.
    DataEnd(u8),
    Trailer,
    Done,
}

impl Dechunker {
    /// Feeds raw body bytes; `out` gets every payload slice. True once the body has ended.
    fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(&[u8])) -> bool {
        while !data.is_empty() {
            match self.state {
                ChunkState::Size | ChunkState::Trailer => {
                    let Some(i) = data.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(data);
                        return false;
                    };
                    self.line.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let line = String::from_utf8_lossy(&self.line).trim().to_owned();
                    self.line.clear();
                    if matches!(self.state, ChunkState::Trailer) {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                            return true;
                        }
                        continue;
                    }
                    let hex = line.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(hex, 16).unwrap_or(0) {
                        0 => ChunkState::Trailer,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(left) => {
                    let take = left.min(data.len() as u64) as usize;
                    out(&data[..take]);
                    data = &data[take..];
                    self.state = match left - take as u64 {
                        0 => ChunkState::DataEnd(2),
                        rest => ChunkState::Data(rest),
                    };
                }
                ChunkState::DataEnd(left) => {
                    data = &data[1..];
                    self.state = if left == 1 {
                        ChunkState::Size
                    } else {
                        ChunkState::DataEnd(left - 1)
                    };
                }
                ChunkState::Done => return true,
            }
        }
        matches!(self.state, ChunkState::Done)
    }
}

/// Walks the Matroska body just enough to see where clusters start and their timecodes.
#[derive(Default)]
struct ClusterScan {
    head: Vec<u8>,
    skip: u64,
    /// Reading a Timecode element's body: its length and the bytes so far.
    timecode: Option<(usize, Vec<u8>)>,
    /// Timecode of the cluster being received.
    current: Option<u64>,
}

impl ClusterScan {
    /// Pushes the timecodes of clusters that have ended onto `done`.
    fn feed(&mut self, mut data: &[u8], done: &mut Vec<u64>) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64) as usize;
                data = &data[n..];
                self.skip -= n as u64;
                continue;
            }
            if let Some((len, acc)) = &mut self.timecode {
                let n = (*len - acc.len()).min(data.len());
                acc.extend_from_slice(&data[..n]);
                data = &data[n..];
                if acc.len() == *len {
                    self.current = Some(acc.iter().fold(0, |v, &b| (v << 8) | u64::from(b)));
                    self.timecode = None;
                }
                continue;
            }
            self.head.push(data[0]);
            data = &data[1..];
            let Some((id, size)) = element_header(&self.head) else {
                if self.head.len() > 12 {
                    self.head.clear();
                }
                continue;
            };
            self.head.clear();
            match (id, size) {
                (ID_CLUSTER, _) => done.extend(self.current.take()),
                (ID_SEGMENT, _) | (_, None) => {}
                (ID_TIMECODE, Some(n)) => self.timecode = Some((n as usize, Vec::new())),
                (_, Some(n)) => self.skip = n,
            }
        }
    }

    fn finish(&mut self, done: &mut Vec<u64>) {
        done.extend(self.current.take());
    }
}

/// An element's ID and size (`None`: unknown) once `b` holds its whole header.
fn element_header(b: &[u8]) -> Option<(u32, Option<u64>)> {
    let id_len = b[0].leading_zeros() as usize + 1;
    let size_first = *b.get(id_len)?;
    let size_len = size_first.leading_zeros() as usize + 1;
    if id_len > 4 || size_len > 8 || b.len() < id_len + size_len {
        return None;
    }
    let id = b[..id_len]
        .iter()
        .fold(0u32, |v, &x| (v << 8) | u32::from(x));
    let mask = if size_len == 8 { 0 } else { 0xFFu8 >> size_len };
    let size = b[id_len + 1..id_len + size_len]
        .iter()
        .fold(u64::from(size_first & mask), |v, &x| {
            (v << 8) | u64::from(x)
        });
    let unknown = size == (1u64 << (7 * size_len)) - 1;
    Some((id, (!unknown).then_some(size)))
}

// ---------------------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------------------

struct SinkRun {
    wall: Duration,
    cpu: Duration,
    bytes: u64,
    /// (time just before `push_buffer`, stream offset at the buffer's end), when paced.
    pushes: Vec<(Instant, u64)>,
    start: Instant,
}

/// Pushes `pieces` through `appsrc ! kvssink` into the endpoint at `url` and waits for EOS
/// (kvssink returns from EOS once every fragment is PERSISTED). With `paced`, frames are
/// pushed live at 30 fps.
/// `appsrc ! kvssink` for the endpoint at `url`, PLAYING; `configure` sets extra properties.
fn kvssink_pipeline(
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

fn run_kvssink(url: &str, stream: &str, pieces: &[Piece], paced: bool) -> Result<SinkRun, String> {
    let (pipeline, src, _sink) = kvssink_pipeline(url, stream, 4 << 20, |_| {})?;

    let bus = pipeline.bus().unwrap();
    let mut pushes = Vec::with_capacity(if paced { pieces.len() } else { 0 });
    let mut offset = 0u64;
    let mut failure = None;
    let mut cpu0 = cpu_self();
    let mut start = Instant::now();
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
        }
        if paced && let Some(frame) = piece.frame {
            let due = start + Duration::from_nanos(frame * 1_000_000_000 / FPS);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = Instant::now();
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
        start,
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
fn wait_streaming(bus: &gst::Bus) -> Result<(), String> {
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

fn curl_auth_args() -> Vec<String> {
    vec![
        "-sS".into(),
        "--aws-sigv4".into(),
        format!("aws:amz:{REGION}:kinesisvideo"),
        "--user".into(),
        format!("{ACCESS_KEY}:{SECRET_KEY}"),
    ]
}

/// CreateStream through curl (signed), then DescribeStream until ACTIVE.
fn create_stream_with_curl(url: &str, stream: &str) -> Result<(), String> {
    let call = |op: &str, body: String| -> Result<String, String> {
        let out = Command::new("curl")
            .args(curl_auth_args())
            .args(["-H", "Content-Type: application/json", "-d", &body])
            .arg(format!("{url}/{op}"))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    call(
        "createStream",
        format!(r#"{{"StreamName":"{stream}","DataRetentionInHours":2,"MediaType":"video/h264"}}"#),
    )?;
    for _ in 0..100 {
        let reply = call("describeStream", format!(r#"{{"StreamName":"{stream}"}}"#))?;
        if reply.contains("\"ACTIVE\"") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("stream {stream} did not become ACTIVE"))
}

/// Writes `pieces` (one write each) into a pipe to `curl -T -`, which uploads them as a
/// chunked PutMedia. Measures curl's own CPU (not the writer's) and the wall time from
/// starting curl to its exit (after the last ack).
fn run_curl(url: &str, stream: &str, pieces: &[Piece]) -> Result<Upload, String> {
    create_stream_with_curl(url, stream)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let acks_file = dir.path().join("acks");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start_ts = format!("{}.{:03}", now.as_secs(), now.subsec_millis());
    let start = Instant::now();
    let mut child = Command::new("curl")
        .args(curl_auth_args())
        .args(["-X", "POST", "-T", "-"])
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
        .arg(&acks_file)
        .arg(format!("{url}/putMedia"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
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
    let acks = std::fs::read_to_string(&acks_file).unwrap_or_default();
    let persisted = acks.matches("\"PERSISTED\"").count();
    let errors = acks.matches("\"ERROR\"").count();
    let mut fields = out.split_whitespace();
    let code = fields.next().unwrap_or("");
    let bytes: u64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let clusters = pieces
        .iter()
        .filter(|p| p.bytes.starts_with(&[0x1F, 0x43]))
        .count();
    if !exited_ok(status) || code != "200" || errors > 0 || persisted != clusters {
        return Err(format!(
            "curl: exit status {status:#x}, HTTP {code}, {persisted}/{clusters} PERSISTED, \
             {errors} ERROR acks: {}",
            acks.lines().find(|l| l.contains("ERROR")).unwrap_or("")
        ));
    }
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
fn kvssink_child() -> ! {
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

/// Checks that the server holds the whole stream: kvs-local every cluster's bytes, the
/// reading server every body byte (header included).
fn verify(
    server: &mut ServerProcess,
    role: &str,
    stream: &str,
    pieces: &[Piece],
) -> Result<(), String> {
    let clusters = pieces
        .iter()
        .filter(|p| p.bytes.starts_with(&[0x1F, 0x43]))
        .count() as u64;
    let total = total_len(pieces);
    let expected = if role == "kvs-local" {
        total - pieces[0].bytes.len() as u64
    } else {
        total
    };
    let got = server.stored(stream);
    if got != (clusters, expected) {
        return Err(format!(
            "{role} holds {} fragments, {} bytes for {stream}; expected {clusters}, {expected}",
            got.0, got.1
        ));
    }
    Ok(())
}

/// Uploads the throughput stream with `upload` into a fresh server process of `role`, then
/// checks that the server got all of it.
fn upload_once(
    role: &str,
    who: &str,
    run: usize,
    pieces: &[Piece],
    upload: &dyn Fn(&str, &str) -> Result<Upload, String>,
) -> Result<Upload, String> {
    let mut server = ServerProcess::spawn(role);
    let stream = format!("{who}-{}-{run}", std::process::id());
    let cpu0 = server.cpu();
    let r = upload(&server.url, &stream);
    let server_cpu = server.cpu() - cpu0;
    let r = r.and_then(|r| verify(&mut server, role, &stream, pieces).map(|()| r));
    server.stop();
    let r = Upload { server_cpu, ..r? };
    eprintln!(
        "  {who:<16} -> {role:<9}: {:5.0} MB/s, {:.3} ms CPU/MB, server {:.3} ms CPU/MB",
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

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    count: usize,
    /// Latency of the stream header (control plane + connection set-up), not in the others.
    first: Duration,
}

/// Live-paced buffers into the in-process stub; a buffer's latency is the time from just
/// before `push_buffer` to the first read after which the server holds all its bytes.
fn latency(seconds: u64) -> Result<Latency, String> {
    let stub = Stub::start(true);
    let payload = payload();
    // ~20 KB frames (40% of 40-60 KB), 1 s clusters.
    let pieces = stream_pieces(seconds, 1000 / FPS, 40, &payload);
    let run = run_kvssink(&stub.url, "latency", &pieces, true)?;
    let reads = stub
        .bodies
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the stub got no PutMedia body")?;
    let last = reads.last().map_or(0, |r| r.1);
    if last != run.bytes {
        return Err(format!("the stub received {last} bytes of {}", run.bytes));
    }
    let received = |end: u64| {
        let i = reads.partition_point(|r| r.1 < end);
        reads.get(i).map(|r| r.0)
    };
    let first = received(run.pushes[0].1)
        .ok_or("header never received")?
        .duration_since(run.pushes[0].0);
    // The first second (first cluster) includes the control plane and connecting.
    let warm = run.start + Duration::from_secs(1);
    let mut lat: Vec<Duration> = Vec::new();
    for &(t, end) in run.pushes.iter().filter(|p| p.0 >= warm) {
        let r = received(end).ok_or("a buffer never reached the server")?;
        lat.push(r.saturating_duration_since(t));
    }
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    Ok(Latency {
        p50: pct(50),
        p99: pct(99),
        max: *lat.last().ok_or("no buffers measured")?,
        count: lat.len(),
        first,
    })
}

struct Rss {
    /// Largest VmRSS seen by sampling every 50 ms, KiB.
    sampled_kib: u64,
    /// Peak RSS from the kernel (ru_maxrss, = VmHWM), KiB.
    hwm_kib: u64,
    /// Largest RssAnon seen, KiB.
    anon_kib: u64,
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs a live 720p30 x264 pipeline through matroskamux into `tail`, sampling its RSS.
fn rss_run(env: &[(&str, String)], buffers: u32, tail: &[&str]) -> Result<Rss, String> {
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

fn rss(buffers: u32) -> Result<RssPair, String> {
    let so = plugin_path().ok_or("libgstkvs.so not found next to the bench binary")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).map_err(|e| e.to_string())?;
    std::fs::copy(&so, plugins.join("libgstkvs.so")).map_err(|e| e.to_string())?;
    let server = ServerProcess::spawn("kvs-local");
    let env = [
        ("GST_PLUGIN_PATH", plugins.display().to_string()),
        (
            "GST_REGISTRY",
            dir.path().join("registry.bin").display().to_string(),
        ),
        ("CONTROL_PLANE_URI", server.url.clone()),
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
    let stream = format!("stream-name=rss-{}", std::process::id());
    let fakesink = rss_run(&env, buffers, &["fakesink", "sync=false"])?;
    let kvssink = rss_run(&env, buffers, &["kvssink", &stream])?;
    server.stop();
    Ok(RssPair { kvssink, fakesink })
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn mbps(bytes: u64, wall: Duration) -> f64 {
    bytes as f64 / MB / wall.as_secs_f64()
}

fn ms_per_mb(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() * 1e3 / (bytes as f64 / MB)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MIB
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| status_kib(&m, "MemTotal:"))
        .map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let curl = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_else(|_| "curl missing".into());
    format!(
        "{model}, {cores} cores, {mem:.0} GiB RAM, Linux {}, {}, {curl}",
        kernel.trim(),
        gst::version_string()
    )
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Row {
    metric: String,
    kvssink: String,
    reference: String,
    target: String,
    ok: Option<bool>,
}

fn print_table(rows: &[Row]) {
    let headers = ["metric", "kvssink", "reference", "target", "ok?"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.kvssink.clone(),
                r.reference.clone(),
                r.target.clone(),
                match r.ok {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([headers[i].len()])
            .max()
            .unwrap()
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&headers.map(String::from));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for c in &cells {
        line(c);
    }
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("kvssink") => kvssink_child(),
        Ok(role) => serve_role(role),
        Err(_) => {}
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("KVSSINK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (tput_bytes, reps, latency_secs, rss_buffers) = if quick {
        (200_000_000u64, 1, 2, 90)
    } else {
        (2_000_000_000u64, 5, 10, 600)
    };
    gst::init().expect("GStreamer");
    gstkvs::plugin_register_static().expect("register the kvs plugin");

    println!("machine: {}", machine());
    println!("load average at start: {}", loadavg());
    let clusters = tput_bytes.div_ceil(CLUSTER_BYTES);
    // kvs-local refuses producer timestamps more than 10 min ahead, and RELATIVE timecodes
    // start now: squeeze the stream's timeline to at most ~5 min.
    let frame_ms = (300_000 / (clusters * FPS)).clamp(1, 1000 / FPS);
    let payload = payload();
    let pieces = stream_pieces(clusters, frame_ms, 100, &payload);
    let total = total_len(&pieces);
    println!(
        "mode: {}; throughput stream {:.0} MB in {} buffers ({clusters} clusters of 30 frames, \
         frames 40-60 KB, {frame_ms} ms apart)\n",
        if quick { "quick" } else { "full" },
        total as f64 / MB,
        pieces.len()
    );

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // KVSSINK_BENCH_ONLY=kvs-local,discard,push,latency,rss,soak runs only those parts.
    let only = std::env::var("KVSSINK_BENCH_ONLY").ok();
    let want = |part: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let shape = (clusters, frame_ms);
    for role in ["kvs-local", "discard"] {
        if !want(role) {
            continue;
        }
        let into = if role == "kvs-local" {
            "into kvs-local"
        } else {
            "into a reading server"
        };
        eprintln!("throughput {into} (median of {reps}, interleaved):");
        type Uploader<'a> = Box<dyn Fn(&str, &str) -> Result<Upload, String> + 'a>;
        let uploaders: [(&str, Uploader); 3] = [
            (
                "kvssink",
                Box::new(|url, stream| kvssink_in_child(url, stream, shape, false)),
            ),
            (
                "curl",
                Box::new(|url, stream| run_curl(url, stream, &pieces)),
            ),
            (
                "kvssink-no-trim",
                Box::new(|url, stream| kvssink_in_child(url, stream, shape, true)),
            ),
        ];
        // The first server after a pause is slower (the kernel finds it fresh huge pages for
        // kvs-local's arenas): one untimed upload first.
        let mut failed = upload_once(role, "warm-up", 0, &pieces, &*uploaders[1].1).err();
        let mut runs: [Vec<Upload>; 3] = Default::default();
        'reps: for i in 0..reps {
            for (k, (who, upload)) in uploaders.iter().enumerate() {
                if failed.is_some() {
                    break 'reps;
                }
                match upload_once(role, who, i, &pieces, &**upload) {
                    Ok(r) => runs[k].push(r),
                    Err(e) => failed = Some(format!("{who}: {e}")),
                }
            }
        }
        if let Some(e) = failed {
            notes.push(format!("throughput {into} FAILED: {e}"));
            continue;
        }
        let (s, c, n) = (medians(&runs[0]), medians(&runs[1]), medians(&runs[2]));
        let (s_mbps, c_mbps) = (mbps(s.bytes, s.wall), mbps(c.bytes, c.wall));
        let (s_cpu, c_cpu) = (ms_per_mb(s.cpu, s.bytes), ms_per_mb(c.cpu, c.bytes));
        let target = role == "kvs-local";
        rows.push(Row {
            metric: format!("throughput {into}"),
            kvssink: format!("{s_mbps:.0} MB/s"),
            reference: format!("curl {c_mbps:.0} MB/s"),
            target: if target { ">= 1000 MB/s" } else { "-" }.into(),
            ok: target.then_some(s_mbps >= 1000.0),
        });
        rows.push(Row {
            metric: format!("CPU per MB {into}"),
            kvssink: format!("{s_cpu:.3} ms"),
            reference: format!("curl {c_cpu:.3} ms ({:.2}x)", s_cpu / c_cpu),
            target: if target { "<= 1.5x curl" } else { "-" }.into(),
            ok: target.then_some(s_cpu <= 1.5 * c_cpu),
        });
        rows.push(Row {
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
        notes.push(format!(
            "{into}: server CPU per MB {:.3} ms (kvssink run), {:.3} ms (curl run)",
            ms_per_mb(s.server_cpu, s.bytes),
            ms_per_mb(c.server_cpu, c.bytes)
        ));
    }
    if want("push") {
        eprintln!("the same buffers into appsrc ! fakesink:");
        match median_of(reps, || run_fakesink(&pieces)) {
            Ok((wall, cpu)) => {
                rows.push(Row {
                    metric: "CPU per MB, appsrc ! fakesink".into(),
                    kvssink: format!("{:.3} ms", ms_per_mb(cpu, total)),
                    reference: format!("{:.0} MB/s", mbps(total, wall)),
                    target: "-".into(),
                    ok: None,
                });
            }
            Err(e) => notes.push(format!("appsrc ! fakesink FAILED: {e}")),
        }
    }
    if want("latency") {
        eprintln!("latency ({latency_secs} s live at 30 fps)...");
        match latency(latency_secs) {
            Ok(l) => {
                rows.push(Row {
                    metric: "p99 buffer-to-socket latency".into(),
                    kvssink: us(l.p99),
                    reference: format!("p50 {}, max {}", us(l.p50), us(l.max)),
                    target: "< 1000 µs".into(),
                    ok: Some(l.p99 < Duration::from_millis(1)),
                });
                notes.push(format!(
                    "latency: {} buffers after the first second; the stream header (control plane \
                     and connection set-up) took {:.1} ms",
                    l.count,
                    l.first.as_secs_f64() * 1e3
                ));
            }
            Err(e) => notes.push(format!("latency FAILED: {e}")),
        }
    }
    if want("rss") {
        eprintln!("RSS ({rss_buffers} frames of live 720p30 x264, each pipeline)...");
        match rss(rss_buffers) {
            Ok(r) => {
                let diff = mib(r.kvssink.hwm_kib) - mib(r.fakesink.hwm_kib);
                rows.push(Row {
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
                notes.push(format!(
                    "RSS: sampled VmRSS peak {:.1} MiB (kvssink) vs {:.1} MiB (fakesink); RssAnon \
                     peak {:.1} vs {:.1} MiB",
                    mib(r.kvssink.sampled_kib),
                    mib(r.fakesink.sampled_kib),
                    mib(r.kvssink.anon_kib),
                    mib(r.fakesink.anon_kib)
                ));
            }
            Err(e) => notes.push(format!("RSS FAILED: {e}")),
        }
    }
    if want("soak") {
        let hours = if quick { 1 } else { 12 };
        eprintln!("soak: {hours} h of simulated 2.4 Mb/s video, session renewed every 2 s...");
        let stub = Stub::start(false);
        match soak::soak(&stub.url, hours) {
            Ok(samples) => {
                // Growth after the first simulated hour, once allocator pools are warm.
                let warm = samples.get(2).map_or(0, |s| s.rss_kib);
                let end = samples.last().map_or(0, |s| s.rss_kib);
                let growth = mib(end) - mib(warm);
                rows.push(Row {
                    metric: format!("RSS growth, 1 h to {hours} h simulated"),
                    kvssink: format!("{growth:+.1} MiB"),
                    reference: format!("{:.1} -> {:.1} MiB", mib(warm), mib(end)),
                    target: "flat (< 2 MiB)".into(),
                    ok: Some(growth < 2.0),
                });
                let trace: Vec<String> = samples
                    .iter()
                    .map(|s| format!("{}m {:.1}", s.minutes, mib(s.rss_kib)))
                    .collect();
                notes.push(format!(
                    "soak VmRSS (MiB) by simulated time: {}",
                    trace.join(", ")
                ));
            }
            Err(e) => notes.push(format!("soak FAILED: {e}")),
        }
    }
    println!();
    print_table(&rows);
    println!("\nload average at the end: {}", loadavg());
    println!();
    for n in &notes {
        println!("- {n}");
    }
    let failed = notes.iter().any(|n| n.contains("FAILED"));
    if failed {
        std::process::exit(1);
    }
}

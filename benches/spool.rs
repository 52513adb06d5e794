//! What `spool-dir` costs: CPU per MB of `appsrc ! kvssink` at 10 MB/s with and without a
//! spool, and the spool's disk writes and fsyncs per fragment.
//!
//! The parent runs kvs-local in-process in discard mode (it acknowledges without storing);
//! each measured upload runs in a child copy of this binary, so its CPU (getrusage of the
//! child) is kvssink's and GStreamer's alone. The child pushes a synthetic matroskamux-shaped
//! stream (1 s clusters of 30 frames) paced to 10 MB/s for the run's length. Runs alternate
//! memory-only and spool, and the medians are compared: over the whole run, and past its
//! first 2 s (the slope between a 2 s and a full run of each kind, which leaves out what is
//! paid once, such as the staging buffer's first page fault); what the spool pays once is
//! printed apart. Last, the spool's own work for the same fragments on one thread, without
//! the pipeline: the floor under what spooling can cost per MB.
//!
//! `cargo bench --bench spool` (5 rounds of 10 s and 2 s each way, about 3 minutes);
//! `-- --quick` or `KVSSINK_BENCH_QUICK=1`: 1 round of 4 s and 2 s. `-- --https` or
//! `KVSSINK_BENCH_HTTPS=1`: the same over HTTPS, as the service is reached (a TLS terminator
//! in the parent, in front of kvs-local; kvssink trusts its CA with `ca-file`), so that the
//! child's CPU includes what encrypting the stream costs.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use kvs_format::build;
use kvs_format::ebml::{write_id, write_vint_len};
use kvs_format::ids::ID_SIMPLE_BLOCK;
use kvs_local::{Config, DEMO_ACCESS_KEY, DEMO_SECRET_KEY, Server};

const ROLE: &str = "KVSSINK_SPOOL_BENCH_CHILD";
const RATE: f64 = 10e6;
const FRAME: usize = RATE as usize / 30;

/// The child: streams `seconds` at 10 MB/s into `url`, with `spool` (a directory) or not,
/// trusting the CA in `ca_file` when given.
fn child(url: &str, seconds: u64, spool: Option<&str>, ca_file: Option<&str>) {
    gst::init().unwrap();
    gstkvs::plugin_register_static().unwrap();
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder()
        .caps(&gst::Caps::builder("video/x-matroska").build())
        .format(gst::Format::Bytes)
        .max_bytes(8 << 20)
        .build();
    let sink = gst::ElementFactory::make("kvssink")
        .property("stream-name", "spool-bench")
        .property("aws-region", "us-east-1")
        .property("control-plane-uri", url)
        .property("access-key", DEMO_ACCESS_KEY)
        .property("secret-key", DEMO_SECRET_KEY)
        .property_from_str("streaming-type", "realtime")
        .build()
        .unwrap();
    if let Some(dir) = spool {
        sink.set_property("spool-dir", dir);
    }
    if let Some(ca) = ca_file {
        sink.set_property("ca-file", ca);
    }
    pipeline.add_many([src.upcast_ref(), &sink]).unwrap();
    src.link(&sink).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let payload = Bytes::from(vec![0x5Au8; FRAME]);
    src.push_buffer(gst::Buffer::from_slice(build::simple_header()))
        .unwrap();
    let start = Instant::now();
    let mut pushed = 0u64;
    for second in 0..seconds {
        src.push_buffer(gst::Buffer::from_slice(build::cluster_start(second * 1000)))
            .unwrap();
        for f in 0..30u64 {
            let mut header = Vec::with_capacity(16);
            write_id(&mut header, ID_SIMPLE_BLOCK);
            write_vint_len(&mut header, FRAME as u64 + 4, 8);
            header.push(0x81);
            header.extend_from_slice(&((f * 33) as i16).to_be_bytes());
            header.push(if f == 0 { 0x80 } else { 0 });
            src.push_buffer(gst::Buffer::from_slice(header)).unwrap();
            src.push_buffer(gst::Buffer::from_slice(payload.clone()))
                .unwrap();
            pushed += FRAME as u64;
            let due = Duration::from_secs_f64(pushed as f64 / RATE);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    src.end_of_stream().unwrap();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} {:?}", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// CPU time of the whole machine (all CPUs, every state but idle and iowait), in seconds:
/// work the kernel does for the child outside it (writeback threads, interrupts) shows
/// here, next to everything else that runs.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU (user + system) of one child run, and of the whole machine meanwhile, in seconds.
fn run(url: &str, seconds: u64, spool: Option<&std::path::Path>) -> (f64, f64) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, format!("{url} {seconds}"));
    if let Some(dir) = spool {
        cmd.env("KVSSINK_SPOOL_BENCH_DIR", dir);
    }
    let machine = machine_busy();
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; rusage is a plain C struct.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let _ = child.try_wait();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        machine_busy() - machine,
    )
}

/// A TLS terminator at 127.0.0.1 in this process, in front of kvs-local: what the children
/// reach over HTTPS, with a certificate from a CA of their own (`ca`, a PEM file).
struct Https {
    url: String,
    ca: std::path::PathBuf,
    listener: Option<std::net::TcpListener>,
    acceptor: tokio_rustls::TlsAcceptor,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Https {
    fn bind() -> Https {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Https {
            url,
            ca,
            listener: Some(listener),
            acceptor: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
            runtime,
            _dir: dir,
        }
    }

    /// Forwards every connection, its TLS taken off, to `backend` (`http://host:port`).
    fn forward_to(&mut self, backend: &str) {
        let backend = backend.trim_start_matches("http://").to_owned();
        let listener = self.listener.take().expect("forwarding once");
        let acceptor = self.acceptor.clone();
        self.runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the calling thread's CPU time into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The spool's own work for the child's fragments (30 frames of `FRAME` bytes) on this
/// thread alone, without the pipeline: thread CPU of `append_fragment` (copy and checksum,
/// the direct writes, the fdatasync) and `mark_done`. Returns the first fragment's ms (its
/// staging buffer's fault and the file's new blocks) and the median ms per MB of the rest.
fn alone(fragments: usize) -> (f64, f64) {
    let payload = Bytes::from(vec![0x5Au8; FRAME]);
    let chunks: Vec<Bytes> = (0..30).map(|_| payload.clone()).collect();
    let mb = (30 * FRAME) as f64 / 1e6;
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = gstkvs::spool::Spool::open(dir.path(), "alone", 1 << 30).unwrap();
    let header = spool
        .append_header(0, "video/h264", &Bytes::from_static(b"header"))
        .unwrap();
    let mut per_mb = Vec::new();
    let mut first = 0.0;
    for i in 0..fragments as u64 {
        let start = thread_cpu();
        let (fragment, _) = spool
            .append_fragment(header, i * 1000, (i, i + 1), &chunks)
            .unwrap();
        spool.mark_done(fragment.id).unwrap();
        let ms = (thread_cpu() - start).as_secs_f64() * 1000.0;
        if i == 0 {
            first = ms;
        } else {
            per_mb.push(ms / mb);
        }
    }
    (first, median(per_mb))
}

fn main() {
    if let Ok(args) = std::env::var(ROLE) {
        let (url, seconds) = args.split_once(' ').unwrap();
        let dir = std::env::var("KVSSINK_SPOOL_BENCH_DIR").ok();
        let ca = std::env::var("KVSSINK_SPOOL_BENCH_CA").ok();
        child(url, seconds.parse().unwrap(), dir.as_deref(), ca.as_deref());
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("KVSSINK_BENCH_QUICK").is_some();
    let (rounds, seconds) = if quick { (1, 4) } else { (5, 10) };
    // A short run of each kind too: the slope between the two is the cost per MB past the
    // start, without what is paid once (the staging buffer's first fault, opening the spool).
    let short = 2;
    let https = std::env::args().any(|a| a == "--https")
        || std::env::var_os("KVSSINK_BENCH_HTTPS").is_some();
    let mut front = https.then(Https::bind);
    let server = Server::spawn(Config {
        discard_media: true,
        public_url: front.as_ref().map(|f| f.url.clone()),
        ..Config::default()
    })
    .unwrap();
    let url = match &mut front {
        Some(front) => {
            front.forward_to(&server.url());
            // SAFETY: set before any child is started, read by the children only.
            unsafe { std::env::set_var("KVSSINK_SPOOL_BENCH_CA", &front.ca) };
            front.url.clone()
        }
        None => server.url(),
    };
    let mb = seconds as f64 * RATE / 1e6;
    let slope_mb = (seconds - short) as f64 * RATE / 1e6;
    let (mut memory, mut spooled) = (Vec::new(), Vec::new());
    let (mut memory_slope, mut spooled_slope, mut once) = (Vec::new(), Vec::new(), Vec::new());
    let (mut memory_machine, mut spooled_machine) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (own, machine) = run(&url, seconds, None);
        memory.push(own * 1000.0 / mb);
        memory_machine.push(machine * 1000.0 / mb);
        let (memory_short, _) = run(&url, short, None);
        memory_slope.push((own - memory_short) * 1000.0 / slope_mb);
        let dir = tempfile::tempdir().unwrap();
        let (own, machine) = run(&url, seconds, Some(dir.path()));
        spooled.push(own * 1000.0 / mb);
        spooled_machine.push(machine * 1000.0 / mb);
        let dir = tempfile::tempdir().unwrap();
        let (spooled_short, _) = run(&url, short, Some(dir.path()));
        spooled_slope.push((own - spooled_short) * 1000.0 / slope_mb);
        once.push((spooled_short - memory_short) * 1000.0);
    }
    let (m, s) = (median(memory.clone()), median(spooled.clone()));
    println!(
        "appsrc ! kvssink at 10 MB/s for {seconds} s, {rounds} rounds each, alternating, over {}",
        if https {
            "HTTPS (a TLS terminator in front of kvs-local)"
        } else {
            "plain HTTP"
        }
    );
    println!("memory only: {m:.3} ms CPU per MB (runs {memory:.3?})");
    println!("spool-dir:   {s:.3} ms CPU per MB (runs {spooled:.3?})");
    println!("spool / memory: {:.3}", s / m);
    let (ms, ss) = (median(memory_slope.clone()), median(spooled_slope.clone()));
    let ratios: Vec<f64> = spooled_slope
        .iter()
        .zip(&memory_slope)
        .map(|(s, m)| s / m)
        .collect();
    println!(
        "past the first {short} s (the slope between a {short} s and a {seconds} s run): memory \
         only {ms:.3} ms per MB (runs {memory_slope:.3?}), spool-dir {ss:.3} (runs \
         {spooled_slope:.3?}), ratio {:.3} (per round {ratios:.3?})",
        ss / ms
    );
    println!(
        "paid once by the spool ({short} s runs, spool-dir less memory only): {:.1} ms (runs \
         {once:.1?})",
        median(once.clone())
    );
    let (mm, sm) = (
        median(memory_machine.clone()),
        median(spooled_machine.clone()),
    );
    println!(
        "whole machine meanwhile (/proc/stat, everything that ran, other load included): \
         memory only {mm:.3} ms per MB (runs {memory_machine:.3?}), spool-dir {sm:.3} \
         (runs {spooled_machine:.3?}), ratio {:.3}",
        sm / mm
    );
    let (first, per_mb) = alone(if quick { 5 } else { 20 });
    println!(
        "the spool's own work alone (append_fragment and mark_done of the same 10 MB \
         fragments on one thread, thread CPU): {per_mb:.3} ms per MB, {:.3} of memory only's \
         (the first fragment {first:.2} ms: its staging buffer's fault, the file's new blocks)",
        per_mb / m
    );
    println!(
        "disk per fragment: one O_DIRECT write per 2 MB from the staging buffer and one \
         fdatasync (src/spool.rs append_fragment), plus one unsynced 4 kB write of the done \
         record when it is acknowledged"
    );
}

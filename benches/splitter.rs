//! Throughput of the pure parts of kvssink: the Matroska splitter, the ack parser and the
//! fragment store. `cargo bench --bench splitter` prints the median of several runs.

use bytes::Bytes;
use gstkvs::ack::AckParser;
use gstkvs::mkv::{Event, Limits, Splitter};
use gstkvs::store::{AckLevel, FragmentStore, StoreLimits};
use kvs_format::build::{self, Track};
use kvs_format::ids::ID_PREV_SIZE;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts heap allocations, to show the splitter's steady state does not allocate per
/// buffer.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const CLUSTERS: usize = 64;
const FPS: usize = 30;
const RUNS: usize = 11;

/// A synthetic matroskamux-like stream: header, then 1 s clusters of about 1 MB (one
/// 100 KB key frame, 29 delta frames of about 31 KB, 43 AAC frames of 300 bytes), each
/// cluster starting with matroskamux's PrevSize. With `audio_first`, the audio is track 1 and
/// the video track 2 (matroskamux's numbering when the audio pad was requested first).
/// Returns the stream and the matroskamux-style cut points.
fn synthetic_stream(audio_first: bool) -> (Vec<u8>, Vec<usize>) {
    let (video, audio): (u8, u8) = if audio_first { (2, 1) } else { (1, 2) };
    let mut tracks = [
        Track::video(video.into(), build::AVC),
        Track::audio(audio.into(), "A_AAC"),
    ];
    if audio_first {
        tracks.swap(0, 1); // the audio's TrackEntry first, as matroskamux writes it
    }
    let mut s = build::header_with_tracks(&tracks);
    let mut cuts = vec![s.len()];
    for c in 0..CLUSTERS {
        s.extend(build::cluster_start(c as u64 * 1000));
        if c > 0 {
            s.extend(build::uint(ID_PREV_SIZE, 1_000_000));
        }
        cuts.push(s.len());
        let mut audio_frames = 0;
        for f in 0..FPS {
            let t = (f * 1000 / FPS) as i16;
            let len = if f == 0 {
                100_000
            } else {
                31_000 + (f * 397) % 2000
            };
            block(&mut s, &mut cuts, video, t, f == 0, len);
            while audio_frames * 1000 / 43 <= f * 1000 / FPS {
                let t = (audio_frames * 1000 / 43) as i16;
                block(&mut s, &mut cuts, audio, t, true, 300);
                audio_frames += 1;
            }
        }
    }
    (s, cuts)
}

/// Appends a SimpleBlock, recording matroskamux's cuts: element + block header (7 or 8
/// bytes) in one buffer, the frame in another.
fn block(s: &mut Vec<u8>, cuts: &mut Vec<usize>, track: u8, rel: i16, key: bool, len: usize) {
    let b = build::simple_block(u64::from(track), rel, key, &vec![track; len]);
    let (head, frame) = b.split_at(b.len() - len);
    s.extend_from_slice(head);
    cuts.push(s.len());
    s.extend_from_slice(frame);
    cuts.push(s.len());
}

fn cut(data: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for &c in cuts.iter().chain([data.len()].iter()) {
        if c > last {
            pieces.push(data.slice(last..c));
            last = c;
        }
    }
    pieces
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> Duration {
    f(); // warm-up
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// The splitter as the producer runs it: cut at the service's limits (10 s, 50 MB), in the
/// shape AWS's producer sends (cluster heads rebuilt, tracks renumbered).
fn splitter() -> Splitter {
    Splitter::new(Limits {
        max_fragment_span_ns: 10_000_000_000,
        max_fragment_bytes: 50 << 20,
        ..Limits::default()
    })
    .aws_shape(true)
}

/// Median time of a full run, and heap allocations per pushed buffer.
fn bench_splitter(pieces: &[Bytes], total: usize) -> (Duration, f64) {
    let mut out = Vec::with_capacity(256);
    let mut allocs = 0;
    let d = time(|| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let mut sp = splitter();
        let mut fragments = 0;
        for p in pieces {
            sp.push(p.clone(), &mut out).unwrap();
            for e in out.drain(..) {
                if let Event::FragmentEnd(f) = black_box(e) {
                    fragments += 1;
                    black_box(f.size);
                }
            }
        }
        sp.finish(&mut out).unwrap();
        out.clear();
        assert_eq!(fragments, CLUSTERS - 1);
        assert_eq!(sp.bytes_consumed(), total as u64);
        allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    });
    (d, allocs as f64 / pieces.len() as f64)
}

fn row(name: &str, d: Duration, figure: String) {
    println!("{name:<46} {:>10.3} ms  {figure}", d.as_secs_f64() * 1e3);
}

fn main() {
    let mut mux = Vec::new();
    for audio_first in [false, true] {
        let (stream, mux_cuts) = synthetic_stream(audio_first);
        let data = Bytes::from(stream);
        let total = data.len();
        let gbps = |d: Duration| format!("{:>7.2} GB/s", total as f64 / d.as_secs_f64() / 1e9);
        let order = if audio_first {
            "audio first"
        } else {
            "video first"
        };
        if !audio_first {
            println!(
                "synthetic stream: {:.1} MB, {CLUSTERS} clusters of ~{:.2} MB; median of {RUNS} \
                 runs\n",
                total as f64 / 1e6,
                total as f64 / CLUSTERS as f64 / 1e6
            );
            println!("{:<46} {:>13}  throughput", "benchmark", "median");
        }

        let pieces = cut(&data, &mux_cuts);
        let (d, allocs) = bench_splitter(&pieces, total);
        let name = format!("splitter, {order}, matroskamux cuts");
        let rate = pieces.len() as f64 / d.as_secs_f64() / 1e6;
        let figure = format!(
            "{}  ({} buffers, {rate:.1} M buffers/s, {allocs:.4} allocs/buffer)",
            gbps(d),
            pieces.len()
        );
        row(&name, d, figure);
        for size in [64 * 1024, 4096] {
            let cuts: Vec<usize> = (size..total).step_by(size).collect();
            let pieces = cut(&data, &cuts);
            let (d, allocs) = bench_splitter(&pieces, total);
            let name = format!("splitter, {order}, {} KiB chunks", size / 1024);
            row(
                &name,
                d,
                format!("{}  ({allocs:.4} allocs/buffer)", gbps(d)),
            );
        }
        if !audio_first {
            mux = pieces;
        }
    }
    let total: usize = mux.iter().map(Bytes::len).sum();
    let gbps = |d: Duration| format!("{:>7.2} GB/s", total as f64 / d.as_secs_f64() / 1e9);

    // Ack parser: BUFFERING/RECEIVED/PERSISTED per fragment, read in 1400-byte chunks.
    let n_frag = 50_000u64;
    let mut acks = String::new();
    for i in 0..n_frag {
        let tc = i * 2000;
        for ev in ["BUFFERING", "RECEIVED", "PERSISTED"] {
            acks.push_str(&format!(
                "{{\"EventType\":\"{ev}\",\"FragmentTimecode\":{tc},\"FragmentNumber\":\"9134385233318143239268206260774392014626486{i:04}\"}}\n"
            ));
        }
    }
    let mut results = Vec::with_capacity(64);
    let d = time(|| {
        let mut p = AckParser::new();
        let mut count = 0u64;
        for chunk in acks.as_bytes().chunks(1400) {
            p.push(chunk, &mut results);
            for r in results.drain(..) {
                black_box(r.unwrap());
                count += 1;
            }
        }
        assert_eq!(count, n_frag * 3);
    });
    let rate = (n_frag * 3) as f64 / d.as_secs_f64();
    row(
        "ack parser (1400-byte reads)",
        d,
        format!("{:>7.2} M acks/s", rate / 1e6),
    );

    // Store: one fragment per cluster, appended in matroskamux-sized buffers, released by
    // PERSISTED, with a bounded backlog of ~8 fragments.
    let limits = StoreLimits {
        max_bytes: 8 << 20,
        max_duration_ns: u64::MAX,
    };
    let per_cluster = mux.len() / CLUSTERS;
    let d = time(|| {
        let mut s = FragmentStore::new(limits, AckLevel::Persisted);
        let mut pieces = mux.iter();
        for c in 0..CLUSTERS as u64 {
            black_box(s.begin(c * 1000, c * 1_000_000_000));
            for p in pieces.by_ref().take(per_cluster) {
                black_box(s.append(p.clone()));
            }
            s.finish((c + 1) * 1_000_000_000);
            if c >= 4 {
                black_box(s.ack(AckLevel::Received, (c - 4) * 1000));
                black_box(s.ack(AckLevel::Persisted, (c - 4) * 1000));
            }
        }
        black_box(s.backlog());
    });
    let appends = (per_cluster * CLUSTERS) as f64;
    row(
        "store begin+append+ack (matroskamux buffers)",
        d,
        format!(
            "{}  ({:.1} M appends/s)",
            gbps(d),
            appends / d.as_secs_f64() / 1e6
        ),
    );
}

//! The splitter test harness: runs a stream through a [`Splitter`] cut at given places, and
//! turns the events into comparable values. Shared by the unit tests (`src/mkv/tests.rs`)
//! and the tests on real matroskamux output (`tests/matroskamux_output.rs`, which includes
//! this file with `#[path]`), so it names the splitter's types through its parent module
//! only, which imports them from `crate::mkv` in the unit tests and from `gstkvs::mkv` in the
//! integration test. No GStreamer here.

use super::{Bytes, Event, FragmentStart, FragmentSummary, Limits, MkvError, Splitter, TrackInfo};

/// An event with its bytes owned, data pieces merged.
#[derive(Clone, PartialEq, Eq)]
pub enum N {
    Header(Vec<u8>, String, u64, Vec<TrackInfo>),
    Start(FragmentStart),
    Data(Vec<u8>),
    Cut(FragmentSummary),
    End(FragmentSummary),
    Inter(Vec<u8>),
    /// Time went back: the next fragment's timecode, and the shift.
    Back(u64, u64),
}

impl std::fmt::Debug for N {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum = |b: &[u8]| {
            b.iter()
                .fold(0u32, |h, &x| h.wrapping_mul(31).wrapping_add(x as u32))
        };
        match self {
            N::Header(b, d, s, t) => write!(
                f,
                "Header({} bytes #{:x}, {d}, {s}, {t:?})",
                b.len(),
                sum(b)
            ),
            N::Start(s) => write!(f, "{s:?}"),
            N::Data(b) => write!(f, "Data({} bytes #{:x})", b.len(), sum(b)),
            N::Cut(s) => write!(f, "Cut {s:?}"),
            N::End(s) => write!(f, "{s:?}"),
            N::Inter(b) => write!(f, "Inter({} bytes #{:x})", b.len(), sum(b)),
            N::Back(t, s) => write!(f, "Back(to {t}, shifted {s})"),
        }
    }
}

pub fn normalize(events: &[Event]) -> Vec<N> {
    let mut v: Vec<N> = Vec::new();
    for e in events {
        match e {
            Event::Header(h) => v.push(N::Header(
                h.bytes.to_vec(),
                h.doc_type.clone(),
                h.timecode_scale,
                h.tracks.clone(),
            )),
            Event::FragmentStart(s) => v.push(N::Start(s.clone())),
            Event::FragmentData(d) => {
                if let Some(N::Data(prev)) = v.last_mut() {
                    prev.extend_from_slice(d);
                } else {
                    v.push(N::Data(d.to_vec()));
                }
            }
            Event::FragmentCut(s) => v.push(N::Cut(s.clone())),
            Event::FragmentEnd(s) if s.continued => {
                // What is sent: the bytes past `whole_size` (the start of the block that
                // begins the next fragment) go again there, so the same stream cut
                // elsewhere gives the same values.
                let mut s = s.clone();
                let extra = (s.size - s.whole_size) as usize;
                if let Some(N::Data(d)) = v.last_mut() {
                    d.truncate(d.len() - extra);
                }
                s.size = s.whole_size;
                s.continued = false;
                v.push(N::End(s));
            }
            Event::FragmentEnd(s) => v.push(N::End(s.clone())),
            Event::Interstitial(b) => v.push(N::Inter(b.to_vec())),
            Event::TimeWentBack { timecode, shift } => v.push(N::Back(*timecode, *shift)),
        }
    }
    v
}

/// Feeds `data` cut at `cuts` (sorted positions) and finishes.
pub fn run_cuts(data: &[u8], cuts: &[usize], limits: Limits) -> (Vec<Event>, Result<(), MkvError>) {
    run_splitter(Splitter::new(limits), data, cuts)
}

/// [`run_cuts`] with the splitter in AWS shape (what the producer sends).
pub fn run_cuts_aws(
    data: &[u8],
    cuts: &[usize],
    limits: Limits,
) -> (Vec<Event>, Result<(), MkvError>) {
    run_splitter(Splitter::new(limits).aws_shape(true), data, cuts)
}

/// Feeds `data` to `sp` cut at `cuts` (sorted positions) and finishes.
pub fn run_splitter(
    mut sp: Splitter,
    data: &[u8],
    cuts: &[usize],
) -> (Vec<Event>, Result<(), MkvError>) {
    let mut out = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        if c < last {
            continue;
        }
        if let Err(e) = sp.push(Bytes::copy_from_slice(&data[last..c]), &mut out) {
            return (out, Err(e));
        }
        last = c;
    }
    let r = sp.finish(&mut out);
    (out, r)
}

pub fn run(data: &[u8]) -> (Vec<Event>, Result<(), MkvError>) {
    run_cuts(data, &[], Limits::default())
}

pub fn every(n: usize, len: usize) -> Vec<usize> {
    (1..len).step_by(n).collect()
}

/// Tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn cuts(&mut self, len: usize, max_gap: usize) -> Vec<usize> {
        let mut v = Vec::new();
        let mut p = 0;
        while p < len {
            p += 1 + self.below(max_gap);
            v.push(p.min(len));
        }
        v
    }
}

/// Number of fragments (`FragmentEnd`s).
pub fn fragments(n: &[N]) -> usize {
    n.iter().filter(|e| matches!(e, N::End(_))).count()
}

//! The spool: fragments on disk until the service has them, so that an outage longer than
//! the memory store, a crash or a restart loses nothing. Free of GStreamer.
//!
//! One directory per stream holds segment files of records. A segment starts with a segment
//! record that names its format and its generation's nonce; every record starts at a
//! multiple of 4096 bytes (the space to the next one is zero padding), so that fragments are
//! written with `O_DIRECT` (no copy into the page cache) where the filesystem allows it.
//!
//! - Segment record (at offset 0), in the first format's layout so that it is told apart
//!   from a first-format record: `[len: u32 LE][kind 4][b"kvsspool", version u32 LE = 2,
//!   nonce u64 LE, checksum kind u8][checksum: u64 LE]`, `len` counting kind and payload, the
//!   checksum FNV-1a's constants over 64-bit words of kind and payload.
//! - Every other record: `[len: u32 LE][kind: u8][nonce: u64 LE][payload][checksum: u64 LE]`,
//!   `len` counting kind, nonce and payload, the checksum (seeded with the nonce) over
//!   everything before it, `len` included: XXH64 (checksum kind 1) or four CRC-32C lanes
//!   over interleaved 8-byte words, mixed to 64 bits (kind 2). The writer takes CRC-32C where
//!   the CPU has the instruction (SSE 4.2), XXH64 elsewhere; a reader computes either. Kinds:
//!   - header: `id u64, producer_start_ms u64, media type (u16 length + UTF-8), header bytes`;
//!   - fragment: `id u64, header id u64, timecode u64, start_ns u64, end_ns u64, bytes`;
//!   - done: `id u64`: the fragment was acknowledged (or rejected) and is never sent again.
//!
//! A whole fragment is written when it ends (copied into an aligned staging buffer and
//! checksummed on the way, written from it 2 MB at a time) and made durable by one fdatasync.
//! The staging buffer is as large as the stream's largest fragment needs, from 64 kB up to
//! 2 MB (a huge page): a stream of small fragments does not hold 2 MB for it.
//! A done record is written without fsync: a crash of the process keeps it (the page cache
//! survives); a power cut may lose it and cost one fragment sent twice. A segment whose
//! fragments are all done is deleted; the current one, once nothing in it is pending, is
//! reused in place from its start with a new generation (nonce + 1): no blocks are freed
//! and allocated again. Records left after the write head by an older generation carry an
//! older nonce: they end the segment, they are never taken as records. A torn last record (a
//! crash during the write) carries the generation's nonce but fails its length or checksum:
//! it is cut off when the spool is opened, and reported, never sent. Fragments are counted
//! as spooled only once their fdatasync has returned.
//!
//! The spool holds the camera's video: the directories it creates are its user's only
//! (0700), its files too (0600), and none is opened through a symbolic link (`O_NOFOLLOW`): a
//! link where a spool file should be (planted by someone who can write the directory) is
//! refused, never followed, and the spool is then not used. A stream directory others can
//! write, or another user's, is used but warned of. A stream named only of dots (`.`, `..`)
//! has its dots written `%2E` in its directory's name, which stays inside `spool-dir`.
//!
//! Spools of the first format (no segment record, records `[len][kind][payload][checksum]`
//! packed end to end, FNV checksums) are still read and recovered; new records always go to
//! a new segment of the current format.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;

const KIND_HEADER: u8 = 1;
const KIND_FRAGMENT: u8 = 2;
const KIND_DONE: u8 = 3;
/// The segment record (current format): magic, version, nonce.
const KIND_SEGMENT: u8 = 4;
const MAGIC: &[u8; 8] = b"kvsspool";
const VERSION: u32 = 2;
/// Records start at multiples of this (`O_DIRECT` needs offsets, lengths and memory aligned
/// to the device's logical block; 4096 covers 512 too).
const ALIGN: u64 = 4096;
/// Bytes before a record's payload: length, kind, nonce.
const HEAD: u64 = 13;
/// The largest staging buffer fragments are copied into (and checksummed from) before a
/// write.
const STAGE: usize = 2 << 20;
/// A new segment file starts once the current one is this large: an eighth of the spool's
/// size (or of the disk space free when it opened, if less), from `SEGMENT_MIN` to
/// `SEGMENT_MAX`. The oldest fragments are dropped a segment at a time.
const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
const SEGMENT_MIN: u64 = 1024 * 1024;
/// With nothing pending, the current segment is reused from its start once it is this large.
const RECLAIM_AT: u64 = 4 * 1024 * 1024;
/// ... and its file is also emptied if it has grown larger than this (after an outage).
const REUSE_AT_MOST: u64 = 32 * 1024 * 1024;
/// Larger records are taken as garbage (the service's fragments are at most 50 MB).
const MAX_RECORD: u64 = 64 * 1024 * 1024;

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// The first format's checksum (and the segment record's): FNV-1a's constants over 8-byte
/// little-endian words (the tail zero-padded).
fn checksum(parts: &[&[u8]]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut carry = [0u8; 8];
    let mut filled = 0;
    for part in parts {
        let mut bytes = *part;
        if filled > 0 {
            let take = (8 - filled).min(bytes.len());
            carry[filled..filled + take].copy_from_slice(&bytes[..take]);
            filled += take;
            bytes = &bytes[take..];
            if filled < 8 {
                continue;
            }
            h = (h ^ u64::from_le_bytes(carry)).wrapping_mul(PRIME);
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = (h ^ u64::from_le_bytes(w.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
        }
        let rest = words.remainder();
        carry[..rest.len()].copy_from_slice(rest);
        filled = rest.len();
    }
    if filled > 0 {
        carry[filled..].fill(0);
        h = (h ^ u64::from_le_bytes(carry)).wrapping_mul(PRIME);
    }
    h ^ (h >> 29)
}

/// The 32-byte stripes both checksums take at a time: bytes short of a whole stripe wait for
/// the next ones.
#[derive(Clone, Copy)]
struct Stripes {
    buf: [u8; 32],
    filled: usize,
    /// Bytes taken in so far.
    total: u64,
}

impl Stripes {
    const fn new() -> Stripes {
        Stripes {
            buf: [0; 32],
            filled: 0,
            total: 0,
        }
    }

    /// Hands `data`'s whole stripes (a waiting one completed first) to `take`; keeps the rest.
    fn feed(&mut self, mut data: &[u8], mut take: impl FnMut(&[u8])) {
        self.total += data.len() as u64;
        if self.filled > 0 {
            let n = (32 - self.filled).min(data.len());
            self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled < 32 {
                return;
            }
            take(&self.buf);
            self.filled = 0;
        }
        let whole = data.len() / 32 * 32;
        take(&data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    /// The bytes waiting for a whole stripe.
    fn tail(&self) -> &[u8] {
        &self.buf[..self.filled]
    }
}

/// XXH64, fed in pieces: four independent multiply lanes, about twice as fast as the word-wise
/// FNV on one.
struct Xxh64 {
    v: [u64; 4],
    stripes: Stripes,
    seed: u64,
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn xxh_round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

impl Xxh64 {
    fn new(seed: u64) -> Xxh64 {
        Xxh64 {
            v: [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ],
            stripes: Stripes::new(),
            seed,
        }
    }

    fn stripes(v: &mut [u64; 4], data: &[u8]) {
        let [mut a, mut b, mut c, mut d] = *v;
        for s in data.chunks_exact(32) {
            a = xxh_round(a, le64(&s[0..]));
            b = xxh_round(b, le64(&s[8..]));
            c = xxh_round(c, le64(&s[16..]));
            d = xxh_round(d, le64(&s[24..]));
        }
        *v = [a, b, c, d];
    }

    fn update(&mut self, data: &[u8]) {
        let v = &mut self.v;
        self.stripes.feed(data, |whole| Self::stripes(v, whole));
    }

    fn finish(&self) -> u64 {
        let [a, b, c, d] = self.v;
        let mut h = if self.stripes.total >= 32 {
            let mut h = a
                .rotate_left(1)
                .wrapping_add(b.rotate_left(7))
                .wrapping_add(c.rotate_left(12))
                .wrapping_add(d.rotate_left(18));
            for v in [a, b, c, d] {
                h = (h ^ xxh_round(0, v)).wrapping_mul(P1).wrapping_add(P4);
            }
            h
        } else {
            self.seed.wrapping_add(P5)
        };
        h = h.wrapping_add(self.stripes.total);
        let mut tail = self.stripes.tail();
        while tail.len() >= 8 {
            h ^= xxh_round(0, le64(tail));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            tail = &tail[8..];
        }
        if tail.len() >= 4 {
            let w = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
            h ^= w.wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            tail = &tail[4..];
        }
        for &byte in tail {
            h ^= (byte as u64).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

#[cfg(test)]
fn xxh64(seed: u64, data: &[u8]) -> u64 {
    let mut h = Xxh64::new(seed);
    h.update(data);
    h.finish()
}

/// CRC-32C (Castagnoli, reflected), one byte at a time: for CPUs without the instruction.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32c_byte(crc: u32, byte: u8) -> u32 {
    CRC_TABLE[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8)
}

/// The CPU computes CRC-32C (SSE 4.2).
fn crc32c_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sse4.2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_stripes_sse42(lanes: &mut [u64; 4], data: &[u8]) {
    use std::arch::x86_64::_mm_crc32_u64;
    let [mut a, mut b, mut c, mut d] = *lanes;
    for s in data.chunks_exact(32) {
        a = _mm_crc32_u64(a, le64(&s[0..]));
        b = _mm_crc32_u64(b, le64(&s[8..]));
        c = _mm_crc32_u64(c, le64(&s[16..]));
        d = _mm_crc32_u64(d, le64(&s[24..]));
    }
    *lanes = [a, b, c, d];
}

/// `crc32c_stripes_sse42` over `src`, copying it to `dst` on the way (one pass instead of a
/// copy and a second read). `dst` is the staging buffer, which only the disk reads (O_DIRECT):
/// streaming stores write it without first reading each line into the cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_copy_sse42(lanes: &mut [u64; 4], dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::_mm_crc32_u64;
    let [mut a, mut b, mut c, mut d] = *lanes;
    let (dst, src) = (dst.as_chunks_mut::<8>().0, src.as_chunks::<8>().0);
    // Each word loaded once, then stored and checksummed from the register: the stores and
    // the CRC instructions go to different execution ports and overlap.
    for (t, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
        let w = [s[0], s[1], s[2], s[3]].map(u64::from_le_bytes);
        for (t, w) in t.iter_mut().zip(w) {
            // SAFETY: `t` is 8 writable bytes; movnti has no alignment requirement.
            unsafe { std::arch::x86_64::_mm_stream_si64(t.as_mut_ptr().cast::<i64>(), w as i64) };
        }
        a = _mm_crc32_u64(a, w[0]);
        b = _mm_crc32_u64(b, w[1]);
        c = _mm_crc32_u64(c, w[2]);
        d = _mm_crc32_u64(d, w[3]);
    }
    // The streaming stores are visible before anything that follows (the write reads them).
    std::arch::x86_64::_mm_sfence();
    *lanes = [a, b, c, d];
}

fn crc32c_stripes_soft(lanes: &mut [u64; 4], data: &[u8]) {
    for s in data.chunks_exact(32) {
        for (lane, word) in lanes.iter_mut().zip(s.chunks_exact(8)) {
            let mut c = *lane as u32;
            for &byte in word {
                c = crc32c_byte(c, byte);
            }
            *lane = c as u64;
        }
    }
}

/// Four CRC-32C lanes over interleaved 8-byte words (lane i takes words i, i + 4, ...), so
/// that the CPU's CRC instruction runs on four independent chains; mixed into 64 bits with
/// the length at the end. Each lane detects what a CRC-32C detects in its words.
struct Crc32c4 {
    lanes: [u64; 4],
    stripes: Stripes,
    hw: bool,
}

impl Crc32c4 {
    fn new(seed: u64) -> Crc32c4 {
        let (lo, hi) = (seed & 0xffff_ffff, seed >> 32);
        Crc32c4 {
            lanes: [lo, hi, lo ^ 0xffff_ffff, hi ^ 0xffff_ffff],
            stripes: Stripes::new(),
            hw: crc32c_in_hardware(),
        }
    }

    fn stripes(lanes: &mut [u64; 4], hw: bool, data: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if hw {
            // SAFETY: the CPU has SSE 4.2 (checked when the hasher was made).
            unsafe { crc32c_stripes_sse42(lanes, data) };
            return;
        }
        let _ = hw;
        crc32c_stripes_soft(lanes, data);
    }

    fn update(&mut self, data: &[u8]) {
        let (lanes, hw) = (&mut self.lanes, self.hw);
        self.stripes
            .feed(data, |whole| Self::stripes(lanes, hw, whole));
    }

    /// Copies `src` to `dst` (as long) and takes it in.
    fn copy_update(&mut self, dst: &mut [u8], src: &[u8]) {
        let mut i = 0;
        if self.stripes.filled > 0 {
            i = (32 - self.stripes.filled).min(src.len());
            dst[..i].copy_from_slice(&src[..i]);
            self.update(&src[..i]);
        }
        #[cfg(target_arch = "x86_64")]
        if self.hw && self.stripes.filled == 0 {
            let whole = (src.len() - i) / 32 * 32;
            // SAFETY: the CPU has SSE 4.2 (checked when the hasher was made).
            unsafe {
                crc32c_copy_sse42(&mut self.lanes, &mut dst[i..i + whole], &src[i..i + whole])
            };
            self.stripes.total += whole as u64;
            i += whole;
        }
        dst[i..].copy_from_slice(&src[i..]);
        self.update(&src[i..]);
    }

    fn finish(&self) -> u64 {
        let mut lanes = self.lanes;
        for (i, &byte) in self.stripes.tail().iter().enumerate() {
            let lane = &mut lanes[i / 8];
            *lane = crc32c_byte(*lane as u32, byte) as u64;
        }
        let a = lanes[0] | lanes[1] << 32;
        let b = lanes[2] | lanes[3] << 32;
        let mut h = a ^ b.rotate_left(29) ^ self.stripes.total.wrapping_mul(P1);
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// The checksum of a segment's records (named in its segment record: the writer takes the
/// fastest its CPU has, any reader computes either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SumKind {
    Xxh64 = 1,
    Crc32c4 = 2,
}

impl SumKind {
    fn best() -> SumKind {
        if crc32c_in_hardware() {
            SumKind::Crc32c4
        } else {
            SumKind::Xxh64
        }
    }

    fn from_byte(b: u8) -> Option<SumKind> {
        match b {
            1 => Some(SumKind::Xxh64),
            2 => Some(SumKind::Crc32c4),
            _ => None,
        }
    }
}

enum Hasher {
    Xxh64(Xxh64),
    Crc32c4(Crc32c4),
}

impl Hasher {
    fn new(kind: SumKind, seed: u64) -> Hasher {
        match kind {
            SumKind::Xxh64 => Hasher::Xxh64(Xxh64::new(seed)),
            SumKind::Crc32c4 => Hasher::Crc32c4(Crc32c4::new(seed)),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Xxh64(h) => h.update(data),
            Hasher::Crc32c4(h) => h.update(data),
        }
    }

    /// Copies `src` to `dst` (as long) and takes it in, in one pass where it can.
    fn copy_update(&mut self, dst: &mut [u8], src: &[u8]) {
        match self {
            Hasher::Crc32c4(h) => h.copy_update(dst, src),
            Hasher::Xxh64(h) => {
                dst.copy_from_slice(src);
                h.update(dst);
            }
        }
    }

    fn finish(&self) -> u64 {
        match self {
            Hasher::Xxh64(h) => h.finish(),
            Hasher::Crc32c4(h) => h.finish(),
        }
    }
}

fn record_sum(kind: SumKind, seed: u64, data: &[u8]) -> u64 {
    let mut h = Hasher::new(kind, seed);
    h.update(data);
    h.finish()
}

/// The stream directory's lock file, held (`flock`) while a spool is open and released by the
/// kernel when the process ends, however it ends. It names the holder's process id.
const LOCK_FILE: &str = "lock";

/// The lock files this process has open, so that a child it forks closes them (see
/// [`close_locks_in_child`]). A `flock` belongs to the open file, which a forked child
/// shares: a child that does not exec (a watchdog, a pre-fork worker) would otherwise hold
/// every spool locked that was open when it was forked, long after this process closed it.
/// Close-on-exec only helps a child that execs.
mod fork_guard {
    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::Once;
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

    /// Lock files open at once in one process (a stream's spool has one); beyond this a
    /// lock is still taken, but a child forked then keeps its copy.
    const SLOTS: usize = 512;
    const FREE: i32 = -1;
    const CLAIMED: i32 = -2;

    struct Slot {
        /// The descriptor, `FREE`, or `CLAIMED` while it is being filled in.
        fd: AtomicI32,
        /// Its file, so that a child closes nothing else under a reused number.
        dev: AtomicU64,
        ino: AtomicU64,
        /// This process holds the lock through it (a spool is open).
        held: AtomicBool,
    }

    static SLOTS_TABLE: [Slot; SLOTS] = [const {
        Slot {
            fd: AtomicI32::new(FREE),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            held: AtomicBool::new(false),
        }
    }; SLOTS];

    /// Forks begun and ended: odd while one is under way (incremented before it, and after
    /// it in both processes).
    static FORKS: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn before_fork() {
        FORKS.fetch_add(1, Ordering::SeqCst);
    }

    extern "C" fn after_fork_in_parent() {
        FORKS.fetch_add(1, Ordering::SeqCst);
    }

    /// In a forked child, before `fork()` returns there: closes the child's copies of the
    /// lock files (the parent's locks stay held by the parent's copies). Only
    /// async-signal-safe calls, no lock, no allocation.
    extern "C" fn close_locks_in_child() {
        FORKS.fetch_add(1, Ordering::SeqCst);
        for slot in &SLOTS_TABLE {
            let fd = slot.fd.swap(FREE, Ordering::SeqCst);
            slot.held.store(false, Ordering::SeqCst);
            if fd < 0 {
                continue;
            }
            // The large-file call where glibc has both: the other fails with EOVERFLOW for an
            // inode number beyond 32 bits on a 32-bit system.
            #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
            use libc::{fstat, stat};
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            use libc::{fstat64 as fstat, stat64 as stat};
            let mut st = std::mem::MaybeUninit::<stat>::uninit();
            // SAFETY: fstat and close are async-signal-safe; `st` is written by fstat before
            // it is read. A descriptor closed by the parent before the fork (its slot not
            // freed yet) may have been reused for another file: that one is left open.
            unsafe {
                if fstat(fd, st.as_mut_ptr()) == 0 {
                    let st = st.assume_init();
                    // dev_t and ino_t are not 64 bits everywhere.
                    #[allow(clippy::unnecessary_cast)]
                    let (dev, ino) = (st.st_dev as u64, st.st_ino as u64);
                    if dev == slot.dev.load(Ordering::SeqCst)
                        && ino == slot.ino.load(Ordering::SeqCst)
                    {
                        libc::close(fd);
                    }
                }
            }
        }
    }

    fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // SAFETY: the handlers are plain functions of this library that take no lock.
            unsafe {
                libc::pthread_atfork(
                    Some(before_fork),
                    Some(after_fork_in_parent),
                    Some(close_locks_in_child),
                );
            }
        });
    }

    /// A lock file's descriptor, known to the fork handler from before it is locked until
    /// it is closed.
    pub(super) struct Registered {
        file: Option<std::fs::File>,
        slot: Option<usize>,
    }

    impl Registered {
        /// Opens `open()`'s file and registers it. A fork between the open and the
        /// registration would give the child an unregistered copy, which would share the
        /// lock once taken: the file is then closed and opened again.
        pub(super) fn open(
            mut open: impl FnMut() -> std::io::Result<std::fs::File>,
        ) -> std::io::Result<Registered> {
            install();
            loop {
                let forks = FORKS.load(Ordering::SeqCst);
                if forks % 2 == 1 {
                    std::thread::yield_now();
                    continue;
                }
                let file = open()?;
                let meta = file.metadata()?;
                let slot = register(file.as_raw_fd(), &meta);
                let registered = Registered {
                    file: Some(file),
                    slot,
                };
                if FORKS.load(Ordering::SeqCst) == forks {
                    return Ok(registered);
                }
            }
        }

        pub(super) fn file(&mut self) -> &mut std::fs::File {
            self.file.as_mut().expect("open until dropped")
        }

        /// Its lock is taken: this process holds the spool.
        pub(super) fn set_held(&self) {
            if let Some(i) = self.slot {
                SLOTS_TABLE[i].held.store(true, Ordering::SeqCst);
            }
        }

        /// Whether this process holds the lock of the file `meta` describes through another
        /// descriptor (another spool of this process has it open).
        pub(super) fn held_elsewhere_in_this_process(&self, meta: &std::fs::Metadata) -> bool {
            use std::os::unix::fs::MetadataExt;
            SLOTS_TABLE.iter().enumerate().any(|(i, s)| {
                Some(i) != self.slot
                    && s.held.load(Ordering::SeqCst)
                    && s.dev.load(Ordering::SeqCst) == meta.dev()
                    && s.ino.load(Ordering::SeqCst) == meta.ino()
            })
        }
    }

    impl Drop for Registered {
        /// Closes the descriptor, then forgets it: a child forked in between closes only
        /// what is still that file.
        fn drop(&mut self) {
            if let Some(i) = self.slot {
                SLOTS_TABLE[i].held.store(false, Ordering::SeqCst);
            }
            drop(self.file.take());
            if let Some(i) = self.slot {
                SLOTS_TABLE[i].fd.store(FREE, Ordering::SeqCst);
            }
        }
    }

    fn register(fd: RawFd, meta: &std::fs::Metadata) -> Option<usize> {
        use std::os::unix::fs::MetadataExt;
        let i = SLOTS_TABLE.iter().position(|s| {
            s.fd.compare_exchange(FREE, CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        let slot = &SLOTS_TABLE[i];
        slot.held.store(false, Ordering::SeqCst);
        slot.dev.store(meta.dev(), Ordering::SeqCst);
        slot.ino.store(meta.ino(), Ordering::SeqCst);
        slot.fd.store(fd, Ordering::SeqCst);
        Some(i)
    }
}

/// A stream directory's lock, held until dropped.
struct StreamLock {
    _file: fork_guard::Registered,
}

/// Takes the stream directory's lock, or fails if another spool (another process, or another
/// element of this one) holds it: two writers of one spool would each cut off the record the
/// other is writing, reuse its segment and send its fragments again.
fn lock_stream_dir(dir: &Path, stream: &str) -> io::Result<StreamLock> {
    use std::io::Write;
    let path = dir.join(LOCK_FILE);
    // A child forked a moment ago may not have closed its copy of this process's lock yet.
    let patience = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let mut lock = fork_guard::Registered::open(|| {
            open_spool_file(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false),
                0,
                &path,
            )
        })?;
        match lock.file().try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.file().read_to_string(&mut holder);
                let holder = holder.trim();
                let me = std::process::id().to_string();
                let ours = lock
                    .file()
                    .metadata()
                    .is_ok_and(|m| lock.held_elsewhere_in_this_process(&m));
                if !ours
                    && (holder == me || holder.is_empty())
                    && std::time::Instant::now() < patience
                {
                    // Held by a child forked a moment ago that has not closed its copy yet, or
                    // taken by another element of this process and not yet marked: ask again.
                    drop(lock);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                let holder = if ours {
                    format!(" (another element of this process, {me})")
                } else if holder == me {
                    // The lock file names this process, which does not hold the lock.
                    format!(
                        " (another process: the lock file names this process, {me}, so it is \
                         one forked from this process, or one with the same id in another PID \
                         namespace)"
                    )
                } else if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (process {holder})")
                };
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "the spool of stream {stream} is in use by another kvssink{holder}; give \
                         each running kvssink its own stream-name or spool-dir"
                    ),
                ));
            }
            // A filesystem without locks (some FUSE and network ones): the spool works as
            // before locks were taken; one kvssink per stream is then the user's to keep.
            Err(fs::TryLockError::Error(e))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                ) =>
            {
                return Ok(StreamLock { _file: lock });
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        lock.set_held();
        // The holder before us removes the file when it closes (with nothing pending): a lock
        // taken on the file it removed is no lock, so take the one at the path.
        let held = lock.file().metadata()?;
        match fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let file = lock.file();
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        return Ok(StreamLock { _file: lock });
    }
}

/// The mode of the directories kvssink creates for a spool (`spool-dir` too, if it does not
/// exist): its owner's only. The fragments are the camera's video.
const DIR_MODE: u32 = 0o700;
/// The mode of the files of a spool.
const FILE_MODE: u32 = 0o600;

/// Opens the spool file `path` with `options` (and `flags`), never through a symbolic link
/// (`O_NOFOLLOW`): one planted there by someone who can write the directory would have this
/// process (often root) truncate or overwrite its target. A file it creates is its owner's
/// only.
fn open_spool_file(options: &mut OpenOptions, flags: i32, path: &Path) -> io::Result<File> {
    options
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | flags)
        .open(path)
        .map_err(|e| refuse_link(path, e))
}

/// `e`, or the clear refusal of a symbolic link if that is what `path` is.
fn refuse_link(path: &Path, e: io::Error) -> io::Error {
    let is_link = || fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    // O_NOFOLLOW's error: ELOOP on Linux, EMLINK on the BSDs.
    if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK)) && is_link() {
        symlink_refused(path)
    } else {
        e
    }
}

fn symlink_refused(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symbolic link, where the spool keeps its own file: refused, not followed \
             (someone who can write the spool's directory may have planted it; remove it)",
            path.display()
        ),
    )
}

/// The name of `stream`'s directory under `spool-dir`: the name itself, its characters
/// outside `[a-zA-Z0-9_.-]` (none in a valid stream name) made `_`. A name of dots only
/// (`.`, `..`, valid stream names) would be `spool-dir` itself or its parent: its dots are
/// written `%2E`, which no stream name gives (`%` is not in one).
fn stream_dir_name(stream: &str) -> String {
    let safe: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        "%".to_owned()
    } else if safe.bytes().all(|b| b == b'.') {
        safe.replace('.', "%2E")
    } else {
        safe
    }
}

/// Whether users other than this process's can change what is in `dir` (described by `meta`):
/// it is writable by its group or others, or not this process's user's. A warning, then.
fn exposed_to_others(dir: &Path, meta: &fs::Metadata) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let who = if meta.mode() & 0o022 != 0 {
        format!("is writable by others (mode {:o})", meta.mode() & 0o7777)
    } else if meta.uid() != euid {
        format!(
            "belongs to another user (uid {}, this process's is {euid})",
            meta.uid()
        )
    } else {
        return None;
    };
    Some(format!(
        "the spool's directory {} {who}: they can read, remove or change the fragments kept \
         there before they are sent; make it this user's, with mode 0700",
        dir.display()
    ))
}

/// Makes a new entry in `path`'s directory durable (best effort: some filesystems cannot
/// sync a directory, and their entries are durable with the file's own sync).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let _ = File::open(parent).and_then(|d| d.sync_all());
    }
}

/// The file of segment `n` in a stream's directory.
fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:020}.log"))
}

/// The body of a header record (without the header's bytes, which follow it).
fn header_meta(id: u64, producer_start_ms: u64, media_type: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(18 + media_type.len());
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(&producer_start_ms.to_le_bytes());
    payload.extend_from_slice(&(media_type.len() as u16).to_le_bytes());
    payload.extend_from_slice(media_type.as_bytes());
    payload
}

/// A stream header kept in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledHeader {
    pub id: u64,
    pub producer_start_ms: u64,
    pub media_type: String,
    pub bytes: Bytes,
}

/// Where a fragment that is not yet done lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledFragment {
    pub id: u64,
    pub header_id: u64,
    pub timecode: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    segment: u64,
    /// Offset and length of the fragment's bytes in the segment.
    offset: u64,
    pub len: u64,
}

/// What opening the spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Fragments from an earlier run that the service never acknowledged.
    pub fragments: u64,
    pub bytes: u64,
    /// Bytes of a torn last record (a crash during an append), cut off.
    pub torn_bytes: u64,
    /// Bytes damaged on disk before valid records (a bad block, a damaged file): skipped;
    /// whatever they held is lost.
    pub damaged_bytes: u64,
    /// Warnings for the user, told once when the spool opens: the stream's directory can be
    /// changed by other users (it is writable by others, or another user's).
    pub warnings: Vec<String>,
}

/// Fragments dropped to stay within the spool's size, or to write on a full disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SpoolDropped {
    /// Each one's id and bytes, oldest first.
    pub each: Vec<(u64, u64)>,
    /// Some were dropped because the disk was full (not for `max_bytes`).
    pub disk_full: bool,
}

impl SpoolDropped {
    fn add(&mut self, f: &SpooledFragment) {
        self.each.push((f.id, f.len));
    }

    pub fn fragments(&self) -> u64 {
        self.each.len() as u64
    }
}

#[cfg(test)]
thread_local! {
    /// The size of the disk the spools of a unit test's thread write to.
    static TEST_DISK_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// Whether `e` says the disk (or the user's quota on it) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Bytes an unprivileged writer may still take on the filesystem of `path`.
fn disk_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by statvfs before it is read.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    #[cfg(test)]
    let free = free.min(TEST_DISK_BYTES.with(|d| d.get()));
    Some(free)
}

struct Segment {
    n: u64,
    path: PathBuf,
    /// The write head (of the current generation): bytes in use.
    size: u64,
    /// Fragments in it that are not done.
    live: u64,
}

/// The current segment's file: buffered for the small records, `O_DIRECT` for fragments
/// when the filesystem takes it.
struct SegmentFile {
    file: File,
    direct: Option<File>,
}

impl SegmentFile {
    fn create(path: &Path) -> io::Result<SegmentFile> {
        let file = open_spool_file(
            OpenOptions::new().create(true).truncate(false).write(true),
            0,
            path,
        )?;
        // The file's name is durable before any fragment in it is counted as spooled.
        sync_parent(path);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let direct = {
            let same = |direct: &File| {
                let (a, b) = (file.metadata(), direct.metadata());
                a.is_ok_and(|a| b.is_ok_and(|b| a.dev() == b.dev() && a.ino() == b.ino()))
            };
            open_spool_file(OpenOptions::new().write(true), libc::O_DIRECT, path)
                .ok()
                .filter(same)
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let direct = None;
        Ok(SegmentFile { file, direct })
    }

    /// Writes `buf` (aligned in memory, length and offset multiples of `ALIGN`) at `at`.
    fn write_aligned(&mut self, buf: &[u8], at: u64) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            match direct.write_all_at(buf, at) {
                Ok(()) => return Ok(()),
                // The filesystem or device refuses this direct write: buffered from now on
                // (the same bytes at the same place).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(buf, at)
    }
}

/// The staging buffer's alignment at its full size: a huge page's, so that the kernel can
/// back it with one (a direct write from it is then one segment for the device, not 512).
const STAGE_ALIGN: usize = 2 << 20;
/// The smallest staging buffer: a stream of small fragments does not hold a huge page.
const STAGE_MIN: usize = 64 * 1024;

/// The staging buffer's size for a record of `record` bytes: the record in one piece, up to
/// `STAGE`.
fn stage_size(record: u64) -> usize {
    (align_up(record) as usize)
        .next_power_of_two()
        .clamp(STAGE_MIN, STAGE)
}

/// Room for `size` bytes (a power of two from `STAGE_MIN` to `STAGE`) from an offset aligned
/// to `size` (only those are ever touched); at `STAGE`, the kernel is asked to back them with
/// a huge page.
fn staging_buffer(size: usize) -> Vec<u8> {
    let buf = vec![0u8; 2 * size];
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if size == STAGE {
        let start = buf.as_ptr().align_offset(STAGE_ALIGN);
        // SAFETY: advice on memory this Vec owns (`start + STAGE` is within it); it changes
        // how the memory is backed, not its contents.
        unsafe {
            libc::madvise(
                buf.as_ptr().add(start) as *mut libc::c_void,
                STAGE,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    buf
}

/// A record on its way through the staging buffer.
struct Staged<'a> {
    stage: &'a mut [u8],
    out: &'a mut SegmentFile,
    /// Bytes in the staging buffer, and the file offset of its first.
    fill: usize,
    off: u64,
}

impl Staged<'_> {
    /// Copies `bytes` in (checksumming them there, while in cache), writing out each time
    /// the buffer is full.
    fn put(&mut self, mut bytes: &[u8], mut hasher: Option<&mut Hasher>) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(self.stage.len() - self.fill);
            let copy = &mut self.stage[self.fill..self.fill + n];
            match hasher.as_deref_mut() {
                Some(h) => h.copy_update(copy, &bytes[..n]),
                None => copy.copy_from_slice(&bytes[..n]),
            }
            self.fill += n;
            bytes = &bytes[n..];
            if self.fill == self.stage.len() {
                self.out.write_aligned(self.stage, self.off)?;
                self.off += self.fill as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }
}

/// The spool of one stream.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// A new segment starts once the current one is this large.
    segment_bytes: u64,
    /// Bytes free on the disk when the spool opened.
    disk_free: Option<u64>,
    segments: VecDeque<Segment>,
    out: SegmentFile,
    /// The current segment's generation: in every record, and the seed of its checksum.
    nonce: u64,
    /// The current segment's checksum.
    sum: SumKind,
    /// Staging for fragments (half of it, from an offset aligned to that half's size), made
    /// on first use as large as the fragment (up to `STAGE`), grown when a larger one comes.
    stage: Vec<u8>,
    headers: BTreeMap<u64, SpooledHeader>,
    /// Fragments not done, in order.
    pending: BTreeMap<u64, SpooledFragment>,
    next_id: u64,
    next_header_id: u64,
    /// Dropped (while opening on a full disk, or by an append that then failed) and not yet
    /// returned.
    untold: SpoolDropped,
    /// The stream directory's lock, held as long as the spool is open.
    _lock: StreamLock,
}

impl Spool {
    /// Opens (creating it if needed) the spool of `stream` under `dir`, recovering what an
    /// earlier run left.
    pub fn open(dir: &Path, stream: &str, max_bytes: u64) -> io::Result<(Spool, Recovered)> {
        let dir = dir.join(stream_dir_name(stream));
        // Directories made here are this user's only; existing ones are left as they are.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)?;
        sync_parent(&dir);
        let meta = fs::symlink_metadata(&dir)?;
        if meta.file_type().is_symlink() {
            return Err(symlink_refused(&dir));
        }
        let mut recovered = Recovered::default();
        recovered.warnings.extend(exposed_to_others(&dir, &meta));
        // Before anything is read: what another writer is in the middle of is not touched.
        let lock = lock_stream_dir(&dir, stream)?;
        let mut numbers = Vec::new();
        for e in fs::read_dir(&dir)? {
            let Ok(e) = e else { continue };
            let Some(n) = e.file_name().to_str().and_then(|name| {
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()
            }) else {
                continue;
            };
            // Not opened at all (a FIFO would block the open), never followed.
            match e.file_type() {
                Ok(t) if t.is_symlink() => return Err(symlink_refused(&e.path())),
                Ok(t) if !t.is_file() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is not a regular file, where the spool keeps its own: refused",
                            e.path().display()
                        ),
                    ));
                }
                _ => numbers.push(n),
            }
        }
        numbers.sort_unstable();
        let mut headers = BTreeMap::new();
        let mut pending = BTreeMap::new();
        let mut segments = VecDeque::new();
        // Ids keep growing across runs: a done record never names a later fragment.
        let (mut next_id, mut next_header_id) = (0, 0);
        for n in numbers {
            let path = segment_path(&dir, n);
            let (size, torn, damaged) = scan(&path, n, &mut headers, &mut pending, &mut next_id)?;
            recovered.torn_bytes += torn;
            recovered.damaged_bytes += damaged;
            segments.push_back(Segment {
                n,
                path,
                size,
                live: 0,
            });
        }
        for f in pending.values() {
            recovered.fragments += 1;
            recovered.bytes += f.len;
        }
        for (&id, _) in headers.iter() {
            next_header_id = next_header_id.max(id.saturating_add(1));
        }
        for seg in segments.iter_mut() {
            seg.live = pending.values().filter(|f| f.segment == seg.n).count() as u64;
        }
        let n = segments.back().map_or(0, |s| s.n + 1);
        let path = segment_path(&dir, n);
        let out = SegmentFile::create(&path)?;
        segments.push_back(Segment {
            n,
            path,
            size: 0,
            live: 0,
        });
        let disk_free = disk_free(&dir);
        let segment_bytes =
            (max_bytes.min(disk_free.unwrap_or(u64::MAX)) / 8).clamp(SEGMENT_MIN, SEGMENT_MAX);
        let mut spool = Spool {
            dir,
            max_bytes,
            segment_bytes,
            disk_free,
            segments,
            out,
            nonce: rand::random(),
            sum: SumKind::best(),
            stage: Vec::new(),
            headers,
            pending,
            next_id,
            next_header_id,
            untold: SpoolDropped::default(),
            _lock: lock,
        };
        // On a full disk, what an earlier run left goes first, oldest first (see
        // `take_dropped`).
        let mut dropped = SpoolDropped::default();
        spool.with_disk_space(&mut dropped, Spool::begin_generation)?;
        spool.untold = dropped;
        spool.remove_finished_segments();
        Ok((spool, recovered))
    }

    /// Bytes that were free on the spool's disk when it opened.
    pub fn disk_free_at_open(&self) -> Option<u64> {
        self.disk_free
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fragments not yet done, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &SpooledFragment> {
        self.pending.values()
    }

    /// A fragment, if it is not done (nor dropped).
    pub fn get(&self, id: u64) -> Option<&SpooledFragment> {
        self.pending.get(&id)
    }

    pub fn header(&self, id: u64) -> Option<&SpooledHeader> {
        self.headers.get(&id)
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Keeps a stream header (made durable with the next fragment). Returns its id. What it
    /// dropped to fit on a full disk is returned by `take_dropped`.
    pub fn append_header(
        &mut self,
        producer_start_ms: u64,
        media_type: &str,
        bytes: &Bytes,
    ) -> io::Result<u64> {
        let id = self.next_header_id;
        self.next_header_id += 1;
        let header = SpooledHeader {
            id,
            producer_start_ms,
            media_type: media_type.to_owned(),
            bytes: bytes.clone(),
        };
        // On a full disk the oldest fragments make room, as for a fragment (returned by
        // `take_dropped`).
        let mut dropped = self.take_dropped();
        let written = self.with_disk_space(&mut dropped, |s| s.write_header(&header));
        self.untold = dropped;
        written?;
        self.headers.insert(id, header);
        Ok(id)
    }

    /// A header record for `h` at the write head.
    fn write_header(&mut self, h: &SpooledHeader) -> io::Result<()> {
        let meta = header_meta(h.id, h.producer_start_ms, &h.media_type);
        self.write_small(KIND_HEADER, &[&meta, &h.bytes])
    }

    /// Appends a whole fragment (its bytes in `chunks`) and makes it durable: one record
    /// (written from the staging buffer, 2 MB at a time), one fsync. Drops the oldest
    /// fragments first if the spool would outgrow its size, and as many as it takes if the
    /// disk is full. An error leaves nothing of the fragment in the spool.
    pub fn append_fragment(
        &mut self,
        header_id: u64,
        timecode: u64,
        span: (u64, u64),
        chunks: &[Bytes],
    ) -> io::Result<(SpooledFragment, SpoolDropped)> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let mut dropped = self.take_dropped();
        let room = self.make_room(align_up(HEAD + 40 + len + 8));
        dropped.each.extend(room.each);
        let fragment = self.with_disk_space(&mut dropped, |s| {
            s.write_fragment(header_id, timecode, span, chunks, len)
        });
        match fragment {
            Ok(f) => Ok((f, dropped)),
            Err(e) => {
                // What was dropped is returned by `take_dropped`.
                self.untold = dropped;
                Err(e)
            }
        }
    }

    /// In unit tests, a disk of [`TEST_DISK_BYTES`] bytes (this thread's): `extra` more bytes
    /// than it has left fail as a full disk does.
    fn test_disk_room(&self, extra: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.size() + extra > TEST_DISK_BYTES.with(|d| d.get()) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let _ = extra;
        Ok(())
    }

    /// Fragments dropped and not yet returned: by opening on a full disk, or by an append
    /// that failed after dropping some.
    pub fn take_dropped(&mut self) -> SpoolDropped {
        std::mem::take(&mut self.untold)
    }

    /// Runs `write`; while it fails for a full disk, drops the oldest of the spool's own
    /// fragments (into `dropped`) and runs it again. Fails once nothing is left to drop.
    fn with_disk_space<T>(
        &mut self,
        dropped: &mut SpoolDropped,
        mut write: impl FnMut(&mut Spool) -> io::Result<T>,
    ) -> io::Result<T> {
        loop {
            match write(self) {
                Err(e) if is_disk_full(&e) && self.free_disk(dropped) => {}
                result => return result,
            }
        }
    }

    /// The disk is full: drops the oldest segment and its pending fragments, or, when the
    /// current segment is the only one, empties it (its blocks freed) to begin it again.
    /// False when the spool holds nothing to drop.
    fn free_disk(&mut self, dropped: &mut SpoolDropped) -> bool {
        if self.segments.len() > 1 {
            self.drop_oldest_segment(dropped);
            dropped.disk_full = true;
            return true;
        }
        if self.pending.is_empty() {
            return false;
        }
        for f in std::mem::take(&mut self.pending).values() {
            dropped.add(f);
        }
        dropped.disk_full = true;
        let _ = self.out.file.set_len(0);
        let seg = self.segments.back_mut().expect("a current segment");
        seg.size = 0;
        seg.live = 0;
        self.nonce = self.nonce.wrapping_add(1);
        true
    }

    /// Begins the current segment's generation if it is not begun (a new or emptied
    /// segment): its segment record, then the headers of its pending fragments and the
    /// newest (the live stream's). Left unbegun if a write fails.
    fn begin_generation(&mut self) -> io::Result<()> {
        if self.segments.back().is_some_and(|s| s.size > 0) {
            return Ok(());
        }
        self.write_segment_record()?;
        let newest = self.headers.keys().next_back().copied();
        let needed: Vec<SpooledHeader> = self
            .headers
            .values()
            .filter(|h| Some(h.id) == newest || self.pending.values().any(|f| f.header_id == h.id))
            .cloned()
            .collect();
        for h in needed {
            if let Err(e) = self.write_header(&h) {
                self.segments.back_mut().expect("a current segment").size = 0;
                return Err(e);
            }
        }
        Ok(())
    }

    /// One fragment record at the write head, durable when it returns.
    fn write_fragment(
        &mut self,
        header_id: u64,
        timecode: u64,
        (start_ns, end_ns): (u64, u64),
        chunks: &[Bytes],
        len: u64,
    ) -> io::Result<SpooledFragment> {
        if self
            .segments
            .back()
            .is_some_and(|s| s.size >= self.segment_bytes)
        {
            self.new_segment()?;
        }
        self.begin_generation()?;
        let id = self.next_id;
        self.next_id += 1;
        let mut head = [0u8; HEAD as usize + 40];
        head[..4].copy_from_slice(&((1 + 8 + 40 + len) as u32).to_le_bytes());
        head[4] = KIND_FRAGMENT;
        head[5..13].copy_from_slice(&self.nonce.to_le_bytes());
        for (i, v) in [id, header_id, timecode, start_ns, end_ns]
            .iter()
            .enumerate()
        {
            head[13 + 8 * i..21 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let at = self.segments.back().map_or(0, |s| s.size);
        self.test_disk_room(align_up(head.len() as u64 + len + 8))?;
        let written = self.write_staged(at, &head, chunks)?;
        if let Err(e) = self.out.file.sync_data() {
            // Not durable, and told as not spooled: it must not be found at the next start
            // either (the next record overwrites it; this covers a crash before that).
            let _ = self.out.file.write_all_at(&[0; HEAD as usize], at);
            return Err(e);
        }
        let segment = self.segments.back_mut().expect("a current segment");
        segment.size = at + written;
        segment.live += 1;
        let fragment = SpooledFragment {
            id,
            header_id,
            timecode,
            start_ns,
            end_ns,
            segment: segment.n,
            offset: at + head.len() as u64,
            len,
        };
        self.pending.insert(id, fragment.clone());
        Ok(fragment)
    }

    /// The fragment was acknowledged (or refused for good): it is never sent again.
    /// A segment whose fragments are all done is deleted; otherwise a done record says so
    /// (without it, a crash before the segment goes sends the fragment again at the next
    /// start: a duplicate, nothing lost). Its error is the done record's or the reclaim's;
    /// the fragment is done either way.
    pub fn mark_done(&mut self, id: u64) -> io::Result<()> {
        let Some(f) = self.pending.remove(&id) else {
            return Ok(());
        };
        if let Some(seg) = self.segments.iter_mut().find(|s| s.n == f.segment) {
            seg.live = seg.live.saturating_sub(1);
        }
        self.remove_finished_segments();
        if self.pending.is_empty() && self.segments.back().is_some_and(|s| s.size > RECLAIM_AT) {
            // Begun again without this run's records: no done record needed.
            return self.reclaim();
        }
        if self.segments.iter().any(|s| s.n == f.segment) {
            self.write_small(KIND_DONE, &[&id.to_le_bytes()])?;
        }
        Ok(())
    }

    /// Nothing is pending: the current segment is reused from its start by a new generation,
    /// with the newest header (the live stream's, which later fragments name). Its blocks stay
    /// allocated (emptying and refilling the file cost a block allocation per fragment); what
    /// the older generation left after the write head carries its older nonce.
    fn reclaim(&mut self) -> io::Result<()> {
        if self.out.file.metadata()?.len() > REUSE_AT_MOST {
            self.out.file.set_len(0)?;
        }
        self.nonce = self.nonce.wrapping_add(1);
        // Unbegun until its records are written: if a write fails, the next one begins it
        // (a record of the new generation after the old one's segment record would be read
        // as another generation's, and lost).
        if let Some(seg) = self.segments.back_mut() {
            seg.size = 0;
        }
        let newest = self.headers.keys().next_back().copied();
        self.headers.retain(|&id, _| Some(id) == newest);
        self.begin_generation()
    }

    /// Reads a pending fragment's bytes back.
    pub fn read(&self, f: &SpooledFragment) -> io::Result<Bytes> {
        let path = segment_path(&self.dir, f.segment);
        let file = open_spool_file(OpenOptions::new().read(true), 0, &path)?;
        let mut buf = vec![0; f.len as usize];
        file.read_exact_at(&mut buf, f.offset)?;
        Ok(Bytes::from(buf))
    }

    /// Starts the current segment's generation: its segment record at offset 0.
    fn write_segment_record(&mut self) -> io::Result<()> {
        let current = self.segments.back().map_or(0, |s| s.size);
        self.test_disk_room(ALIGN.saturating_sub(current))?;
        let mut payload = Vec::with_capacity(21);
        payload.extend_from_slice(MAGIC);
        payload.extend_from_slice(&VERSION.to_le_bytes());
        payload.extend_from_slice(&self.nonce.to_le_bytes());
        payload.push(self.sum as u8);
        let kind = [KIND_SEGMENT];
        let mut record = Vec::with_capacity(ALIGN as usize);
        record.extend_from_slice(&(1 + payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&kind);
        record.extend_from_slice(&payload);
        record.extend_from_slice(&checksum(&[&kind, &payload]).to_le_bytes());
        record.resize(ALIGN as usize, 0);
        self.out.file.write_all_at(&record, 0)?;
        if let Some(seg) = self.segments.back_mut() {
            seg.size = ALIGN;
        }
        Ok(())
    }

    /// Writes a small record (a header or a done record) at the write head, buffered and
    /// without fsync: the next fragment's fdatasync makes it durable.
    fn write_small(&mut self, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
        // A segment left unbegun by a failed write gets its segment record first.
        self.begin_generation()?;
        let body: usize = parts.iter().map(|p| p.len()).sum();
        let len = 1 + 8 + body;
        let mut record = Vec::with_capacity(align_up(4 + len as u64 + 8) as usize);
        record.extend_from_slice(&(len as u32).to_le_bytes());
        record.push(kind);
        record.extend_from_slice(&self.nonce.to_le_bytes());
        for p in parts {
            record.extend_from_slice(p);
        }
        let sum = record_sum(self.sum, self.nonce, &record);
        record.extend_from_slice(&sum.to_le_bytes());
        record.resize(align_up(record.len() as u64) as usize, 0);
        self.test_disk_room(record.len() as u64)?;
        let seg = self.segments.back_mut().expect("a current segment");
        self.out.file.write_all_at(&record, seg.size)?;
        seg.size += record.len() as u64;
        Ok(())
    }

    /// Writes a fragment record at `at`: `head`, the `chunks`, the checksum, zero padding.
    /// The bytes are copied into the aligned staging buffer a piece at a time, checksummed
    /// there while in cache, and written from it (`O_DIRECT` where possible). Returns the
    /// bytes written (a multiple of `ALIGN`).
    fn write_staged(&mut self, at: u64, head: &[u8], chunks: &[Bytes]) -> io::Result<u64> {
        let record = (head.len() + 8) as u64 + chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        let size = stage_size(record);
        if self.stage.len() < 2 * size {
            self.stage = staging_buffer(size);
        }
        let size = self.stage.len() / 2;
        let start = self.stage.as_ptr().align_offset(size);
        let mut w = Staged {
            stage: &mut self.stage[start..start + size],
            out: &mut self.out,
            fill: 0,
            off: at,
        };
        let mut hasher = Hasher::new(self.sum, self.nonce);
        w.put(head, Some(&mut hasher))?;
        for chunk in chunks {
            w.put(chunk, Some(&mut hasher))?;
        }
        w.put(&hasher.finish().to_le_bytes(), None)?;
        let (fill, mut off) = (w.fill, w.off);
        if fill > 0 {
            let end = align_up(fill as u64) as usize;
            w.stage[fill..end].fill(0);
            w.out.write_aligned(&w.stage[..end], off)?;
            off += end as u64;
        }
        Ok(off - at)
    }

    fn new_segment(&mut self) -> io::Result<()> {
        let n = self.segments.back().map_or(0, |s| s.n + 1);
        let path = segment_path(&self.dir, n);
        self.out = SegmentFile::create(&path)?;
        self.segments.push_back(Segment {
            n,
            path,
            size: 0,
            live: 0,
        });
        self.nonce = rand::random();
        self.sum = SumKind::best();
        self.remove_finished_segments();
        // Headers still needed must be in a live segment: written again.
        self.begin_generation()
    }

    /// Deletes segments (but the current one) whose fragments are all done.
    fn remove_finished_segments(&mut self) {
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.live == 0) {
            let seg = self.segments.pop_front().expect("checked");
            let _ = fs::remove_file(&seg.path);
        }
    }

    /// Drops the oldest pending fragments, a segment at a time, until `extra` more bytes fit.
    fn make_room(&mut self, extra: u64) -> SpoolDropped {
        let mut dropped = SpoolDropped::default();
        while self.size() + extra > self.max_bytes && self.segments.len() > 1 {
            self.drop_oldest_segment(&mut dropped);
        }
        dropped
    }

    /// Deletes the oldest segment (not the current one) with its pending fragments.
    fn drop_oldest_segment(&mut self, dropped: &mut SpoolDropped) {
        let seg = self.segments.pop_front().expect("not the current segment");
        let gone: Vec<u64> = self
            .pending
            .values()
            .filter(|f| f.segment == seg.n)
            .map(|f| f.id)
            .collect();
        for id in gone {
            if let Some(f) = self.pending.remove(&id) {
                dropped.add(&f);
            }
        }
        let _ = fs::remove_file(&seg.path);
    }
}

impl Drop for Spool {
    /// A spool with nothing pending leaves no file behind (its lock is removed while still
    /// held, before the field closes it).
    fn drop(&mut self) {
        if self.pending.is_empty() {
            for seg in &self.segments {
                let _ = fs::remove_file(&seg.path);
            }
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
        }
    }
}

/// What the records of one segment describe, applied as they are read.
struct Found<'a> {
    n: u64,
    headers: &'a mut BTreeMap<u64, SpooledHeader>,
    pending: &'a mut BTreeMap<u64, SpooledFragment>,
    next_id: &'a mut u64,
}

impl Found<'_> {
    /// A record of `kind` whose `payload` starts at `at` in the segment.
    fn apply(&mut self, kind: u8, payload: &[u8], at: usize) {
        let u = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
        match kind {
            KIND_HEADER if payload.len() >= 18 => {
                let mlen = u16::from_le_bytes([payload[16], payload[17]]) as usize;
                if payload.len() >= 18 + mlen {
                    let id = u(0);
                    self.headers.insert(
                        id,
                        SpooledHeader {
                            id,
                            producer_start_ms: u(8),
                            media_type: String::from_utf8_lossy(&payload[18..18 + mlen])
                                .into_owned(),
                            bytes: Bytes::copy_from_slice(&payload[18 + mlen..]),
                        },
                    );
                }
            }
            KIND_FRAGMENT if payload.len() >= 40 => {
                let id = u(0);
                *self.next_id = (*self.next_id).max(id.saturating_add(1));
                self.pending.insert(
                    id,
                    SpooledFragment {
                        id,
                        header_id: u(8),
                        timecode: u(16),
                        start_ns: u(24),
                        end_ns: u(32),
                        segment: self.n,
                        offset: (at + 40) as u64,
                        len: (payload.len() - 40) as u64,
                    },
                );
            }
            KIND_DONE if payload.len() >= 8 => {
                *self.next_id = (*self.next_id).max(u(0).saturating_add(1));
                self.pending.remove(&u(0));
            }
            _ => {}
        }
    }
}

/// Reads a segment's records; cuts off what follows the last valid one (a torn record, or
/// an older generation's leftovers). Returns (size kept, bytes of a torn record cut, bytes
/// skipped as damaged before valid records).
fn scan(
    path: &Path,
    n: u64,
    headers: &mut BTreeMap<u64, SpooledHeader>,
    pending: &mut BTreeMap<u64, SpooledFragment>,
    next_id: &mut u64,
) -> io::Result<(u64, u64, u64)> {
    let mut file = open_spool_file(OpenOptions::new().read(true), 0, path)?;
    let mut data = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
    file.read_to_end(&mut data)?;
    let mut found = Found {
        n,
        headers,
        pending,
        next_id,
    };
    let (pos, torn, damaged) = match segment_start(&data) {
        Some((nonce, sum)) => scan_current(&data, nonce, sum, &mut found),
        None => match scan_first_format(&data, &mut found) {
            0 => match generation_of_records(&data) {
                // The segment record itself was damaged: its generation is its records'.
                Some((nonce, sum)) => {
                    let (pos, torn, damaged) = scan_current(&data, nonce, sum, &mut found);
                    (pos, torn, damaged + ALIGN as usize)
                }
                None => (0, data.len(), 0),
            },
            pos => (pos, data.len() - pos, 0),
        },
    };
    if data.len() > pos {
        let file = open_spool_file(OpenOptions::new().write(true), 0, path)?;
        file.set_len(pos as u64)?;
        file.sync_all()?;
    }
    Ok((pos as u64, torn as u64, damaged as u64))
}

/// The nonce and checksum of a segment of the current format (`None`: the first format).
fn segment_start(data: &[u8]) -> Option<(u64, SumKind)> {
    let (kind, payload) = record_at(data, 0)?;
    if kind != KIND_SEGMENT
        || payload.len() < 21
        || &payload[..8] != MAGIC
        || payload[8..12] != VERSION.to_le_bytes()
    {
        return None;
    }
    Some((le64(&payload[12..]), SumKind::from_byte(payload[20])?))
}

/// The current format: aligned records of the segment's generation. Where a record is not
/// whole and valid, the generation ends there, unless a valid record of it follows further
/// on: then the bytes between were damaged in place, skipped and counted, and the records
/// after them are read as usual. Returns (end of the last valid record, bytes of a torn
/// last record, bytes skipped as damaged).
fn scan_current(
    data: &[u8],
    nonce: u64,
    sum: SumKind,
    found: &mut Found<'_>,
) -> (usize, usize, usize) {
    let mut pos = ALIGN as usize;
    let mut damaged = 0;
    while pos < data.len() {
        if let Some((kind, payload, next)) = record_current(data, pos, nonce, sum) {
            found.apply(kind, &data[payload.clone()], payload.start);
            pos = next;
            continue;
        }
        let step = ALIGN as usize;
        let Some(next) = (pos + step..data.len())
            .step_by(step)
            .find(|&p| record_current(data, p, nonce, sum).is_some())
        else {
            return (pos, torn_at(&data[pos..], nonce), damaged);
        };
        damaged += next - pos;
        pos = next;
    }
    (pos.min(data.len()), 0, damaged)
}

/// The generation (nonce and checksum) of the first valid record after the segment record,
/// for a segment whose segment record is damaged.
fn generation_of_records(data: &[u8]) -> Option<(u64, SumKind)> {
    (ALIGN as usize..data.len())
        .step_by(ALIGN as usize)
        .find_map(|p| {
            let nonce = le64(data.get(p + 5..p + HEAD as usize)?);
            [SumKind::Crc32c4, SumKind::Xxh64]
                .into_iter()
                .find(|&sum| record_current(data, p, nonce, sum).is_some())
                .map(|sum| (nonce, sum))
        })
}

/// The valid record of generation `nonce` at `pos`: its kind, where its payload lies, and
/// where the next record begins.
fn record_current(
    data: &[u8],
    pos: usize,
    nonce: u64,
    sum: SumKind,
) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let rest = data.get(pos..)?;
    let head = rest.get(..HEAD as usize)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
    if le64(&head[5..]) != nonce || !(9..=MAX_RECORD).contains(&len) {
        return None;
    }
    let end = 4 + len as usize;
    let stored = rest.get(end..end + 8)?;
    if le64(stored) != record_sum(sum, nonce, &rest[..end]) {
        return None;
    }
    let next = pos + align_up(end as u64 + 8) as usize;
    Some((head[4], pos + HEAD as usize..pos + end, next))
}

/// Bytes of a torn record at the start of `rest`, where the generation's valid records end:
/// a record of this generation cut short (or not checksummed as written), or bytes too few
/// for a record head that are not zeros. Zeros and an older generation's records are not.
fn torn_at(rest: &[u8], nonce: u64) -> usize {
    let Some(head) = rest.get(..HEAD as usize) else {
        return if rest.iter().any(|&b| b != 0) {
            rest.len()
        } else {
            0
        };
    };
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
    if le64(&head[5..]) != nonce || !(9..=MAX_RECORD).contains(&len) {
        return 0;
    }
    (align_up(4 + len + 8) as usize).min(rest.len())
}

/// The first format: records end to end. Returns the end of the last valid record.
fn scan_first_format(data: &[u8], found: &mut Found<'_>) -> usize {
    let mut pos = 0usize;
    while pos < data.len() {
        let Some((kind, payload)) = record_at(data, pos) else {
            break;
        };
        found.apply(kind, payload, pos + 5);
        pos += 4 + payload.len() + 1 + 8;
    }
    pos
}

/// The first-format record at `pos`: `(kind, payload)`, or `None` when it is torn or
/// corrupt.
fn record_at(data: &[u8], pos: usize) -> Option<(u8, &[u8])> {
    let len = u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?) as usize;
    if len == 0 || len as u64 > MAX_RECORD {
        return None;
    }
    let body = data.get(pos + 4..pos + 4 + len)?;
    let sum = u64::from_le_bytes(data.get(pos + 4 + len..pos + 12 + len)?.try_into().ok()?);
    if checksum(&[body]) != sum {
        return None;
    }
    Some((body[0], &body[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, max: u64) -> (Spool, Recovered) {
        Spool::open(dir, "cam/1", max).unwrap()
    }

    #[test]
    fn the_checksum_does_not_depend_on_how_the_record_is_cut() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let whole = checksum(&[&data]);
        for cuts in [[1, 2], [7, 8], [8, 16], [3, 999], [500, 501], [0, 1000]] {
            let (a, rest) = data.split_at(cuts[0]);
            let (b, c) = rest.split_at(cuts[1] - cuts[0]);
            assert_eq!(checksum(&[a, b, c]), whole, "{cuts:?}");
        }
        let mut flipped = data.clone();
        flipped[999] ^= 1;
        assert_ne!(checksum(&[&flipped]), whole);
        assert_ne!(checksum(&[&data[..999]]), whole, "a shorter record differs");
    }

    #[test]
    fn fragments_survive_a_restart_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(r, Recovered::default());
        let h = s
            .append_header(1_000, "video/h264", &Bytes::from_static(b"HEADER"))
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..3u64 {
            let chunks = [Bytes::from(vec![i as u8; 10]), Bytes::from_static(b"tail")];
            let (f, d) = s
                .append_fragment(
                    h,
                    i * 2000,
                    (i * 2_000_000_000, i * 2_000_000_000 + 1),
                    &chunks,
                )
                .unwrap();
            assert_eq!(d, SpoolDropped::default());
            assert_eq!(s.read(&f).unwrap().len(), 14);
            ids.push(f.id);
        }
        s.mark_done(ids[0]).unwrap();
        drop(s);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.bytes, r.torn_bytes), (2, 28, 0));
        let pending: Vec<&SpooledFragment> = s.pending().collect();
        assert_eq!(
            pending.iter().map(|f| f.timecode).collect::<Vec<_>>(),
            [2000, 4000]
        );
        let mut expected = vec![1u8; 10];
        expected.extend_from_slice(b"tail");
        assert_eq!(s.read(pending[0]).unwrap(), Bytes::from(expected));
        let header = s.header(pending[0].header_id).unwrap();
        assert_eq!(
            (
                header.producer_start_ms,
                header.media_type.as_str(),
                &header.bytes[..]
            ),
            (1_000, "video/h264", &b"HEADER"[..])
        );
    }

    #[test]
    fn a_spool_smaller_than_a_segment_keeps_to_its_size() {
        // 16 MB: segments of 2 MB, so the oldest go a few fragments at a time.
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 16 << 20);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let mut dropped = 0;
        for i in 0..80u64 {
            let (_, d) = s
                .append_fragment(h, i, (i, i), &[Bytes::from(vec![7u8; 500_000])])
                .unwrap();
            dropped += d.fragments();
            assert!(!d.disk_full);
            assert!(s.size() <= 16 << 20, "{} bytes at fragment {i}", s.size());
        }
        let left: Vec<u64> = s.pending().map(|f| f.timecode).collect();
        assert_eq!(left.len() as u64 + dropped, 80);
        assert!(left.len() >= 24, "{} fragments kept", left.len());
        assert_eq!(left.last(), Some(&79), "the newest is kept");
    }

    #[test]
    fn a_segment_begun_with_nothing_pending_still_has_the_stream_header() {
        // Every fragment acknowledged when the segment is full: the next segment must carry
        // the header itself, since the finished one is deleted.
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 8 << 20);
        let h = s
            .append_header(
                1_700_000_000_000,
                "video/h264",
                &Bytes::from_static(b"HEAD"),
            )
            .unwrap();
        let (f, _) = s
            .append_fragment(h, 0, (0, 1), &[Bytes::from(vec![1u8; 1_500_000])])
            .unwrap();
        s.mark_done(f.id).unwrap();
        let (f2, _) = s
            .append_fragment(h, 1000, (1, 2), &[Bytes::from_static(b"second")])
            .unwrap();
        assert_ne!(f2.segment, f.segment, "a new segment was begun");
        std::mem::forget(s); // a crash: nothing is cleaned up, the lock goes with the process
        let dir_of_stream = dir.path().join("cam_1");
        let _ = fs::remove_file(dir_of_stream.join(LOCK_FILE));
        let (s, recovered) = spool(dir.path(), 8 << 20);
        assert_eq!(recovered.fragments, 1);
        let f2 = s.pending().next().unwrap().clone();
        let header = s
            .header(f2.header_id)
            .expect("the header of the pending fragment");
        assert_eq!(&header.bytes[..], b"HEAD");
        assert_eq!(header.producer_start_ms, 1_700_000_000_000);
        assert_eq!(&s.read(&f2).unwrap()[..], b"second");
    }

    /// Sets this thread's test disk size until dropped.
    struct TestDisk;
    impl TestDisk {
        fn of(bytes: u64) -> TestDisk {
            TEST_DISK_BYTES.with(|d| d.set(bytes));
            TestDisk
        }
    }
    impl Drop for TestDisk {
        fn drop(&mut self) {
            TEST_DISK_BYTES.with(|d| d.set(u64::MAX));
        }
    }

    #[test]
    fn a_full_disk_drops_the_oldest_fragments_for_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let _disk = TestDisk::of(3 << 20);
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let (mut dropped, mut disk_full) = (Vec::new(), false);
        for i in 0..12u64 {
            let (f, d) = s
                .append_fragment(h, i, (i, i), &[Bytes::from(vec![3u8; 500_000])])
                .unwrap();
            assert_eq!(f.timecode, i);
            disk_full |= d.disk_full;
            dropped.extend(d.each.iter().map(|(id, _)| *id));
            assert!(s.size() <= 3 << 20);
        }
        assert!(disk_full && dropped.len() >= 6, "{dropped:?}");
        let left: Vec<u64> = s.pending().map(|f| f.id).collect();
        assert_eq!(left.len() + dropped.len(), 12);
        assert!(
            dropped.iter().all(|d| left.iter().all(|l| d < l)),
            "the oldest go"
        );
        assert!(left.len() >= 2, "{left:?}");

        // A disk filled by something else, with nothing of the spool's to drop: the append
        // fails, and says why.
        drop(_disk);
        for f in left.clone() {
            s.mark_done(f).unwrap();
        }
        let _full = TestDisk::of(0);
        let e = s
            .append_fragment(h, 99, (99, 99), &[Bytes::from(vec![3u8; 500_000])])
            .unwrap_err();
        assert!(is_disk_full(&e), "{e}");
        assert_eq!(s.pending().count(), 0);
        assert_eq!(s.take_dropped(), SpoolDropped::default());
    }

    #[test]
    fn an_earlier_runs_spool_on_a_full_disk_makes_room_for_the_new_run() {
        let dir = tempfile::tempdir().unwrap();
        {
            let _disk = TestDisk::of(3 << 20);
            let (mut s, _) = spool(dir.path(), 1 << 30);
            let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
            for i in 0..5u64 {
                s.append_fragment(h, i, (i, i), &[Bytes::from(vec![4u8; 500_000])])
                    .unwrap();
            }
            std::mem::forget(s); // killed: its files stay
        }
        let _ = fs::remove_file(dir.path().join("cam_1").join(LOCK_FILE));
        let used: u64 = fs::read_dir(dir.path().join("cam_1"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        // Not a block left for the new run's first record.
        let _disk = TestDisk::of(used);
        let (mut s, recovered) = spool(dir.path(), 1 << 30);
        assert_eq!(recovered.fragments, 5);
        let dropped = s.take_dropped();
        assert!(dropped.disk_full && dropped.fragments() >= 1, "{dropped:?}");
        assert_eq!(s.pending().count() as u64 + dropped.fragments(), 5);
        let oldest_left = s.pending().next().map_or(u64::MAX, |f| f.id);
        assert!(dropped.each.iter().all(|(id, _)| *id < oldest_left));
        // And the new run's fragments are written.
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        s.append_fragment(h, 9, (9, 9), &[Bytes::from_static(b"new")])
            .unwrap();
    }

    #[test]
    fn a_spool_in_use_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s
            .append_header(1_000, "video/h264", &Bytes::from_static(b"HEADER"))
            .unwrap();
        let first = [Bytes::from_static(b"first fragment")];
        let (f, _) = s.append_fragment(h, 0, (0, 1), &first).unwrap();
        // A second writer of the same stream: another element, or a process started before
        // this one ended. It is refused, and says by whom.
        let e = Spool::open(dir.path(), "cam/1", 1 << 30).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        let text = e.to_string();
        assert!(
            text.contains("the spool of stream cam/1 is in use by another kvssink")
                && text.contains(&std::process::id().to_string()),
            "{text}"
        );
        // It took nothing: no record cut off, no segment reused, nothing recovered to send.
        let second = [Bytes::from_static(b"second fragment")];
        let (g, _) = s.append_fragment(h, 2000, (2, 3), &second).unwrap();
        assert_eq!(s.read(&f).unwrap(), first[0]);
        assert_eq!(s.read(&g).unwrap(), second[0]);
        drop(s);
        let (mut s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.torn_bytes), (2, 0));
        let ids: Vec<u64> = s.pending().map(|f| f.id).collect();
        for id in ids {
            s.mark_done(id).unwrap();
        }
        drop(s);
        // Closed with nothing pending: no file is left, the lock's included, and the next
        // open takes the lock again.
        let stream_dir = dir.path().join("cam_1");
        assert_eq!(fs::read_dir(&stream_dir).unwrap().count(), 0);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(r, Recovered::default());
        assert!(Spool::open(dir.path(), "cam/1", 1 << 30).is_err());
        drop(s);
    }

    /// Forks a child that runs `then` (async-signal-safe calls only: the test process has
    /// other threads) and then waits to be killed. Returns its pid.
    fn fork_child(then: impl FnOnce()) -> libc::pid_t {
        // SAFETY: the child makes only async-signal-safe calls and never returns.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
            if pid == 0 {
                then();
                loop {
                    libc::pause();
                }
            }
            pid
        }
    }

    fn kill_child(pid: libc::pid_t) {
        // SAFETY: our own child, not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// A flock belongs to the open file, which a forked child shares: a child that does not
    /// exec (a watchdog) kept the spool locked after this process closed it, and the next
    /// spool of this process was refused "by another element of this process".
    #[test]
    fn a_forked_child_keeps_no_spool_locked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        s.append_fragment(h, 0, (0, 1), &[Bytes::from_static(b"kept")])
            .unwrap();
        let child = fork_child(|| {});
        // The child closed its copy; this process's lock holds.
        let e = Spool::open(dir.path(), "cam/1", 1 << 30).err().unwrap();
        assert!(
            e.to_string().contains(&format!(
                "(another element of this process, {})",
                std::process::id()
            )),
            "{e}"
        );
        drop(s);
        let opened = Spool::open(dir.path(), "cam/1", 1 << 30);
        kill_child(child);
        let (s, r) = opened.expect("the spool is free once this process closed it");
        assert_eq!(r.fragments, 1);
        drop(s);
    }

    /// A lock file that names this process, held by another one (a process forked from this
    /// one some other way, or one in another PID namespace): the warning does not say the
    /// holder is this process.
    #[test]
    fn a_lock_held_by_another_process_is_not_told_as_this_ones() {
        let dir = tempfile::tempdir().unwrap();
        let stream_dir = dir.path().join("cam_1");
        fs::create_dir_all(&stream_dir).unwrap();
        let path = stream_dir.join(LOCK_FILE);
        fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mut pipe = [0; 2];
        // SAFETY: a two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let child = fork_child(|| unsafe {
            // SAFETY (the closure's): open, flock and write are async-signal-safe.
            let fd = libc::open(c_path.as_ptr(), libc::O_RDWR);
            let told: &[u8; 1] = if fd >= 0 && libc::flock(fd, libc::LOCK_EX) == 0 {
                b"x"
            } else {
                b"-"
            };
            libc::write(pipe[1], told.as_ptr().cast(), 1);
        });
        let mut locked = [0u8; 1];
        // SAFETY: reads one byte into a one-byte buffer.
        let n = unsafe { libc::read(pipe[0], locked.as_mut_ptr().cast(), 1) };
        let opened = Spool::open(dir.path(), "cam/1", 1 << 30);
        kill_child(child);
        // SAFETY: the pipe's descriptors, closed once.
        unsafe {
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        assert_eq!((n, &locked), (1, b"x"), "the child took the lock");
        let text = opened.err().unwrap().to_string();
        assert!(
            text.contains(
                "in use by another kvssink (another process: the lock file names this process"
            ) && !text.contains("another element of this process"),
            "{text}"
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s
            .append_header(0, "video/h264", &Bytes::from_static(b"H"))
            .unwrap();
        s.append_fragment(h, 0, (0, 1), &[Bytes::from(vec![7u8; 100])])
            .unwrap();
        let (second, _) = s
            .append_fragment(h, 2000, (2, 3), &[Bytes::from(vec![8u8; 100])])
            .unwrap();
        let seg = s.segments.back().unwrap().path.clone();
        drop(s);
        // A crash in the middle of the second fragment's append.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(second.offset + 30)
            .unwrap();
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(r.fragments, 1);
        assert!(r.torn_bytes > 0);
        assert_eq!(s.pending().map(|f| f.timecode).collect::<Vec<_>>(), [0]);
        // A flipped bit is caught by the checksum too.
        let first = s.pending().next().unwrap().clone();
        let data_len = fs::metadata(&seg).unwrap().len();
        let mut data = fs::read(&seg).unwrap();
        data[first.offset as usize + 50] ^= 1;
        fs::write(&seg, &data).unwrap();
        drop(s);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(s.pending().count(), 0);
        assert!(r.torn_bytes > 0 && r.torn_bytes < data_len);
    }

    /// A spool of `n` fragments of 100 bytes (bytes `i`), crashed (its files left as they
    /// are, its lock gone); its current segment's path and fragments.
    fn crashed_spool(dir: &Path, n: u64) -> (PathBuf, Vec<SpooledFragment>) {
        let (mut s, _) = spool(dir, 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let fragments: Vec<SpooledFragment> = (0..n)
            .map(|i| {
                let chunk = Bytes::from(vec![i as u8; 100]);
                s.append_fragment(h, i * 1000, (i, i + 1), &[chunk])
                    .unwrap()
                    .0
            })
            .collect();
        let seg = s.segments.back().unwrap().path.clone();
        let lock = s.dir().join(LOCK_FILE);
        std::mem::forget(s);
        fs::remove_file(lock).unwrap();
        (seg, fragments)
    }

    fn damage(path: &Path, at: u64, bytes: &[u8]) {
        let mut data = fs::read(path).unwrap();
        data[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        fs::write(path, &data).unwrap();
    }

    #[test]
    fn damage_in_the_middle_costs_only_the_damaged_records() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, f) = crashed_spool(dir.path(), 5);
        // A flipped byte in the second fragment's bytes, and the fourth's record head
        // overwritten (its length and generation unreadable).
        damage(&seg, f[1].offset + 50, &[0xEE]);
        damage(&seg, f[3].offset - 40 - HEAD, &[0xFF; 13]);
        let (s, r) = spool(dir.path(), 1 << 30);
        let left: Vec<u64> = s.pending().map(|f| f.timecode).collect();
        assert_eq!(
            left,
            [0, 2000, 4000],
            "the records after the damage are kept"
        );
        assert_eq!((r.fragments, r.torn_bytes), (3, 0));
        assert_eq!(r.damaged_bytes, 2 * ALIGN, "{r:?}");
        for p in s.pending() {
            assert_eq!(s.read(p).unwrap(), Bytes::from(vec![p.id as u8; 100]));
        }
        drop(s);
        // The same again at the next start: nothing valid was cut off.
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(s.pending().count(), 3);
        assert_eq!(r.damaged_bytes, 2 * ALIGN);
    }

    #[test]
    fn a_damaged_segment_record_costs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, _) = crashed_spool(dir.path(), 3);
        damage(&seg, 0, &[0xAB; 64]);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(
            s.pending().map(|f| f.timecode).collect::<Vec<_>>(),
            [0, 1000, 2000]
        );
        assert_eq!((r.torn_bytes, r.damaged_bytes), (0, ALIGN));
        assert_eq!(s.header(0).map(|h| &h.bytes[..]), Some(&b"H"[..]));
    }

    #[test]
    fn a_full_disk_takes_a_header_in_place_of_the_oldest_fragments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        for i in 0..3u64 {
            s.append_fragment(h, i, (i, i), &[Bytes::from(vec![1u8; 1000])])
                .unwrap();
        }
        let _disk = TestDisk::of(s.size());
        let h2 = s.append_header(5, "v", &Bytes::from_static(b"H2")).unwrap();
        let dropped = s.take_dropped();
        assert!(dropped.disk_full && dropped.fragments() == 3, "{dropped:?}");
        drop(_disk);
        s.append_fragment(h2, 9, (9, 9), &[Bytes::from_static(b"after")])
            .unwrap();
        let lock = s.dir().join(LOCK_FILE);
        std::mem::forget(s);
        fs::remove_file(lock).unwrap();
        let (s, _) = spool(dir.path(), 1 << 30);
        let f = s.pending().next().unwrap().clone();
        assert_eq!((s.pending().count(), f.timecode), (1, 9));
        assert_eq!(
            s.header(f.header_id).map(|h| &h.bytes[..]),
            Some(&b"H2"[..])
        );
    }

    #[test]
    fn a_done_record_on_a_full_disk_still_ends_the_fragment() {
        // 16 MB: segments of 2 MB, three 700 kB fragments in the first.
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 16 << 20);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let ids: Vec<u64> = (0..5u64)
            .map(|i| {
                let chunk = Bytes::from(vec![2u8; 700_000]);
                s.append_fragment(h, i, (i, i), &[chunk]).unwrap().0.id
            })
            .collect();
        assert!(s.segments.len() >= 2);
        let first = s.segments.front().unwrap().path.clone();
        let _full = TestDisk::of(0);
        for &id in &ids[..3] {
            // The done record cannot be written; the fragment is done all the same.
            let _ = s.mark_done(id);
            assert!(s.get(id).is_none());
        }
        assert!(
            !first.exists(),
            "a segment whose fragments are all done goes"
        );
        assert_eq!(s.pending().map(|f| f.id).collect::<Vec<_>>(), ids[3..]);
    }

    #[test]
    fn a_reclaim_that_cannot_write_leaves_the_next_fragment_recoverable() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let ids: Vec<u64> = (0..5u64)
            .map(|i| {
                let chunk = Bytes::from(vec![5u8; 1 << 20]);
                s.append_fragment(h, i, (i, i), &[chunk]).unwrap().0.id
            })
            .collect();
        {
            // The last done begins the segment again (more than RECLAIM_AT in it): no room.
            let _full = TestDisk::of(0);
            for id in ids {
                let _ = s.mark_done(id);
            }
        }
        s.append_fragment(h, 7, (7, 7), &[Bytes::from_static(b"next")])
            .unwrap();
        let lock = s.dir().join(LOCK_FILE);
        std::mem::forget(s);
        fs::remove_file(lock).unwrap();
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(s.pending().map(|f| f.timecode).collect::<Vec<_>>(), [7]);
        assert_eq!((r.torn_bytes, r.damaged_bytes), (0, 0));
    }

    #[test]
    fn done_segments_are_deleted_and_a_full_spool_drops_its_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let (f, _) = s
            .append_fragment(h, 0, (0, 1), &[Bytes::from_static(b"x")])
            .unwrap();
        s.new_segment().unwrap();
        let dir_of_stream = s.dir().to_owned();
        let files = || {
            fs::read_dir(&dir_of_stream)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != LOCK_FILE)
                .count()
        };
        assert_eq!(files(), 2);
        s.mark_done(f.id).unwrap();
        assert_eq!(files(), 1, "the finished segment is deleted");

        // Room for about two segments of a 10,000-byte fragment (20 kB each with the
        // segment and header records).
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 45_000);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let mut dropped = SpoolDropped::default();
        for i in 0..4u64 {
            let (_, d) = s
                .append_fragment(h, i, (i, i), &[Bytes::from(vec![0u8; 10_000])])
                .unwrap();
            dropped.each.extend(d.each);
            s.new_segment().unwrap();
        }
        assert!(dropped.fragments() >= 2, "{dropped:?}");
        assert!(s.size() <= 45_000 + 12_288, "{}", s.size());
        let left: Vec<u64> = s.pending().map(|f| f.timecode).collect();
        assert_eq!(left.last(), Some(&3), "the newest is kept: {left:?}");
    }

    #[test]
    fn xxh64_matches_the_reference_and_does_not_depend_on_how_it_is_fed() {
        assert_eq!(xxh64(0, b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(0, b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(0, b"abc"), 0x44BC_2CF5_AD77_0999);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let whole = xxh64(9, &data);
        for cut in [1, 7, 31, 32, 33, 100, 999] {
            let mut h = Xxh64::new(9);
            for piece in data.chunks(cut) {
                h.update(piece);
            }
            assert_eq!(h.finish(), whole, "{cut}");
        }
        assert_ne!(xxh64(10, &data), whole, "the seed (nonce) matters");
    }

    /// A first-format record, as spools written before the segment record were.
    fn first_format_record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut r = ((1 + payload.len()) as u32).to_le_bytes().to_vec();
        r.push(kind);
        r.extend_from_slice(payload);
        r.extend_from_slice(&checksum(&[&[kind], payload]).to_le_bytes());
        r
    }

    #[test]
    fn a_spool_of_the_first_format_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let stream_dir = dir.path().join("cam_1");
        fs::create_dir_all(&stream_dir).unwrap();
        let mut seg = first_format_record(
            KIND_HEADER,
            &[header_meta(0, 5, "video/h264"), b"HDR".to_vec()].concat(),
        );
        for (id, byte) in [(0u64, 1u8), (1, 2)] {
            let mut payload = Vec::new();
            for v in [id, 0, id * 1000, id, id + 1] {
                payload.extend_from_slice(&v.to_le_bytes());
            }
            payload.extend_from_slice(&[byte; 50]);
            seg.extend(first_format_record(KIND_FRAGMENT, &payload));
        }
        seg.extend(first_format_record(KIND_DONE, &0u64.to_le_bytes()));
        let old = segment_path(&stream_dir, 7);
        fs::write(&old, &seg).unwrap();
        // A crash left half a record after them.
        let mut torn = seg.clone();
        torn.extend_from_slice(&first_format_record(KIND_DONE, &1u64.to_le_bytes())[..10]);
        fs::write(&old, &torn).unwrap();

        let (mut s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.bytes, r.torn_bytes), (1, 50, 10));
        let f = s.pending().next().unwrap().clone();
        assert_eq!((f.id, f.timecode), (1, 1000));
        assert_eq!(s.read(&f).unwrap(), Bytes::from(vec![2u8; 50]));
        let h = s.header(f.header_id).unwrap();
        assert_eq!(
            (h.producer_start_ms, h.media_type.as_str(), &h.bytes[..]),
            (5, "video/h264", &b"HDR"[..])
        );
        // New fragments go to a new segment of the current format, with later ids.
        let (g, _) = s
            .append_fragment(0, 2000, (2, 3), &[Bytes::from_static(b"new")])
            .unwrap();
        assert_eq!(g.id, 2);
        drop(s);
        let (mut s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.torn_bytes), (2, 0));
        s.mark_done(1).unwrap();
        assert!(
            !old.exists(),
            "the first-format segment is deleted once done"
        );
        assert_eq!(s.pending().map(|f| f.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_reused_segment_never_takes_an_older_generation_for_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        // Two generations' worth of valid records, then a reclaim: nothing pending.
        let mut ids = Vec::new();
        for i in 0..3u64 {
            let big = Bytes::from(vec![i as u8 + 1; 2 << 20]);
            let (f, _) = s.append_fragment(h, i, (i, i), &[big]).unwrap();
            ids.push(f.id);
        }
        let seg = s.segments.back().unwrap().path.clone();
        for id in ids {
            s.mark_done(id).unwrap();
        }
        let before = fs::metadata(&seg).unwrap().len();
        assert_eq!(
            s.segments.back().unwrap().size,
            2 * ALIGN,
            "reused from its start"
        );
        let (kept, _) = s
            .append_fragment(h, 10, (10, 10), &[Bytes::from_static(b"kept")])
            .unwrap();
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            before,
            "the file keeps its blocks"
        );
        // The old generation's records are still there after the write head, valid under
        // their own nonce.
        let data = fs::read(&seg).unwrap();
        let head = s.segments.back().unwrap().size as usize;
        assert!(data[head..].contains(&3), "an old fragment's bytes remain");
        drop(s);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.bytes, r.torn_bytes), (1, 4, 0));
        let f = s.pending().next().unwrap();
        assert_eq!((f.id, f.timecode), (kept.id, 10));
        assert_eq!(s.read(f).unwrap(), Bytes::from_static(b"kept"));
        drop(s);

        // A torn record of the current generation is still told from those leftovers.
        let (s, _) = spool(dir.path(), 1 << 30);
        let f = s.pending().next().unwrap().clone();
        let seg = segment_path(&dir.path().join("cam_1"), f.segment);
        drop(s);
        let mut data = fs::read(&seg).unwrap();
        data[f.offset as usize] ^= 0x40;
        fs::write(&seg, &data).unwrap();
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!(r.fragments, 0);
        assert_eq!(r.torn_bytes, ALIGN);
        assert_eq!(s.pending().count(), 0);
    }

    #[test]
    fn crc32c_lanes_match_the_reference_in_hardware_and_software() {
        let mut c = !0u32;
        for &b in b"123456789" {
            c = crc32c_byte(c, b);
        }
        assert_eq!(!c, 0xE306_9283);
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let mut soft = [1, 2, 3, 4];
        crc32c_stripes_soft(&mut soft, &data);
        if crc32c_in_hardware() {
            let mut hw = [1, 2, 3, 4];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: checked just above.
            unsafe {
                crc32c_stripes_sse42(&mut hw, &data)
            };
            assert_eq!(hw, soft);
        }
        for kind in [SumKind::Xxh64, SumKind::Crc32c4] {
            let whole = record_sum(kind, 9, &data[..1000]);
            for cut in [1, 7, 31, 32, 33, 100, 999] {
                let mut h = Hasher::new(kind, 9);
                for piece in data[..1000].chunks(cut) {
                    h.update(piece);
                }
                assert_eq!(h.finish(), whole, "{kind:?} {cut}");
                let (mut h, mut copy) = (Hasher::new(kind, 9), vec![0u8; 1000]);
                for (dst, src) in copy.chunks_mut(cut).zip(data[..1000].chunks(cut)) {
                    h.copy_update(dst, src);
                }
                assert_eq!(
                    (h.finish(), &copy[..]),
                    (whole, &data[..1000]),
                    "{kind:?} {cut}"
                );
            }
            assert_ne!(record_sum(kind, 10, &data[..1000]), whole, "{kind:?} seed");
            let mut flipped = data[..1000].to_vec();
            flipped[998] ^= 1;
            assert_ne!(record_sum(kind, 9, &flipped), whole, "{kind:?} tail");
            assert_ne!(record_sum(kind, 9, &data[..999]), whole, "{kind:?} length");
        }
    }

    #[test]
    fn the_staging_buffer_is_as_large_as_the_fragments_need() {
        assert_eq!(stage_size(1), STAGE_MIN);
        assert_eq!(stage_size(100_000), 128 * 1024);
        assert_eq!(stage_size(STAGE as u64), STAGE);
        assert_eq!(stage_size(50 << 20), STAGE);
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = spool(dir.path(), 1 << 30);
        let h = s
            .append_header(0, "video/h264", &Bytes::from_static(b"H"))
            .unwrap();
        // A camera's fragment of 2 s at 400 kbit/s holds no huge page.
        let small = Bytes::from(vec![3u8; 100_000]);
        let (f, _) = s
            .append_fragment(h, 0, (0, 1), std::slice::from_ref(&small))
            .unwrap();
        assert_eq!(s.stage.len(), 2 * 128 * 1024);
        assert_eq!(s.read(&f).unwrap(), small);
        let large = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<_>>());
        s.append_fragment(h, 2000, (2, 3), std::slice::from_ref(&large))
            .unwrap();
        assert_eq!(s.stage.len(), 2 * STAGE);
        s.append_fragment(h, 4000, (4, 5), std::slice::from_ref(&small))
            .unwrap();
        assert_eq!(s.stage.len(), 2 * STAGE, "kept once grown");
        drop(s);
        let (s, r) = spool(dir.path(), 1 << 30);
        assert_eq!((r.fragments, r.torn_bytes), (3, 0));
        let pending: Vec<SpooledFragment> = s.pending().cloned().collect();
        assert_eq!(s.read(&pending[0]).unwrap(), small);
        assert_eq!(s.read(&pending[1]).unwrap(), large);
        assert_eq!(s.read(&pending[2]).unwrap(), small);
    }

    /// The mode bits of `path` itself (a symbolic link's own).
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn spool_files_and_directories_are_private_under_a_022_umask() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask only sets the process's file mode mask (022 is the usual one).
        unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let (mut s, _) = Spool::open(&spool_dir, "cam", 1 << 30).unwrap();
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        s.append_fragment(h, 0, (0, 1), &[Bytes::from_static(b"video")])
            .unwrap();
        s.new_segment().unwrap();
        assert_eq!(mode_of(&spool_dir), 0o700, "spool-dir, created by kvssink");
        assert_eq!(mode_of(s.dir()), 0o700, "the stream's directory");
        let files: Vec<PathBuf> = fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.len() >= 3, "{files:?}");
        for f in &files {
            assert_eq!(mode_of(f), 0o600, "{}", f.display());
        }
        drop(s);
        // A directory the user made is not changed behind their back.
        let mine = dir.path().join("mine");
        fs::create_dir(&mine).unwrap();
        fs::set_permissions(&mine, fs::Permissions::from_mode(0o750)).unwrap();
        let (s, _) = Spool::open(&mine, "cam", 1 << 30).unwrap();
        assert_eq!(mode_of(&mine), 0o750);
        assert_eq!(mode_of(s.dir()), 0o700);
    }

    #[test]
    fn a_symlink_in_place_of_a_spool_file_is_refused_and_never_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let stream_dir = spool_dir.join("cam");
        let target = dir.path().join("target");
        let precious = b"not kvssink's".to_vec();
        let planted = |name: &str| {
            fs::create_dir_all(&stream_dir).unwrap();
            fs::write(&target, &precious).unwrap();
            let link = stream_dir.join(name);
            symlink(&target, &link).unwrap();
            link
        };
        let refused = |link: &Path| {
            let e = Spool::open(&spool_dir, "cam", 1 << 30).err().unwrap();
            let text = e.to_string();
            assert!(
                text.contains(&format!("{} is a symbolic link", link.display())),
                "{text}"
            );
            assert_eq!(fs::read(&target).unwrap(), precious, "{}", link.display());
            assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
            fs::remove_file(link).unwrap();
        };
        // The lock (it was created through the link, with the process id in it) and an
        // earlier run's segment (it was truncated to 0 bytes as a torn record).
        refused(&planted(LOCK_FILE));
        refused(&planted("seg-00000000000000000000.log"));
        fs::remove_file(&target).unwrap();
        let link = stream_dir.join(LOCK_FILE);
        fs::remove_file(&link).unwrap();
        symlink(&target, &link).unwrap();
        assert!(Spool::open(&spool_dir, "cam", 1 << 30).is_err());
        assert!(!target.exists(), "a dangling link's target is not created");
        fs::remove_file(&link).unwrap();

        // The next segment, planted while the spool is open: that write fails, and says why.
        let (mut s, _) = Spool::open(&spool_dir, "cam", 1 << 30).unwrap();
        let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
        let next = segment_path(s.dir(), s.segments.back().unwrap().n + 1);
        fs::write(&target, &precious).unwrap();
        symlink(&target, &next).unwrap();
        let e = s.new_segment().err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("{} is a symbolic link", next.display())),
            "{e}"
        );
        let _ = s.append_fragment(h, 0, (0, 1), &[Bytes::from_static(b"x")]);
        assert_eq!(fs::read(&target).unwrap(), precious);
        drop(s);
        fs::remove_file(&next).unwrap();

        // The stream's directory itself a link to another directory: refused too.
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let linked = spool_dir.join("other");
        symlink(&elsewhere, &linked).unwrap();
        let e = Spool::open(&spool_dir, "other", 1 << 30).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("{} is a symbolic link", linked.display())),
            "{e}"
        );
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_stream_directory_others_can_change_is_warned_of_once_and_left_as_it_is() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (s, r) = Spool::open(dir.path(), "private", 1 << 30).unwrap();
        assert_eq!(r.warnings, Vec::<String>::new());
        drop(s);
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let (s, r) = Spool::open(dir.path(), "open", 1 << 30).unwrap();
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains(&format!(
                "the spool's directory {} is writable by others (mode 777)",
                open.display()
            )),
            "{:?}",
            r.warnings
        );
        assert_eq!(mode_of(&open), 0o777, "not changed behind the user's back");
        drop(s);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let theirs = dir.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let (_s, r) = Spool::open(dir.path(), "theirs", 1 << 30).unwrap();
            assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
            assert!(
                r.warnings[0].contains("belongs to another user (uid 65534"),
                "{:?}",
                r.warnings
            );
        }
    }

    #[test]
    fn stream_names_of_dots_stay_inside_spool_dir_each_in_its_own_directory() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let names = [".", "..", "...", "cam", "a.b", "-_.x"];
        let mut dirs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (mut s, _) = Spool::open(&spool_dir, name, 1 << 30).unwrap();
            assert_eq!(s.dir().parent(), Some(spool_dir.as_path()), "{name}");
            let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
            let bytes = Bytes::from(name.as_bytes().to_vec());
            s.append_fragment(h, i as u64, (0, 1), &[bytes]).unwrap();
            dirs.push(s.dir().to_owned());
        }
        let names_on_disk: Vec<String> = dirs
            .iter()
            .map(|d| d.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names_on_disk,
            ["%2E", "%2E%2E", "%2E%2E%2E", "cam", "a.b", "-_.x"],
            "ordinary names are unchanged: earlier runs' spools are found"
        );
        assert!(
            !dir.path().join("seg-00000000000000000000.log").exists()
                && !spool_dir.join("seg-00000000000000000000.log").exists()
        );
        // Each stream finds its own fragment, and only it.
        for (i, name) in names.iter().enumerate() {
            let (s, r) = Spool::open(&spool_dir, name, 1 << 30).unwrap();
            assert_eq!(r.fragments, 1, "{name}");
            let f = s.pending().next().unwrap();
            assert_eq!(f.timecode, i as u64, "{name}");
            assert_eq!(s.read(f).unwrap(), name.as_bytes(), "{name}");
        }
    }

    #[test]
    fn segments_of_either_checksum_are_recovered() {
        for kind in [SumKind::Xxh64, SumKind::Crc32c4] {
            let dir = tempfile::tempdir().unwrap();
            let (mut s, _) = spool(dir.path(), 1 << 30);
            s.sum = kind;
            s.nonce += 1;
            s.write_segment_record().unwrap();
            let h = s.append_header(0, "v", &Bytes::from_static(b"H")).unwrap();
            let bytes = Bytes::from(vec![5u8; 3 << 20]);
            s.append_fragment(h, 7, (0, 1), std::slice::from_ref(&bytes))
                .unwrap();
            drop(s);
            let (s, r) = spool(dir.path(), 1 << 30);
            assert_eq!((r.fragments, r.torn_bytes), (1, 0), "{kind:?}");
            assert_eq!(s.read(s.pending().next().unwrap()).unwrap(), bytes);
        }
    }
}

//! Append-only memory blocks for fragments kept in memory.
//!
//! Keeping every received buffer alive makes the kernel fault in fresh 4 KiB
//! pages for every read, and keeps hyper from recycling its read buffer. A
//! session instead copies each complete fragment into large blocks (asking
//! the kernel for transparent huge pages where available) and drops the
//! received buffers, which hyper then reuses. Fragments are handed out as
//! zero-copy `Bytes` that keep their block alive.

use crate::mkv::Pieces;
use bytes::Bytes;
use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;
use std::sync::Arc;

/// Huge page size (and block alignment).
const HUGE: usize = 2 * 1024 * 1024;
/// Largest block; bigger fragments get a block of their own.
const MAX_BLOCK: usize = 32 * 1024 * 1024;

struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the block owns its allocation; shared access is read-only through
// `Slice`s of regions that were completely written before the slice was
// created, and the single writer (`Arena`) only writes regions no slice
// covers yet.
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

impl Block {
    fn new(cap: usize) -> Option<Block> {
        let layout = Layout::from_size_align(cap, HUGE).ok()?;
        // SAFETY: non-zero size checked by the caller (cap >= HUGE).
        let ptr = NonNull::new(unsafe { alloc(layout) })?;
        #[cfg(target_os = "linux")]
        // SAFETY: advisory call on memory we own; failure is harmless.
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), cap, libc::MADV_HUGEPAGE);
        }
        Some(Block { ptr, layout })
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `Block::new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

struct Slice {
    block: Arc<Block>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: [off, off+len) lies inside the block and was fully written
        // before this slice was created; it is never written again.
        unsafe { std::slice::from_raw_parts(self.block.ptr.as_ptr().add(self.off), self.len) }
    }
}

/// A per-session writer of fragment bytes into shared blocks.
#[derive(Default)]
pub struct Arena {
    cur: Option<Arc<Block>>,
    used: usize,
    next_cap: usize,
}

impl Arena {
    /// Copies `pieces` into the arena and returns them as one `Bytes`.
    pub fn store(&mut self, pieces: &Pieces) -> Bytes {
        let len = pieces.len();
        if len == 0 {
            return Bytes::new();
        }
        let fits = self
            .cur
            .as_ref()
            .is_some_and(|b| self.used + len <= b.layout.size());
        if !fits {
            let cap = if len > MAX_BLOCK / 2 {
                len.div_ceil(HUGE) * HUGE
            } else {
                // grow from 2 MiB to 32 MiB so small sessions stay small
                self.next_cap = (self.next_cap * 2).clamp(HUGE, MAX_BLOCK);
                self.next_cap.max(len.div_ceil(HUGE) * HUGE)
            };
            match Block::new(cap) {
                Some(b) => {
                    self.cur = Some(Arc::new(b));
                    self.used = 0;
                }
                None => return pieces.to_bytes(),
            }
        }
        let block = self.cur.clone().expect("block present");
        let off = self.used;
        let mut at = off;
        for p in pieces.iter() {
            // SAFETY: [at, at+p.len()) is inside the block (checked above) and
            // not covered by any slice handed out so far.
            unsafe {
                std::ptr::copy_nonoverlapping(p.as_ptr(), block.ptr.as_ptr().add(at), p.len());
            }
            at += p.len();
        }
        self.used = at;
        Bytes::from_owner(Slice { block, off, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_keeps_blocks_alive() {
        let mut a = Arena::default();
        let mut kept = Vec::new();
        for i in 0..50u8 {
            let data: Vec<u8> = (0..100_000).map(|j| (j as u8) ^ i).collect();
            let pieces = Pieces::from(Bytes::from(data.clone()));
            kept.push((a.store(&pieces), data));
        }
        let big = vec![7u8; MAX_BLOCK];
        let b = a.store(&Pieces::from(Bytes::from(big.clone())));
        drop(a);
        for (b, d) in &kept {
            assert_eq!(&b[..], &d[..]);
        }
        assert_eq!(&b[..], &big[..]);
        assert_eq!(Arena::default().store(&Pieces::default()).len(), 0);
    }
}

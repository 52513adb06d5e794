//! The one tokio runtime shared by every kvssink in the process.
//!
//! Sockets are written from this runtime's threads (worker or blocking), and PutMedia's also
//! from the element's streaming thread (`uploader::direct`). A write to a socket the peer has
//! closed raises SIGPIPE, whose default action kills the whole process: Rust programs ignore
//! it, but `gst-launch-1.0`, most C applications and Python do not. A library must not change
//! the host's process-wide signal disposition, so the runtime's threads block SIGPIPE in their
//! own signal mask, and the streaming thread, a thread of the host's, writes PutMedia with
//! `sendmsg(MSG_NOSIGNAL)` (`uploader::transport`): the write then fails with `EPIPE`, which
//! the uploader handles like any broken connection.

use once_cell::sync::Lazy;

/// One worker thread: the work is I/O and a little parsing. With two, a connection's task
/// moved between them and each wake-up of the body stream cost a second thread's wake-up
/// (futex, eventfd) on top.
/// The name of the runtime's threads.
const THREAD_NAME: &str = "kvssink-runtime";

pub static RUNTIME: Lazy<tokio::runtime::Runtime> = Lazy::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(1)
        .thread_name(THREAD_NAME)
        .on_thread_start(block_sigpipe)
        .build()
        .expect("cannot start the kvssink tokio runtime")
});

/// Blocks SIGPIPE for the calling thread only (threads it starts inherit the mask).
///
/// A SIGPIPE raised by a write on this thread then stays pending for the thread and is never
/// delivered; the write returns `EPIPE`.
/// Whether the calling thread is one of the runtime's (where acks are read and kvssink's
/// `fragment-ack` signal is emitted).
pub fn on_runtime_thread() -> bool {
    std::thread::current().name() == Some(THREAD_NAME)
}

pub fn block_sigpipe() {
    // SAFETY: plain libc calls on a local, initialised signal set; pthread_sigmask only
    // changes the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether SIGPIPE is blocked on the calling thread.
pub fn sigpipe_blocked() -> bool {
    // SAFETY: reads the calling thread's mask into a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        libc::sigismember(&set, libc::SIGPIPE) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_thread_blocks_sigpipe() {
        // Worker threads and the blocking pool (DNS lookups, file reads) alike.
        let handle = RUNTIME.handle();
        let workers: Vec<bool> = (0..8)
            .map(|_| {
                handle
                    .block_on(handle.spawn(async { sigpipe_blocked() }))
                    .unwrap()
            })
            .collect();
        assert!(workers.iter().all(|b| *b), "{workers:?}");
        let blocking = handle
            .block_on(handle.spawn_blocking(sigpipe_blocked))
            .unwrap();
        assert!(blocking);
    }

    #[test]
    fn the_calling_thread_is_left_alone() {
        // The host's own threads keep their signal mask.
        let blocked = std::thread::spawn(sigpipe_blocked).join().unwrap();
        assert!(!blocked);
    }
}

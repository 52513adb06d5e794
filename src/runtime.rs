//! The one tokio runtime shared by every kvssink in the process.

use once_cell::sync::Lazy;

/// Two named worker threads are plenty: the work is I/O and a little parsing.
pub static RUNTIME: Lazy<tokio::runtime::Runtime> = Lazy::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("kvssink-runtime")
        .build()
        .expect("cannot start the kvssink tokio runtime")
});

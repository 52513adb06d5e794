//! A process that ends while a kvssink still streams: a C application that calls `exit()`,
//! a Rust one that returns from `main`, with the pipeline PLAYING. (Python's interpreter
//! drops its objects first: the element is destroyed while streaming, and its `dispose`
//! says the same.) The open
//! fragment and whatever the service has not acknowledged are lost, and nothing in GStreamer
//! tells an element that its process is ending: no state change, no EOS, and no one reads the
//! bus any more. So each kvssink registers here while it streams, and a handler that the C
//! library runs at `exit()` writes each stream's loss to standard error, where a service's
//! journal keeps it. A process killed by a signal (SIGTERM, SIGKILL) runs no such handler.

use std::sync::{LazyLock, Mutex, Once};

type Account = Box<dyn Fn() -> Option<String> + Send + Sync>;

struct Entry {
    id: u64,
    /// The process that registered it: a child made by `fork()` that calls `exit()` inherits
    /// the table, not the streams.
    pid: u32,
    account: Account,
}

static RUNNING: LazyLock<Mutex<(u64, Vec<Entry>)>> = LazyLock::new(Mutex::default);

/// A kvssink's entry in the table, removed when this is dropped (when the element stops).
pub(super) struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.1.retain(|e| e.id != self.0);
    }
}

/// Registers a streaming kvssink: `account` says what would be lost if the process ended now
/// (`None`: nothing).
pub(super) fn register(account: Account) -> Registration {
    static HANDLER: Once = Once::new();
    HANDLER.call_once(|| {
        // SAFETY: `at_exit` is a plain function that stays loaded: GStreamer never unloads
        // a plugin.
        unsafe { libc::atexit(at_exit) };
    });
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.0 += 1;
    let id = running.0;
    running.1.push(Entry {
        id,
        pid: std::process::id(),
        account,
    });
    Registration(id)
}

/// The messages of the streams still running in this process, one per stream that would lose
/// something.
pub(super) fn losses() -> Vec<String> {
    let accounts: Vec<Account> = {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        // Taken out: each is said once, and a stream that stops meanwhile finds nothing.
        let (mine, others) = std::mem::take(&mut running.1)
            .into_iter()
            .partition::<Vec<_>, _>(|e| e.pid == pid);
        running.1 = others;
        mine.into_iter().map(|e| e.account).collect()
    };
    accounts.iter().filter_map(|account| account()).collect()
}

/// Writes `message` to standard error, as `kvssink: <message>`.
pub(super) fn tell(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "kvssink: {message}");
}

extern "C" fn at_exit() {
    // A panic must not unwind into the C library.
    let _ = std::panic::catch_unwind(|| {
        for message in losses() {
            tell(&message);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_running_stream_is_told_once_and_a_stopped_one_never() {
        let told = register(Box::new(|| Some("stream a: lost".to_owned())));
        let quiet = register(Box::new(|| None));
        let stopped = register(Box::new(|| Some("stream c: lost".to_owned())));
        drop(stopped);
        assert_eq!(losses(), vec!["stream a: lost".to_owned()]);
        // Taken out: a second exit handler (or one after a fork) says nothing again.
        assert!(losses().is_empty());
        drop((told, quiet));
        assert!(losses().is_empty());
    }
}

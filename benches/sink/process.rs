//! CPU time, children, clocks and `/proc`.

use std::time::Duration;

pub fn cpu_of(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU of this process (every thread) so far.
pub fn cpu_self() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        cpu_of(&ru)
    }
}

/// CPU another process (every live thread) has used so far: the sum of its threads'
/// `/proc/PID/task/TID/schedstat` (nanoseconds on the CPU), or, without schedstat, the
/// user + system clock ticks of `/proc/PID/stat` (10 ms resolution, exited threads included).
pub fn cpu_of_process(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let mut ns = 0u64;
    let mut found = false;
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(Ok(n)) = s.split_whitespace().next().map(str::parse::<u64>)
        {
            ns += n;
            found = true;
        }
    }
    if found {
        return Duration::from_nanos(ns);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name, which ends with the last ')': utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Waits for a child and returns its exit status and resource usage (its own CPU, peak RSS).
pub fn wait4(pid: u32) -> (i32, libc::rusage) {
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

pub fn exited_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Nanoseconds on `CLOCK_MONOTONIC`: the clock of kvs-local's body-read times.
pub use kvs_local::monotonic_ns;

/// A `Key:   123 kB` field of `/proc/*/status` or `/proc/meminfo`, in KiB.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

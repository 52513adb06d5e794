//! `spool-dir`: fragments kept on disk until acknowledged, so that an outage longer than the
//! memory store, or a `kill -9` of the host during an outage, loses nothing. Run in
//! `gst-launch-1.0`, as users run it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::host::*;
use common::*;

const TIMEOUT: Duration = Duration::from_secs(180);

/// A live 320x240 H.264 stream of `seconds` (a key frame a second) through a `tee` into
/// kvssink (with `sink_props`) and into `copy`, unbuffered, so the copy has every byte
/// matroskamux produced.
fn live_line(seconds: u32, stream: &str, sink_props: &str, copy: &Path) -> String {
    live_line_with(seconds, ("", ""), stream, sink_props, copy)
}

/// Noise, which x264 cannot compress below its bitrate: fragments of about 625 kB.
const NOISE_AT_5_MBITS: (&str, &str) = ("pattern=snow", "bitrate=5000");

/// [`live_line`] with `videotestsrc` and `x264enc` properties added.
fn live_line_with(
    seconds: u32,
    (source, encoder): (&str, &str),
    stream: &str,
    sink_props: &str,
    copy: &Path,
) -> String {
    format!(
        "videotestsrc is-live=true num-buffers={} {source} \
         ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 {encoder} \
         ! h264parse ! matroskamux streamable=true ! tee name=t \
         ! queue ! kvssink stream-name={stream} stop-stream-timeout=60 {sink_props} \
         t. ! queue ! filesink buffer-mode=unbuffered location={}",
        seconds * 30,
        copy.display()
    )
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A number from the environment, else `default`.
fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// At test scale, memory for 2 s of video (1 MB) and an outage of 8 s. The full
/// scale (a 10-minute outage, `storage-size=16`, a 1 GB spool) is the same test with
/// `KVSSINK_SPOOL_OUTAGE_S=600 KVSSINK_SPOOL_STORAGE_MB=16` (benches/README.md has the run).
#[test]
fn an_outage_longer_than_memory_loses_nothing_with_a_spool() {
    init();
    let outage = env_or("KVSSINK_SPOOL_OUTAGE_S", 8);
    let storage_mb = env_or("KVSSINK_SPOOL_STORAGE_MB", 1);
    let buffer_s = if storage_mb == 1 { 2 } else { 120 };
    let seconds = outage + 8;
    let timeout = TIMEOUT + Duration::from_secs(u64::from(seconds) * 2);
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let spool = dir.path().join("spool");
    let server = server();
    let line = live_line(
        seconds,
        "outage",
        &format!(
            "storage-size={storage_mb} buffer-duration={buffer_s} spool-size=1024 spool-dir={}",
            spool.display()
        ),
        &copy,
    );
    let run = std::thread::scope(|s| {
        let launch = s.spawn(|| gst_launch(&server, &line, timeout));
        wait_for("3 fragments", timeout, || {
            server.fragments("outage").len() >= 3
        });
        server.pause_listening();
        std::thread::sleep(Duration::from_secs(outage.into()));
        server.resume_listening();
        launch.join().unwrap()
    });
    run.assert_success();
    assert_eq!(
        run.summary().get::<&str>("outcome").unwrap(),
        "all-persisted",
        "{:?}",
        run.summary()
    );
    assert!(run.named("kvs-fragments-dropped").is_empty());
    let sent = std::fs::read(&copy).unwrap();
    assert_eq!(split_bytes(sent.clone()).1.len(), seconds as usize);
    assert_nothing_lost(&server, "outage", &sent);
    // Everything acknowledged left the disk.
    let left: u64 = walk(&spool)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(left < 1024, "{left} bytes left in the spool");
}

#[test]
fn a_host_killed_during_an_outage_sends_everything_at_the_next_start() {
    init();
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let (copy1, copy2) = (dir.path().join("1.mkv"), dir.path().join("2.mkv"));
    let server = server();
    let props = format!("spool-dir={}", spool.display());

    // Run 1: streams, loses the service, and is killed (SIGKILL) while it cannot send.
    let registry = tempdir();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.arg("-e")
        .args(split_launch(&live_line(60, "killed", &props, &copy1)));
    let mut child = cmd.spawn().unwrap();
    let before_outage = outage_after_two_fragments(&server, "killed", &copy1, 5);
    child.kill().unwrap();
    child.wait().unwrap();
    server.resume_listening();
    assert_eq!(server.fragments("killed").len(), before_outage);

    // Run 2: a new stream on the same spool. What run 1 kept goes first.
    let run = gst_launch(&server, &live_line(3, "killed", &props, &copy2), TIMEOUT);
    run.assert_success();
    let stored: Vec<bytes::Bytes> = server
        .fragments("killed")
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    let (_, second) = split_bytes(std::fs::read(&copy2).unwrap());
    let (_, first) = split_bytes(std::fs::read(&copy1).unwrap());
    assert!(
        stored.ends_with(&second),
        "run 2's fragments come last, whole"
    );
    let from_run1 = &stored[..stored.len() - second.len()];
    // In order and byte-identical; one sent twice at most (in flight when the service went).
    let mut unique: Vec<&bytes::Bytes> = Vec::new();
    for f in from_run1 {
        if unique.last() != Some(&f) {
            unique.push(f);
        }
    }
    assert!(from_run1.len() - unique.len() <= 1, "duplicates");
    for (i, f) in unique.iter().enumerate() {
        assert_eq!(**f, first[i], "fragment {i} of run 1");
    }
    // Every cluster run 1 completed before the kill (all but the open one, and one its
    // queue may still have held) was persisted.
    assert!(
        unique.len() + 2 >= first.len() && unique.len() > before_outage + 2,
        "{} of {} clusters of run 1 persisted ({} before the outage)",
        unique.len(),
        first.len(),
        before_outage
    );
    assert!(
        run.stderr
            .lines()
            .chain(run.stdout.lines())
            .all(|l| !l.contains("cut short by a crash") || l.contains("discarded"))
    );
    // gst-launch-1.0 shows the recovery (an INFO message, or a warning for a torn record).
    let output = run.output();
    assert!(
        output.contains("stream killed: the spool holds ")
            && output.contains("of an earlier run that the service never acknowledged"),
        "{output}"
    );
}

/// Once `stream` has 2 fragments stored, the service goes (it stops listening) until the
/// stream's copy `copy` holds `clusters` more clusters than the service had then. Returns
/// how many fragments were stored before the outage.
fn outage_after_two_fragments(
    server: &Server,
    stream: &str,
    copy: &Path,
    clusters: usize,
) -> usize {
    wait_for("2 fragments", TIMEOUT, || {
        server.fragments(stream).len() >= 2
    });
    server.pause_listening();
    let before_outage = server.fragments(stream).len();
    wait_for("clusters recorded during the outage", TIMEOUT, || {
        // Not strict: the copy may end in the middle of a frame being written.
        let recorded = common::sent::split(std::fs::read(copy).unwrap_or_default(), false);
        recorded.1.len() >= before_outage + clusters
    });
    before_outage
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A second kvssink on the same `spool-dir` and `stream-name` while the first still runs (an
/// application restarted while the old one drains an outage's backlog, or two pipelines given
/// one name) is told the spool is in use and keeps its fragments in memory: it neither sends
/// the first one's backlog again nor cuts off the record the first is writing.
#[test]
fn a_second_host_on_a_spool_in_use_is_told_and_takes_nothing_from_it() {
    init();
    let dir = tempdir();
    let spool = dir.path().join("spool");
    let (copy1, copy2) = (dir.path().join("1.mkv"), dir.path().join("2.mkv"));
    let server = server();
    // The second run streams to an endpoint of its own: the service takes one connection per
    // stream, and two on one endpoint would take it from each other in turn, each turn sending
    // again what was unacknowledged. What it stores there is then what it sent.
    let server2 = common::server();
    let props = format!("spool-dir={}", spool.display());
    let line1 = live_line(14, "shared", &props, &copy1);
    let line2 = live_line(3, "shared", &props, &copy2);
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| gst_launch(&server, &line1, TIMEOUT));
        // An outage: the first run's fragments wait in its spool.
        outage_after_two_fragments(&server, "shared", &copy1, 4);
        let second = s.spawn(|| gst_launch(&server2, &line2, TIMEOUT));
        std::thread::sleep(Duration::from_millis(1500));
        server.resume_listening();
        (first.join().unwrap(), second.join().unwrap())
    });
    first.assert_success();
    first.assert_all_persisted();
    second.assert_success();
    second.assert_all_persisted();
    let told = second.output();
    assert!(
        told.contains("the spool of stream shared is in use by another kvssink (process "),
        "the second run was not told:\n{told}"
    );
    assert!(!first.output().contains("in use by another kvssink"));
    // Every cluster of the first run is stored, none more than once but one that was in
    // flight when the service went; the second sent its own clusters and nothing else (none
    // of the first one's backlog).
    let stored = |server: &Server| -> Vec<bytes::Bytes> {
        server
            .fragments("shared")
            .into_iter()
            .map(|f| f.bytes)
            .collect()
    };
    let first_stored = stored(&server);
    let clusters = split_bytes(std::fs::read(&copy1).unwrap()).1;
    let mut extra = 0;
    for (i, cluster) in clusters.iter().enumerate() {
        let copies = first_stored.iter().filter(|f| *f == cluster).count();
        assert!(copies >= 1, "cluster {i} was not stored");
        extra += copies - 1;
    }
    assert!(extra <= 1, "{extra} clusters were stored more than once");
    assert_eq!(first_stored.len(), clusters.len() + extra);
    assert_eq!(
        stored(&server2),
        split_bytes(std::fs::read(&copy2).unwrap()).1,
        "the second run sent its own clusters, once each, and nothing else"
    );
    // Both ended with nothing pending: nothing is left on disk, the lock included.
    assert_eq!(walk(&spool), Vec::<std::path::PathBuf>::new());
}

/// The service acknowledges a fragment only once the next one begins. With memory
/// (`storage-size`) for less than two fragments, the spool kept the second fragment on disk
/// until the first was acknowledged, which never happened: the stream stalled after its first
/// fragment and EOS timed out with everything else on disk.
#[test]
fn a_spool_with_memory_for_less_than_two_fragments_sends_every_fragment() {
    init();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let spool = dir.path().join("spool");
    let server = server();
    let line = live_line_with(
        5,
        NOISE_AT_5_MBITS,
        "small-memory",
        &format!("storage-size=1 spool-dir={}", spool.display()),
        &copy,
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    run.assert_all_persisted();
    let sent = std::fs::read(&copy).unwrap();
    let (_, clusters) = split_bytes(sent.clone());
    assert!(
        clusters.iter().filter(|c| c.len() > (1 << 20) / 2).count() >= 3,
        "the premise: fragments larger than half of storage-size ({:?})",
        clusters.iter().map(|c| c.len()).collect::<Vec<_>>()
    );
    assert_eq!(assert_nothing_lost(&server, "small-memory", &sent), 0);
}

/// `gst-launch-1.0 -m -e line` with `dir` a fresh tmpfs of `size` (e.g. `3m`) in a mount
/// namespace of its own (a small disk, as a camera's SD card), or `None` if this machine
/// cannot make one.
fn gst_launch_on_small_disk(
    server: &Server,
    registry: &Path,
    (dir, size): (&Path, &str),
    line: &str,
) -> Option<std::process::Command> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    // As root a mount namespace; otherwise a user namespace too, where this user may mount.
    let unshare = if root { "-m" } else { "-rm" };
    let mount = format!("mount -t tmpfs -o size={size} kvssink-test \"$0\" && exec \"$@\"");
    let usable = std::process::Command::new("unshare")
        .args([unshare, "sh", "-c", &mount, dir.to_str().unwrap(), "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        return None;
    }
    let mut cmd = host_command("unshare", &server.url(), registry);
    cmd.args([unshare, "sh", "-c", &mount, dir.to_str().unwrap()])
        .args(["gst-launch-1.0", "-m", "-e"])
        .args(split_launch(line));
    Some(cmd)
}

/// A spool on a disk smaller than `spool-size` (an SD card shared with recordings). Before,
/// once the disk filled during an outage every later fragment failed to be written and was
/// lost, with a warning that said they were kept in memory and an end-of-stream account
/// that counted them as dropped for `spool-size`. Now the oldest fragments on disk make room
/// for the newest and are reported, and every fragment is either stored or counted lost.
#[test]
fn a_full_disk_drops_the_spools_oldest_fragments_and_says_so() {
    init();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let server = server();
    let line = live_line_with(
        24,
        NOISE_AT_5_MBITS,
        "full-disk",
        &format!("storage-size=1 spool-dir={}", spool.display()),
        &copy,
    );
    let registry = tempdir();
    let Some(cmd) = gst_launch_on_small_disk(&server, registry.path(), (&spool, "3m"), &line)
    else {
        eprintln!("skipped: this machine cannot mount a small tmpfs in a mount namespace");
        return;
    };
    let (run, before_outage) = std::thread::scope(|s| {
        let launch = s.spawn(|| run_host(cmd, TIMEOUT + TIMEOUT));
        // The outage: 12 fragments, of which memory holds two and the disk about four.
        let before_outage = outage_after_two_fragments(&server, "full-disk", &copy, 12);
        server.resume_listening();
        (launch.join().unwrap(), before_outage)
    });
    let output = run.output();
    let summary = run.summary();
    let (_, clusters) = split_bytes(std::fs::read(&copy).unwrap());
    let stored: Vec<bytes::Bytes> = server
        .fragments("full-disk")
        .into_iter()
        .map(|f| f.bytes)
        .collect();
    let mut unique: Vec<&bytes::Bytes> = Vec::new();
    for f in &stored {
        if !unique.contains(&f) {
            unique.push(f);
        }
    }
    // Stored in order, byte-identical: the clusters recorded, less those lost.
    let mut lost_at = Vec::new();
    let mut next = unique.iter().peekable();
    for (i, c) in clusters.iter().enumerate() {
        if next.peek().is_some_and(|f| **f == c) {
            next.next();
        } else {
            lost_at.push(i);
        }
    }
    assert!(
        next.next().is_none(),
        "a stored fragment that was not recorded, or out of order"
    );
    let get = |field: &str| summary.get::<u64>(field).unwrap();
    assert_eq!(
        summary.get::<&str>("outcome").unwrap(),
        "incomplete",
        "{output}"
    );
    assert_eq!(
        get("fragments-produced"),
        clusters.len() as u64,
        "{summary:?}"
    );
    assert_eq!(get("fragments-lost"), lost_at.len() as u64, "{summary:?}");
    // fragments-lost is rejected + dropped + pending: the spool's drops are dropped too.
    assert_eq!(
        get("fragments-dropped"),
        lost_at.len() as u64,
        "{summary:?}"
    );
    assert_eq!(
        get("fragments-persisted"),
        unique.len() as u64,
        "{summary:?}"
    );
    assert!(
        !lost_at.is_empty(),
        "the premise: the disk filled ({summary:?})"
    );
    let reasons = summary.get::<&str>("loss-reasons").unwrap();
    assert_eq!(
        reasons,
        format!(
            "{} dropped from the full spool (the spool's disk was full) during an outage",
            lost_at.len()
        )
    );
    // Lost during the outage only, the oldest of it: the newest clusters are all stored.
    assert!(
        lost_at[0] >= before_outage,
        "{lost_at:?}, outage from {before_outage}"
    );
    assert!(
        *lost_at.last().unwrap() + 4 < clusters.len(),
        "{lost_at:?} of {}",
        clusters.len()
    );
    // Told as it happened: the disk's size at the start, then each drop.
    assert!(
        output.contains("spool-size is 1024 MB but the disk of spool-dir had"),
        "{output}"
    );
    assert!(
        output.contains("the spool's disk is full: dropped its"),
        "{output}"
    );
    let told: u64 = run
        .named("kvs-fragments-dropped")
        .iter()
        .map(|s| {
            assert_eq!(s.get::<&str>("from").unwrap(), "spool");
            s.get::<u64>("fragments").unwrap()
        })
        .sum();
    assert_eq!(told, lost_at.len() as u64);
    assert!(!output.contains("cannot write"), "{output}");
}

/// Fragments that cannot be read back from the spool (its files removed during an outage)
/// are lost, and the account says so exactly: every recorded cluster is stored or counted
/// lost, once, and nothing is left on disk to be sent again. (Before, each was counted as
/// handed to the connection and as kept for the next start as well as lost.)
#[test]
fn fragments_that_cannot_be_read_back_are_counted_lost_once() {
    init();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let spool = dir.path().join("spool");
    let server = server();
    let line = live_line_with(
        16,
        NOISE_AT_5_MBITS,
        "unreadable",
        &format!("storage-size=1 spool-dir={}", spool.display()),
        &copy,
    );
    let (run, removed) = std::thread::scope(|s| {
        let launch = s.spawn(|| gst_launch(&server, &line, TIMEOUT));
        outage_after_two_fragments(&server, "unreadable", &copy, 6);
        let removed: Vec<_> = walk(&spool)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .inspect(|p| std::fs::remove_file(p).unwrap())
            .collect();
        server.resume_listening();
        (launch.join().unwrap(), removed)
    });
    assert!(!removed.is_empty(), "the premise: the outage was spooled");
    let output = run.output();
    let summary = run.summary();
    let get = |field: &str| summary.get::<u64>(field).unwrap();
    let (_, clusters) = split_bytes(std::fs::read(&copy).unwrap());
    let mut stored: Vec<bytes::Bytes> = Vec::new();
    for f in server.fragments("unreadable") {
        if !stored.contains(&f.bytes) {
            stored.push(f.bytes);
        }
    }
    let lost = clusters.iter().filter(|c| !stored.contains(c)).count() as u64;
    assert!(lost > 0, "the premise: some were lost ({summary:?})");
    assert_eq!(
        get("fragments-produced"),
        clusters.len() as u64,
        "{summary:?}"
    );
    assert_eq!(
        get("fragments-persisted"),
        stored.len() as u64,
        "{summary:?}"
    );
    assert_eq!(get("fragments-lost"), lost, "{summary:?}");
    let reasons = summary.get::<&str>("loss-reasons").unwrap();
    assert!(
        reasons.contains("read back") && !reasons.contains("next start"),
        "{reasons}"
    );
    let told = output
        .matches("cannot read a fragment back from the spool")
        .count() as u64;
    assert_eq!(told, lost, "{output}");
    // Nothing of it is left to be sent again at the next start.
    let left: Vec<_> = walk(&spool)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The wait at EOS runs out while fragments are still in the spool (the service takes the data
/// but never acknowledges it): nothing is lost, they go first at the next start, but the run
/// did not put everything up, so it ends with an error (exit status 1) that says where they
/// are, and the summary counts them (`fragments-spooled`). Before, `timed-out` with exit
/// status 0: a batch upload took it for done.
#[test]
fn a_wait_at_eos_that_runs_out_with_fragments_in_the_spool_is_an_error() {
    init();
    let server = server();
    server.inject(kvs_local::Fault::StopAcks { stream: None });
    let spool = tempdir();
    let line = format!(
        "videotestsrc is-live=true num-buffers=60 \
         ! video/x-raw,format=I420,width=160,height=120,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse \
         ! matroskamux streamable=true \
         ! kvssink stream-name=spool-wait spool-dir={} stop-stream-timeout=2",
        spool.path().display()
    );
    let run = gst_launch(&server, &line, TIMEOUT);
    assert_eq!(run.status.code(), Some(1), "{}", run.output());
    let summary = run.summary();
    assert_eq!(summary.get::<&str>("outcome").unwrap(), "timed-out");
    assert_eq!(summary.get::<u64>("fragments-lost").unwrap(), 0);
    assert!(summary.get::<u64>("fragments-spooled").unwrap() >= 2);
    let error = run
        .stderr
        .lines()
        .find(|l| l.contains("stream spool-wait: not all of the stream was persisted: "));
    assert!(
        error.is_some_and(|l| l.contains("kept in the spool (spool-dir)")),
        "{}",
        run.output()
    );
}

/// A symbolic link planted in the spool's directory (where a segment would be) and in
/// `KVS_DEBUG_DUMP_DATA_FILE_DIR` (where the session's file would be) is refused, never
/// followed: their targets are untouched (before, the segment's target was truncated to 0 bytes
/// and the dump's overwritten with Matroska), each is told with its path, and the stream,
/// kept in memory, is still all persisted.
#[test]
fn symlinks_planted_in_the_spool_and_dump_directories_are_not_followed() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    init();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let spool = dir.path().join("spool");
    let dump = dir.path().join("dump");
    std::fs::create_dir_all(spool.join("planted")).unwrap();
    std::fs::create_dir(&dump).unwrap();
    let precious = b"precious, not kvssink's";
    let (seg_target, dump_target) = (
        dir.path().join("seg-target"),
        dir.path().join("dump-target"),
    );
    for target in [&seg_target, &dump_target] {
        std::fs::write(target, precious).unwrap();
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let seg_link = spool.join("planted/seg-00000000000000000000.log");
    let dump_link = dump.join("planted_0.mkv");
    symlink(&seg_target, &seg_link).unwrap();
    symlink(&dump_target, &dump_link).unwrap();
    let server = server();
    let line = live_line(
        4,
        "planted",
        &format!("spool-dir={}", spool.display()),
        &copy,
    );
    let registry = tempdir();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.env("KVS_DEBUG_DUMP_DATA_FILE_DIR", &dump)
        .args(["-m", "-e"])
        .args(split_launch(&line));
    let run = run_host(cmd, TIMEOUT);
    run.assert_all_persisted();
    let sent = std::fs::read(&copy).unwrap();
    assert_nothing_lost(&server, "planted", &sent);
    for target in [&seg_target, &dump_target] {
        assert_eq!(
            std::fs::read(target).unwrap(),
            precious,
            "{}",
            target.display()
        );
        let mode = std::fs::metadata(target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{}", target.display());
    }
    for link in [&seg_link, &dump_link] {
        assert!(
            std::fs::symlink_metadata(link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{}",
            link.display()
        );
    }
    let output = run.output();
    for told in [
        format!("{} is a symbolic link", seg_link.display()),
        format!("{}: it is a symbolic link", dump_link.display()),
    ] {
        assert!(output.contains(&told), "not told: {told}\n{output}");
    }
    assert!(
        output.contains("fragments are kept in memory only"),
        "{output}"
    );
}

/// A spool directory other users can write (made by hand, mode 0777): kvssink uses it and
/// leaves its mode alone, but warns once that others could read or change its fragments.
#[test]
fn a_spool_directory_others_can_write_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    init();
    let dir = tempdir();
    let copy = dir.path().join("copy.mkv");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(spool.join("exposed")).unwrap();
    std::fs::set_permissions(
        spool.join("exposed"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let server = server();
    let line = live_line(
        2,
        "exposed",
        &format!("spool-dir={}", spool.display()),
        &copy,
    );
    let registry = tempdir();
    let mut cmd = host_command("gst-launch-1.0", &server.url(), registry.path());
    cmd.args(["-m", "-e"]).args(split_launch(&line));
    let run = run_host(cmd, TIMEOUT);
    run.assert_all_persisted();
    let out = run.output();
    assert!(out.contains("is writable by others (mode 777)"), "{out}");
    let mode = std::fs::metadata(spool.join("exposed"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o777, "left as it is");
}

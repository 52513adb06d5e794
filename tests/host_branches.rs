//! A camera that records locally all the time and uploads on events: a kvssink branch added
//! to its tee and removed the usual GStreamer way, twice, in one PyGObject process
//! (`tests/host/branches.py`, as README "Next to other branches" describes). Needs the cdylib:
//! `cargo build -p gst-plugin-kvs --lib`.

mod common;

use std::time::Duration;

use common::host::*;
use common::*;

#[test]
fn upload_branches_added_and_removed_at_runtime_each_upload_whole_and_the_camera_goes_on() {
    init();
    let server = server();
    let registry = tempdir();
    let mut cmd = host_command("/usr/bin/python3", &server.url(), registry.path());
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/branches.py"));
    let run = run_host(cmd, Duration::from_secs(120));
    run.assert_success();
    let output = run.output();
    for name in ["motion-1", "motion-2"] {
        assert!(
            run.stdout
                .contains(&format!("summary {name} all-persisted")),
            "{output}"
        );
        assert!(run.stdout.contains(&format!("removed {name}")), "{output}");
        let stored = server.fragments(name);
        assert!(stored.len() >= 2, "{name}: {output}");
        let times: Vec<i64> = stored
            .iter()
            .flat_map(|f| block_times(&f.bytes))
            .map(|(_, t)| t)
            .collect();
        assert!(
            times
                .windows(2)
                .all(|w| w[1] - w[0] > 0 && w[1] - w[0] <= 100),
            "{name}: {times:?}"
        );
    }
    // The camera's own branch had every frame, and the pipeline ended by its EOS.
    assert!(run.stdout.contains("\neos\n"), "{output}");
    assert!(run.stdout.contains("local 330"), "{output}");
    assert!(!run.stdout.contains("error"), "{output}");
}

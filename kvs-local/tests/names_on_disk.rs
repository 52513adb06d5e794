//! Stream names as directories of the data dir: `.`, `..` and 256-character
//! names are valid stream names, and must never reach outside their own
//! directory; a fragment that cannot be read back is an error, not a gap.

mod common;
use common::*;
use kvs_format::build::*;
use kvs_local::{Config, Server};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

fn body(tcs: &[u64]) -> Vec<u8> {
    let mut d = simple_header();
    for &t in tcs {
        d.extend(simple_cluster(t, 3, 10, 2000));
    }
    d
}

async fn put_all(s: &Server, stream: &str, tcs: &[u64]) {
    let mut p = put_media(&s.url(), &PutOpts::new(stream)).await;
    p.send_chunked(&body(tcs), 1000).await;
    p.finish();
    let acks = p.drain(T).await;
    let persisted = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .count();
    assert_eq!(persisted, tcs.len(), "{acks:?}");
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

async fn arn(u: &str, name: &str) -> String {
    let r = call(u, "/describeStream", json!({ "StreamName": name })).await;
    assert_eq!(r.status, 200, "{name}: {:?}", r.json);
    r.json["StreamInfo"]["StreamARN"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_names_and_long_names_stay_in_their_own_directory() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // a file next to the data dir: must survive everything below
    std::fs::write(root.path().join("neighbour.txt"), b"keep").unwrap();
    let config = Config {
        data_dir: Some(data.clone()),
        ..cfg()
    };
    let s = server(config.clone());
    let u = s.url();
    call(&u, "/createStream", json!({"StreamName": "precious"})).await;
    put_all(&s, "precious", &[0, 100]).await;
    let before = s.fragments("precious");
    assert_eq!(before.len(), 2);

    let long = "L".repeat(256);
    for name in [".", "..", long.as_str(), "a..b"] {
        let r = call(&u, "/createStream", json!({ "StreamName": name })).await;
        assert_eq!(r.status, 200, "{name}: {:?}", r.json);
    }
    put_all(&s, "..", &[0]).await;
    put_all(&s, &long, &[0, 100, 200]).await;
    assert_eq!(s.fragments("precious"), before, "untouched by `.`/`..`");
    let dirs: Vec<String> = std::fs::read_dir(data.join("streams"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(dirs.len(), 5, "{dirs:?}");
    for d in &dirs {
        assert!(d != "." && d != ".." && d.len() <= 200, "{d}");
    }

    // DeleteStream of `.` and `..` removes those streams' own directories only
    let everything = tree(root.path());
    for name in [".", ".."] {
        let a = arn(&u, name).await;
        let r = call(&u, "/deleteStream", json!({ "StreamARN": a })).await;
        assert_eq!(r.status, 200, "{name}: {:?}", r.json);
    }
    let after = tree(root.path());
    let removed: Vec<_> = everything.difference(&after).collect();
    assert!(
        removed
            .iter()
            .all(|p| p.starts_with("data/streams/~") && !p.contains("/../")),
        "{removed:?}"
    );
    assert!(!removed.is_empty());
    assert!(after.contains("neighbour.txt"));
    assert_eq!(s.fragments("precious"), before);
    // and creating them again starts empty
    let r = call(&u, "/createStream", json!({"StreamName": ".."})).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.fragment_count(".."), 0);
    s.shutdown();

    // a restart finds every stream by the name in its stream.json
    let s = server(config);
    let u = s.url();
    let r = call(&u, "/listStreams", json!({})).await;
    let names: BTreeSet<_> = r.json["StreamInfoList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["StreamName"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<_> = ["..", "a..b", "precious", long.as_str()]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
    assert_eq!(s.fragments("precious"), before);
    assert_eq!(s.fragment_count(&long), 3);
    s.shutdown();

    // export finds a stream whose directory is not its name
    let out = root.path().join("long.mkv");
    let st = Command::new(env!("CARGO_BIN_EXE_kvs-local"))
        .args(["export", "--data-dir"])
        .arg(&data)
        .args(["--stream", &long])
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(&out).unwrap(), body(&[0, 100, 200]));
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_plain_directories_still_load() {
    // a data dir written before names were encoded: streams/NAME/stream.json
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    };
    let s = server(config.clone());
    s.create_stream("cam-1.old_style").unwrap();
    put_all(&s, "cam-1.old_style", &[0, 100]).await;
    s.shutdown();
    assert!(
        dir.path()
            .join("streams/cam-1.old_style/stream.json")
            .is_file()
    );
    // a copy of a stream directory under another name is not a second stream
    let src = dir.path().join("streams/cam-1.old_style");
    let copy = dir.path().join("streams/backup");
    std::fs::create_dir_all(copy.join("headers")).unwrap();
    std::fs::copy(src.join("stream.json"), copy.join("stream.json")).unwrap();
    let s = server(config);
    assert_eq!(s.fragments("cam-1.old_style").len(), 2);
    assert!(s.stream("backup").is_none());
    s.delete_stream("cam-1.old_style").unwrap();
    assert!(!src.exists());
    assert!(copy.join("stream.json").is_file(), "not ours to remove");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_fragment_is_an_error_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..cfg()
    });
    let u = s.url();
    s.create_stream("cam").unwrap();
    put_all(&s, "cam", &[0, 100, 200]).await;
    let frags = s.fragments("cam");
    let numbers: Vec<_> = frags.iter().map(|f| f.number.clone()).collect();
    // the log loses its tail behind the server's back
    let log = dir.path().join("streams/cam/fragments.log");
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len - 100)
        .unwrap();

    // still listed (ListFragments reads no bytes) ...
    let r = call(&u, "/listFragments", json!({"StreamName": "cam"})).await;
    assert_eq!(r.json["Fragments"].as_array().unwrap().len(), 3);
    // ... but reading it is a 500 that says which fragment, never a response without it
    let r = call(
        &u,
        "/getMediaForFragmentList",
        json!({"StreamName": "cam", "Fragments": numbers}),
    )
    .await;
    assert_eq!((r.status, r.error_type()), (500, "InternalFailure"));
    assert!(
        r.message()
            .contains(&format!("cannot read fragment {}", numbers[2])),
        "{}",
        r.message()
    );
    let r = call(
        &u,
        "/getMediaForFragmentList",
        json!({"StreamName": "cam", "Fragments": [numbers[0]]}),
    )
    .await;
    assert_eq!(r.status, 200, "the readable ones still are");
    let r = call(
        &u,
        "/getMedia",
        json!({"StreamName": "cam", "StartSelector": {"StartSelectorType": "EARLIEST"}}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(
        r.message().contains("cannot read fragment"),
        "{}",
        r.message()
    );
    let e = s.try_fragments("cam").unwrap_err();
    assert!(e.to_string().contains(&numbers[2]), "{e}");
    let report = s.report();
    let digests: Vec<_> = report.sessions[0]
        .fragments
        .iter()
        .map(|f| f.sha256.is_some())
        .collect();
    assert_eq!(digests, [true, true, false]);
}

//! `kvs-local` command line: run the endpoint, or export a stored stream.

use kvs_local::{Config, KeyPair, Server};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage:
  kvs-local [--port N] [--bind IP] [--data-dir DIR] [--key AKID:SECRET[:TOKEN]]...
            [--region REGION] [--creating-delay-ms N] [--idle-ack-interval-ms N]
            [--idle-timeout-s N] [--discard-media] [--record-body-reads]
            [--public-url URL] [--report FILE] [--verbose]
  kvs-local export --data-dir DIR --stream NAME OUT.mkv

Without --key (or KVS_LOCAL_KEYS=AKID:SECRET,...) the demo key pair
KVSLOCALDEMOACCESSKEY / kvs-local-demo-secret-key is accepted.
KVS_LOCAL_LOG=1 or --verbose logs every request and rejection to stderr.
--discard-media acks PutMedia fragments without storing or checking them
(for measuring producers); --record-body-reads puts the arrival time of
every PutMedia body chunk in the report. --public-url is what GetDataEndpoint
answers (e.g. https://host:443 behind a TLS terminator); by default
http:// and the address the request reached.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("export") {
        export(&args[1..])
    } else {
        serve(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvs-local: {e}");
            ExitCode::FAILURE
        }
    }
}

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
}

fn number<T: std::str::FromStr>(s: &str, flag: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag}: invalid number {s:?}"))
}

fn serve(args: &[String]) -> Result<(), String> {
    let mut cfg = Config {
        port: 4566,
        ..Config::default()
    };
    let mut report_file: Option<PathBuf> = None;
    if let Ok(keys) = std::env::var("KVS_LOCAL_KEYS") {
        cfg.keys.extend(KeyPair::parse_list(&keys)?);
    }
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--port" | "-p" => cfg.port = number(value(args, &mut i, flag)?, flag)?,
            "--bind" => cfg.bind = number(value(args, &mut i, flag)?, flag)?,
            "--data-dir" => cfg.data_dir = Some(value(args, &mut i, flag)?.into()),
            "--key" => cfg.keys.push(KeyPair::parse(value(args, &mut i, flag)?)?),
            "--region" => cfg.region = Some(value(args, &mut i, flag)?.into()),
            "--creating-delay-ms" => {
                cfg.creating_delay =
                    Duration::from_millis(number(value(args, &mut i, flag)?, flag)?)
            }
            "--idle-ack-interval-ms" => {
                cfg.idle_ack_interval =
                    Duration::from_millis(number(value(args, &mut i, flag)?, flag)?)
            }
            "--idle-timeout-s" => {
                cfg.idle_timeout = Duration::from_secs(number(value(args, &mut i, flag)?, flag)?)
            }
            "--discard-media" => cfg.discard_media = true,
            "--public-url" => cfg.public_url = Some(value(args, &mut i, flag)?.to_owned()),
            "--record-body-reads" => cfg.record_body_reads = true,
            "--report" => report_file = Some(value(args, &mut i, flag)?.into()),
            "--verbose" | "-v" => cfg.log = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    let data_dir = cfg.data_dir.clone();
    let server = Server::spawn(cfg).map_err(|e| format!("cannot start: {e}"))?;
    // The address it is bound to, as a URL: `http://0.0.0.0:4566` with `--bind 0.0.0.0` (every
    // address), not the loopback URL kvs-local uses for itself.
    let addr = server.local_addr();
    println!("kvs-local listening on http://{addr}");
    if addr.ip().is_unspecified() {
        println!(
            "kvs-local: on every address of this machine; from this machine: {}",
            server.url()
        );
    }
    if !addr.ip().is_loopback() {
        // Reachable from other machines: say what anyone who reaches it can do.
        let keys = &server.config().keys;
        let demo = keys.is_empty()
            || keys
                .iter()
                .any(|k| k.access_key == kvs_local::DEMO_ACCESS_KEY);
        eprintln!(
            "kvs-local: WARNING: reachable from other machines. Its admin API (/__kvs-local/: \
             report, faults) takes no credentials{}",
            if demo {
                ", and the demo key pair (public) is accepted: anyone who reaches this address \
                 can read, write and delete streams. Give --key for keys of your own"
            } else {
                ""
            }
        );
    }
    let _ = std::io::stdout().flush();
    wait_for_signal()?;
    eprintln!("kvs-local: shutting down");
    let report = serde_json::to_vec_pretty(&server.report()).map_err(|e| e.to_string())?;
    server.shutdown();
    let target = report_file.or_else(|| data_dir.map(|d| d.join("report.json")));
    match target {
        Some(path) => {
            std::fs::write(&path, &report)
                .map_err(|e| format!("cannot write report {}: {e}", path.display()))?;
            eprintln!("kvs-local: report written to {}", path.display());
        }
        None => {
            let mut err = std::io::stderr();
            let _ = err.write_all(&report);
            let _ = err.write_all(b"\n");
        }
    }
    Ok(())
}

fn wait_for_signal() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
            _ = term.recv() => Ok(()),
        }
    })
}

fn export(args: &[String]) -> Result<(), String> {
    let (mut dir, mut stream, mut out) = (None, None, None);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--data-dir" => dir = Some(PathBuf::from(value(args, &mut i, flag)?)),
            "--stream" => stream = Some(value(args, &mut i, flag)?.to_string()),
            s if !s.starts_with('-') && out.is_none() => out = Some(PathBuf::from(s)),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    let (Some(dir), Some(stream), Some(out)) = (dir, stream, out) else {
        return Err(format!(
            "export needs --data-dir, --stream and an output file\n{USAGE}"
        ));
    };
    let stats = kvs_local::export_stream(&dir, &stream, &out).map_err(|e| e.to_string())?;
    eprintln!(
        "kvs-local: wrote {} fragments ({} bytes) of {stream}",
        stats.fragments, stats.bytes
    );
    for (i, (path, fragments)) in stats.files.iter().enumerate() {
        eprintln!(
            "kvs-local:   {}: {fragments} fragments{}",
            path.display(),
            if i > 0 {
                " (the stream header changed to other tracks: a file of its own)"
            } else {
                ""
            }
        );
    }
    if stats.moved > 0 {
        eprintln!(
            "kvs-local: {} later recordings (PutMedia sessions) placed at their producer time",
            stats.moved
        );
    }
    Ok(())
}

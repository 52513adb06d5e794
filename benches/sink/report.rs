//! The figures: units, the machine, the table and notes printed at the end.

use std::process::Command;
use std::time::Duration;

use crate::process::status_kib;

pub const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;

pub fn mbps(bytes: u64, wall: Duration) -> f64 {
    bytes as f64 / MB / wall.as_secs_f64()
}

pub fn ms_per_mb(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() * 1e3 / (bytes as f64 / MB)
}

pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 * 1024.0 / MIB
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| status_kib(&m, "MemTotal:"))
        .map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let curl = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_else(|_| "curl missing".into());
    format!(
        "{model}, {cores} cores, {mem:.0} GiB RAM, Linux {}, {}, {curl}",
        kernel.trim(),
        gst::version_string()
    )
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct Row {
    pub metric: String,
    pub kvssink: String,
    pub reference: String,
    pub target: String,
    pub ok: Option<bool>,
}

fn print_table(rows: &[Row]) {
    let headers = ["metric", "kvssink", "reference", "target", "ok?"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.kvssink.clone(),
                r.reference.clone(),
                r.target.clone(),
                match r.ok {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([headers[i].len()])
            .max()
            .unwrap()
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(&headers.map(String::from));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for c in &cells {
        line(c);
    }
}

/// What the parts found: table rows and notes (a note saying FAILED fails the bench).
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn failed(&mut self, part: &str, error: impl std::fmt::Display) {
        self.notes.push(format!("{part} FAILED: {error}"));
    }

    /// Prints the table, the load average and the notes; whether any part failed.
    pub fn print(&self) -> bool {
        println!();
        print_table(&self.rows);
        println!("\nload average at the end: {}", loadavg());
        println!();
        for n in &self.notes {
            println!("- {n}");
        }
        self.notes.iter().any(|n| n.contains("FAILED"))
    }
}

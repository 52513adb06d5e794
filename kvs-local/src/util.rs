//! Small helpers: time formats, error-id names, fragment numbers, logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// Nanoseconds on the system's monotonic clock (`CLOCK_MONOTONIC`): never steps, and is the
/// same clock in every process of the machine, so other processes can compare their own
/// readings of it with the times in [`crate::report::BodyRead`].
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds since the Unix epoch of `t` (0 before the epoch).
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats a time as SigV4's basic ISO-8601 form, e.g. `20240102T030405Z`.
pub fn format_amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Formats ms since the epoch as extended ISO-8601 with ms, e.g.
/// `2024-01-02T03:04:05.678Z` (HLS's `EXT-X-PROGRAM-DATE-TIME`).
pub fn iso8601_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let s = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86400 + (h * 3600 + mi * 60 + se) as i64;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Parses an HTTP date in the preferred form of RFC 9110 (`Fri, 04 Dec 2026 02:25:00 GMT`),
/// which SigV4 accepts in a `Date` header instead of `X-Amz-Date`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, rest) = s.trim().split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let mo = MONTHS.iter().position(|m| m == month)? as u32 + 1;
    let d: u32 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, mi, se] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&d) || *h > 23 || *mi > 59 || *se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86400 + (h * 3600 + mi * 60 + se) as i64;
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Epoch seconds in the exponent form the service uses (`1.551924009774E9`).
pub fn epoch_seconds_exp(ms: u64) -> String {
    if ms == 0 {
        return "0.0".into();
    }
    let secs = ms / 1000;
    let frac = ms % 1000;
    let mut digits = format!("{secs}{frac:03}");
    let int_len = secs.to_string().len() as i32;
    let exp = if secs == 0 {
        // sub-second: strip leading zeros, negative exponent
        let lead = digits.bytes().take_while(|&c| c == b'0').count();
        digits.drain(..lead);
        int_len - 1 - lead as i32
    } else {
        int_len - 1
    };
    let trimmed = digits.trim_end_matches('0');
    let (first, rest) = trimmed.split_at(1);
    let rest = if rest.is_empty() { "0" } else { rest };
    format!("{first}.{rest}E{exp}")
}

/// The same as a JSON raw value.
pub fn epoch_seconds_json(ms: u64) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(epoch_seconds_exp(ms))
        .expect("exponent form is valid JSON")
}

/// Epoch seconds with millisecond precision, e.g. `1795412655.312`.
pub fn epoch_seconds_plain(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The `ErrorCode` name for a PutMedia `ErrorId`.
pub fn error_code_name(id: u32) -> &'static str {
    kvs_format::kvs::error_name(id).unwrap_or("UNKNOWN_ERROR")
}

/// Fixed leading digits of every fragment number.
const FRAGMENT_NUMBER_PREFIX: &str = "913438523331814";

/// Renders an internal fragment counter as a 47-digit decimal string.
pub fn format_fragment_number(n: u128) -> String {
    format!("{FRAGMENT_NUMBER_PREFIX}{n:032}")
}

/// Parses a fragment number produced by [`format_fragment_number`].
pub fn parse_fragment_number(s: &str) -> Option<u128> {
    let rest = s.strip_prefix(FRAGMENT_NUMBER_PREFIX)?;
    if rest.len() != 32 || !rest.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The next fragment counter: larger than `last`, and time based so that
/// numbers keep increasing across restarts.
pub fn next_fragment_counter(last: u128) -> u128 {
    let base = now_ms() as u128 * 10u128.pow(19);
    base.max(last + 1)
}

static REQ_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A unique request id shaped like a UUID.
pub fn request_id() -> String {
    let n = REQ_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (t >> 32) as u32,
        (t >> 16) as u16,
        (t & 0xfff) as u16,
        (n >> 48) as u16 & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

/// Conditional stderr logger; the library prints only when asked to.
#[derive(Clone, Copy, Debug)]
pub struct Logger {
    enabled: bool,
}

impl Logger {
    /// A logger that prints when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Logger { enabled }
    }

    /// Prints one line to stderr if enabled.
    pub fn log(&self, msg: std::fmt::Arguments<'_>) {
        if self.enabled {
            eprintln!("kvs-local: {msg}");
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(B64[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes what [`base64_encode`] makes (strict: padded, canonical).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = B64.iter().position(|&b| b == c)? as u32;
            n = n << 6 | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    (base64_encode(&out).as_bytes() == s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        assert_eq!(format_amz_date(t), "20240102T030405Z");
        assert_eq!(parse_amz_date("20240102T030405Z"), Some(t));
        assert_eq!(parse_amz_date("20240102T030405"), None);
        assert_eq!(parse_amz_date("2024010xT030405Z"), None);
        assert_eq!(parse_amz_date("20241302T030405Z"), None);
        let t2 = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_amz_date(t2), "20000229T000000Z");
    }

    #[test]
    fn exponent_form() {
        assert_eq!(epoch_seconds_exp(1_551_924_009_774), "1.551924009774E9");
        assert_eq!(epoch_seconds_exp(1_551_924_009_000), "1.551924009E9");
        assert_eq!(epoch_seconds_exp(1_000_000_000_000), "1.0E9");
        assert_eq!(epoch_seconds_exp(5), "5.0E-3");
        let v: f64 = epoch_seconds_exp(1_551_924_009_774).parse().unwrap();
        assert!((v - 1_551_924_009.774).abs() < 1e-3);
    }

    #[test]
    fn base64() {
        for (raw, enc) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            assert_eq!(base64_encode(raw), enc);
            assert_eq!(base64_decode(enc).as_deref(), Some(raw));
        }
        for bad in ["Zg", "Zg=a", "Z===", "Zh==", "Zm9v!A==", "Zg==Zg=="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn fragment_numbers() {
        let s = format_fragment_number(12345);
        assert_eq!(s.len(), 47);
        assert_eq!(parse_fragment_number(&s), Some(12345));
        let a = next_fragment_counter(0);
        let b = next_fragment_counter(a);
        assert!(b > a);
        assert!(format_fragment_number(b) > format_fragment_number(a));
        assert_eq!(format_fragment_number(a).len(), 47);
        assert_eq!(error_code_name(4006), "INVALID_MKV_DATA");
    }
}

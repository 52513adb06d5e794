//! EBML primitives: variable-length integers, element headers, a child iterator for
//! elements held in memory, and a small writer (used by tests, the benchmark, and by
//! anyone who needs to produce a Matroska element such as the end-of-fragment tag).
//!
//! Conventions: element IDs keep their length-marker bits (`0x1A45DFA3`, `0xA3`), as in
//! the Matroska specification; sizes are returned as `None` when they are "unknown"
//! (all value bits set).

/// Longest element header: a 4-byte ID and an 8-byte size.
pub const MAX_HEADER_LEN: usize = 12;

/// The byte sequence could never be a valid EBML variable-length integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadVint;

/// Length in bytes (1..=8) of a vint whose first byte is `first`; `None` for `0x00`.
#[inline]
pub fn vint_len(first: u8) -> Option<usize> {
    if first == 0 {
        None
    } else {
        Some(first.leading_zeros() as usize + 1)
    }
}

/// Decodes a vint whose length is already known to fit in `buf`, removing the marker bit.
#[inline]
fn vint_value(buf: &[u8], len: usize) -> u64 {
    let mut v = u64::from(buf[0]) & (0xFF >> len);
    for &b in &buf[1..len] {
        v = (v << 8) | u64::from(b);
    }
    v
}

/// Reads a vint value (marker bit removed, e.g. a track number in a block header).
/// `Ok(None)` when `buf` is too short.
#[inline]
pub fn read_vint(buf: &[u8]) -> Result<Option<(u64, usize)>, BadVint> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = vint_len(first).ok_or(BadVint)?;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some((vint_value(buf, len), len)))
}

/// A parsed element header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementHeader {
    /// Element ID, marker bits included.
    pub id: u32,
    /// Body size; `None` = unknown size (only meaningful for Segment and Cluster).
    pub size: Option<u64>,
    /// Length of the ID plus the size field, in bytes.
    pub len: usize,
}

/// Parses an element header at the start of `buf`. `Ok(None)` when more bytes are
/// needed (never with `MAX_HEADER_LEN` or more bytes available).
#[inline]
pub fn read_header(buf: &[u8]) -> Result<Option<ElementHeader>, BadVint> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let id_len = vint_len(first).ok_or(BadVint)?;
    if id_len > 4 {
        return Err(BadVint);
    }
    if buf.len() <= id_len {
        return Ok(None);
    }
    let mut id = 0u32;
    for &b in &buf[..id_len] {
        id = (id << 8) | u32::from(b);
    }
    let rest = &buf[id_len..];
    let size_len = vint_len(rest[0]).ok_or(BadVint)?;
    if rest.len() < size_len {
        return Ok(None);
    }
    let value = vint_value(rest, size_len);
    let all_ones = (1u64 << (7 * size_len)) - 1;
    let size = if value == all_ones { None } else { Some(value) };
    Ok(Some(ElementHeader {
        id,
        size,
        len: id_len + size_len,
    }))
}

/// Big-endian unsigned integer element body (0 to 8 bytes).
pub fn read_uint(body: &[u8]) -> Option<u64> {
    if body.len() > 8 {
        return None;
    }
    Some(body.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// String element body: lossy UTF-8 with trailing NUL padding removed (matroskamux
/// writes `"matroska\0"`).
pub fn read_string(body: &[u8]) -> String {
    let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Iterates over the children of an element body held in memory: yields `(id, body)`.
/// Stops with `Err(BadVint)` on a malformed header, an unknown size or a child that
/// overruns the parent.
pub fn children(body: &[u8]) -> Children<'_> {
    Children { rest: body }
}

/// Iterator returned by [`children`].
pub struct Children<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<(u32, &'a [u8]), BadVint>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let fail = |s: &mut Self| {
            s.rest = &[];
            Some(Err(BadVint))
        };
        let h = match read_header(self.rest) {
            Ok(Some(h)) => h,
            _ => return fail(self),
        };
        let Some(size) = h.size else {
            return fail(self);
        };
        let avail = (self.rest.len() - h.len) as u64;
        if size > avail {
            return fail(self);
        }
        let end = h.len + size as usize;
        let body = &self.rest[h.len..end];
        self.rest = &self.rest[end..];
        Some(Ok((h.id, body)))
    }
}

/// Appends an element ID (its bytes as written, marker bits included).
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8).min(3) as usize;
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a size in the shortest vint form (sizes up to 2^56 - 2).
pub fn write_size(out: &mut Vec<u8>, size: u64) {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    write_size_len(out, size, len);
}

/// Appends a size using exactly `len` bytes (1..=8), as muxers that reserve 8-byte
/// sizes do.
pub fn write_size_len(out: &mut Vec<u8>, size: u64, len: usize) {
    let v = size | (1u64 << (7 * len));
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// Appends the 8-byte "unknown size" marker.
pub fn write_unknown_size(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
}

/// Appends a whole element with the given body.
pub fn write_element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    write_id(out, id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends an unsigned-integer element in the shortest form.
pub fn write_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = ((value.leading_zeros() / 8) as usize).min(7);
    write_element(out, id, &bytes[skip..]);
}

/// Appends a string element.
pub fn write_string(out: &mut Vec<u8>, id: u32, value: &str) {
    write_element(out, id, value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for &(id, size) in &[
            (0xA3u32, 0u64),
            (0xA3, 126),
            (0xA3, 127),
            (0x4282, 16_383),
            (0x2AD7B1, 1 << 20),
            (0x1A45DFA3, (1 << 56) - 2),
        ] {
            let mut v = Vec::new();
            write_id(&mut v, id);
            write_size(&mut v, size);
            let h = read_header(&v).unwrap().unwrap();
            assert_eq!((h.id, h.size, h.len), (id, Some(size), v.len()));
            for cut in 0..v.len() {
                assert_eq!(read_header(&v[..cut]), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn unknown_sizes_and_bad_vints() {
        for unknown in [
            &[0xFFu8][..],
            &[0x7F, 0xFF],
            &[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ] {
            let mut v = vec![0x1F, 0x43, 0xB6, 0x75];
            v.extend_from_slice(unknown);
            assert_eq!(read_header(&v).unwrap().unwrap().size, None);
        }
        assert_eq!(read_header(&[0x00, 0x81]), Err(BadVint));
        assert_eq!(read_header(&[0x08, 1, 2, 3, 4, 0x81]), Err(BadVint)); // 5-byte ID
        assert_eq!(read_header(&[0xA3, 0x00]), Err(BadVint));
        assert_eq!(read_vint(&[0x81]), Ok(Some((1, 1))));
        assert_eq!(read_vint(&[0x40, 0x02]), Ok(Some((2, 2))));
        assert_eq!(read_vint(&[0x40]), Ok(None));
    }

    #[test]
    fn children_and_values() {
        let mut body = Vec::new();
        write_uint(&mut body, 0xD7, 1);
        write_string(&mut body, 0x86, "V_MPEG4/ISO/AVC");
        write_uint(&mut body, 0x2AD7B1, 1_000_000);
        let kids: Vec<_> = children(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(kids.len(), 3);
        assert_eq!(read_uint(kids[0].1), Some(1));
        assert_eq!(read_string(kids[1].1), "V_MPEG4/ISO/AVC");
        assert_eq!(read_uint(kids[2].1), Some(1_000_000));
        assert_eq!(read_string(b"webm\0\0"), "webm");
        // Overrun of the parent is an error, not a panic.
        assert!(children(&[0xD7, 0x85, 1]).next().unwrap().is_err());
    }
}

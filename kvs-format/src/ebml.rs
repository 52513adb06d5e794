//! EBML primitives: the variable-length integer ("vint") codec for element IDs and sizes,
//! element-header decoding, the readers of unsigned-integer and string bodies, and
//! [`Writer`], the one way to build elements.
//!
//! Conventions (RFC 8794):
//! * A vint's first byte gives its length: the number of leading zero bits plus one, so
//!   `0x80..=0xFF` is one byte long and `0x01` eight; `0x00` is never a valid first byte.
//! * An element ID is a vint of at most 4 bytes that keeps its marker bits
//!   (`0x1A45DFA3`); see [`crate::ids`].
//! * An element size is a vint whose marker bit is removed; a size with every value bit set
//!   (`0xFF`, `0x7FFF`, ..., `0x01FFFFFFFFFFFFFF`) means "unknown" and is read as `None`.
//!
//! Readers return `Ok(None)` when the bytes end before the value does, so that streaming
//! parsers can wait for more, and [`BadVint`] when the bytes can never be valid. What to do
//! with an ID or size once read (reserved IDs, which elements may have unknown sizes, size
//! limits) is for each parser to decide.

/// Longest element ID, in bytes.
pub const MAX_ID_LEN: usize = 4;
/// Longest vint, in bytes.
pub const MAX_VINT_LEN: usize = 8;
/// Longest element header: a 4-byte ID and an 8-byte size.
pub const MAX_HEADER_LEN: usize = MAX_ID_LEN + MAX_VINT_LEN;
/// The 8-byte "unknown size" (as matroskamux writes it for Segment and Cluster).
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// The bytes can never be a valid vint: a first byte `0x00` (longer than 8 bytes), or an
/// element ID longer than 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadVint;

impl std::fmt::Display for BadVint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed EBML variable-length integer")
    }
}

impl std::error::Error for BadVint {}

// ---------------------------------------------------------------- reading

/// Length in bytes (1..=8) of a vint whose first byte is `first`; `None` for `0x00`.
#[inline]
pub fn vint_len(first: u8) -> Option<usize> {
    if first == 0 {
        None
    } else {
        Some(first.leading_zeros() as usize + 1)
    }
}

/// Decodes a vint whose length is known to fit in `buf`, removing the marker bit.
#[inline]
fn vint_value(buf: &[u8], len: usize) -> u64 {
    let mut v = u64::from(buf[0]) & (0xFF >> len);
    for &b in &buf[1..len] {
        v = (v << 8) | u64::from(b);
    }
    v
}

/// Reads a vint value, marker bit removed (a size, or a block's track number). Every value
/// is returned as is, the all-ones pattern included; see [`read_size`] for sizes.
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

/// Reads an element size: `None` for the "unknown" (all ones) value. Returns the size and
/// the vint's length; `Ok(None)` when `buf` is too short.
#[inline]
pub fn read_size(buf: &[u8]) -> Result<Option<(Option<u64>, usize)>, BadVint> {
    Ok(read_vint(buf)?.map(|(value, len)| {
        let all_ones = (1u64 << (7 * len)) - 1;
        ((value != all_ones).then_some(value), len)
    }))
}

/// Reads an element ID (marker bits kept) and its length; `Err` for an ID longer than 4
/// bytes, `Ok(None)` when `buf` is too short.
#[inline]
pub fn read_id(buf: &[u8]) -> Result<Option<(u32, usize)>, BadVint> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let len = vint_len(first).ok_or(BadVint)?;
    if len > MAX_ID_LEN {
        return Err(BadVint);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let id = buf[..len]
        .iter()
        .fold(0u32, |id, &b| (id << 8) | u32::from(b));
    Ok(Some((id, len)))
}

/// Whether an ID (of `len` bytes) is one the specification reserves: all value bits set, or
/// the one-byte `0x80`. Readers return such IDs; whether to refuse them is the parser's call.
pub fn is_reserved_id(id: u32, len: usize) -> bool {
    let value_bits = (1u32 << (7 * len)) - 1;
    id & value_bits == value_bits || (len == 1 && id & value_bits == 0)
}

/// A decoded element header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementHeader {
    /// Element ID, marker bits included.
    pub id: u32,
    /// Body size; `None` = unknown size.
    pub size: Option<u64>,
    /// Length of the ID plus the size field, in bytes.
    pub len: usize,
}

/// Reads an element header (ID and size) at the start of `buf`. `Ok(None)` when more bytes
/// are needed (never with [`MAX_HEADER_LEN`] or more bytes available).
#[inline]
pub fn read_header(buf: &[u8]) -> Result<Option<ElementHeader>, BadVint> {
    let Some((id, id_len)) = read_id(buf)? else {
        return Ok(None);
    };
    let Some((size, size_len)) = read_size(&buf[id_len..])? else {
        return Ok(None);
    };
    Ok(Some(ElementHeader {
        id,
        size,
        len: id_len + size_len,
    }))
}

/// Unsigned-integer element body: big endian, 0 to 8 bytes (empty is 0); `None` when longer.
pub fn read_uint(body: &[u8]) -> Option<u64> {
    if body.len() > 8 {
        return None;
    }
    Some(body.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// Signed-integer element body (DateUTC): big endian two's complement, 0 to 8 bytes.
pub fn read_int(body: &[u8]) -> Option<i64> {
    let u = read_uint(body)?;
    Some(match body.len() {
        0 => 0,
        8 => u as i64,
        n => {
            let shift = 64 - 8 * n as u32;
            ((u << shift) as i64) >> shift
        }
    })
}

/// Float element body (Duration): 4 or 8 bytes big endian, 0 bytes is 0.0.
pub fn read_float(body: &[u8]) -> Option<f64> {
    match body.len() {
        0 => Some(0.0),
        4 => Some(f64::from(f32::from_be_bytes(body.try_into().ok()?))),
        8 => Some(f64::from_be_bytes(body.try_into().ok()?)),
        _ => None,
    }
}

/// String element body: lossy UTF-8 with the trailing NUL padding removed (matroskamux
/// writes `"matroska\0"`).
pub fn read_string(body: &[u8]) -> String {
    let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

// ---------------------------------------------------------------- writing

/// Appends an element ID: its bytes as written, marker bits included.
pub fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8).min(3) as usize;
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a vint (a size, or a block's track number) in its shortest form that is not the
/// all-ones "unknown" pattern: 127 takes two bytes (`0x40 0x7F`).
///
/// # Panics
/// If `value` does not fit in 8 bytes (2^56 - 1 or more).
pub fn write_vint(out: &mut Vec<u8>, value: u64) {
    let mut len = 1;
    while len < MAX_VINT_LEN && value >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    assert!(
        value < (1u64 << 56) - 1,
        "{value} does not fit in an EBML vint"
    );
    write_vint_len(out, value, len);
}

/// Appends a vint in exactly `len` bytes (1..=8), as muxers that reserve 8-byte sizes do.
///
/// # Panics
/// If `len` is not 1..=8 or `value` does not fit in `len` bytes.
pub fn write_vint_len(out: &mut Vec<u8>, value: u64, len: usize) {
    assert!(
        (1..=MAX_VINT_LEN).contains(&len),
        "a vint is 1 to 8 bytes, not {len}"
    );
    assert!(
        value < 1u64 << (7 * len),
        "{value} does not fit in a {len}-byte vint"
    );
    let v = value | (1u64 << (7 * len));
    out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// Appends the 8-byte "unknown size" ([`UNKNOWN_SIZE`]).
pub fn write_unknown_size(out: &mut Vec<u8>) {
    out.extend_from_slice(&UNKNOWN_SIZE);
}

/// Builds EBML elements into a byte vector: the one element-writing API of the workspace.
///
/// Elements of known size are written whole ([`element`](Writer::element),
/// [`uint`](Writer::uint), [`string`](Writer::string)) or, for masters, from a closure that
/// writes their children ([`master`](Writer::master)); the size is filled in afterwards in
/// its shortest form, or in a fixed number of bytes
/// ([`master_size_len`](Writer::master_size_len)). A master of unknown size is just its
/// header ([`unknown_size`](Writer::unknown_size)): its children follow at the same level,
/// and it ends where the parent level resumes. [`header`](Writer::header) declares any size
/// without writing the body (streams that continue elsewhere, or that lie on purpose).
///
/// ```
/// use kvs_format::ebml::Writer;
/// use kvs_format::ids::*;
/// let mut w = Writer::new();
/// w.unknown_size(ID_SEGMENT).master(ID_INFO, |w| {
///     w.uint(ID_TIMECODE_SCALE, 1_000_000);
/// });
/// let bytes = w.finish();
/// assert_eq!(&bytes[..4], &[0x18, 0x53, 0x80, 0x67]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// An element with the given body.
    pub fn element(&mut self, id: u32, body: &[u8]) -> &mut Writer {
        self.header(id, body.len() as u64).bytes(body)
    }

    /// An unsigned-integer element, in the shortest big-endian form (0 is one byte).
    pub fn uint(&mut self, id: u32, value: u64) -> &mut Writer {
        let bytes = value.to_be_bytes();
        let skip = ((value.leading_zeros() / 8) as usize).min(7);
        self.element(id, &bytes[skip..])
    }

    /// A signed-integer element, in the shortest two's-complement form (e.g. a
    /// ReferenceBlock's relative time).
    pub fn int(&mut self, id: u32, value: i64) -> &mut Writer {
        let bytes = value.to_be_bytes();
        let mut skip = 0;
        while skip < 7 {
            let (b, next_sign) = (bytes[skip], bytes[skip + 1] & 0x80);
            if (b == 0x00 && next_sign == 0) || (b == 0xFF && next_sign != 0) {
                skip += 1;
            } else {
                break;
            }
        }
        self.element(id, &bytes[skip..])
    }

    /// A float element, as an 8-byte IEEE double (e.g. SamplingFrequency).
    pub fn float(&mut self, id: u32, value: f64) -> &mut Writer {
        self.element(id, &value.to_be_bytes())
    }

    /// A string element (UTF-8, no padding).
    pub fn string(&mut self, id: u32, value: &str) -> &mut Writer {
        self.element(id, value.as_bytes())
    }

    /// A master element of known size: `children` writes its body, then the size is
    /// written in its shortest form.
    pub fn master(&mut self, id: u32, children: impl FnOnce(&mut Writer)) -> &mut Writer {
        self.master_with(id, None, children)
    }

    /// Like [`master`](Writer::master), with the size written in exactly `size_len` bytes
    /// (matroskamux writes 8-byte sizes for its masters).
    pub fn master_size_len(
        &mut self,
        id: u32,
        size_len: usize,
        children: impl FnOnce(&mut Writer),
    ) -> &mut Writer {
        self.master_with(id, Some(size_len), children)
    }

    fn master_with(
        &mut self,
        id: u32,
        size_len: Option<usize>,
        children: impl FnOnce(&mut Writer),
    ) -> &mut Writer {
        let start = self.buf.len();
        children(self);
        let body = self.buf.split_off(start);
        write_id(&mut self.buf, id);
        match size_len {
            None => write_vint(&mut self.buf, body.len() as u64),
            Some(len) => write_vint_len(&mut self.buf, body.len() as u64, len),
        }
        self.bytes(&body)
    }

    /// The header of a master of unknown size (8-byte marker); its children follow.
    pub fn unknown_size(&mut self, id: u32) -> &mut Writer {
        write_id(&mut self.buf, id);
        write_unknown_size(&mut self.buf);
        self
    }

    /// An element header declaring `size` (shortest form); the body is whatever is written
    /// next, if anything.
    pub fn header(&mut self, id: u32, size: u64) -> &mut Writer {
        write_id(&mut self.buf, id);
        write_vint(&mut self.buf, size);
        self
    }

    /// Raw bytes, as they are.
    pub fn bytes(&mut self, raw: &[u8]) -> &mut Writer {
        self.buf.extend_from_slice(raw);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes written, leaving the writer empty (works at the end of a chain:
    /// `Writer::new().uint(ID_TIMECODE, 0).finish()`).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

impl From<Vec<u8>> for Writer {
    /// A writer that appends to `buf`.
    fn from(buf: Vec<u8>) -> Writer {
        Writer { buf }
    }
}

impl From<Writer> for Vec<u8> {
    fn from(w: Writer) -> Vec<u8> {
        w.buf
    }
}

impl AsRef<[u8]> for Writer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_and_float_bodies() {
        assert_eq!(read_int(&[]), Some(0));
        assert_eq!(read_int(&[0xFF]), Some(-1));
        assert_eq!(read_int(&[0x7F, 0xFF]), Some(32767));
        assert_eq!(read_int(&[0xFF, 0x00]), Some(-256));
        assert_eq!(
            read_int(&(-5_000_000_000i64).to_be_bytes()),
            Some(-5_000_000_000)
        );
        assert_eq!(read_float(&1.5f32.to_be_bytes()), Some(1.5));
        assert_eq!(read_float(&720_000.25f64.to_be_bytes()), Some(720_000.25));
        assert_eq!(read_float(&[1, 2, 3]), None);
    }
    use crate::ids::*;

    #[test]
    fn rfc8794_vint_examples() {
        // RFC 8794 section 4.4: the value 2 in every length.
        for bytes in [
            &[0x82u8][..],
            &[0x40, 0x02],
            &[0x20, 0x00, 0x02],
            &[0x10, 0x00, 0x00, 0x02],
        ] {
            assert_eq!(read_vint(bytes), Ok(Some((2, bytes.len()))));
            let mut v = Vec::new();
            write_vint_len(&mut v, 2, bytes.len());
            assert_eq!(v, bytes);
        }
        // Section 6.2: the "unknown" size in 1 to 8 bytes.
        for len in 1..=8 {
            let mut bytes = vec![0xFFu8 >> (len - 1)];
            bytes.resize(len, 0xFF);
            assert_eq!(read_size(&bytes), Ok(Some((None, len))), "{bytes:02X?}");
            // The same bits are an ordinary value to read_vint.
            assert_eq!(read_vint(&bytes), Ok(Some(((1 << (7 * len)) - 1, len))));
        }
        assert_eq!(read_size(&UNKNOWN_SIZE), Ok(Some((None, 8))));
        // Shortest forms, avoiding the reserved all-ones pattern.
        for (value, bytes) in [
            (0u64, &[0x80u8][..]),
            (1, &[0x81]),
            (126, &[0xFE]),
            (127, &[0x40, 0x7F]),
            (16_382, &[0x7F, 0xFE]),
            (16_383, &[0x20, 0x3F, 0xFF]),
            (
                (1 << 56) - 2,
                &[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE],
            ),
        ] {
            let mut v = Vec::new();
            write_vint(&mut v, value);
            assert_eq!(v, bytes, "{value}");
            assert_eq!(read_size(&v), Ok(Some((Some(value), v.len()))));
        }
    }

    #[test]
    fn matroska_ids_as_written() {
        for (id, bytes) in [
            (ID_EBML, &[0x1A, 0x45, 0xDF, 0xA3][..]),
            (ID_SEGMENT, &[0x18, 0x53, 0x80, 0x67]),
            (ID_CLUSTER, &[0x1F, 0x43, 0xB6, 0x75]),
            (ID_TIMECODE_SCALE, &[0x2A, 0xD7, 0xB1]),
            (ID_DOC_TYPE, &[0x42, 0x82]),
            (ID_SIMPLE_BLOCK, &[0xA3]),
        ] {
            let mut v = Vec::new();
            write_id(&mut v, id);
            assert_eq!(v, bytes);
            assert_eq!(read_id(bytes), Ok(Some((id, bytes.len()))));
            assert!(!is_reserved_id(id, bytes.len()));
        }
        assert!(is_reserved_id(0xFF, 1));
        assert!(is_reserved_id(0x80, 1));
        assert!(is_reserved_id(0x7FFF, 2));
        assert!(!is_reserved_id(0x4000, 2));
        assert_eq!(read_id(&[0x08, 1, 2, 3, 4]), Err(BadVint)); // 5-byte ID
        assert_eq!(read_id(&[0x00]), Err(BadVint));
        assert_eq!(read_id(&[0x1A, 0x45]), Ok(None));
    }

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
            let v = Writer::new().header(id, size).finish();
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
        let w = Writer::new().unknown_size(ID_CLUSTER).finish();
        assert_eq!(
            read_header(&w),
            Ok(Some(ElementHeader {
                id: ID_CLUSTER,
                size: None,
                len: 12
            }))
        );
        assert_eq!(read_header(&[0x00, 0x81]), Err(BadVint));
        assert_eq!(read_header(&[0x08, 1, 2, 3, 4, 0x81]), Err(BadVint)); // 5-byte ID
        assert_eq!(read_header(&[0xA3, 0x00]), Err(BadVint));
        assert_eq!(read_vint(&[0x81]), Ok(Some((1, 1))));
        assert_eq!(read_vint(&[0x40, 0x02]), Ok(Some((2, 2))));
        assert_eq!(read_vint(&[0x40]), Ok(None));
        assert_eq!(read_vint(&[]), Ok(None));
    }

    #[test]
    fn body_readers() {
        assert_eq!(read_uint(&[]), Some(0));
        assert_eq!(read_uint(&[0x0F, 0x42, 0x40]), Some(1_000_000));
        assert_eq!(read_uint(&[1; 8]), Some(0x0101_0101_0101_0101));
        assert_eq!(read_uint(&[1; 9]), None);
        assert_eq!(read_string(b"matroska\0"), "matroska");
        assert_eq!(read_string(b"webm\0\0"), "webm");
        assert_eq!(read_string(b"\0"), "");
        assert_eq!(read_string(b"A_AAC"), "A_AAC");
    }

    #[test]
    fn writer_values_and_masters() {
        let mut w = Writer::new();
        w.uint(ID_TRACK_NUMBER, 0)
            .uint(ID_TIMECODE_SCALE, 1_000_000)
            .int(ID_REFERENCE_BLOCK, -33)
            .int(ID_REFERENCE_BLOCK, 200)
            .int(ID_REFERENCE_BLOCK, -1)
            .string(ID_CODEC_ID, "A_AAC");
        assert_eq!(
            w.as_slice(),
            [
                &[0xD7, 0x81, 0x00][..],
                &[0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40],
                &[0xFB, 0x81, 0xDF],
                &[0xFB, 0x82, 0x00, 0xC8],
                &[0xFB, 0x81, 0xFF],
                &[0x86, 0x85, b'A', b'_', b'A', b'A', b'C'],
            ]
            .concat()
        );
        // A master's size is filled in after its children, shortest or fixed width.
        let mut w = Writer::new();
        w.master(ID_TRACK_ENTRY, |w| {
            w.uint(ID_TRACK_NUMBER, 1);
        })
        .master_size_len(ID_INFO, 8, |w| {
            w.uint(ID_TIMECODE_SCALE, 1);
        });
        assert_eq!(
            w.finish(),
            [
                &[0xAE, 0x83, 0xD7, 0x81, 0x01][..],
                &[0x15, 0x49, 0xA9, 0x66, 0x01, 0, 0, 0, 0, 0, 0, 0x05],
                &[0x2A, 0xD7, 0xB1, 0x81, 0x01],
            ]
            .concat()
        );
        // A master holding more than 126 bytes takes a 2-byte size.
        let big = Writer::new()
            .master(ID_TAGS, |w| {
                w.element(ID_VOID, &[0; 200]);
            })
            .finish();
        assert_eq!(read_header(&big).unwrap().unwrap().size, Some(203));
        assert_eq!(big.len(), 4 + 2 + 203);
        // Appending to existing bytes.
        let mut w = Writer::from(vec![1, 2]);
        w.element(ID_VOID, &[]);
        assert_eq!(Vec::from(w), [1, 2, 0xEC, 0x80]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn oversized_vint_panics() {
        write_vint(&mut Vec::new(), 1 << 56);
    }
}

//! EBML reading for the splitter: the codec of the `kvs-format` crate (re-exported here), and
//! the splitter's own iterator over the children of an element held in memory.
//!
//! Conventions: element IDs keep their length-marker bits (`0x1A45DFA3`, `0xA3`), as in
//! the Matroska specification; sizes are returned as `None` when they are "unknown"
//! (all value bits set). See [`kvs_format::ebml`].

pub use kvs_format::ebml::{
    BadVint, ElementHeader, MAX_HEADER_LEN, read_header, read_string, read_uint, read_vint,
    vint_len,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use kvs_format::ebml::Writer;

    #[test]
    fn children_and_values() {
        let body = Writer::new()
            .uint(0xD7, 1)
            .string(0x86, "V_MPEG4/ISO/AVC")
            .uint(0x2AD7B1, 1_000_000)
            .finish();
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

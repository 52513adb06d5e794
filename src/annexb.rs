//! H.264 in Annex B form (start codes, what cameras and `x264enc` give as `byte-stream`) made
//! into the length-prefixed form Matroska's `V_MPEG4/ISO/AVC` holds, with the avcC record
//! built from the stream's own SPS and PPS. Free of GStreamer.

use bytes::Bytes;

/// NAL unit types (the low 5 bits of a NAL unit's first byte).
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B access unit (start codes of 3 or 4 bytes), without their
/// start codes. Bytes before the first start code are not a NAL unit and are skipped.
pub fn nal_units(au: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(au.len(), |next| next - 3);
        // A 4-byte start code's leading zero (and trailing zero bytes) belong to no NAL.
        while end > start && au[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            out.push(&au[start..end]);
        }
    }
    out
}

/// An Annex B access unit in the length-prefixed form (4-byte lengths), and the SPS and PPS
/// it carries, if any.
pub struct Converted<'a> {
    pub frame: Bytes,
    pub sps: Option<&'a [u8]>,
    pub pps: Option<&'a [u8]>,
}

/// Converts one access unit.
pub fn to_length_prefixed(au: &[u8]) -> Converted<'_> {
    let nals = nal_units(au);
    let mut frame = Vec::with_capacity(au.len() + nals.len());
    let (mut sps, mut pps) = (None, None);
    for nal in nals {
        match nal[0] & 0x1F {
            NAL_SPS if sps.is_none() => sps = Some(nal),
            NAL_PPS if pps.is_none() => pps = Some(nal),
            _ => {}
        }
        frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        frame.extend_from_slice(nal);
    }
    Converted {
        frame: Bytes::from(frame),
        sps,
        pps,
    }
}

/// The avcC record (AVCDecoderConfigurationRecord) of one SPS and one PPS, with 4-byte NAL
/// lengths; `None` when the SPS is too short to hold profile and level.
pub fn avcc(sps: &[u8], pps: &[u8]) -> Option<Bytes> {
    if sps.len() < 4 || sps.len() > u16::MAX as usize || pps.len() > u16::MAX as usize {
        return None;
    }
    let mut out = Vec::with_capacity(11 + sps.len() + pps.len());
    // Version, then profile, compatibility and level as the SPS has them.
    out.extend_from_slice(&[1, sps[1], sps[2], sps[3]]);
    out.push(0xFF); // 6 reserved bits, NAL length size 4 (3 + 1)
    out.push(0xE1); // 3 reserved bits, one SPS
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(sps);
    out.push(1); // one PPS
    out.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    out.extend_from_slice(pps);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9];
    const PPS: &[u8] = &[0x68, 0xEB, 0xE3, 0xCB];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];

    fn annexb(nals: &[(&[u8], usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (nal, code) in nals {
            out.extend_from_slice(if *code == 4 {
                &[0, 0, 0, 1][..]
            } else {
                &[0, 0, 1]
            });
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn start_codes_of_three_and_four_bytes_become_lengths() {
        let au = annexb(&[(SPS, 4), (PPS, 3), (IDR, 4)]);
        let c = to_length_prefixed(&au);
        let mut expected = Vec::new();
        for nal in [SPS, PPS, IDR] {
            expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            expected.extend_from_slice(nal);
        }
        assert_eq!(&c.frame[..], &expected[..]);
        assert_eq!(c.sps, Some(SPS));
        assert_eq!(c.pps, Some(PPS));
        let delta = annexb(&[(&[0x41, 0x9A, 0x00, 0x10], 4)]);
        let c = to_length_prefixed(&delta);
        assert_eq!(&c.frame[..], &[0, 0, 0, 4, 0x41, 0x9A, 0x00, 0x10]);
        assert!(c.sps.is_none() && c.pps.is_none());
    }

    #[test]
    fn the_avcc_record_names_profile_and_level_and_carries_both_sets() {
        let record = avcc(SPS, PPS).unwrap();
        assert_eq!(&record[..6], &[1, 0x64, 0x00, 0x1F, 0xFF, 0xE1]);
        assert_eq!(&record[6..8], &(SPS.len() as u16).to_be_bytes());
        assert_eq!(&record[8..8 + SPS.len()], SPS);
        assert_eq!(record[8 + SPS.len()], 1);
        assert_eq!(&record[11 + SPS.len()..], PPS);
        assert!(avcc(&[0x67, 0x64], PPS).is_none());
    }

    #[test]
    fn garbage_without_start_codes_has_no_nal_units() {
        assert!(nal_units(b"no start code here").is_empty());
        assert!(nal_units(&[0, 0, 1]).is_empty());
    }
}

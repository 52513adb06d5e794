//! H.264 and H.265 in Annex B form (start codes, what cameras and encoders give as
//! `byte-stream`) made into the length-prefixed form Matroska's `V_MPEG4/ISO/AVC` and
//! `V_MPEGH/ISO/HEVC` hold, with the avcC or hvcC record built from the stream's own parameter
//! sets. Free of GStreamer.

use bytes::Bytes;

/// H.264 NAL unit types (the low 5 bits of a NAL unit's first byte).
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
/// H.265 NAL unit types (bits 1-6 of a NAL unit's first byte).
const HEVC_VPS: u8 = 32;
const HEVC_SPS: u8 = 33;
const HEVC_PPS: u8 = 34;

/// Which of the two codecs a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

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

/// An Annex B access unit in the length-prefixed form (4-byte lengths), and the parameter
/// sets it carries, if any (the VPS only for H.265).
pub struct Converted<'a> {
    pub frame: Bytes,
    pub vps: Option<&'a [u8]>,
    pub sps: Option<&'a [u8]>,
    pub pps: Option<&'a [u8]>,
}

impl Converted<'_> {
    /// The codec's configuration record, when the access unit carries the parameter sets.
    pub fn codec_private(&self, codec: Codec) -> Option<Bytes> {
        match (codec, self.vps, self.sps, self.pps) {
            (Codec::H264, _, Some(sps), Some(pps)) => avcc(sps, pps),
            (Codec::H265, Some(vps), Some(sps), Some(pps)) => hvcc(vps, sps, pps),
            _ => None,
        }
    }
}

/// Converts one access unit.
pub fn to_length_prefixed(au: &[u8], codec: Codec) -> Converted<'_> {
    let nals = nal_units(au);
    let mut frame = Vec::with_capacity(au.len() + nals.len());
    let (mut vps, mut sps, mut pps) = (None, None, None);
    for nal in nals {
        let (is_vps, is_sps, is_pps) = match codec {
            Codec::H264 => (false, nal[0] & 0x1F == NAL_SPS, nal[0] & 0x1F == NAL_PPS),
            Codec::H265 => {
                let t = (nal[0] >> 1) & 0x3F;
                (t == HEVC_VPS, t == HEVC_SPS, t == HEVC_PPS)
            }
        };
        if is_vps && vps.is_none() {
            vps = Some(nal);
        } else if is_sps && sps.is_none() {
            sps = Some(nal);
        } else if is_pps && pps.is_none() {
            pps = Some(nal);
        }
        frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        frame.extend_from_slice(nal);
    }
    Converted {
        frame: Bytes::from(frame),
        vps,
        sps,
        pps,
    }
}

/// A NAL unit's payload without its emulation prevention bytes (the 3 of `00 00 03`).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Reads bits, most significant first, and Exp-Golomb numbers.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit.into())
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some((v << 1) | self.bit()?))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.pos += n;
        (self.pos <= self.data.len() * 8).then_some(())
    }

    /// ue(v).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }
}

/// What the hvcC record says of an H.265 SPS: the general profile_tier_level (12 bytes),
/// sub-layers, chroma format and bit depths.
struct HevcSps {
    ptl: [u8; 12],
    max_sub_layers: u8,
    temporal_id_nested: bool,
    chroma_format: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
}

fn parse_hevc_sps(sps: &[u8]) -> Option<HevcSps> {
    // After the 2-byte NAL unit header.
    let rbsp = unescape(sps.get(2..)?);
    let mut r = Bits {
        data: &rbsp,
        pos: 0,
    };
    r.skip(4)?; // sps_video_parameter_set_id
    let sub_layers_minus1 = r.bits(3)? as usize;
    let temporal_id_nested = r.bit()? == 1;
    let ptl: [u8; 12] = rbsp.get(1..13)?.try_into().ok()?;
    r.skip(96)?;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(sub_layers_minus1) {
        *p = (r.bit()? == 1, r.bit()? == 1);
    }
    if sub_layers_minus1 > 0 {
        r.skip(2 * (8 - sub_layers_minus1))?;
    }
    for &(profile, level) in present.iter().take(sub_layers_minus1) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format = r.ue()?;
    if chroma_format == 3 {
        r.skip(1)?; // separate_colour_plane_flag
    }
    r.ue()?; // pic_width_in_luma_samples
    r.ue()?; // pic_height_in_luma_samples
    if r.bit()? == 1 {
        for _ in 0..4 {
            r.ue()?; // conformance window offsets
        }
    }
    let luma = r.ue()?;
    let chroma = r.ue()?;
    Some(HevcSps {
        ptl,
        max_sub_layers: sub_layers_minus1 as u8 + 1,
        temporal_id_nested,
        chroma_format: u8::try_from(chroma_format).ok().filter(|c| *c <= 3)?,
        bit_depth_luma_minus8: u8::try_from(luma).ok().filter(|d| *d <= 7)?,
        bit_depth_chroma_minus8: u8::try_from(chroma).ok().filter(|d| *d <= 7)?,
    })
}

/// The hvcC record (HEVCDecoderConfigurationRecord) of one VPS, SPS and PPS, with 4-byte NAL
/// lengths; `None` when the SPS cannot be read.
pub fn hvcc(vps: &[u8], sps: &[u8], pps: &[u8]) -> Option<Bytes> {
    let info = parse_hevc_sps(sps)?;
    let mut out = Vec::with_capacity(64 + vps.len() + sps.len() + pps.len());
    out.push(1);
    out.extend_from_slice(&info.ptl);
    out.extend_from_slice(&[0xF0, 0x00]); // min_spatial_segmentation_idc 0
    out.push(0xFC); // parallelismType 0
    out.push(0xFC | info.chroma_format);
    out.push(0xF8 | info.bit_depth_luma_minus8);
    out.push(0xF8 | info.bit_depth_chroma_minus8);
    out.extend_from_slice(&[0, 0]); // avgFrameRate unknown
    out.push((info.max_sub_layers << 3) | (u8::from(info.temporal_id_nested) << 2) | 3);
    out.push(3); // arrays: VPS, SPS, PPS
    for (kind, nal) in [(HEVC_VPS, vps), (HEVC_SPS, sps), (HEVC_PPS, pps)] {
        out.push(0x80 | kind); // array_completeness
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&u16::try_from(nal.len()).ok()?.to_be_bytes());
        out.extend_from_slice(nal);
    }
    Some(Bytes::from(out))
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
        let c = to_length_prefixed(&au, Codec::H264);
        let mut expected = Vec::new();
        for nal in [SPS, PPS, IDR] {
            expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            expected.extend_from_slice(nal);
        }
        assert_eq!(&c.frame[..], &expected[..]);
        assert_eq!(c.sps, Some(SPS));
        assert_eq!(c.pps, Some(PPS));
        let delta = annexb(&[(&[0x41, 0x9A, 0x00, 0x10], 4)]);
        let c = to_length_prefixed(&delta, Codec::H264);
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

    /// x265enc's parameter sets for 320x240 Main, 4:2:0, 8-bit, level 2.1 (no sub-layers).
    const HEVC_VPS_NAL: &[u8] = &[
        0x40, 0x01, 0x0C, 0x01, 0xFF, 0xFF, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x03, 0x00, 0x3F, 0xBA, 0x02, 0x40,
    ];
    const HEVC_SPS_NAL: &[u8] = &[
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3F, 0xA0, 0x0A, 0x08, 0x0F, 0x16, 0x5B, 0xA4, 0xA4, 0xC2, 0xFF, 0xF0, 0x00,
        0x10, 0x00, 0x16, 0xA0, 0xC0, 0xC0, 0xC0, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00,
        0x0F, 0x04,
    ];
    const HEVC_PPS_NAL: &[u8] = &[0x44, 0x01, 0xC0, 0x71, 0x83, 0x12];

    #[test]
    fn the_hvcc_record_reads_profile_level_and_format_from_the_sps() {
        let sps = parse_hevc_sps(HEVC_SPS_NAL).unwrap();
        // Main profile (1), level 63 (2.1), as the unescaped profile_tier_level says.
        assert_eq!(sps.ptl[0], 0x01);
        assert_eq!(&sps.ptl[1..5], &[0x60, 0, 0, 0]);
        assert_eq!(&sps.ptl[5..11], &[0x90, 0, 0, 0, 0, 0]);
        assert_eq!(sps.ptl[11], 0x3F);
        assert_eq!(sps.max_sub_layers, 1);
        assert_eq!(sps.chroma_format, 1);
        assert_eq!(
            (sps.bit_depth_luma_minus8, sps.bit_depth_chroma_minus8),
            (0, 0)
        );
        let record = hvcc(HEVC_VPS_NAL, HEVC_SPS_NAL, HEVC_PPS_NAL).unwrap();
        assert_eq!(record[0], 1);
        assert_eq!(&record[1..13], &sps.ptl);
        assert_eq!(
            &record[13..22],
            &[0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F]
        );
        assert_eq!(record[22], 3);
        assert_eq!(&record[23..26], &[0x80 | 32, 0, 1]);
        let au = annexb(&[(HEVC_VPS_NAL, 4), (HEVC_SPS_NAL, 4), (HEVC_PPS_NAL, 4)]);
        let converted = to_length_prefixed(&au, Codec::H265);
        assert_eq!(converted.codec_private(Codec::H265), Some(record));
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            [0, 0, 1, 0, 0, 0, 3]
        );
    }

    #[test]
    fn garbage_without_start_codes_has_no_nal_units() {
        assert!(nal_units(b"no start code here").is_empty());
        assert!(nal_units(&[0, 0, 1]).is_empty());
    }
}

//! MPEG-TS media segments (an ISO/IEC 13818-1 transport stream), as the sessions of
//! `GetHLSStreamingSessionURL` in `ContainerFormat` `MPEG_TS` serve them (`GetTSFragment`):
//! one segment per fragment, of the tracks and frames the fragmented MP4 segments are made of
//! ([`super::hls`]).
//!
//! A segment begins with a PAT and a PMT (one program: the video, and the AAC audio when the
//! stream has it), then holds every frame as one PES packet, in decode order, video and audio
//! interleaved by decode time:
//! - video (H.264 or H.265) in Annex B: an access unit delimiter first, and the parameter sets
//!   of the codec private data before every key frame; the first packet of every frame has a
//!   PCR (and, for a key frame, the random access indicator);
//! - audio (AAC) as ADTS frames, from the AudioSpecificConfig.
//!
//! PTS and DTS count 90 kHz from the Unix epoch, modulo 2^33, from the frames' times counted
//! as the fragmented MP4 segments' decode times are: consecutive segments continue one
//! timeline.
//!
//! The continuity counters go on from one segment to the next although each segment is made
//! alone: a segment holds a multiple of 16 packets of each elementary stream (the last PES of
//! each is spread over more packets, stuffed), so that its counters begin at 0 and end at 15;
//! the PAT's and the PMT's are the fragment's index in the stream, modulo 16. (GStreamer's
//! tsdemux drops the PES being collected, and the packet, at a counter that does not follow.)

use super::mp4::Codec;
use super::{ClipError, Source, samples};
use crate::model::records::StoredFragment;
use bytes::Bytes;

/// Bytes of a transport stream packet.
pub(crate) const PACKET_SIZE: usize = 188;
/// Bytes of a packet after its 4-byte header: its adaptation field and its payload.
const PACKET_BODY: usize = PACKET_SIZE - 4;
/// The first byte of every packet.
const SYNC_BYTE: u8 = 0x47;
/// A PID's continuity counter counts its packets that carry a payload, modulo this.
const CONTINUITY_MODULO: usize = 16;

/// PID of the program association table.
const PAT_PID: u16 = 0x0000;
/// PID of the program map table of the one program.
const PMT_PID: u16 = 0x1000;
/// PID of the video, which also carries the program's PCR.
const VIDEO_PID: u16 = 0x0100;
/// PID of the audio.
const AUDIO_PID: u16 = 0x0101;
/// The one program's program_number.
const PROGRAM_NUMBER: u16 = 1;
/// The PAT's transport_stream_id.
const TRANSPORT_STREAM_ID: u16 = 1;
/// table_id of a PAT section.
const TABLE_PAT: u8 = 0x00;
/// table_id of a PMT section.
const TABLE_PMT: u8 = 0x02;

/// stream_type (in the PMT) of H.264 video.
const STREAM_TYPE_H264: u8 = 0x1B;
/// stream_type of H.265 video.
const STREAM_TYPE_H265: u8 = 0x24;
/// stream_type of AAC audio in ADTS (ISO/IEC 13818-7).
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
/// PES stream_id of the (first) video stream.
const STREAM_ID_VIDEO: u8 = 0xE0;
/// PES stream_id of the (first) audio stream.
const STREAM_ID_AUDIO: u8 = 0xC0;

/// Ticks a second of PTS, DTS and the PCR's base.
const CLOCK_HZ: i128 = 90_000;
/// PTS, DTS and the PCR's base have 33 bits: they count modulo this.
const TIMESTAMP_MODULO: i128 = 1 << 33;
/// How long (90 kHz ticks) before a video frame's decode time the PCR of its first packet is,
/// so that a decoder has the frame before it is due: 100 ms.
const PCR_LEAD: i128 = 9_000;

/// The CRC of PSI sections, CRC-32/MPEG-2: this polynomial, all ones at first, neither
/// reflected nor inverted at the end.
const CRC_POLYNOMIAL: u32 = 0x04C1_1DB7;

/// Annex B's start code before each NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// nal_unit_type of an H.264 access unit delimiter.
const NAL_AUD_H264: u8 = 9;
/// nal_unit_type of an H.265 access unit delimiter.
const NAL_AUD_H265: u8 = 35;
/// An H.264 access unit delimiter: NAL header (type 9), primary_pic_type 7 (any slice),
/// stop bit.
const AUD_H264: [u8; 2] = [NAL_AUD_H264, 0xF0];
/// An H.265 access unit delimiter: NAL header (type 35, layer 0, TemporalId 0, which is
/// given the access unit's), pic_type 2 (any slice), stop bit.
const AUD_H265: [u8; 3] = [NAL_AUD_H265 << 1, 0x01, 0x50];

/// Bytes of an ADTS header without CRC.
const ADTS_HEADER: usize = 7;
/// The largest ADTS frame, its header included (frame_length has 13 bits).
const ADTS_MAX_FRAME: usize = (1 << 13) - 1;

/// The CRC-32/MPEG-2 of each byte value, for [`crc32`].
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ CRC_POLYNOMIAL
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The CRC_32 of a PSI section (CRC-32/MPEG-2).
fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(u32::MAX, |c, &b| {
        (c << 8) ^ CRC_TABLE[usize::from((c >> 24) as u8 ^ b)]
    })
}

/// A 90 kHz time as PTS, DTS and the PCR's base carry it: modulo 2^33.
fn wrap(ticks: i128) -> u64 {
    ticks.rem_euclid(TIMESTAMP_MODULO) as u64
}

/// What the segments of a stream are made with: the PMT's streams, how video frames become
/// Annex B and how AAC frames get their ADTS header.
struct Program {
    /// stream_type of the video.
    video_type: u8,
    /// H.265 (else H.264).
    hevc: bool,
    /// Bytes of the length before each NAL unit of a frame.
    nal_length: usize,
    /// The parameter sets of the codec private data, in Annex B.
    parameter_sets: Vec<u8>,
    /// The audio's ADTS header fields, when the stream has audio.
    audio: Option<Adts>,
}

impl Program {
    fn of(sources: &[Source]) -> Result<Program, ClipError> {
        let video = &sources[0];
        let hevc = matches!(video.codec, Codec::Hevc(_));
        let audio = match sources.get(1).map(|s| &s.codec) {
            Some(Codec::Aac(config)) => Some(Adts::of(config)?),
            // HLS takes no other audio (the sources are checked for it)
            _ => None,
        };
        Ok(Program {
            video_type: if hevc {
                STREAM_TYPE_H265
            } else {
                STREAM_TYPE_H264
            },
            hevc,
            nal_length: video.nal_length,
            parameter_sets: parameter_sets(&video.codec)?,
            audio,
        })
    }

    /// The PMT section: the video (its PID the PCR's) and the audio.
    fn pmt(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(0xE000 | VIDEO_PID).to_be_bytes()); // PCR_PID
        body.extend_from_slice(&0xF000u16.to_be_bytes()); // no program descriptors
        let mut stream = |stream_type: u8, pid: u16| {
            body.push(stream_type);
            body.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            body.extend_from_slice(&0xF000u16.to_be_bytes()); // no descriptors
        };
        stream(self.video_type, VIDEO_PID);
        if self.audio.is_some() {
            stream(STREAM_TYPE_AAC_ADTS, AUDIO_PID);
        }
        section(TABLE_PMT, PROGRAM_NUMBER, &body)
    }
}

/// The PAT section: the one program and its PMT's PID.
fn pat() -> Vec<u8> {
    let mut body = PROGRAM_NUMBER.to_be_bytes().to_vec();
    body.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
    section(TABLE_PAT, TRANSPORT_STREAM_ID, &body)
}

/// A PSI section of the long form: `table_id`, the length, `id` (transport_stream_id or
/// program_number), version 0 (current), section 0 of 0, `body`, its CRC_32.
fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    // section_length: from after itself to the end, the CRC included
    let length = u16::try_from(5 + body.len() + 4).expect("a small section");
    let mut s = vec![table_id];
    // section_syntax_indicator 1, '0', 2 reserved bits, 12 bits of length
    s.extend_from_slice(&(0xB000 | length).to_be_bytes());
    s.extend_from_slice(&id.to_be_bytes());
    // 2 reserved bits, version_number 0, current_next_indicator 1; section_number,
    // last_section_number
    s.extend_from_slice(&[0xC1, 0, 0]);
    s.extend_from_slice(body);
    let crc = crc32(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// A cursor over the bytes of a codec configuration record.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A NAL unit after its 16-bit length, appended to `out` in Annex B.
    fn nal_unit(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let n = usize::from(self.u16()?);
        let unit = self.take(n)?;
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(unit);
        Some(())
    }
}

/// The parameter sets of a video codec's configuration record, in its order, in Annex B:
/// an `avcC`'s SPS and PPS, an `hvcC`'s arrays (VPS, SPS, PPS, SEI).
fn parameter_sets(codec: &Codec) -> Result<Vec<u8>, ClipError> {
    let mut out = Vec::new();
    let read = |out: &mut Vec<u8>| -> Option<()> {
        match codec {
            Codec::Avc(record) => {
                // after version, profile, compatibility, level and the NAL length size
                let mut c = Cursor {
                    data: record,
                    at: 5,
                };
                for _ in 0..c.u8()? & 0x1F {
                    c.nal_unit(out)?;
                }
                for _ in 0..c.u8()? {
                    c.nal_unit(out)?;
                }
            }
            Codec::Hevc(record) => {
                // after the 22 bytes of profile, tier, level and the like
                let mut c = Cursor {
                    data: record,
                    at: 22,
                };
                for _ in 0..c.u8()? {
                    c.u8()?; // array_completeness, NAL_unit_type
                    for _ in 0..c.u16()? {
                        c.nal_unit(out)?;
                    }
                }
            }
            Codec::Aac(_) | Codec::G711 { .. } => {}
        }
        Some(())
    };
    read(&mut out).ok_or_else(|| {
        ClipError::InvalidCodecPrivateData(
            "track 1's codec private data ends inside its parameter sets".into(),
        )
    })?;
    Ok(out)
}

/// The NAL units of a frame, each after its `length`-byte length (up to the first that does
/// not fit; the sources were checked to fit).
fn nal_units(mut data: &[u8], length: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(head) = data.get(..length) {
        let n = head.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        let Some(unit) = length.checked_add(n).and_then(|end| data.get(length..end)) else {
            break;
        };
        if !unit.is_empty() {
            out.push(unit);
        }
        data = &data[length + n..];
    }
    out
}

/// A frame (NAL units each after its `nal_length`-byte length) in Annex B, appended to
/// `out`: an access unit delimiter first (the frame's own, else one of ours), then
/// `parameter_sets` (a key frame's, already in Annex B), then the frame's other NAL units.
fn annex_b(data: &[u8], nal_length: usize, hevc: bool, parameter_sets: &[u8], out: &mut Vec<u8>) {
    let units = nal_units(data, nal_length);
    let is_aud = |unit: &[u8]| {
        if hevc {
            (unit[0] >> 1) & 0x3F == NAL_AUD_H265
        } else {
            unit[0] & 0x1F == NAL_AUD_H264
        }
    };
    out.extend_from_slice(&START_CODE);
    match units.first().copied() {
        Some(unit) if is_aud(unit) => out.extend_from_slice(unit),
        first if hevc => {
            // the access unit's TemporalId (its NAL units', the first one's)
            let temporal = first
                .and_then(|u| u.get(1))
                .map_or(1, |b| (b & 0x07).max(1));
            out.extend_from_slice(&[AUD_H265[0], temporal, AUD_H265[2]]);
        }
        _ => out.extend_from_slice(&AUD_H264),
    }
    out.extend_from_slice(parameter_sets);
    for &unit in &units {
        if !is_aud(unit) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(unit);
        }
    }
}

/// What an ADTS header says of the stream (ISO/IEC 13818-7), from its AudioSpecificConfig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Adts {
    /// profile: the audio object type minus 1 (1 AAC Main, 2 LC, 3 SSR, 4 LTP).
    profile: u8,
    /// sampling_frequency_index.
    rate_index: u8,
    /// channel_configuration.
    channels: u8,
}

/// Reads an AudioSpecificConfig's fields, bit by bit.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            v = (v << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(v)
    }

    /// audioObjectType, with its escape for types from 32 on.
    fn object_type(&mut self) -> Option<u32> {
        match self.take(5)? {
            31 => Some(32 + self.take(6)?),
            t => Some(t),
        }
    }
}

impl Adts {
    /// The ADTS fields of an AudioSpecificConfig (ISO/IEC 14496-3): an object type that ADTS
    /// can name (SBR and PS signalled explicitly name the one beneath) and a rate of the
    /// table.
    fn of(config: &[u8]) -> Result<Adts, ClipError> {
        let mut bits = Bits {
            data: config,
            at: 0,
        };
        let read = |bits: &mut Bits<'_>| -> Option<(u32, u32, u32)> {
            let mut object = bits.object_type()?;
            let rate = bits.take(4)?;
            if rate == 15 {
                bits.take(24)?;
            }
            let channels = bits.take(4)?;
            // SBR (5) and PS (29): the extension's rate, then the core's object type
            if object == 5 || object == 29 {
                if bits.take(4)? == 15 {
                    bits.take(24)?;
                }
                object = bits.object_type()?;
            }
            Some((object, rate, channels))
        };
        let (object, rate, channels) = read(&mut bits).ok_or_else(|| {
            ClipError::InvalidCodecPrivateData(
                "track 2's codec private data is not an AAC AudioSpecificConfig".into(),
            )
        })?;
        if !(1..=4).contains(&object) || rate == 15 {
            return Err(ClipError::UnsupportedStreamMediaType(format!(
                "MPEG-TS carries AAC as ADTS, which takes audio object types 1 to 4 and the \
                 standard sampling rates; track 2 is object type {object}{}: use \
                 ContainerFormat FRAGMENTED_MP4",
                if rate == 15 { " at another rate" } else { "" }
            )));
        }
        Ok(Adts {
            profile: (object - 1) as u8,
            rate_index: rate as u8,
            channels: channels as u8,
        })
    }

    /// The header of an ADTS frame of `payload` bytes of AAC: MPEG-4, no CRC, buffer
    /// fullness 0x7FF (variable rate), one raw data block.
    fn header(&self, payload: usize) -> Result<[u8; ADTS_HEADER], ClipError> {
        let length = payload + ADTS_HEADER;
        if length > ADTS_MAX_FRAME {
            return Err(ClipError::InvalidMediaFrame(format!(
                "an AAC frame of {payload} bytes is more than an ADTS frame holds"
            )));
        }
        Ok([
            0xFF,
            0xF1, // syncword, ID 0 (MPEG-4), layer 0, protection_absent
            (self.profile << 6) | (self.rate_index << 2) | (self.channels >> 2),
            ((self.channels & 3) << 6) | (length >> 11) as u8,
            (length >> 3) as u8,
            (((length & 7) as u8) << 5) | 0x1F,
            0xFC,
        ])
    }
}

/// A PTS or DTS field: the 4-bit `prefix`, then the 33 bits of `t` with marker bits.
fn timestamp(prefix: u8, t: u64) -> [u8; 5] {
    [
        (prefix << 4) | ((((t >> 30) & 0x07) as u8) << 1) | 1,
        (t >> 22) as u8,
        ((((t >> 15) & 0x7F) as u8) << 1) | 1,
        (t >> 7) as u8,
        (((t & 0x7F) as u8) << 1) | 1,
    ]
}

/// A PES header: `pts`, and `dts` when it differs, before `payload` bytes (a packet length
/// of 0, unbounded, for video longer than the field counts).
fn pes_header(stream_id: u8, pts: u64, dts: Option<u64>, payload: usize) -> Vec<u8> {
    let fields: u8 = if dts.is_some() { 10 } else { 5 };
    let length = u16::try_from(3 + usize::from(fields) + payload).unwrap_or(0);
    let mut h = vec![0, 0, 1, stream_id];
    h.extend_from_slice(&length.to_be_bytes());
    // '10', not scrambled, no priority, data_alignment_indicator, no copyright, a copy
    h.push(0x84);
    match dts {
        Some(dts) => {
            h.extend_from_slice(&[0xC0, fields]);
            h.extend_from_slice(&timestamp(0b0011, pts));
            h.extend_from_slice(&timestamp(0b0001, dts));
        }
        None => {
            h.extend_from_slice(&[0x80, fields]);
            h.extend_from_slice(&timestamp(0b0010, pts));
        }
    }
    h
}

/// An adaptation field's PCR: its 33-bit base, 6 reserved bits, a 9-bit extension of 0.
fn pcr(base: u64) -> [u8; 6] {
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7E,
        0,
    ]
}

/// One packet: its header, an adaptation field of `adaptation` (its flags and fields,
/// without its length; may be empty) stuffed to fill the packet, and `payload`. The
/// adaptation field must leave room for the payload.
fn packet(out: &mut Vec<u8>, pid: u16, start: bool, cc: u8, adaptation: &[u8], payload: &[u8]) {
    let at = out.len();
    // the bytes left for an adaptation field, its length byte included
    let room = PACKET_BODY - payload.len();
    debug_assert!(adaptation.is_empty() || room > adaptation.len());
    out.push(SYNC_BYTE);
    // transport_error_indicator 0, payload_unit_start_indicator, priority 0, 13 bits of PID
    out.extend_from_slice(&((u16::from(start) << 14) | (pid & 0x1FFF)).to_be_bytes());
    // not scrambled, adaptation_field_control (payload only, or an adaptation field too)
    let control = if room == 0 { 0x10 } else { 0x30 };
    out.push(control | (cc & 0x0F));
    if room > 0 {
        out.push((room - 1) as u8); // adaptation_field_length
        if room > 1 {
            if adaptation.is_empty() {
                out.push(0); // no flags: stuffing only
            } else {
                out.extend_from_slice(adaptation);
            }
            out.resize(at + 4 + room, 0xFF);
        }
    }
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - at, PACKET_SIZE);
}

/// A packet of a PSI section: the pointer field (the section begins after it), the
/// section, 0xFF after it.
fn psi_packet(out: &mut Vec<u8>, pid: u16, cc: u8, section: &[u8]) {
    let mut payload = Vec::with_capacity(PACKET_BODY);
    payload.push(0);
    payload.extend_from_slice(section);
    payload.resize(PACKET_BODY, 0xFF);
    packet(out, pid, true, cc, &[], &payload);
}

/// A PES packet, to be written as `packets` transport packets.
struct Pes {
    pid: u16,
    /// Its decode time (90 kHz, not wrapped): where it comes in the segment.
    order: i128,
    /// The adaptation field of its first transport packet (flags and fields).
    adaptation: Vec<u8>,
    /// Header and payload.
    bytes: Vec<u8>,
    /// How many transport packets it takes: at least [`Pes::fewest`], at most one a byte.
    packets: usize,
}

impl Pes {
    /// The payload room of its first transport packet.
    fn first_room(&self) -> usize {
        if self.adaptation.is_empty() {
            PACKET_BODY
        } else {
            PACKET_BODY - 1 - self.adaptation.len()
        }
    }

    /// The fewest transport packets it fits in.
    fn fewest(&self) -> usize {
        1 + self
            .bytes
            .len()
            .saturating_sub(self.first_room())
            .div_ceil(PACKET_BODY)
    }

    /// Its transport packets, numbered on from `cc`: full ones, then, if it takes more than
    /// it fills, one byte in each of the last ones (the rest stuffing).
    fn write(&self, out: &mut Vec<u8>, cc: &mut u8) {
        let mut rest = self.bytes.as_slice();
        for i in 0..self.packets {
            let room = if i == 0 {
                self.first_room()
            } else {
                PACKET_BODY
            };
            let later = self.packets - 1 - i;
            let take = room.min(rest.len().saturating_sub(later));
            let (now, next) = rest.split_at(take);
            let adaptation: &[u8] = if i == 0 { &self.adaptation } else { &[] };
            packet(out, self.pid, i == 0, *cc, adaptation, now);
            *cc = (*cc + 1) % CONTINUITY_MODULO as u8;
            rest = next;
        }
    }
}

/// Checks that the tracks of `fragment` (whose stream header is in `headers`) can be served
/// in MPEG-TS: HLS's checks, parameter sets that can be read, AAC that ADTS can carry.
pub(crate) fn check(headers: &[Bytes], fragment: &StoredFragment) -> Result<(), ClipError> {
    Program::of(&super::hls::checked_sources(headers, fragment, false)?).map(|_| ())
}

/// The MPEG-TS media segment of `fragment`, at `index` in its stream (whose stream header
/// is in `headers`).
pub(crate) fn segment(
    headers: &[Bytes],
    fragment: &StoredFragment,
    index: usize,
) -> Result<Vec<u8>, ClipError> {
    let sources = super::hls::checked_sources(headers, fragment, false)?;
    let program = Program::of(&sources)?;
    let mut units: Vec<Pes> = Vec::new();
    for (track, src) in sources.iter().enumerate() {
        if src.frames.is_empty() {
            continue;
        }
        let video = track == 0;
        let (samples, _, base_ns) = samples(src);
        // decode times in the track's timescale, from the epoch, as the fMP4 segment's tfdt
        let scale = i128::from(src.timescale);
        let mut dts = base_ns.max(0) * scale / 1_000_000_000;
        for ((_, _, frame), sample) in src.frames.iter().zip(&samples) {
            let pts = dts + i128::from(sample.cts);
            let (dts_90k, pts_90k) = (dts * CLOCK_HZ / scale, pts * CLOCK_HZ / scale);
            dts += i128::from(sample.duration);
            let data = &fragment.bytes[frame.data.clone()];
            let mut payload = Vec::with_capacity(data.len() + program.parameter_sets.len() + 16);
            let mut adaptation = Vec::new();
            if video {
                let sets: &[u8] = if frame.key {
                    &program.parameter_sets
                } else {
                    &[]
                };
                annex_b(data, program.nal_length, program.hevc, sets, &mut payload);
                // flags: random_access_indicator for a key frame, PCR_flag; the PCR
                adaptation.push(if frame.key { 0x50 } else { 0x10 });
                adaptation.extend_from_slice(&pcr(wrap(dts_90k - PCR_LEAD)));
            } else if let Some(adts) = &program.audio {
                payload.extend_from_slice(&adts.header(data.len())?);
                payload.extend_from_slice(data);
            }
            let (stream_id, pid) = if video {
                (STREAM_ID_VIDEO, VIDEO_PID)
            } else {
                (STREAM_ID_AUDIO, AUDIO_PID)
            };
            let decoded = (dts_90k != pts_90k).then(|| wrap(dts_90k));
            let mut bytes = pes_header(stream_id, wrap(pts_90k), decoded, payload.len());
            bytes.extend_from_slice(&payload);
            let mut pes = Pes {
                pid,
                order: dts_90k,
                adaptation,
                bytes,
                packets: 0,
            };
            pes.packets = pes.fewest();
            units.push(pes);
        }
    }
    // in decode order (stable: the video first at the same time)
    units.sort_by_key(|u| u.order);
    // a multiple of 16 packets of each PID: its last PES takes the packets missing
    for pid in [VIDEO_PID, AUDIO_PID] {
        let total: usize = units
            .iter()
            .filter(|u| u.pid == pid)
            .map(|u| u.packets)
            .sum();
        let missing = (CONTINUITY_MODULO - total % CONTINUITY_MODULO) % CONTINUITY_MODULO;
        if let Some(last) = units.iter_mut().rev().find(|u| u.pid == pid) {
            last.packets += missing.min(last.bytes.len() - last.packets);
        }
    }
    let packets = 2 + units.iter().map(|u| u.packets).sum::<usize>();
    let mut out = Vec::with_capacity(packets * PACKET_SIZE);
    let psi_cc = (index % CONTINUITY_MODULO) as u8;
    psi_packet(&mut out, PAT_PID, psi_cc, &pat());
    psi_packet(&mut out, PMT_PID, psi_cc, &program.pmt());
    let (mut video_cc, mut audio_cc) = (0u8, 0u8);
    for u in &units {
        let cc = if u.pid == VIDEO_PID {
            &mut video_cc
        } else {
            &mut audio_cc
        };
        u.write(&mut out, cc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::tests::{fragment, header, nal};
    use kvs_format::build::{cluster, simple_block};
    use kvs_format::matroska::{CODEC_AAC, CODEC_H264, TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO};

    /// CRC-32/MPEG-2 bit by bit, as the standard defines it: the reference of [`crc32`].
    fn reference_crc(data: &[u8]) -> u32 {
        let mut crc = u32::MAX;
        for &byte in data {
            for bit in (0..8).rev() {
                let feedback = (crc >> 31) ^ u32::from((byte >> bit) & 1);
                crc <<= 1;
                if feedback == 1 {
                    crc ^= 0x04C1_1DB7;
                }
            }
        }
        crc
    }

    /// A transport packet's fields.
    struct Packet<'a> {
        pid: u16,
        start: bool,
        cc: u8,
        /// The adaptation field after its length byte (empty without one).
        adaptation: &'a [u8],
        payload: &'a [u8],
    }

    /// The packets of `ts`, checked to be 188 bytes, each beginning with the sync byte.
    fn packets(ts: &[u8]) -> Vec<Packet<'_>> {
        assert_eq!(ts.len() % 188, 0, "{} bytes", ts.len());
        ts.chunks(188)
            .map(|p| {
                assert_eq!(p[0], 0x47);
                assert_eq!(p[1] & 0x80, 0, "transport_error_indicator");
                let control = (p[3] >> 4) & 3;
                assert_ne!(control, 0);
                let (adaptation, at) = if control & 2 != 0 {
                    let n = usize::from(p[4]);
                    assert!(5 + n <= 188);
                    (&p[5..5 + n], 5 + n)
                } else {
                    (&p[..0], 4)
                };
                Packet {
                    pid: u16::from_be_bytes([p[1] & 0x1F, p[2]]),
                    start: p[1] & 0x40 != 0,
                    cc: p[3] & 0x0F,
                    adaptation,
                    payload: if control & 1 != 0 { &p[at..] } else { &p[..0] },
                }
            })
            .collect()
    }

    /// A PSI section of a packet: checked (pointer field 0, its CRC), without its CRC.
    fn psi(p: &Packet<'_>, table_id: u8) -> Vec<u8> {
        assert!(p.start);
        assert_eq!(p.payload[0], 0, "pointer_field");
        let s = &p.payload[1..];
        assert_eq!(s[0], table_id);
        assert_eq!(s[1] & 0xC0, 0x80, "section_syntax_indicator, '0'");
        let length = usize::from(u16::from_be_bytes([s[1] & 0x0F, s[2]]));
        let whole = &s[..3 + length];
        let crc = u32::from_be_bytes(whole[whole.len() - 4..].try_into().unwrap());
        assert_eq!(crc, reference_crc(&whole[..whole.len() - 4]));
        // as a decoder checks it: the CRC over the section with its CRC is 0
        assert_eq!(reference_crc(whole), 0);
        assert!(s[3 + length..].iter().all(|&b| b == 0xFF), "stuffing");
        assert_eq!(&s[5..8], [0xC1, 0, 0], "version 0, current, section 0 of 0");
        whole[..whole.len() - 4].to_vec()
    }

    /// A PTS or DTS field: its prefix and its value, the marker bits checked.
    fn read_timestamp(b: &[u8]) -> (u8, u64) {
        assert_eq!((b[0] & 1, b[2] & 1, b[4] & 1), (1, 1, 1), "marker bits");
        let t = (u64::from((b[0] >> 1) & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1);
        (b[0] >> 4, t)
    }

    /// The PCR base of an adaptation field (after its length byte) with a PCR.
    fn read_pcr(a: &[u8]) -> u64 {
        (u64::from(a[1]) << 25)
            | (u64::from(a[2]) << 17)
            | (u64::from(a[3]) << 9)
            | (u64::from(a[4]) << 1)
            | u64::from(a[5] >> 7)
    }

    /// A PES packet: its stream_id, PTS, DTS (if written) and payload, its header checked.
    fn read_pes(pes: &[u8]) -> (u8, u64, Option<u64>, &[u8]) {
        assert_eq!(&pes[..3], [0, 0, 1]);
        let length = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
        assert!(
            length == 0 || length == pes.len() - 6,
            "PES_packet_length {length}"
        );
        assert_eq!(pes[6], 0x84);
        let header = usize::from(pes[8]);
        let payload = &pes[9 + header..];
        match pes[7] {
            0x80 => {
                assert_eq!(header, 5);
                let (prefix, pts) = read_timestamp(&pes[9..14]);
                assert_eq!(prefix, 0b0010);
                (pes[3], pts, None, payload)
            }
            0xC0 => {
                assert_eq!(header, 10);
                let (prefix, pts) = read_timestamp(&pes[9..14]);
                let (dts_prefix, dts) = read_timestamp(&pes[14..19]);
                assert_eq!((prefix, dts_prefix), (0b0011, 0b0001));
                (pes[3], pts, Some(dts), payload)
            }
            other => panic!("PTS_DTS_flags {other:#x}"),
        }
    }

    #[test]
    fn the_crc_is_crc_32_mpeg_2() {
        assert_eq!(crc32(b"123456789"), 0x0376_E6E7); // its check value
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for n in [0, 1, 2, 17, 1000] {
            assert_eq!(crc32(&data[..n]), reference_crc(&data[..n]));
        }
    }

    #[test]
    fn pat_and_pmt_name_the_program_and_its_streams() {
        let mut out = Vec::new();
        psi_packet(&mut out, PAT_PID, 3, &pat());
        let program = Program {
            video_type: STREAM_TYPE_H265,
            hevc: true,
            nal_length: 4,
            parameter_sets: Vec::new(),
            audio: Some(Adts {
                profile: 1,
                rate_index: 4,
                channels: 2,
            }),
        };
        psi_packet(&mut out, PMT_PID, 3, &program.pmt());
        let p = packets(&out);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].pid, p[0].cc, p[1].pid, p[1].cc), (0, 3, 0x1000, 3));
        let pat = psi(&p[0], 0x00);
        // transport_stream_id 1; program 1 on PID 0x1000
        assert_eq!(&pat[3..5], [0, 1]);
        assert_eq!(&pat[8..], [0, 1, 0xF0, 0x00]);
        let pmt = psi(&p[1], 0x02);
        assert_eq!(&pmt[3..5], [0, 1], "program_number");
        // PCR on the video PID, no program descriptors; H.265 on 0x100, AAC on 0x101
        assert_eq!(&pmt[8..12], [0xE1, 0x00, 0xF0, 0x00]);
        assert_eq!(
            &pmt[12..],
            [0x24, 0xE1, 0x00, 0xF0, 0x00, 0x0F, 0xE1, 0x01, 0xF0, 0x00]
        );
    }

    #[test]
    fn pes_headers_carry_pts_and_dts() {
        for t in [0, 1, 90_000, 0x1_2345_6789, (1 << 33) - 1] {
            let dts = t / 2;
            let mut pes = pes_header(STREAM_ID_VIDEO, t, Some(dts), 100);
            pes.extend(std::iter::repeat_n(7, 100));
            assert_eq!(read_pes(&pes), (0xE0, t, Some(dts), &[7u8; 100][..]));
            let mut pes = pes_header(STREAM_ID_AUDIO, t, None, 3);
            pes.extend([1, 2, 3]);
            assert_eq!(read_pes(&pes), (0xC0, t, None, &[1u8, 2, 3][..]));
        }
        // a video PES too long for the length field is unbounded
        let h = pes_header(STREAM_ID_VIDEO, 0, None, 70_000);
        assert_eq!(&h[4..6], [0, 0]);
        // times wrap at 2^33
        assert_eq!(wrap(1 << 33), 0);
        assert_eq!(wrap(-1), (1 << 33) - 1);
        assert_eq!(
            wrap(1_700_000_000_000 * 90),
            1_700_000_000_000 * 90 % (1 << 33)
        );
    }

    #[test]
    fn video_becomes_annex_b_with_a_delimiter_and_the_parameter_sets() {
        // avcC: 4-byte lengths, one SPS, one PPS
        let avcc = [
            1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 1, 2, 3, 1, 0, 2, 0x68, 9,
        ];
        let sets = parameter_sets(&Codec::Avc(avcc.to_vec())).unwrap();
        assert_eq!(sets, [0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 0, 1, 0x68, 9]);
        let mut frame = nal(3, 0x65);
        frame.extend(nal(2, 0x06));
        let mut out = Vec::new();
        annex_b(&frame, 4, false, &sets, &mut out);
        let mut expected = vec![0, 0, 0, 1, 0x09, 0xF0];
        expected.extend(&sets);
        expected.extend([0, 0, 0, 1, 0x65, 0x65, 0x65, 0, 0, 0, 1, 0x06, 0x06]);
        assert_eq!(out, expected);
        // a frame with its own delimiter keeps it (first), with no second one; 2-byte lengths
        let frame = [0, 2, 0x09, 0x10, 0, 2, 0x41, 7];
        let mut out = Vec::new();
        annex_b(&frame, 2, false, &[], &mut out);
        assert_eq!(out, [0, 0, 0, 1, 0x09, 0x10, 0, 0, 0, 1, 0x41, 7]);
        // H.265: a delimiter of type 35 with the access unit's TemporalId; hvcC arrays
        let mut hvcc = vec![1; 22];
        hvcc.extend([2, 0xA0, 0, 1, 0, 2, 0x40, 1, 0xA1, 0, 1, 0, 2, 0x42, 1]);
        let sets = parameter_sets(&Codec::Hevc(hvcc)).unwrap();
        assert_eq!(sets, [0, 0, 0, 1, 0x40, 1, 0, 0, 0, 1, 0x42, 1]);
        let mut out = Vec::new();
        annex_b(&[0, 0, 0, 2, 0x02, 0x03], 4, true, &sets, &mut out);
        assert_eq!(&out[..7], [0, 0, 0, 1, 0x46, 0x03, 0x50]);
        assert_eq!(&out[7..19], sets);
        assert_eq!(&out[19..], [0, 0, 0, 1, 0x02, 0x03]);
        // a record that ends inside its parameter sets
        let short = Codec::Avc(avcc[..12].to_vec());
        assert!(matches!(
            parameter_sets(&short),
            Err(ClipError::InvalidCodecPrivateData(_))
        ));
    }

    #[test]
    fn aac_gets_adts_headers_from_its_audio_specific_config() {
        // AAC LC, 44.1 kHz, stereo
        let adts = Adts::of(&[0x12, 0x10]).unwrap();
        assert_eq!(
            adts,
            Adts {
                profile: 1,
                rate_index: 4,
                channels: 2
            }
        );
        let h = adts.header(300).unwrap();
        // syncword, MPEG-4, layer 0, no CRC
        assert_eq!((h[0], h[1]), (0xFF, 0xF1));
        assert_eq!(h[2] >> 6, 1, "profile");
        assert_eq!((h[2] >> 2) & 0xF, 4, "sampling_frequency_index");
        assert_eq!(((h[2] & 1) << 2) | (h[3] >> 6), 2, "channel_configuration");
        let length =
            (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        assert_eq!(length, 307, "frame_length, the header included");
        let fullness = (u16::from(h[5] & 0x1F) << 6) | u16::from(h[6] >> 2);
        assert_eq!(
            (fullness, h[6] & 3),
            (0x7FF, 0),
            "buffer fullness, one raw data block"
        );
        // HE-AAC signalled explicitly (SBR, 24 kHz core, stereo, 48 kHz, over LC): LC at 24 kHz
        assert_eq!(
            Adts::of(&[0x2B, 0x11, 0x88]).unwrap(),
            Adts {
                profile: 1,
                rate_index: 6,
                channels: 2
            }
        );
        // USAC (object type 42, escaped) has no ADTS profile; nor has an explicit rate
        assert!(matches!(
            Adts::of(&[0xF9, 0x46, 0x20]),
            Err(ClipError::UnsupportedStreamMediaType(_))
        ));
        assert!(matches!(
            Adts::of(&[0x17, 0x80, 0, 0, 0x10]),
            Err(ClipError::UnsupportedStreamMediaType(_))
        ));
        assert!(matches!(
            Adts::of(&[0x12]),
            Err(ClipError::InvalidCodecPrivateData(_))
        ));
        assert!(matches!(
            adts.header(8185),
            Err(ClipError::InvalidMediaFrame(_))
        ));
    }

    #[test]
    fn a_packet_is_stuffed_in_its_adaptation_field() {
        for n in [184, 183, 182, 100, 1] {
            let payload = vec![0xAB; n];
            let mut out = Vec::new();
            packet(&mut out, 0x100, true, 5, &[], &payload);
            let p = &packets(&out)[0];
            assert_eq!((p.pid, p.start, p.cc), (0x100, true, 5));
            assert_eq!(p.payload, payload);
            assert_eq!(p.adaptation.len(), 184 - n - usize::from(n < 184));
            if n < 183 {
                assert_eq!(p.adaptation[0], 0, "no flags");
                assert!(p.adaptation[1..].iter().all(|&b| b == 0xFF));
            }
        }
        // a PCR with stuffing after it
        let mut field = vec![0x50];
        field.extend(pcr(0x1_2345_6789));
        let mut out = Vec::new();
        packet(&mut out, 0x100, true, 0, &field, &[1; 10]);
        let p = &packets(&out)[0];
        assert_eq!(&p.adaptation[..7], field);
        let a = p.adaptation;
        assert_eq!(read_pcr(a), 0x1_2345_6789);
        assert_eq!((a[5] & 0x7E, a[6]), (0x7E, 0), "reserved bits, extension 0");
        assert!(a[7..].iter().all(|&b| b == 0xFF));
    }

    /// Checks that the continuity counters of `ts` go on packet by packet, per PID (from
    /// `last`, those before it), and gives the last of each.
    fn counters(
        ts: &[u8],
        mut last: std::collections::BTreeMap<u16, u8>,
    ) -> std::collections::BTreeMap<u16, u8> {
        for p in packets(ts) {
            if p.payload.is_empty() {
                continue;
            }
            if let Some(prev) = last.get(&p.pid) {
                assert_eq!(p.cc, (prev + 1) % 16, "PID {:#x}", p.pid);
            }
            last.insert(p.pid, p.cc);
        }
        last
    }

    /// A PES packet's bytes, and the PCR of its first transport packet (with its random
    /// access indicator), if it has one.
    type PesAndPcr = (Vec<u8>, Option<(u64, bool)>);

    /// The PES packets of `ts` on `pid`.
    fn pes_of(ts: &[u8], pid: u16) -> Vec<PesAndPcr> {
        let mut out: Vec<PesAndPcr> = Vec::new();
        for p in packets(ts).into_iter().filter(|p| p.pid == pid) {
            if p.start {
                let a = p.adaptation;
                let pcr =
                    (a.len() >= 7 && a[0] & 0x10 != 0).then(|| (read_pcr(a), a[0] & 0x40 != 0));
                out.push((Vec::new(), pcr));
            }
            out.last_mut().unwrap().0.extend_from_slice(p.payload);
        }
        out
    }

    #[test]
    fn a_fragment_becomes_a_segment_of_its_frames_on_one_timeline() {
        let avcc = [
            1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 1, 2, 3, 1, 0, 2, 0x68, 9,
        ];
        let aac: &[u8] = &[0x12, 0x10]; // AAC LC, 44.1 kHz, stereo
        let headers = [header(&[
            (1, TRACK_TYPE_VIDEO, CODEC_H264, &avcc, (320, 240)),
            (2, TRACK_TYPE_AUDIO, CODEC_AAC, aac, (44_100, 2)),
        ])];
        // I P B B (presented at 0, 120, 40, 80 ms), AAC at 0 and 23 ms
        let blocks = |fill: u8| {
            vec![
                simple_block(1, 0, true, &nal(300, 0x65)),
                simple_block(1, 120, false, &nal(5, fill)),
                simple_block(2, 0, true, &[0x21; 20]),
                simple_block(2, 23, true, &[0x22; 30]),
                simple_block(1, 40, false, &nal(6, fill)),
                simple_block(1, 80, false, &nal(7, fill)),
            ]
        };
        let p = 1_700_000_000_000u64;
        let f1 = fragment(1, p, cluster(0, &blocks(0x41)));
        let f2 = fragment(2, p + 160, cluster(160, &blocks(0x01)));
        let s1 = segment(&headers, &f1, 6).unwrap();
        let s2 = segment(&headers, &f2, 7).unwrap();
        // PAT and PMT first, their counters the fragments' indexes; the streams' counters
        // begin at 0 and go on from one segment to the next
        for (s, cc) in [(&s1, 6), (&s2, 7)] {
            let all = packets(s);
            assert_eq!(
                (all[0].pid, all[0].cc, all[1].pid, all[1].cc),
                (0, cc, 0x1000, cc)
            );
            let pmt = psi(&all[1], 0x02);
            assert_eq!(
                &pmt[12..],
                [0x1B, 0xE1, 0x00, 0xF0, 0x00, 0x0F, 0xE1, 0x01, 0xF0, 0x00]
            );
            for pid in [0x100, 0x101] {
                assert_eq!(all.iter().filter(|p| p.pid == pid).count() % 16, 0);
            }
            let first = all.iter().find(|p| p.pid == 0x100).unwrap();
            assert_eq!(first.cc, 0);
        }
        let mut both = s1.clone();
        both.extend(&s2);
        let last = counters(&both, Default::default());
        assert_eq!((last[&0x100], last[&0x101]), (15, 15));

        let wrapped = |ms_90k: i128| (ms_90k.rem_euclid(1 << 33)) as u64;
        let at = |ms: i128| i128::from(p) * 90 + ms * 90;
        // video: decoded from 40 ms before (the reordering), presented at its times
        let video = pes_of(&s1, 0x100);
        assert_eq!(video.len(), 4);
        let expected = [
            (0, Some(-40), true),
            (120, Some(0), false),
            (40, None, false),
            (80, None, false),
        ];
        for ((pes, pcr), (pts, dts, key)) in video.iter().zip(expected) {
            let (id, got_pts, got_dts, payload) = read_pes(pes);
            assert_eq!(id, 0xE0);
            assert_eq!(got_pts, wrapped(at(pts)));
            assert_eq!(got_dts, dts.map(|d| wrapped(at(d))));
            // the PCR 100 ms before the decode time; key frames flagged
            let decoded = at(dts.unwrap_or(pts));
            assert_eq!(*pcr, Some((wrapped(decoded - 9000), key)));
            assert_eq!(&payload[..6], [0, 0, 0, 1, 0x09, 0xF0]);
            if key {
                assert_eq!(
                    &payload[6..20],
                    [0, 0, 0, 1, 0x67, 1, 2, 3, 0, 0, 0, 1, 0x68, 9]
                );
                assert_eq!(&payload[20..24], [0, 0, 0, 1]);
                assert_eq!(payload[24..].len(), 300);
            } else {
                assert_eq!(&payload[6..10], [0, 0, 0, 1]);
                assert_eq!(payload[10], 0x41);
            }
        }
        // audio: ADTS frames at their times (44.1 kHz ticks from the epoch, in 90 kHz)
        let audio = pes_of(&s1, 0x101);
        assert_eq!(audio.len(), 2);
        let ticks_44k = |ms: i128| i128::from(p) * 441 / 10 + (ms * 441 + 5) / 10;
        for ((pes, pcr), (ms, fill, n)) in audio.iter().zip([(0, 0x21, 20), (23, 0x22, 30)]) {
            assert_eq!(*pcr, None);
            let (id, pts, dts, payload) = read_pes(pes);
            assert_eq!((id, dts), (0xC0, None));
            assert_eq!(pts, wrapped(ticks_44k(ms) * 90_000 / 44_100));
            assert_eq!(payload.len(), 7 + n);
            assert_eq!(&payload[..2], [0xFF, 0xF1]);
            assert!(payload[7..].iter().all(|&b| b == fill));
        }
        // the next segment goes on from where this one ends
        let (_, pts, _, _) = read_pes(&pes_of(&s2, 0x100)[0].0);
        assert_eq!(pts, wrapped(at(160)));
    }
}

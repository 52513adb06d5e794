//! A "traditional" MP4 file (ISO/IEC 14496-12, with the sample entries of 14496-14 and
//! 14496-15): `ftyp`, one `moov` holding every sample table, then one `mdat`. What GetClip
//! answers. Built from samples already in decode order; the payloads are not copied until the
//! response is assembled. And fragmented MP4, what HLS serves: an initialization segment
//! (`ftyp`, a `moov` with empty sample tables and `mvex`) and media segments (`moof`, `mdat`).

use bytes::Bytes;

/// How a track's samples are coded, with what its sample entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// H.264: the `avcC` record (Matroska's CodecPrivate for `V_MPEG4/ISO/AVC`).
    Avc(Vec<u8>),
    /// H.265: the `hvcC` record.
    Hevc(Vec<u8>),
    /// AAC: the AudioSpecificConfig.
    Aac(Vec<u8>),
    /// G.711, A-law (`true`) or µ-law: one byte per sample and channel. Each of the track's
    /// [`Sample`]s is then a block of audio, written as that many one-frame MP4 samples.
    G711 {
        /// A-law, else µ-law.
        alaw: bool,
    },
}

/// One track of the movie.
#[derive(Clone, Debug)]
pub(crate) struct Track {
    /// Its coding.
    pub(crate) codec: Codec,
    /// Video width and height in pixels (0 for audio).
    pub(crate) size: (u16, u16),
    /// Audio channels and sample rate in Hz (0 for video).
    pub(crate) audio: (u16, u32),
    /// Ticks per second of the track's times.
    pub(crate) timescale: u32,
    /// Its samples in decode order.
    pub(crate) samples: Vec<Sample>,
    /// How long after the movie's start the track's first sample is presented, in ms (the
    /// movie's timescale): an empty edit.
    pub(crate) delay_ms: u32,
}

impl Track {
    fn is_video(&self) -> bool {
        matches!(self.codec, Codec::Avc(_) | Codec::Hevc(_))
    }

    fn channels(&self) -> u32 {
        u32::from(self.audio.0.max(1))
    }

    /// The MP4 samples of the track's sample `s`: one, or one per audio frame for G.711.
    fn frames_of(&self, s: &Sample) -> u32 {
        match self.codec {
            Codec::G711 { .. } => s.size / self.channels(),
            _ => 1,
        }
    }

    /// Length in its timescale.
    fn duration(&self) -> u64 {
        self.samples.iter().map(|s| u64::from(s.duration)).sum()
    }

    /// The first presented time in the track's timescale (its edit's media time).
    fn first_presented(&self) -> u64 {
        let mut dts = 0u64;
        let mut first = u64::MAX;
        for s in &self.samples {
            first = first.min(dts + u64::from(s.cts));
            dts += u64::from(s.duration);
        }
        if first == u64::MAX { 0 } else { first }
    }
}

/// One sample: a frame of video or of AAC, or a block of G.711.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Until the next sample's decode time, in the track's timescale.
    pub(crate) duration: u32,
    /// Presentation time minus decode time, in the track's timescale.
    pub(crate) cts: u32,
    /// Bytes.
    pub(crate) size: u32,
    /// A sync sample (a key frame).
    pub(crate) sync: bool,
}

/// Consecutive samples of one track, stored together in `mdat`; chunks come in file order.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    /// Index of the track in [`Movie::tracks`].
    pub(crate) track: usize,
    /// How many of the track's [`Sample`]s (the next ones).
    pub(crate) samples: usize,
    /// Their bytes, in order.
    pub(crate) data: Vec<Bytes>,
}

/// The whole file.
#[derive(Clone, Debug)]
pub(crate) struct Movie {
    /// Tracks; the first has track ID 1.
    pub(crate) tracks: Vec<Track>,
    /// Every sample's bytes, by chunk, in file order.
    pub(crate) chunks: Vec<Chunk>,
    /// Creation time in seconds since the Unix epoch.
    pub(crate) created_unix_s: u64,
}

/// Seconds from 1904-01-01 (MP4's epoch) to 1970-01-01.
const MP4_EPOCH_OFFSET_S: u64 = 2_082_844_800;

/// The identity matrix of `mvhd` and `tkhd`.
const MATRIX: [u32; 9] = [0x1_0000, 0, 0, 0, 0x1_0000, 0, 0, 0, 0x4000_0000];

fn put(o: &mut Vec<u8>, b: &[u8]) {
    o.extend_from_slice(b);
}

/// A box: its size (filled in at the end), its type and what `body` writes.
fn boxed(o: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let at = o.len();
    put(o, &[0; 4]);
    put(o, kind);
    body(o);
    let size = u32::try_from(o.len() - at).expect("a box of the header under 4 GB");
    o[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with a version and 24 bits of flags.
fn full(o: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    boxed(o, kind, |o| {
        o.push(version);
        put(o, &flags.to_be_bytes()[1..]);
        body(o);
    });
}

fn u16b(o: &mut Vec<u8>, v: u16) {
    put(o, &v.to_be_bytes());
}

fn u32b(o: &mut Vec<u8>, v: u32) {
    put(o, &v.to_be_bytes());
}

/// A value for a 32-bit field, saturated.
fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// An MPEG-4 descriptor (ISO/IEC 14496-1): tag, length in the 4-byte form, body.
fn descriptor(o: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    let n = u32::try_from(inner.len()).expect("a small descriptor");
    o.push(tag);
    put(
        o,
        &[
            0x80 | ((n >> 21) & 0x7F) as u8,
            0x80 | ((n >> 14) & 0x7F) as u8,
            0x80 | ((n >> 7) & 0x7F) as u8,
            (n & 0x7F) as u8,
        ],
    );
    put(o, &inner);
}

impl Movie {
    /// The file: its head (`ftyp`, `moov`, the `mdat` header) then every sample's bytes.
    pub(crate) fn write(&self) -> Vec<Bytes> {
        let data_len: u64 = self
            .chunks
            .iter()
            .flat_map(|c| c.data.iter())
            .map(|b| b.len() as u64)
            .sum();
        let mdat_head = if data_len + 8 > u64::from(u32::MAX) {
            16
        } else {
            8
        };
        let ftyp = self.ftyp();
        // The chunk offsets depend on the size of moov, which does not depend on their values
        // (the width of each offset is chosen from the file's size): write it once to measure.
        let wide = data_len + (64 << 20) > u64::from(u32::MAX);
        let moov_len = self.moov(&vec![0; self.chunks.len()], wide, false).len() as u64;
        let mut offsets = Vec::with_capacity(self.chunks.len());
        let mut at = ftyp.len() as u64 + moov_len + mdat_head;
        for c in &self.chunks {
            offsets.push(at);
            at += c.data.iter().map(|b| b.len() as u64).sum::<u64>();
        }
        let mut head = ftyp;
        head.extend_from_slice(&self.moov(&offsets, wide, false));
        if mdat_head == 16 {
            u32b(&mut head, 1);
            put(&mut head, b"mdat");
            put(&mut head, &(data_len + 16).to_be_bytes());
        } else {
            u32b(&mut head, sat32(data_len + 8));
            put(&mut head, b"mdat");
        }
        let mut out = vec![Bytes::from(head)];
        out.extend(self.chunks.iter().flat_map(|c| c.data.iter().cloned()));
        out
    }

    fn ftyp(&self) -> Vec<u8> {
        let mut o = Vec::new();
        boxed(&mut o, b"ftyp", |o| {
            put(o, b"isom");
            u32b(o, 0x200);
            put(o, b"isomiso2");
            if self.tracks.iter().any(|t| matches!(t.codec, Codec::Avc(_))) {
                put(o, b"avc1");
            }
            put(o, b"mp41");
        });
        o
    }

    /// The movie's length in ms: its longest track, delay included.
    fn duration_ms(&self) -> u64 {
        self.tracks
            .iter()
            .map(|t| u64::from(t.delay_ms) + to_ms(t.duration(), t.timescale))
            .max()
            .unwrap_or(0)
    }

    /// A fragmented MP4's initialization segment: the tracks' sample entries, no samples
    /// (the tracks' samples are ignored).
    pub(crate) fn write_init(&self) -> Vec<u8> {
        let mut empty = self.clone();
        empty.chunks.clear();
        for t in &mut empty.tracks {
            t.samples.clear();
            t.delay_ms = 0;
        }
        let mut out = empty.ftyp();
        out.extend_from_slice(&empty.moov(&[], false, true));
        out
    }

    /// A fragmented MP4's media segment number `sequence`: every track's samples (one chunk
    /// each, in [`Movie::chunks`]), the first decoded at `decode_times[track]` in its
    /// timescale.
    pub(crate) fn write_segment(&self, sequence: u32, decode_times: &[u64]) -> Vec<Bytes> {
        let moof = |offsets: &[u32]| {
            let mut o = Vec::new();
            boxed(&mut o, b"moof", |o| {
                full(o, b"mfhd", 0, 0, |o| u32b(o, sequence));
                for (c, offset) in self.chunks.iter().zip(offsets) {
                    let t = &self.tracks[c.track];
                    let samples = &t.samples;
                    boxed(o, b"traf", |o| {
                        if let Codec::G711 { .. } = t.codec {
                            // One MP4 sample per audio frame: given by defaults, not listed.
                            full(o, b"tfhd", 0, 0x02_0000 | 0x08 | 0x10 | 0x20, |o| {
                                u32b(o, c.track as u32 + 1);
                                u32b(o, 1);
                                u32b(o, t.channels());
                                u32b(o, 0x0200_0000);
                            });
                        } else {
                            full(o, b"tfhd", 0, 0x02_0000, |o| u32b(o, c.track as u32 + 1));
                        }
                        full(o, b"tfdt", 1, 0, |o| {
                            put(
                                o,
                                &decode_times
                                    .get(c.track)
                                    .copied()
                                    .unwrap_or(0)
                                    .to_be_bytes(),
                            )
                        });
                        if let Codec::G711 { .. } = t.codec {
                            let frames: u32 = samples.iter().map(|s| t.frames_of(s)).sum();
                            full(o, b"trun", 0, 0x01, |o| {
                                u32b(o, frames);
                                u32b(o, *offset);
                            });
                        } else {
                            full(o, b"trun", 1, 0x01 | 0x100 | 0x200 | 0x400 | 0x800, |o| {
                                u32b(o, samples.len() as u32);
                                u32b(o, *offset);
                                for s in samples {
                                    u32b(o, s.duration);
                                    u32b(o, s.size);
                                    u32b(o, if s.sync { 0x0200_0000 } else { 0x0101_0000 });
                                    u32b(o, s.cts);
                                }
                            });
                        }
                    });
                }
            });
            o
        };
        // The data offsets (from the start of moof) depend on its size, not on their values.
        let len = moof(&vec![0; self.chunks.len()]).len() as u32;
        let mut offsets = Vec::with_capacity(self.chunks.len());
        let mut at = len + 8;
        for c in &self.chunks {
            offsets.push(at);
            at += c.data.iter().map(|b| b.len() as u32).sum::<u32>();
        }
        let mut head = moof(&offsets);
        u32b(&mut head, at - len);
        put(&mut head, b"mdat");
        let mut out = vec![Bytes::from(head)];
        out.extend(self.chunks.iter().flat_map(|c| c.data.iter().cloned()));
        out
    }

    fn moov(&self, offsets: &[u64], wide: bool, fragmented: bool) -> Vec<u8> {
        let created = sat32(self.created_unix_s + MP4_EPOCH_OFFSET_S);
        let mut o = Vec::new();
        boxed(&mut o, b"moov", |o| {
            full(o, b"mvhd", 0, 0, |o| {
                u32b(o, created);
                u32b(o, created);
                u32b(o, 1000);
                u32b(o, sat32(self.duration_ms()));
                u32b(o, 0x1_0000); // rate 1.0
                u16b(o, 0x0100); // volume 1.0
                put(o, &[0; 10]);
                MATRIX.iter().for_each(|v| u32b(o, *v));
                put(o, &[0; 24]);
                u32b(o, sat32(self.tracks.len() as u64 + 1));
            });
            for (index, track) in self.tracks.iter().enumerate() {
                let mine: Vec<(u64, &Chunk)> = self
                    .chunks
                    .iter()
                    .zip(offsets)
                    .filter(|(c, _)| c.track == index)
                    .map(|(c, off)| (*off, c))
                    .collect();
                trak(o, index as u32 + 1, track, created, &mine, wide);
            }
            if fragmented {
                boxed(o, b"mvex", |o| {
                    for index in 0..self.tracks.len() {
                        full(o, b"trex", 0, 0, |o| {
                            u32b(o, index as u32 + 1);
                            u32b(o, 1); // sample description
                            put(o, &[0; 12]); // default duration, size, flags
                        });
                    }
                });
            }
        });
        o
    }
}

/// `t` ticks of `timescale` in ms, rounded.
fn to_ms(t: u64, timescale: u32) -> u64 {
    let ts = u64::from(timescale.max(1));
    (t * 1000 + ts / 2) / ts
}

fn trak(o: &mut Vec<u8>, id: u32, t: &Track, created: u32, chunks: &[(u64, &Chunk)], wide: bool) {
    let media_ms = to_ms(t.duration(), t.timescale);
    boxed(o, b"trak", |o| {
        full(o, b"tkhd", 0, 3, |o| {
            u32b(o, created);
            u32b(o, created);
            u32b(o, id);
            u32b(o, 0);
            u32b(o, sat32(u64::from(t.delay_ms) + media_ms));
            put(o, &[0; 8]);
            u16b(o, 0); // layer
            u16b(o, if t.is_video() { 0 } else { 1 }); // alternate group
            u16b(o, if t.is_video() { 0 } else { 0x0100 }); // volume
            u16b(o, 0);
            MATRIX.iter().for_each(|v| u32b(o, *v));
            u32b(o, u32::from(t.size.0) << 16);
            u32b(o, u32::from(t.size.1) << 16);
        });
        // (A fragmented MP4's tracks, without samples here, are timed by their fragments:
        // no edit.)
        if !t.samples.is_empty() {
            boxed(o, b"edts", |o| {
                let empty = t.delay_ms > 0;
                full(o, b"elst", 0, 0, |o| {
                    u32b(o, 1 + u32::from(empty));
                    if empty {
                        u32b(o, t.delay_ms);
                        u32b(o, u32::MAX); // media time -1: nothing shown
                        u32b(o, 0x1_0000);
                    }
                    u32b(o, sat32(media_ms));
                    u32b(o, sat32(t.first_presented()));
                    u32b(o, 0x1_0000);
                });
            });
        }
        boxed(o, b"mdia", |o| {
            full(o, b"mdhd", 0, 0, |o| {
                u32b(o, created);
                u32b(o, created);
                u32b(o, t.timescale);
                u32b(o, sat32(t.duration()));
                u16b(o, 0x55C4); // "und"
                u16b(o, 0);
            });
            full(o, b"hdlr", 0, 0, |o| {
                u32b(o, 0);
                put(o, if t.is_video() { b"vide" } else { b"soun" });
                put(o, &[0; 12]);
                put(
                    o,
                    if t.is_video() {
                        b"VideoHandler\0"
                    } else {
                        b"SoundHandler\0"
                    },
                );
            });
            boxed(o, b"minf", |o| {
                if t.is_video() {
                    full(o, b"vmhd", 0, 1, |o| put(o, &[0; 8]));
                } else {
                    full(o, b"smhd", 0, 0, |o| put(o, &[0; 4]));
                }
                boxed(o, b"dinf", |o| {
                    full(o, b"dref", 0, 0, |o| {
                        u32b(o, 1);
                        full(o, b"url ", 0, 1, |_| {});
                    });
                });
                stbl(o, t, chunks, wide);
            });
        });
    });
}

fn sample_entry(o: &mut Vec<u8>, t: &Track) {
    let visual = |o: &mut Vec<u8>, kind: &[u8; 4], config_kind: &[u8; 4], config: &[u8]| {
        boxed(o, kind, |o| {
            put(o, &[0; 6]);
            u16b(o, 1); // data reference index
            put(o, &[0; 16]);
            u16b(o, t.size.0);
            u16b(o, t.size.1);
            u32b(o, 0x0048_0000); // 72 dpi
            u32b(o, 0x0048_0000);
            u32b(o, 0);
            u16b(o, 1); // frames per sample
            put(o, &[0; 32]); // compressor name
            u16b(o, 0x0018); // depth
            u16b(o, 0xFFFF);
            boxed(o, config_kind, |o| put(o, config));
        });
    };
    let audio = |o: &mut Vec<u8>, kind: &[u8; 4], extra: &dyn Fn(&mut Vec<u8>)| {
        boxed(o, kind, |o| {
            put(o, &[0; 6]);
            u16b(o, 1);
            put(o, &[0; 8]);
            u16b(o, t.audio.0.max(1));
            u16b(o, 16);
            put(o, &[0; 4]);
            u32b(o, t.audio.1.min(0xFFFF) << 16);
            extra(o);
        });
    };
    match &t.codec {
        Codec::Avc(config) => visual(o, b"avc1", b"avcC", config),
        Codec::Hevc(config) => visual(o, b"hvc1", b"hvcC", config),
        Codec::Aac(config) => audio(o, b"mp4a", &|o| {
            full(o, b"esds", 0, 0, |o| {
                descriptor(o, 0x03, |o| {
                    u16b(o, 0); // ES_ID
                    o.push(0);
                    descriptor(o, 0x04, |o| {
                        o.push(0x40); // MPEG-4 audio
                        o.push(0x15); // audio stream, upstream 0, reserved 1
                        put(o, &[0; 3]); // buffer size
                        u32b(o, 0);
                        u32b(o, 0);
                        descriptor(o, 0x05, |o| put(o, config));
                    });
                    descriptor(o, 0x06, |o| o.push(0x02));
                });
            });
        }),
        Codec::G711 { alaw } => audio(o, if *alaw { b"alaw" } else { b"ulaw" }, &|_| {}),
    }
}

/// Runs of equal values: (count, value).
fn runs(values: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => out.push((1, v)),
        }
    }
    out
}

fn stbl(o: &mut Vec<u8>, t: &Track, chunks: &[(u64, &Chunk)], wide: bool) {
    let g711 = matches!(t.codec, Codec::G711 { .. });
    boxed(o, b"stbl", |o| {
        full(o, b"stsd", 0, 0, |o| {
            u32b(o, 1);
            sample_entry(o, t);
        });
        let frames: u32 = t.samples.iter().map(|s| t.frames_of(s)).sum();
        full(o, b"stts", 0, 0, |o| {
            let entries = if g711 {
                vec![(frames, 1)]
            } else {
                runs(t.samples.iter().map(|s| s.duration))
            };
            u32b(o, entries.len() as u32);
            for (n, d) in entries {
                u32b(o, n);
                u32b(o, d);
            }
        });
        if t.samples.iter().any(|s| s.cts != 0) {
            full(o, b"ctts", 0, 0, |o| {
                let entries = runs(t.samples.iter().map(|s| s.cts));
                u32b(o, entries.len() as u32);
                for (n, c) in entries {
                    u32b(o, n);
                    u32b(o, c);
                }
            });
        }
        if t.samples.iter().any(|s| !s.sync) {
            full(o, b"stss", 0, 0, |o| {
                let sync: Vec<u32> = (1..)
                    .zip(&t.samples)
                    .filter(|(_, s)| s.sync)
                    .map(|(n, _)| n)
                    .collect();
                u32b(o, sync.len() as u32);
                sync.iter().for_each(|n| u32b(o, *n));
            });
        }
        full(o, b"stsz", 0, 0, |o| {
            if g711 {
                u32b(o, t.channels());
                u32b(o, frames);
            } else {
                u32b(o, 0);
                u32b(o, t.samples.len() as u32);
                t.samples.iter().for_each(|s| u32b(o, s.size));
            }
        });
        full(o, b"stsc", 0, 0, |o| {
            // samples per chunk, as MP4 counts them
            let mut next = 0;
            let per_chunk = chunks.iter().map(|(_, c)| {
                let n = t.samples[next..next + c.samples]
                    .iter()
                    .map(|s| t.frames_of(s))
                    .sum();
                next += c.samples;
                n
            });
            let mut entries: Vec<(u32, u32)> = Vec::new();
            for (chunk, n) in (1..).zip(per_chunk) {
                if entries.last().is_none_or(|(_, last)| *last != n) {
                    entries.push((chunk, n));
                }
            }
            u32b(o, entries.len() as u32);
            for (first, n) in entries {
                u32b(o, first);
                u32b(o, n);
                u32b(o, 1);
            }
        });
        let kind = if wide { b"co64" } else { b"stco" };
        full(o, kind, 0, 0, |o| {
            u32b(o, chunks.len() as u32);
            for (off, _) in chunks {
                if wide {
                    put(o, &off.to_be_bytes());
                } else {
                    u32b(o, sat32(*off));
                }
            }
        });
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The boxes directly in `data`: (type, body).
    pub(crate) fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        while data.len() >= 8 {
            let size = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            out.push((data[4..8].try_into().unwrap(), &data[8..size]));
            data = &data[size..];
        }
        out
    }

    fn find<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> &'a [u8] {
        let (first, rest) = path.split_first().unwrap();
        let body = boxes(data)
            .into_iter()
            .find(|(k, _)| k == *first)
            .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(*first)))
            .1;
        if rest.is_empty() {
            body
        } else {
            find(body, rest)
        }
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn sample(duration: u32, cts: u32, size: u32, sync: bool) -> Sample {
        Sample {
            duration,
            cts,
            size,
            sync,
        }
    }

    #[test]
    fn a_movie_has_its_tables_and_its_bytes_where_the_offsets_say() {
        let video = Track {
            codec: Codec::Avc(vec![1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0]),
            size: (320, 240),
            audio: (0, 0),
            timescale: 90_000,
            samples: vec![
                sample(3000, 3000, 3, true),
                sample(3000, 0, 2, false),
                sample(3000, 0, 4, true),
            ],
            delay_ms: 0,
        };
        let alaw = Track {
            codec: Codec::G711 { alaw: true },
            size: (0, 0),
            audio: (1, 8000),
            timescale: 8000,
            samples: vec![sample(160, 0, 160, true), sample(80, 0, 80, true)],
            delay_ms: 20,
        };
        let chunk = |track, samples, bytes: &[&[u8]]| Chunk {
            track,
            samples,
            data: bytes.iter().map(|b| Bytes::copy_from_slice(b)).collect(),
        };
        let movie = Movie {
            tracks: vec![video, alaw],
            chunks: vec![
                chunk(0, 2, &[b"abc", b"de"]),
                chunk(1, 1, &[&[7; 160]]),
                chunk(0, 1, &[b"fghi"]),
                chunk(1, 1, &[&[8; 80]]),
            ],
            created_unix_s: 1_700_000_000,
        };
        let file: Vec<u8> = movie.write().concat();
        let top: Vec<[u8; 4]> = boxes(&file).iter().map(|(k, _)| *k).collect();
        assert_eq!(top, [*b"ftyp", *b"moov", *b"mdat"]);
        let moov = find(&file, &[b"moov"]);
        let traks: Vec<&[u8]> = boxes(moov)
            .into_iter()
            .filter(|(k, _)| k == b"trak")
            .map(|(_, b)| b)
            .collect();
        assert_eq!(traks.len(), 2);
        let stbl = |t: &[u8]| find(t, &[b"mdia", b"minf", b"stbl"]).to_vec();
        let v = stbl(traks[0]);
        // sizes, sync samples (1 and 3), one composition offset run then zeros
        let stsz = find(&v, &[b"stsz"]);
        assert_eq!((be32(stsz, 4), be32(stsz, 8)), (0, 3));
        assert_eq!([be32(stsz, 12), be32(stsz, 16), be32(stsz, 20)], [3, 2, 4]);
        let stss = find(&v, &[b"stss"]);
        assert_eq!([be32(stss, 4), be32(stss, 8), be32(stss, 12)], [2, 1, 3]);
        let ctts = find(&v, &[b"ctts"]);
        assert_eq!(be32(ctts, 4), 2);
        // two chunks: 2 samples, then 1
        let stsc = find(&v, &[b"stsc"]);
        assert_eq!(be32(stsc, 4), 2);
        // each chunk offset points at its bytes
        let stco = find(&v, &[b"stco"]);
        let (c1, c2) = (be32(stco, 8) as usize, be32(stco, 12) as usize);
        assert_eq!(&file[c1..c1 + 5], b"abcde");
        assert_eq!(&file[c2..c2 + 4], b"fghi");
        // the A-law track: one MP4 sample per byte, 240 in all, no sync table
        let a = stbl(traks[1]);
        let stsz = find(&a, &[b"stsz"]);
        assert_eq!((be32(stsz, 4), be32(stsz, 8)), (1, 240));
        assert!(boxes(&a).iter().all(|(k, _)| k != b"stss"));
        let stco = find(&a, &[b"stco"]);
        assert_eq!(file[be32(stco, 8) as usize], 7);
        assert_eq!(file[be32(stco, 12) as usize], 8);
        // its 20 ms delay is an empty edit
        let elst = find(traks[1], &[b"edts", b"elst"]);
        assert_eq!(
            (be32(elst, 4), be32(elst, 8), be32(elst, 12)),
            (2, 20, u32::MAX)
        );
        // the video's edit starts at its first presented frame (one frame of B-frame delay)
        let elst = find(traks[0], &[b"edts", b"elst"]);
        assert_eq!(
            (be32(elst, 4), be32(elst, 8), be32(elst, 12)),
            (1, 100, 3000)
        );
        // the movie lasts as long as its longest track: 100 ms of video
        let mvhd = find(moov, &[b"mvhd"]);
        assert_eq!((be32(mvhd, 12), be32(mvhd, 16)), (1000, 100));
        assert_eq!(be32(mvhd, 4), 1_700_000_000 + MP4_EPOCH_OFFSET_S as u32);
    }

    #[test]
    fn an_aac_entry_carries_its_config_in_esds() {
        let t = Track {
            codec: Codec::Aac(vec![0x12, 0x10]),
            size: (0, 0),
            audio: (2, 44_100),
            timescale: 44_100,
            samples: vec![sample(1024, 0, 5, true)],
            delay_ms: 0,
        };
        let mut o = Vec::new();
        sample_entry(&mut o, &t);
        let mp4a = find(&o, &[b"mp4a"]);
        assert_eq!(u16::from_be_bytes([mp4a[16], mp4a[17]]), 2);
        assert_eq!(be32(mp4a, 24) >> 16, 44_100);
        let esds = find(&mp4a[28..], &[b"esds"]);
        assert!(
            esds.windows(7)
                .any(|w| w == [0x05, 0x80, 0x80, 0x80, 0x02, 0x12, 0x10])
        );
    }
}

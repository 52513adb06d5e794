use super::mp4::tests::boxes;
use super::*;
use kvs_format::build::{
    block_group, cluster, cluster_sized, ebml_header, info, segment_unknown_size, simple_block,
};
use kvs_format::ebml::Writer;
use kvs_format::ids::*;

/// An avcC record: version 1, High profile, 4-byte NAL lengths, no parameter sets.
const AVCC: [u8; 7] = [1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0];

/// (number, type, codec, codec private, (width, height) or (rate, channels)).
pub(super) type TestTrack<'a> = (u64, u64, &'a str, &'a [u8], (u64, u64));

/// A stream header with the given (number, type, codec, codec private, (width, height) or
/// (rate, channels)) tracks.
pub(super) fn header(tracks: &[TestTrack<'_>]) -> Bytes {
    let mut out = ebml_header("matroska");
    out.extend(segment_unknown_size());
    out.extend(info(1_000_000));
    out.extend(
        Writer::new()
            .master(ID_TRACKS, |w| {
                for (number, kind, codec, cpd, dims) in tracks {
                    w.master(ID_TRACK_ENTRY, |w| {
                        w.uint(ID_TRACK_NUMBER, *number)
                            .uint(ID_TRACK_TYPE, *kind)
                            .string(ID_CODEC_ID, codec);
                        if !cpd.is_empty() {
                            w.element(ID_CODEC_PRIVATE, cpd);
                        }
                        if *kind == TRACK_TYPE_VIDEO {
                            w.master(ID_VIDEO, |w| {
                                w.uint(ID_PIXEL_WIDTH, dims.0).uint(ID_PIXEL_HEIGHT, dims.1);
                            });
                        } else {
                            w.master(ID_AUDIO, |w| {
                                w.float(ID_SAMPLING_FREQUENCY, dims.0 as f64)
                                    .uint(ID_CHANNELS, dims.1);
                            });
                        }
                    });
                }
            })
            .finish(),
    );
    Bytes::from(out)
}

fn video_header() -> Bytes {
    header(&[(1, TRACK_TYPE_VIDEO, CODEC_H264, &AVCC, (320, 240))])
}

/// A frame of one NAL unit of `n` bytes of `fill`.
pub(super) fn nal(n: usize, fill: u8) -> Vec<u8> {
    let mut out = (n as u32).to_be_bytes().to_vec();
    out.extend(std::iter::repeat_n(fill, n));
    out
}

pub(super) fn fragment(index: usize, producer_ms: u64, bytes: Vec<u8>) -> StoredFragment {
    StoredFragment {
        number: format!("{index}"),
        timecode: 0,
        producer_timestamp_ms: producer_ms,
        server_timestamp_ms: producer_ms,
        duration_ms: 0,
        key_frame: true,
        bytes: Bytes::from(bytes),
        header_index: 0,
        metadata: Vec::new(),
    }
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    boxes(data).into_iter().find(|(k, _)| k == kind).unwrap().1
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn two_fragments_become_one_movie_with_every_frame_at_its_time() {
    // two fragments of 3 frames, 40 ms apart (RELATIVE: cluster timecodes 0 and 120)
    let frames = |fill: u8| -> Vec<Vec<u8>> {
        (0..3)
            .map(|i| simple_block(1, i * 40, i == 0, &nal(10 + i as usize, fill)))
            .collect()
    };
    let f1 = fragment(1, 1_700_000_000_000, cluster(0, &frames(1)));
    let f2 = fragment(2, 1_700_000_000_120, cluster_sized(120, &frames(2)));
    let file: Vec<u8> = clip(&[video_header()], &[f1, f2]).unwrap().concat();
    let moov = child(&file, b"moov");
    let trak = child(moov, b"trak");
    let stbl = child(child(child(trak, b"mdia"), b"minf"), b"stbl");
    // 6 samples of 40 ms at 90 kHz, sizes as sent, key frames 1 and 4
    let stts = child(stbl, b"stts");
    assert_eq!((be32(stts, 4), be32(stts, 8), be32(stts, 12)), (1, 6, 3600));
    let stsz = child(stbl, b"stsz");
    let sizes: Vec<u32> = (0..6).map(|i| be32(stsz, 12 + 4 * i)).collect();
    assert_eq!(sizes, [14, 15, 16, 14, 15, 16]);
    let stss = child(stbl, b"stss");
    assert_eq!((be32(stss, 4), be32(stss, 8), be32(stss, 12)), (2, 1, 4));
    // the frames' bytes, in order, one chunk per fragment
    let stco = child(stbl, b"stco");
    assert_eq!(be32(stco, 4), 2);
    let at = be32(stco, 8) as usize;
    assert_eq!(&file[at..at + 14], nal(10, 1).as_slice());
    let at = be32(stco, 12) as usize;
    assert_eq!(&file[at..at + 14], nal(10, 2).as_slice());
    // the sample entry has the track's size and its avcC as sent
    let stsd = child(stbl, b"stsd");
    let avc1 = child(&stsd[8..], b"avc1");
    assert_eq!(
        (
            u16::from_be_bytes([avc1[24], avc1[25]]),
            u16::from_be_bytes([avc1[26], avc1[27]])
        ),
        (320, 240)
    );
    assert_eq!(child(&avc1[78..], b"avcC"), AVCC);
    // created at the first frame's time
    assert_eq!(be32(child(moov, b"mvhd"), 4), 1_700_000_000 + 2_082_844_800);
}

#[test]
fn reordered_frames_get_decode_times_before_their_presentation() {
    // I P B B as matroskamux writes them: presentation times 0, 120, 40, 80 ms
    let blocks = vec![
        simple_block(1, 0, true, &nal(4, 1)),
        simple_block(1, 120, false, &nal(4, 2)),
        simple_block(1, 40, false, &nal(4, 3)),
        simple_block(1, 80, false, &nal(4, 4)),
    ];
    let f = fragment(1, 1_000, cluster(0, &blocks));
    let file: Vec<u8> = clip(&[video_header()], &[f]).unwrap().concat();
    let trak = child(child(&file, b"moov"), b"trak");
    let stbl = child(child(child(trak, b"mdia"), b"minf"), b"stbl");
    // decode times 0, 40, 80, 120 ms moved back by 40: offsets 40, 120, 0, 0 ms
    let ctts = child(stbl, b"ctts");
    let entries: Vec<(u32, u32)> = (0..be32(ctts, 4) as usize)
        .map(|i| (be32(ctts, 8 + 8 * i), be32(ctts, 12 + 8 * i)))
        .collect();
    assert_eq!(entries, [(1, 3600), (1, 10_800), (2, 0)]);
    // shown from the first presented frame: the edit starts 40 ms into the media
    let elst = child(child(trak, b"edts"), b"elst");
    assert_eq!(be32(elst, 12), 3600);
}

#[test]
fn audio_is_track_two_and_starts_where_it_starts() {
    let aac: &[u8] = &[0x12, 0x10]; // AAC LC, 44.1 kHz, stereo
    let h = header(&[
        (1, TRACK_TYPE_VIDEO, CODEC_H264, &AVCC, (320, 240)),
        (2, TRACK_TYPE_AUDIO, CODEC_AAC, aac, (44_100, 2)),
    ]);
    let blocks = vec![
        simple_block(1, 0, true, &nal(4, 1)),
        simple_block(2, 10, true, &[9; 6]),
        simple_block(1, 33, false, &nal(4, 2)),
        block_group(2, 33, true, &[8; 7]),
    ];
    let f = fragment(1, 5_000, cluster(0, &blocks));
    let file: Vec<u8> = clip(&[h], &[f]).unwrap().concat();
    let traks: Vec<&[u8]> = boxes(child(&file, b"moov"))
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(traks.len(), 2);
    let stbl = child(child(child(traks[1], b"mdia"), b"minf"), b"stbl");
    let stsz = child(stbl, b"stsz");
    assert_eq!((be32(stsz, 8), be32(stsz, 12), be32(stsz, 16)), (2, 6, 7));
    let mdhd = child(child(traks[1], b"mdia"), b"mdhd");
    assert_eq!(be32(mdhd, 12), 44_100);
    // the audio begins 10 ms after the video: an empty edit of 10 ms
    let elst = child(child(traks[1], b"edts"), b"elst");
    assert_eq!((be32(elst, 4), be32(elst, 8)), (2, 10));
}

#[test]
fn what_a_clip_cannot_hold_is_refused_as_the_service_names_it() {
    let f = |h: &Bytes| {
        clip(
            std::slice::from_ref(h),
            &[fragment(
                1,
                0,
                cluster(0, &[simple_block(1, 0, true, &nal(4, 1))]),
            )],
        )
    };
    let err = |h: Bytes| f(&h).unwrap_err().error_type();
    assert_eq!(
        err(header(&[(1, TRACK_TYPE_VIDEO, CODEC_H264, &[], (1, 1))])),
        "MissingCodecPrivateDataException"
    );
    // Annex B parameter sets instead of an avcC record
    assert_eq!(
        err(header(&[(
            1,
            TRACK_TYPE_VIDEO,
            CODEC_H264,
            &[0, 0, 0, 1, 0x67, 0, 0, 0],
            (1, 1)
        )])),
        "InvalidCodecPrivateDataException"
    );
    assert_eq!(
        err(header(&[(1, TRACK_TYPE_VIDEO, "V_VP8", &[], (1, 1))])),
        "UnsupportedStreamMediaTypeException"
    );
    assert_eq!(
        err(header(&[(
            1,
            TRACK_TYPE_AUDIO,
            CODEC_AAC,
            &[0x12, 0x10],
            (44_100, 2)
        )])),
        "UnsupportedStreamMediaTypeException"
    );
    assert_eq!(
        err(header(&[
            (1, TRACK_TYPE_VIDEO, CODEC_H264, &AVCC, (1, 1)),
            (2, TRACK_TYPE_AUDIO, "A_OPUS", &[1], (48_000, 2)),
        ])),
        "UnsupportedStreamMediaTypeException"
    );
    // a frame with start codes instead of NAL lengths
    let bad = fragment(
        1,
        0,
        cluster(0, &[simple_block(1, 0, true, &[0, 0, 0, 1, 0x65, 1, 2])]),
    );
    let e = clip(&[video_header()], &[bad]).unwrap_err();
    assert_eq!(e.error_type(), "InvalidMediaFrameException", "{e:?}");
    // codec private data that changes between fragments
    let other = header(&[(
        1,
        TRACK_TYPE_VIDEO,
        CODEC_H264,
        &[1, 0x4D, 0, 0x1F, 0xFF, 0xE0, 0],
        (320, 240),
    )]);
    let one = cluster(0, &[simple_block(1, 0, true, &nal(4, 1))]);
    let mut second = fragment(2, 40, one.clone());
    second.header_index = 1;
    let e = clip(&[video_header(), other], &[fragment(1, 0, one), second]).unwrap_err();
    assert_eq!(e.error_type(), "InvalidCodecPrivateDataException", "{e:?}");
}

#[test]
fn a_clip_holds_at_most_200_fragments_and_100_mb() {
    let sizes = (0..300).map(|i| (i, 1_000));
    assert_eq!(clip_limit(sizes).len(), MAX_CLIP_FRAGMENTS);
    let big = [(0, 60 << 20), (1, 30 << 20), (2, 20 << 20)];
    assert_eq!(clip_limit(big.into_iter()), [0, 1]);
    // one fragment over the limit alone is still a clip
    assert_eq!(clip_limit([(7, 200 << 20)].into_iter()), [7]);
}

#[test]
fn g711_audio_is_one_mp4_sample_per_byte() {
    // WAVEFORMATEX: A-law, mono, 8 kHz
    let mut wfx = vec![6, 0, 1, 0];
    wfx.extend(8000u32.to_le_bytes());
    wfx.extend(8000u32.to_le_bytes());
    wfx.extend([1, 0, 8, 0, 0, 0]);
    let h = header(&[
        (1, TRACK_TYPE_VIDEO, CODEC_H264, &AVCC, (320, 240)),
        (2, TRACK_TYPE_AUDIO, CODEC_ACM, &wfx, (8000, 1)),
    ]);
    let blocks = vec![
        simple_block(1, 0, true, &nal(4, 1)),
        simple_block(2, 0, true, &[0xD5; 160]),
        simple_block(2, 20, true, &[0xD5; 160]),
    ];
    let file: Vec<u8> = clip(&[h], &[fragment(1, 0, cluster(0, &blocks))])
        .unwrap()
        .concat();
    let traks: Vec<&[u8]> = boxes(child(&file, b"moov"))
        .into_iter()
        .filter(|(k, _)| k == b"trak")
        .map(|(_, b)| b)
        .collect();
    let stbl = child(child(child(traks[1], b"mdia"), b"minf"), b"stbl");
    let stsz = child(stbl, b"stsz");
    assert_eq!((be32(stsz, 4), be32(stsz, 8)), (1, 320));
    let stsd = child(stbl, b"stsd");
    assert!(boxes(&stsd[8..]).iter().any(|(k, _)| k == b"alaw"));
}

#[test]
fn hls_has_an_initialization_segment_and_a_media_segment_per_fragment() {
    let blocks = |fill: u8| -> Vec<Vec<u8>> {
        vec![
            simple_block(1, 0, true, &nal(4, fill)),
            simple_block(1, 120, false, &nal(5, fill)),
            simple_block(1, 40, false, &nal(6, fill)),
        ]
    };
    let f1 = fragment(1, 1_700_000_000_000, cluster(0, &blocks(1)));
    let f2 = fragment(2, 1_700_000_000_160, cluster(160, &blocks(2)));
    let headers = [video_header()];
    // the initialization segment: the sample entry, no samples, no edit, mvex with a trex
    let (init, variant) = hls::init(&headers, &f1, false).unwrap();
    assert_eq!(variant.codecs, "avc1.64001F");
    assert_eq!(variant.resolution, (320, 240));
    let moov = child(&init, b"moov");
    let trak = child(moov, b"trak");
    assert!(boxes(trak).iter().all(|(k, _)| k != b"edts"));
    let stbl = child(child(child(trak, b"mdia"), b"minf"), b"stbl");
    assert_eq!(be32(child(stbl, b"stsz"), 8), 0);
    assert_eq!(be32(child(child(moov, b"mvex"), b"trex"), 4), 1);
    // a media segment: moof (sequence number, decode time from the epoch, samples) and mdat
    let segment: Vec<u8> = hls::segment(&headers, &f2, 7, false).unwrap().concat();
    let moof = child(&segment, b"moof");
    assert_eq!(be32(child(moof, b"mfhd"), 4), 7);
    let traf = child(moof, b"traf");
    // presented 0, 120 and 40 ms after the fragment's producer time; decoded from 80 ms
    // before it (moved back by the reordering), in 90 kHz ticks since the epoch
    let tfdt = child(traf, b"tfdt");
    let base = u64::from_be_bytes(tfdt[4..12].try_into().unwrap());
    assert_eq!(base, 1_700_000_000_080 * 90);
    let trun = child(traf, b"trun");
    assert_eq!(be32(trun, 4), 3);
    // the data offset, from moof's start, is where the first frame's bytes are
    let offset = be32(trun, 8) as usize;
    assert_eq!(&segment[offset..offset + 8], nal(4, 2).as_slice());
    // sizes as sent, the key frame first, presentation offsets 80, 160 and 0 ms
    let samples: Vec<[u32; 4]> = (0..3)
        .map(|i| std::array::from_fn(|j| be32(trun, 12 + 16 * i + 4 * j)))
        .collect();
    assert_eq!(samples[0][1], 8);
    assert_eq!(samples[0][2], 0x0200_0000);
    assert_eq!(
        samples.iter().map(|s| s[3]).collect::<Vec<_>>(),
        [7200, 14400, 0]
    );
    assert!(boxes(&segment).iter().any(|(k, _)| k == b"mdat"));
}

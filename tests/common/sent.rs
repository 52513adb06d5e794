//! What kvssink sends of a Matroska stream, modelled here on its own so that the tests check
//! the sink's rewriting rather than repeat it: the splitter (in its default, verbatim mode)
//! only says where the header and the clusters are; the rewriting below is this file's.
//!
//! - The header: tracks renumbered when video is not track 1 or audio not track 2 (video
//!   first, then audio, then others, each in header order; not when there are two video
//!   tracks or a number above 126), TrackEntries in the new order; then `normalize_header`.
//! - Each cluster: AWS's head (`1F 43 B6 75 FF`, Timecode in 8 bytes, Position 0) in place of
//!   the input's; the input's Timecode, PrevSize, Position, CRC-32 and whatever came before
//!   its Timecode left out; every block's track number renumbered in the same number of
//!   bytes; everything else, frames above all, byte for byte.

use bytes::Bytes;
use kvs_format::ebml::{read_header, read_uint, read_vint, write_vint_len};
use kvs_format::ids::*;

/// Old → new track number (identity when empty).
type Map = Vec<(u64, u64)>;

fn new_number(map: &Map, old: u64) -> u64 {
    map.iter().find(|(o, _)| *o == old).map_or(old, |(_, n)| *n)
}

/// The renumbering playback needs, for (number, type) of each track in header order.
pub fn playback_numbers(tracks: &[(u64, u64)]) -> Map {
    let mut order: Vec<(u64, u64)> = tracks.to_vec();
    order.sort_by_key(|&(_, kind)| match kind {
        1 => 0,
        2 => 1,
        _ => 2,
    });
    let map: Map = order
        .iter()
        .zip(1..)
        .map(|(&(n, _), new)| (n, new))
        .collect();
    let videos = tracks.iter().filter(|t| t.1 == 1).count();
    let mut numbers: Vec<u64> = tracks.iter().map(|t| t.0).collect();
    numbers.sort();
    numbers.dedup();
    let possible = videos <= 1
        && numbers.len() == tracks.len()
        && tracks.iter().all(|t| (1..=126).contains(&t.0));
    if map.iter().all(|(o, n)| o == n) || !possible {
        Vec::new()
    } else {
        map
    }
}

/// An element at `buf[p..]`: (id, header length, end), the end clamped to the buffer
/// (`None` as size: the rest of the buffer).
fn element(buf: &[u8], p: usize) -> Option<(u32, usize, usize, bool)> {
    let h = read_header(&buf[p..]).ok()??;
    let end = match h.size {
        Some(size) => p + h.len + size as usize,
        None => buf.len(),
    };
    Some((h.id, h.len, end.min(buf.len()), end <= buf.len()))
}

/// The stream header with its tracks renumbered by `map`.
fn renumber_header(header: &[u8], map: &Map) -> Vec<u8> {
    if map.is_empty() {
        return header.to_vec();
    }
    let mut out = Vec::new();
    let mut p = 0;
    // EBML header, then the Segment's header, then its children.
    while let Some((id, head, end, _)) = element(header, p) {
        if id == ID_SEGMENT {
            out.extend_from_slice(&header[p..p + head]);
            p += head;
            continue;
        }
        if id != ID_TRACKS {
            out.extend_from_slice(&header[p..end]);
            p = end;
            continue;
        }
        let body = &header[p + head..end];
        let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut q = 0;
        while let Some((_, entry_head, entry_end, _)) = element(body, q) {
            let mut entry = body[q..entry_end].to_vec();
            let mut number = 0;
            let mut r = entry_head;
            while let Some((cid, chead, cend, _)) = element(&entry, r) {
                if cid == ID_TRACK_NUMBER {
                    let old = read_uint(&entry[r + chead..cend]).unwrap();
                    number = new_number(map, old);
                    let len = cend - r - chead;
                    entry[r + chead..cend].copy_from_slice(&number.to_be_bytes()[8 - len..]);
                }
                r = cend;
            }
            entries.push((number, entry));
            q = entry_end;
        }
        entries.sort_by_key(|e| e.0);
        out.extend_from_slice(&header[p..p + head]);
        for (_, e) in entries {
            out.extend(e);
        }
        p = end;
    }
    out.extend_from_slice(&header[p..]);
    out
}

/// A block (SimpleBlock or Block) with its track number renumbered in the same length.
fn renumber_block(block: &[u8], head: usize, map: &Map) -> Vec<u8> {
    let mut out = block[..head].to_vec();
    match read_vint(&block[head..]) {
        Ok(Some((old, len))) => {
            write_vint_len(&mut out, new_number(map, old), len);
            out.extend_from_slice(&block[head + len..]);
        }
        _ => out.extend_from_slice(&block[head..]),
    }
    out
}

/// A cluster (possibly cut short) as kvssink sends it.
pub fn sent_cluster(cluster: &[u8], map: &Map) -> Vec<u8> {
    let (id, head, end, _) = element(cluster, 0).expect("a Cluster");
    assert_eq!(id, ID_CLUSTER);
    let mut out = Vec::new();
    let mut p = head;
    let mut timecode = false;
    while p < end {
        let Some((cid, chead, cend, whole)) = element(&cluster[..end], p) else {
            out.extend_from_slice(&cluster[p..end]);
            break;
        };
        let child = &cluster[p..cend];
        match cid {
            _ if !whole => out.extend_from_slice(child),
            ID_TIMECODE if !timecode => {
                timecode = true;
                let tc = read_uint(&child[chead..]).unwrap();
                out.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x88]);
                out.extend_from_slice(&tc.to_be_bytes());
                out.extend_from_slice(&[0xA7, 0x81, 0x00]);
            }
            ID_TIMECODE | ID_PREV_SIZE | ID_POSITION | ID_CRC_32 => {}
            _ if !timecode => {}
            ID_SIMPLE_BLOCK => out.extend(renumber_block(child, chead, map)),
            ID_BLOCK_GROUP => {
                out.extend_from_slice(&child[..chead]);
                let mut q = chead;
                while let Some((gid, ghead, gend, _)) = element(child, q) {
                    if gid == ID_BLOCK {
                        out.extend(renumber_block(&child[q..gend], ghead, map));
                    } else {
                        out.extend_from_slice(&child[q..gend]);
                    }
                    q = gend;
                }
                out.extend_from_slice(&child[q..]);
            }
            _ => out.extend_from_slice(child),
        }
        p = cend;
    }
    out
}

/// The (first) stream header and every cluster of a Matroska stream, as kvssink sends them.
/// With `strict`, the stream must be valid and complete; otherwise a last cluster cut short is
/// kept as far as it goes.
pub fn split(data: Vec<u8>, strict: bool) -> (Bytes, Vec<Bytes>) {
    use gstkvs::mkv::{Event, Limits, Splitter};
    let mut splitter = Splitter::new(Limits::default());
    let mut events = Vec::new();
    let pushed = splitter.push(Bytes::from(data), &mut events);
    let finished = splitter.finish(&mut events);
    if strict {
        pushed.unwrap();
        finished.unwrap();
    }
    let mut header = None;
    let mut map = Map::new();
    let mut clusters: Vec<(Vec<u8>, Map)> = Vec::new();
    for event in events {
        match event {
            Event::Header(h) => {
                let tracks: Vec<(u64, u64)> =
                    h.tracks.iter().map(|t| (t.number, t.track_type)).collect();
                map = playback_numbers(&tracks);
                if header.is_none() {
                    let renumbered = renumber_header(&h.bytes, &map);
                    header = Some(
                        gstkvs::mkv::normalize_header(&renumbered)
                            .unwrap_or_else(|| Bytes::from(renumbered)),
                    );
                }
            }
            Event::FragmentStart(_) => clusters.push((Vec::new(), map.clone())),
            Event::FragmentData(b) => clusters.last_mut().unwrap().0.extend_from_slice(&b),
            _ => {}
        }
    }
    let clusters = clusters
        .iter()
        .map(|(c, map)| Bytes::from(sent_cluster(c, map)))
        .collect();
    (header.unwrap_or_default(), clusters)
}

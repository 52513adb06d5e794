//! Fragment metadata: name/value pairs an application attaches to fragments (AWS's
//! `putKinesisVideoFragmentMetadata`, the `kvs-add-metadata` event of AWS's kvssink), free of
//! GStreamer.
//!
//! What AWS's producer (PIC) does, and what is done here:
//! * Matroska Tags are Segment-level elements and cannot go inside a cluster, so the items wait
//!   and go out between two clusters, one Tags element (Tag, SimpleTag: TagName, TagString) per
//!   item ([`kvs_format::kvs::fragment_metadata_tags`]).
//! * The service keeps the Tags that follow a cluster, up to the next one, with that cluster's
//!   fragment (GetMedia and GetMediaForFragmentList return them after the cluster). An item
//!   therefore goes with the fragment open when it was added, or with the first fragment when
//!   none is open yet.
//! * A persistent item goes with every fragment from then on. Adding a persistent item with
//!   the name of one replaces it; a persistent item with an empty value removes the one of
//!   that name, as AWS documents it (with none of that name, nothing happens here; AWS's
//!   producer would keep an empty persistent item). A non-persistent item goes with one
//!   fragment. Items go out in the order they were added, a replaced one last.
//! * Here the items are written when their cluster ends: before the next cluster, before the
//!   end-of-fragment tag of a fragment cut at the service's limits or ended after an idle
//!   period (the items then are those added before that tag; later ones go with the next
//!   fragment), or at the end of the stream. AWS's producer writes them just before a new cluster starts: the same place, except
//!   that it also writes them before the first cluster (the service then gives them to the
//!   first fragment twice) and writes no persistent item after the last cluster (the last
//!   fragment goes without them), the two surprises reported in producer-c issue #405.
//! * Limits, refused when the item is added (AWS's producer refuses them the same way): a name
//!   of 1 to [`MAX_METADATA_NAME_LEN`] bytes not beginning with [`RESERVED_METADATA_PREFIX`], a
//!   value of at most [`MAX_METADATA_VALUE_LEN`] bytes, and no more than
//!   [`MAX_FRAGMENT_METADATA`] items for one fragment: the service refuses a fragment with more
//!   (4009, `FRAGMENT_METADATA_LIMIT_REACHED`). AWS's producer queues up to 25 and leaves the
//!   service to refuse the fragment.

use bytes::Bytes;
use kvs_format::kvs::{
    MAX_FRAGMENT_METADATA, MAX_METADATA_NAME_LEN, MAX_METADATA_VALUE_LEN, RESERVED_METADATA_PREFIX,
    fragment_metadata_tags,
};

/// One item waiting for its fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    name: String,
    value: String,
    persistent: bool,
    /// When it was added: a [`Snapshot`] covers the items up to its own serial.
    serial: u64,
}

/// The items the next fragment to end will carry.
#[derive(Debug, Clone, Default)]
pub struct FragmentMetadata {
    items: Vec<Item>,
    last_serial: u64,
}

/// What the open fragment carries if it ends now: its Tags, and the newest item in them.
/// A fragment ended by the connection after an idle period goes out with a snapshot; the
/// items added after it go with the next fragment ([`FragmentMetadata::spend_up_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub tags: Bytes,
    pub serial: u64,
}

/// What [`FragmentMetadata::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new item.
    Added,
    /// A persistent item of that name got a new value.
    Replaced,
    /// The persistent item of that name was removed (an empty value).
    Removed,
    /// An empty persistent value, and no persistent item of that name: nothing changed.
    NothingToRemove,
}

/// An item refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("a fragment metadata name cannot be empty")]
    EmptyName,
    #[error(
        "fragment metadata name {name:?} is {len} bytes long; Kinesis Video Streams takes at \
         most {MAX_METADATA_NAME_LEN}"
    )]
    NameTooLong { name: String, len: usize },
    #[error(
        "fragment metadata name {name:?} begins with \"{RESERVED_METADATA_PREFIX}\", which is \
         reserved for the service's own tags"
    )]
    ReservedName { name: String },
    #[error(
        "the value of fragment metadata {name:?} is {len} bytes long; Kinesis Video Streams \
         takes at most {MAX_METADATA_VALUE_LEN}"
    )]
    ValueTooLong { name: String, len: usize },
    #[error(
        "fragment metadata {name:?} not added: the fragment already carries \
         {MAX_FRAGMENT_METADATA} items ({persistent} of them persistent), the most Kinesis Video \
         Streams accepts in one fragment (more: FRAGMENT_METADATA_LIMIT_REACHED). Persistent \
         items count in every fragment; remove one by sending its name with persistent=true and \
         an empty value"
    )]
    TooMany { name: String, persistent: usize },
}

impl FragmentMetadata {
    /// Adds an item for the fragment open now (or the next one to start), or changes or
    /// removes a persistent one; see the module documentation.
    pub fn add(
        &mut self,
        name: &str,
        value: &str,
        persistent: bool,
    ) -> Result<Added, MetadataError> {
        check(name, value)?;
        let existing = persistent
            .then(|| {
                self.items
                    .iter()
                    .position(|i| i.persistent && i.name == name)
            })
            .flatten();
        if persistent && value.is_empty() {
            return Ok(match existing {
                Some(at) => {
                    self.items.remove(at);
                    Added::Removed
                }
                None => Added::NothingToRemove,
            });
        }
        if let Some(at) = existing {
            self.items.remove(at);
        } else if self.items.len() >= MAX_FRAGMENT_METADATA {
            return Err(MetadataError::TooMany {
                name: name.to_owned(),
                persistent: self.items.iter().filter(|i| i.persistent).count(),
            });
        }
        self.last_serial += 1;
        self.items.push(Item {
            name: name.to_owned(),
            value: value.to_owned(),
            persistent,
            serial: self.last_serial,
        });
        Ok(if existing.is_some() {
            Added::Replaced
        } else {
            Added::Added
        })
    }

    /// The fragment that ends now: its items as Tags elements (`None` without any). The
    /// non-persistent items are spent; the persistent ones stay for the next fragment.
    pub fn take_for_fragment(&mut self) -> Option<Bytes> {
        let tags = self.snapshot()?.tags;
        self.items.retain(|i| i.persistent);
        Some(tags)
    }

    /// The items as they are now, for a fragment that may end before [`Self::take_for_fragment`]
    /// is called (`None` without any). Nothing is spent.
    pub fn snapshot(&self) -> Option<Snapshot> {
        if self.items.is_empty() {
            return None;
        }
        let pairs: Vec<(&str, &str)> = self
            .items
            .iter()
            .map(|i| (i.name.as_str(), i.value.as_str()))
            .collect();
        Some(Snapshot {
            tags: Bytes::from(fragment_metadata_tags(&pairs)),
            serial: self.items.iter().map(|i| i.serial).max().unwrap_or(0),
        })
    }

    /// The fragment ended with a [`Snapshot`] up to `serial`: its non-persistent items are
    /// spent; items added after it stay for the next fragment.
    pub fn spend_up_to(&mut self, serial: u64) {
        self.items.retain(|i| i.persistent || i.serial > serial);
    }

    /// How many items the next fragment to end carries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// No item waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The limits on one item.
fn check(name: &str, value: &str) -> Result<(), MetadataError> {
    if name.is_empty() {
        return Err(MetadataError::EmptyName);
    }
    if name.len() > MAX_METADATA_NAME_LEN {
        return Err(MetadataError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if name.starts_with(RESERVED_METADATA_PREFIX) {
        return Err(MetadataError::ReservedName {
            name: name.to_owned(),
        });
    }
    if value.len() > MAX_METADATA_VALUE_LEN {
        return Err(MetadataError::ValueTooLong {
            name: name.to_owned(),
            len: value.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (name, value) pairs of Tags elements as [`fragment_metadata_tags`] writes them.
    fn pairs(tags: &[u8]) -> Vec<(String, String)> {
        use kvs_format::ebml::{read_header, read_string};
        use kvs_format::ids::*;
        // Tags > Tag > SimpleTag > (TagName, TagString), each of known size.
        fn children(body: &[u8]) -> Vec<(u32, &[u8])> {
            let mut out = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let h = read_header(rest).unwrap().unwrap();
                let end = h.len + h.size.unwrap() as usize;
                out.push((h.id, &rest[h.len..end]));
                rest = &rest[end..];
            }
            out
        }
        let mut out = Vec::new();
        for (id, tags_body) in children(tags) {
            assert_eq!(id, ID_TAGS);
            let tag = children(tags_body);
            assert_eq!(tag.len(), 1, "one Tag per Tags element");
            let simple = children(tag[0].1);
            assert_eq!(simple.len(), 1, "one SimpleTag per Tag");
            let fields = children(simple[0].1);
            assert_eq!(fields[0].0, ID_TAG_NAME);
            assert_eq!(fields[1].0, ID_TAG_STRING);
            out.push((read_string(fields[0].1), read_string(fields[1].1)));
        }
        out
    }

    fn take(m: &mut FragmentMetadata) -> Vec<(String, String)> {
        m.take_for_fragment().map(|t| pairs(&t)).unwrap_or_default()
    }

    fn p(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn non_persistent_goes_with_one_fragment_persistent_with_every_one() {
        let mut m = FragmentMetadata::default();
        assert_eq!(m.take_for_fragment(), None, "nothing to write");
        assert_eq!(m.add("motion", "true", false), Ok(Added::Added));
        assert_eq!(m.add("lat", "47.6N", true), Ok(Added::Added));
        assert_eq!(take(&mut m), [p("motion", "true"), p("lat", "47.6N")]);
        assert_eq!(take(&mut m), [p("lat", "47.6N")]);
        assert_eq!(take(&mut m), [p("lat", "47.6N")]);
        // Two non-persistent items of one name both go.
        m.add("motion", "a", false).unwrap();
        m.add("motion", "b", false).unwrap();
        assert_eq!(
            take(&mut m),
            [p("lat", "47.6N"), p("motion", "a"), p("motion", "b")]
        );
    }

    #[test]
    fn a_snapshot_spends_only_what_it_carried() {
        let mut m = FragmentMetadata::default();
        assert_eq!(m.snapshot(), None);
        m.add("door", "open", false).unwrap();
        m.add("site", "x", true).unwrap();
        let snap = m.snapshot().unwrap();
        assert_eq!(pairs(&snap.tags), [p("door", "open"), p("site", "x")]);
        assert_eq!(
            m.snapshot().unwrap(),
            snap,
            "taking a snapshot spends nothing"
        );
        // Added after the fragment went out with the snapshot: for the next fragment.
        m.add("late", "1", false).unwrap();
        m.spend_up_to(snap.serial);
        assert_eq!(take(&mut m), [p("site", "x"), p("late", "1")]);
        assert_eq!(take(&mut m), [p("site", "x")]);
    }

    #[test]
    fn persistent_is_replaced_by_name_and_removed_by_an_empty_value() {
        let mut m = FragmentMetadata::default();
        m.add("lat", "1", true).unwrap();
        m.add("long", "2", true).unwrap();
        assert_eq!(m.add("lat", "3", true), Ok(Added::Replaced));
        assert_eq!(take(&mut m), [p("long", "2"), p("lat", "3")]);
        // A non-persistent item of the same name is another item.
        assert_eq!(m.add("lat", "once", false), Ok(Added::Added));
        assert_eq!(m.add("lat", "", true), Ok(Added::Removed));
        assert_eq!(take(&mut m), [p("long", "2"), p("lat", "once")]);
        assert_eq!(m.add("lat", "", true), Ok(Added::NothingToRemove));
        assert_eq!(m.add("long", "", true), Ok(Added::Removed));
        assert!(m.is_empty());
        assert_eq!(m.take_for_fragment(), None);
        // An empty non-persistent value is an item.
        assert_eq!(m.add("flag", "", false), Ok(Added::Added));
        assert_eq!(take(&mut m), [p("flag", "")]);
    }

    #[test]
    fn at_most_ten_items_for_one_fragment() {
        let mut m = FragmentMetadata::default();
        for i in 0..4 {
            m.add(&format!("p{i}"), "v", true).unwrap();
        }
        for i in 0..6 {
            m.add(&format!("n{i}"), "v", false).unwrap();
        }
        assert_eq!(m.len(), MAX_FRAGMENT_METADATA);
        let err = m.add("one-more", "v", false).unwrap_err();
        assert_eq!(
            err,
            MetadataError::TooMany {
                name: "one-more".into(),
                persistent: 4
            }
        );
        assert!(err.to_string().contains("FRAGMENT_METADATA_LIMIT_REACHED"));
        // Replacing a persistent item adds none; removing one makes room.
        assert_eq!(m.add("p0", "w", true), Ok(Added::Replaced));
        assert!(m.add("p9", "w", true).is_err());
        assert_eq!(take(&mut m).len(), 10);
        // The non-persistent items are spent: room again.
        for i in 0..6 {
            m.add(&format!("m{i}"), "v", false).unwrap();
        }
        m.add("p1", "", true).unwrap();
        m.add("m6", "v", false).unwrap();
        assert_eq!(take(&mut m).len(), 10);
    }

    #[test]
    fn names_and_values_within_the_service_limits() {
        let mut m = FragmentMetadata::default();
        let name = "n".repeat(MAX_METADATA_NAME_LEN);
        let value = "v".repeat(MAX_METADATA_VALUE_LEN);
        assert_eq!(m.add(&name, &value, false), Ok(Added::Added));
        assert_eq!(m.add("", "v", false), Err(MetadataError::EmptyName));
        let long = format!("{name}x");
        assert_eq!(
            m.add(&long, "v", true),
            Err(MetadataError::NameTooLong {
                name: long.clone(),
                len: MAX_METADATA_NAME_LEN + 1
            })
        );
        assert_eq!(
            m.add("n", &format!("{value}x"), false),
            Err(MetadataError::ValueTooLong {
                name: "n".into(),
                len: MAX_METADATA_VALUE_LEN + 1
            })
        );
        // Bytes, not characters: 'é' is two.
        assert!(m.add(&"é".repeat(65), "v", false).is_err());
        // The prefix AWS's producer refuses, case-sensitively.
        for reserved in ["AWS", "AWS_KINESISVIDEO_FRAGMENT_NUMBER", "AWSTag", "AWS:"] {
            assert_eq!(
                m.add(reserved, "v", false),
                Err(MetadataError::ReservedName {
                    name: reserved.into()
                })
            );
        }
        assert!(m.add("aws", "v", false).is_ok());
        assert!(m.add("aWS", "v", false).is_ok());
        assert_eq!(m.len(), 3, "refused items change nothing");
        let err = MetadataError::ValueTooLong {
            name: "n".into(),
            len: 300,
        };
        assert!(err.to_string().contains("at most 256"), "{err}");
    }

    #[test]
    fn one_tags_element_per_item_as_written() {
        let mut m = FragmentMetadata::default();
        m.add("a", "1", false).unwrap();
        m.add("b", "2", true).unwrap();
        let tags = m.take_for_fragment().unwrap();
        assert_eq!(
            &tags[..],
            &fragment_metadata_tags(&[("a", "1"), ("b", "2")])[..]
        );
    }
}

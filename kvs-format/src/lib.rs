//! # kvs-format
//!
//! The vocabulary that kvssink (the GStreamer sink, crate `gst-plugin-kvs`) and kvs-local (the
//! local Kinesis Video Streams endpoint) share, each fact written once:
//!
//! * [`ids`]: the EBML and Matroska element IDs, under one naming scheme.
//! * [`ebml`]: the variable-length integer codec (element IDs and sizes), element-header
//!   decoding, the two body readers both sides use (unsigned integer, string) and the one
//!   element [`Writer`](ebml::Writer).
//! * [`matroska`]: Matroska values (TrackType) and the Tags element builder.
//! * [`kvs`]: the Kinesis Video Streams facts: the PutMedia `ErrorId` table, the
//!   `AWS_KINESISVIDEO_END_OF_FRAGMENT` tag and its builder, the service's limits.
//! * [`build`]: a builder of synthetic Matroska streams for tests and benchmarks.
//!
//! ## What is *not* here, on purpose
//!
//! The parsers. The sink's streaming splitter (`gstkvs::mkv`) and kvs-local's PutMedia checker
//! (`kvs_local::mkv`) are two separate parsers with their own rules about what is valid and
//! what to do with it. kvs-local is the oracle the sink is tested against: if both used one
//! parser, a bug in it would be invisible to the tests. So only words are shared (IDs, the
//! vint codec, the writer, tables, the tag builder, the test builder), never the decisions
//! (what an element may contain, which sizes are allowed, when a fragment ends).
//!
//! The crate depends on nothing outside `std`, so both sides (and their tests and
//! benchmarks) can use it without pulling GStreamer or an async runtime.

#![warn(missing_docs)]

pub mod build;
pub mod ebml;
pub mod ids;
pub mod kvs;
pub mod matroska;
pub mod timeline;

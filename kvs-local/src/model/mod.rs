//! Model and storage: stream and fragment records, the store (memory or
//! data directory), its on-disk format, and `export`.

pub(crate) mod arena;
pub(crate) mod export;
mod persist;
pub(crate) mod records;
pub(crate) mod store;

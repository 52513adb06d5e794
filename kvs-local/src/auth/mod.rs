//! Authentication: SigV4 verification, and the client-side signer the
//! tests use to sign requests the way real clients do.

pub mod client;
pub(crate) mod sigv4;

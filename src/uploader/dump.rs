//! `KVS_DEBUG_DUMP_DATA_FILE_DIR`, as AWS's producer reads it: when it names a directory, the
//! body of every PutMedia session is also written there, byte for byte as sent (without the
//! HTTP chunk framing), to `<stream-name>_<n>.mkv`, `n` counting the sessions of the element
//! that sent something, from 0. Each file is a Matroska stream: the stream header, then the
//! fragments of that session (a replayed fragment again). Unset or empty: nothing is done.
//!
//! For debugging: each HTTP chunk is one `write` to the file, from the runtime's thread,
//! unbuffered, so the file is whole up to the last chunk sent even if the process dies.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable AWS's producer reads.
pub const ENV: &str = "KVS_DEBUG_DUMP_DATA_FILE_DIR";

/// The directory the environment names, if any.
pub fn dir_from_env() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The file of one session, created with its first bytes.
pub(super) struct Dump {
    dir: PathBuf,
    stream: String,
    file: Option<File>,
    /// Writing failed: the session writes nothing more.
    failed: bool,
}

impl Dump {
    pub(super) fn new(dir: &Path, stream: &str) -> Dump {
        Dump {
            dir: dir.to_owned(),
            stream: stream.to_owned(),
            file: None,
            failed: false,
        }
    }

    /// Appends `bytes`; `next_session` numbers the file when this is the session's first
    /// write. The first failure is returned, to be told; the session then writes nothing more.
    pub(super) fn write(
        &mut self,
        bytes: &[u8],
        next_session: impl FnOnce() -> u64,
    ) -> Result<(), String> {
        if self.failed || bytes.is_empty() {
            return Ok(());
        }
        let result = match &mut self.file {
            Some(file) => file.write_all(bytes).map_err(|e| (e, None)),
            None => {
                let path = self
                    .dir
                    .join(format!("{}_{}.mkv", self.stream, next_session()));
                File::create(&path)
                    .and_then(|mut file| {
                        file.write_all(bytes)?;
                        Ok(file)
                    })
                    .map(|file| self.file = Some(file))
                    .map_err(|e| (e, Some(path)))
            }
        };
        result.map_err(|(e, path)| {
            self.failed = true;
            let path = path.map_or_else(String::new, |p| format!(" {}", p.display()));
            format!("cannot write the PutMedia body to {ENV}{path}: {e}; not dumping it further")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_session_numbered_at_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n - 1
        };
        let mut first = Dump::new(dir.path(), "cam");
        first.write(b"", &mut next).unwrap();
        assert!(!dir.path().join("cam_0.mkv").exists(), "nothing sent yet");
        first.write(b"ab", &mut next).unwrap();
        first.write(b"cd", &mut next).unwrap();
        let mut second = Dump::new(dir.path(), "cam");
        second.write(b"ef", &mut next).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("cam_0.mkv")).unwrap(),
            b"abcd"
        );
        assert_eq!(std::fs::read(dir.path().join("cam_1.mkv")).unwrap(), b"ef");
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_told_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut dump = Dump::new(&missing, "cam");
        let e = dump.write(b"ab", || 0).unwrap_err();
        assert!(e.contains(ENV) && e.contains("cam_0.mkv"), "{e}");
        assert_eq!(dump.write(b"cd", || 1), Ok(()));
    }
}

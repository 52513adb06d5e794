//! `KVS_DEBUG_DUMP_DATA_FILE_DIR`, as AWS's producer reads it: when it names a directory, the
//! body of every PutMedia session is also written there, byte for byte as sent (without the
//! HTTP chunk framing), to `<stream-name>_<n>.mkv`, `n` counting the sessions of the element
//! that sent something, from 0. Each file is a Matroska stream: the stream header, then the
//! fragments of that session (a replayed fragment again). Unset or empty: nothing is done.
//!
//! For debugging: each HTTP chunk is written to the file as it is sent (one `write` for its
//! copied small pieces, one for the frame that ends it), unbuffered, so the file is whole up
//! to the last chunk sent even if the process dies.
//!
//! The files hold the camera's video: they are created readable and writable by their owner
//! only (0600), and never opened through a symbolic link (`O_NOFOLLOW`): one planted in the
//! directory by another user would have this process (often root) overwrite its target.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
                let path = self.dir.join(format!(
                    "{}_{}.mkv",
                    file_stem(&self.stream),
                    next_session()
                ));
                create(&path)
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

/// The stream's name as the start of a file name: its characters outside `[a-zA-Z0-9_.-]`
/// (none in a valid stream name; a `/` would put the file in another directory) made `_`.
/// `.` and `..` give `._0.mkv` and `.._0.mkv`, files in the directory.
fn file_stem(stream: &str) -> String {
    stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Creates (or empties) the file `path`, its owner's only, refusing a symbolic link.
fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            // O_NOFOLLOW's error: ELOOP on Linux, EMLINK on the BSDs.
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK)) && is_link {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is a symbolic link: refused, not followed (someone who can write the \
                     directory may have planted it; remove it)",
                )
            } else {
                e
            }
        })
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

    #[test]
    fn files_are_private_and_a_planted_symlink_is_refused_untouched() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask only sets the process's file mode mask (022 is the usual one).
        unsafe { libc::umask(0o022) };
        let dir = tempfile::tempdir().unwrap();
        let mut dump = Dump::new(dir.path(), "cam");
        dump.write(b"ab", || 0).unwrap();
        let mode = std::fs::metadata(dir.path().join("cam_0.mkv"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let target = dir.path().join("target");
        std::fs::write(&target, b"not kvssink's").unwrap();
        let link = dir.path().join("cam_1.mkv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut dump = Dump::new(dir.path(), "cam");
        let e = dump.write(b"MKV", || 1).unwrap_err();
        assert!(
            e.contains(&format!("{}: it is a symbolic link", link.display())),
            "{e}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"not kvssink's");
    }

    #[test]
    fn every_stream_name_gives_a_file_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("dump");
        std::fs::create_dir(&inside).unwrap();
        for (stream, file) in [
            ("..", ".._0.mkv"),
            (".", "._0.mkv"),
            ("cam-1.a_b", "cam-1.a_b_0.mkv"),
            ("../x", ".._x_0.mkv"),
        ] {
            let mut dump = Dump::new(&inside, stream);
            dump.write(b"ab", || 0).unwrap();
            let path = inside.join(file);
            assert_eq!(std::fs::read(&path).unwrap(), b"ab", "{stream}");
            assert!(path.is_file() && path.parent() == Some(inside.as_path()));
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

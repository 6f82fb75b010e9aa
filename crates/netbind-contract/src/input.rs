//! Reading an input file (a VMI, POD.json, resolv.conf, the hand-off record) safely: only a
//! regular file, and never more than a limit of bytes.
//!
//! A FIFO would block `open` and `read` forever, and a character device such as `/dev/zero`
//! (or a symlink to it) has no size to check beforehand and never ends. So the file is opened
//! with `O_NONBLOCK` (a FIFO's open then returns at once), its type is checked on the open
//! descriptor (no race with a rename), and the read itself stops one byte past the limit.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is a {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: more than the {limit}-byte limit")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not UTF-8 text")]
    NotText { path: PathBuf },
}

/// What a file that is not a regular one is, for an error: "directory", "FIFO", ...
pub fn file_kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them (more is an error).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    read_with(path, limit, 0)
}

/// [`read_regular`] for a file whose last path component someone else controls (a log in the
/// VM uid's directory, read by root): a symlink there is refused (`O_NOFOLLOW`), and so is a
/// hard link (more than one name could be a root file linked in).
pub fn read_untrusted(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    read_with(path, limit, libc::O_NOFOLLOW)
}

/// Opens `path` as [`read_untrusted`] does (no symlink as its last component, a regular file
/// with one name, checked on the open descriptor), for a reader that follows a log as it
/// grows instead of reading it once.
pub fn open_untrusted(path: &Path) -> Result<std::fs::File, InputError> {
    open_checked(path, libc::O_NOFOLLOW).map(|(file, _)| file)
}

/// Opens `path` without blocking (a FIFO would block a plain open) and checks what it is on
/// the descriptor: a regular file, and with `O_NOFOLLOW` in `flags` one with a single name.
fn open_checked(path: &Path, flags: i32) -> Result<(std::fs::File, std::fs::Metadata), InputError> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | flags)
        .open(path)
        .map_err(|source| InputError::Open {
            path: path.into(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| InputError::Open {
        path: path.into(),
        source,
    })?;
    let ftype = meta.file_type();
    if flags & libc::O_NOFOLLOW != 0 && meta.nlink() > 1 {
        return Err(InputError::NotRegular {
            path: path.into(),
            kind: "file with several names (hard links)",
        });
    }
    if !ftype.is_file() {
        return Err(InputError::NotRegular {
            path: path.into(),
            kind: file_kind(ftype),
        });
    }
    Ok((file, meta))
}

fn read_with(path: &Path, limit: u64, flags: i32) -> Result<Vec<u8>, InputError> {
    let (file, meta) = open_checked(path, flags)?;
    // Room for the whole file as its size says, plus the byte that tells the end (or a file
    // past the limit) apart: two reads instead of a run of doubling ones from 32 bytes up.
    // The size is a hint only (the file may change); the limit is what the read enforces.
    let hint = usize::try_from(meta.len().min(limit)).unwrap_or(0);
    let mut buf = Vec::with_capacity(hint.saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| InputError::Read {
            path: path.into(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(InputError::TooLarge {
            path: path.into(),
            limit,
        });
    }
    Ok(buf)
}

/// [`read_regular`] for text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, InputError> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| InputError::NotText { path: path.into() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("netbind-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            // No writer: a blocking open would hang here.
            let err = read_regular(&fifo, 10).expect_err("fifo");
            assert!(err.to_string().contains("is a FIFO"), "{err}");
        }
        let zero = dir.join("zero");
        let _ = std::fs::remove_file(&zero);
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_regular(&zero, 10).expect_err("/dev/zero");
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_regular(&dir, 10).expect_err("dir");
        assert!(err.to_string().contains("directory"), "{err}");
        let big = dir.join("big");
        std::fs::write(&big, [b'x'; 11]).unwrap();
        let err = read_regular(&big, 10).expect_err("too large");
        assert!(err.to_string().contains("10-byte limit"), "{err}");
        assert_eq!(read_regular(&big, 11).unwrap().len(), 11);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counts_bytes_read_not_the_size_stat_reports() {
        // /proc files report size 0 and still have content: the cap is on what is read.
        let err = read_regular(Path::new("/proc/self/maps"), 1).expect_err("capped");
        assert!(matches!(err, InputError::TooLarge { .. }), "{err}");
    }
}

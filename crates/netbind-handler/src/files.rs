//! Atomic, symlink-safe files: the hand-off record (read by the unprivileged launcher) and the
//! handler's own state.
//!
//! The directory must be a real directory owned by root and not writable by group or others,
//! so the launcher can read it but never plant a file or a symlink in it. Files are written to
//! a temporary name opened with `O_EXCL|O_NOFOLLOW`, then `renameat` over the final
//! name (rename replaces a symlink instead of following it).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("directory {path} is not safe: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error(transparent)]
    Input(netbind_model::input::InputError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn cstr(path: &Path) -> CString {
    // Paths from the OS cannot contain NUL except by construction; fall back to an invalid name.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// Creates `dir` with `mode` if missing, then checks it is a root-owned, non-symlink directory
/// that only root can write. Returns an open handle on it.
pub fn secure_dir(dir: &Path, mode: u32) -> Result<OwnedFd, FileError> {
    // Parents get the usual 0755 (the launcher must be able to reach a hand-off directory
    // below them); only the directory itself gets `mode`.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(parent)
            .map_err(io("create directory", parent))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io("create directory", dir)(err)),
    }
    checked_dir(dir)
}

/// `dir` if it exists (`secure_dir`'s checks), without creating it or its parents.
pub fn existing_secure_dir(dir: &Path) -> Result<Option<OwnedFd>, FileError> {
    match checked_dir(dir) {
        Err(FileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        checked => checked.map(Some),
    }
}

/// An open handle on `dir`, once checked to be a root-owned, non-symlink directory that only
/// root can write. The checks are made on the open descriptor, not on the path: what is
/// checked is what the caller writes into, whatever happens to the path in between.
fn checked_dir(dir: &Path) -> Result<OwnedFd, FileError> {
    let path_c = cstr(dir);
    // O_PATH with O_NOFOLLOW opens a symlink itself instead of failing, so it can be named as
    // such; an O_PATH descriptor serves as the directory of openat, renameat and unlinkat.
    // SAFETY: path_c is a valid NUL-terminated path; the returned fd is owned at once.
    let fd = crate::fd::owned(unsafe {
        libc::open(
            path_c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
    .map_err(io("open directory", dir))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io("stat", dir))?;
    let unsafe_dir = |why: &str| FileError::Unsafe {
        path: dir.into(),
        why: why.into(),
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symlink"));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory"));
    }
    if meta.uid() != 0 {
        return Err(unsafe_dir(&format!(
            "owned by uid {}, not root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(&format!(
            "mode {:o} lets group or others write",
            meta.mode() & 0o7777
        )));
    }
    Ok(file.into())
}

fn name_c(name: &str) -> CString {
    CString::new(name).unwrap_or_default()
}

/// Atomically replaces `dir/name` with `data` (file mode `mode`).
pub fn write_atomic(
    dir: &Path,
    dir_mode: u32,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), FileError> {
    let dfd = secure_dir(dir, dir_mode)?;
    let path = dir.join(name);
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    let tmp_c = name_c(&tmp);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // Temp files of crashed runs (any pid) are ours to remove: nobody else can write here,
    // and the caller holds the pod's lock, so no other writer of this file is running.
    remove_stale_temps(&dfd, name);
    // SAFETY: openat with an open directory fd and a NUL-terminated name; the mode argument
    // is read for O_CREAT.
    let fd = crate::fd::owned(unsafe {
        libc::openat(dfd.as_raw_fd(), tmp_c.as_ptr(), flags, mode as libc::c_uint)
    })
    .map_err(io("create", &path))?;
    let file = std::fs::File::from(fd);
    let result = (|| {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut writer = &file;
        writer.write_all(data)?;
        // The umask may have narrowed the mode given to openat.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    })();
    if let Err(err) = result {
        // SAFETY: unlinkat with an open directory fd and a NUL-terminated name.
        unsafe { libc::unlinkat(dfd.as_raw_fd(), tmp_c.as_ptr(), 0) };
        return Err(io("write", &path)(err));
    }
    let final_c = name_c(name);
    // SAFETY: both names are NUL-terminated and relative to the same open directory fd.
    let rc = unsafe {
        libc::renameat(
            dfd.as_raw_fd(),
            tmp_c.as_ptr(),
            dfd.as_raw_fd(),
            final_c.as_ptr(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: unlinkat with an open directory fd and a NUL-terminated name.
        unsafe { libc::unlinkat(dfd.as_raw_fd(), tmp_c.as_ptr(), 0) };
        return Err(io("rename into place", &path)(err));
    }
    // No fsync: the rename is what makes the write atomic for readers and for a handler that
    // crashes; durability across a power loss is moot, since the pod's network namespace
    // (everything these files describe) does not survive a reboot either.
    Ok(())
}

/// Unlinks every `.NAME.*.tmp` in the directory `dfd` (unlink never follows a symlink). The
/// directory is listed through `dfd` too, not by its path, which may name another by now.
fn remove_stale_temps(dfd: &OwnedFd, name: &str) {
    use std::os::fd::IntoRawFd;
    let prefix = format!(".{name}.").into_bytes();
    // SAFETY: openat with an open directory fd and a NUL-terminated name.
    let Ok(listing) = crate::fd::owned(unsafe {
        libc::openat(
            dfd.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    }) else {
        return;
    };
    let fd = listing.into_raw_fd();
    // SAFETY: fd is an open directory descriptor that nothing else owns; fdopendir owns it
    // from here on (closedir closes it).
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        // SAFETY: fdopendir failed, so fd is still ours to close.
        unsafe { libc::close(fd) };
        return;
    }
    loop {
        // SAFETY: stream is an open directory stream, read by this thread alone.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name of an entry readdir returned is a NUL-terminated name, valid until
        // the next readdir on this stream.
        let file_name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let bytes = file_name.to_bytes();
        if bytes.starts_with(&prefix) && bytes.ends_with(b".tmp") {
            // SAFETY: dfd is an open directory fd and file_name a NUL-terminated name in it.
            unsafe { libc::unlinkat(dfd.as_raw_fd(), file_name.as_ptr(), 0) };
        }
    }
    // SAFETY: stream is open and not used after this.
    unsafe { libc::closedir(stream) };
}

/// An exclusive lock on one pod's phase-1 work (setup and teardown), held until dropped.
/// The lock file lives in the root-only state directory, out of reach of any other user.
#[derive(Debug)]
pub struct PodLock {
    _file: std::fs::File,
}

impl std::os::fd::AsRawFd for PodLock {
    /// The locked descriptor (a detached teardown hands it to its helper).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self._file.as_raw_fd()
    }
}

pub const LOCK_FILE: &str = "lock";

/// Takes the pod's lock in `dir` (created 0700 if missing), waiting for a holder to finish.
pub fn lock(dir: &Path) -> Result<PodLock, FileError> {
    take_lock(dir, true)?
        .ok_or_else(|| io("open", &dir.join(LOCK_FILE))(std::io::ErrorKind::NotFound.into()))
}

/// Takes the pod's lock if the pod has one (its state directory and lock file exist), waiting
/// for a holder to finish; `None` once they are gone (a teardown removed them), creating
/// nothing: for a helper that comes after the fact.
pub fn lock_existing(dir: &Path) -> Result<Option<PodLock>, FileError> {
    take_lock(dir, false)
}

fn take_lock(dir: &Path, create: bool) -> Result<Option<PodLock>, FileError> {
    let path = dir.join(LOCK_FILE);
    loop {
        let dfd = if create {
            secure_dir(dir, 0o700)?
        } else {
            match existing_secure_dir(dir)? {
                Some(dfd) => dfd,
                None => return Ok(None),
            }
        };
        let lock_name = name_c(LOCK_FILE);
        let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let flags = if create { flags | libc::O_CREAT } else { flags };
        // SAFETY: dfd is an open directory fd and c a NUL-terminated name; mode for O_CREAT.
        let opened = crate::fd::owned(unsafe {
            libc::openat(
                dfd.as_raw_fd(),
                lock_name.as_ptr(),
                flags,
                0o600 as libc::c_uint,
            )
        });
        let file = match opened {
            Ok(fd) => std::fs::File::from(fd),
            Err(err) if !create && err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io("open", &path)(err)),
        };
        // SAFETY: flock on an open fd; EINTR is retried by the loop below.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("lock", &path)(err));
            }
        }
        // A teardown removes the lock file with the directory once it is done: a waiter that
        // got the lock on a removed file must take the lock again on the current one.
        // Asked through the directory's descriptor, like every other look in it.
        let held = file.metadata().map_err(io("stat", &path))?;
        match stat_at(&dfd, &lock_name) {
            Ok(now) if now.st_ino == held.ino() && now.st_dev == held.dev() => {
                return Ok(Some(PodLock { _file: file }));
            }
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && create => continue,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io("stat", &path)(err)),
        }
    }
}

/// `fstatat` of `name` in the directory `dfd`, not following a symlink.
fn stat_at(dfd: &OwnedFd, name: &std::ffi::CStr) -> std::io::Result<libc::stat> {
    let mut out = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: dfd is an open directory fd, name NUL-terminated, out a writable stat.
    let rc = unsafe {
        libc::fstatat(
            dfd.as_raw_fd(),
            name.as_ptr(),
            out.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled in the whole struct.
    Ok(unsafe { out.assume_init() })
}

/// Removes `dir/name` if present (never follows a symlink: unlink removes the link itself).
pub fn remove(dir: &Path, name: &str) -> Result<(), FileError> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io("remove", &path)(err)),
    }
}

/// The most a record of ours (state, hand-off) may hold: far above any pod's (a few KB for
/// one interface; the admission limit is 256), so a file past it was not written by us.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// Reads `dir/name` without following a symlink in its last component; `None` if absent.
/// Only a regular file of one name, opened without blocking, at most [`MAX_RECORD_BYTES`]:
/// the directory is root's, and whatever else is found there is an error, not a hang.
pub fn read_nofollow(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, FileError> {
    use netbind_model::input::{InputError, read_untrusted};
    match read_untrusted(&dir.join(name), MAX_RECORD_BYTES) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(InputError::Open { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(err) => Err(FileError::Input(err)),
    }
}

/// Creates (or truncates) a root-only log file at `path`, never through a symlink: the
/// stderr of a process phase 1 starts.
pub fn create_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // test code
    use super::*;

    /// A record's read never blocks or runs on: a FIFO, a symlink and a file past the limit are
    /// errors naming the file, an absent one is `None`.
    #[test]
    fn a_record_is_read_only_from_a_regular_file_within_the_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(
            read_nofollow(dir.path(), "absent")
                .expect("absent")
                .is_none()
        );

        let fifo = dir.path().join("fifo");
        // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(cstr(&fifo).as_ptr(), 0o600) }, 0);
        let (sent, received) = std::sync::mpsc::channel();
        let at = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = sent.send(
                read_nofollow(&at, "fifo")
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        });
        let err = received
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO blocked")
            .expect_err("a FIFO is no record");
        assert!(err.contains("fifo") && err.contains("FIFO"), "{err}");

        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).expect("symlink");
        let err = read_nofollow(dir.path(), "link").expect_err("a symlink is not followed");
        assert!(err.to_string().contains("link"), "{err}");

        let big = std::fs::File::create(dir.path().join("big")).expect("create");
        big.set_len(MAX_RECORD_BYTES + 1).expect("sparse");
        let err = read_nofollow(dir.path(), "big").expect_err("past the limit");
        assert!(err.to_string().contains("limit"), "{err}");

        std::fs::write(dir.path().join("ok"), b"{}").expect("write");
        assert_eq!(
            read_nofollow(dir.path(), "ok").expect("read"),
            Some(b"{}".to_vec())
        );
    }

    /// Each way a directory can be unsafe is refused with the reason, through the descriptor
    /// the writes would use; an absent one is `None` for a caller that creates nothing; a good
    /// one takes a record through its `O_PATH` descriptor.
    #[test]
    fn only_a_root_owned_directory_others_cannot_write_is_used() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().expect("tmp");
        let why = |dir: &Path| match checked_dir(dir) {
            Err(FileError::Unsafe { why, .. }) => why,
            other => panic!("{}: {other:?}", dir.display()),
        };

        let file = base.path().join("file");
        std::fs::write(&file, "").expect("file");
        assert_eq!(why(&file), "it is not a directory");

        let link = base.path().join("link");
        std::os::unix::fs::symlink(base.path(), &link).expect("symlink");
        assert_eq!(why(&link), "it is a symlink");

        let open = base.path().join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        assert_eq!(why(&open), "mode 775 lets group or others write");

        let absent = base.path().join("absent");
        assert!(existing_secure_dir(&absent).expect("absent").is_none());
        assert!(!absent.exists(), "nothing is created");

        // Owned by another user, or by root: only root can make either.
        if !netbind_testkit::ready(vec![]) {
            return;
        }
        let theirs = base.path().join("theirs");
        std::fs::create_dir(&theirs).expect("dir");
        std::os::unix::fs::chown(&theirs, Some(107), Some(107)).expect("chown");
        assert_eq!(why(&theirs), "owned by uid 107, not root");

        let good = base.path().join("good");
        write_atomic(&good, 0o755, "record", b"data", 0o644).expect("write");
        assert_eq!(std::fs::read(good.join("record")).expect("read"), b"data");
        assert!(existing_secure_dir(&good).expect("good").is_some());
    }

    /// A crashed writer's temporary files of one record go, listed through the directory's
    /// descriptor; another record's, and names that only look alike, stay.
    #[test]
    fn only_the_records_own_stale_temps_are_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = [
            ".state.json.4242.tmp",
            ".state.json.1.tmp",
            ".handoff.json.4242.tmp",
            ".state.json.4242.tmpx",
            "state.json",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        let dfd = OwnedFd::from(std::fs::File::open(dir.path()).expect("open"));
        remove_stale_temps(&dfd, "state.json");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".handoff.json.4242.tmp",
                ".state.json.4242.tmpx",
                "state.json"
            ]
        );
    }

    /// The attack the descriptor-based check stops: another user swaps the checked directory
    /// with one of its own, between the check and the use, over and over (`RENAME_EXCHANGE`
    /// in a parent it can write). Whatever `checked_dir` hands back must be the directory it
    /// checked: root's. Checking the path and then opening it hands back the user's directory
    /// within a few thousand tries here.
    #[test]
    fn a_directory_swapped_after_its_check_is_never_handed_back() {
        if !netbind_testkit::ready(vec![]) {
            return;
        }
        let base = tempfile::tempdir().expect("tmp");
        let ours = base.path().join("handoff");
        let theirs = base.path().join("theirs");
        for dir in [&ours, &theirs] {
            std::fs::create_dir(dir).expect("dir");
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
        std::os::unix::fs::chown(&theirs, Some(107), Some(107)).expect("chown");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, a, b) = (stop.clone(), cstr(&ours), cstr(&theirs));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: two NUL-terminated paths that live across the call.
                    unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                }
            })
        };
        let mut handed_back = 0;
        let mut wrong = None;
        for _ in 0..20_000 {
            if let Ok(fd) = checked_dir(&ours) {
                handed_back += 1;
                let owner = std::fs::File::from(fd).metadata().expect("fstat").uid();
                if owner != 0 {
                    wrong = Some(owner);
                    break;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().expect("swapper");
        assert_eq!(
            wrong, None,
            "a directory of uid 107 was handed back as checked"
        );
        assert!(
            handed_back > 0,
            "the check never passed: the race was not exercised"
        );
    }
}

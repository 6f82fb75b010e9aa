//! `Netns::open` on a path takes a network namespace and nothing else: a FIFO, a directory, a
//! plain file or another kind of namespace is refused, by name, at once (a FIFO used to hold
//! the open forever, waiting for a writer). No root needed: nothing is entered.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test code

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use netbind_netns::{Netns, NetnsError, NetnsTarget};

/// Opens `path` on a thread of its own and gives up waiting after a few seconds, so that an
/// open that blocks fails the test instead of hanging it.
fn open_within_seconds(path: &Path) -> Result<Netns, NetnsError> {
    let (sent, received) = mpsc::channel();
    let target = NetnsTarget::Path(path.to_path_buf());
    std::thread::spawn(move || {
        let _ = sent.send(Netns::open(&target));
    });
    received
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("opening {} blocked", path.display()))
}

fn refused_as(path: &Path) -> String {
    match open_within_seconds(path) {
        Err(err @ NetnsError::NotNetns { .. }) => err.to_string(),
        Err(other) => panic!("{}: refused for another reason: {other}", path.display()),
        Ok(_) => panic!("{}: taken as a network namespace", path.display()),
    }
}

#[test]
fn open_refuses_what_is_not_a_network_namespace_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo: PathBuf = dir.path().join("fifo");
    let name = CString::new(fifo.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"not a namespace").expect("plain file");

    let cases: [(&Path, &str); 4] = [
        (&fifo, "but a FIFO"),
        (dir.path(), "but a directory"),
        (&plain, "but a plain file"),
        (Path::new("/proc/self/ns/mnt"), "but a mount namespace"),
    ];
    for (path, expected) in cases {
        let message = refused_as(path);
        assert!(
            message.contains("not a network namespace") && message.contains(expected),
            "{}: {message}",
            path.display()
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    // The thread's own network namespace is one.
    open_within_seconds(Path::new("/proc/thread-self/ns/net")).expect("a network namespace");
}

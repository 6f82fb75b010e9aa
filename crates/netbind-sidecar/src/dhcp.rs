//! The sidecar's DHCP servers: the launcher's, on a thread of their own that runs under the
//! launcher's seccomp allow-list (a filter installed on one thread binds that thread and the
//! ones it creates, not the gRPC threads).

use netbind_contract::handoff::Handoff;
use netbind_launcher::seccomp::{self, Args, Entry};
use netbind_launcher::{serve, servers};

/// What a thread that is not the process's first needs beyond the launcher's own list: glibc
/// gives it its own malloc arena, which grows and shrinks by mapping and protecting memory
/// rather than by `brk`, and the stderr lock it shares with the gRPC threads may wait.
const THREAD_EXTRA: &[Entry] = &[
    Entry {
        name: "mmap",
        nr: libc::SYS_mmap,
        args: Args::Any,
        reason: "a new heap for this thread's malloc arena",
    },
    Entry {
        name: "mprotect",
        nr: libc::SYS_mprotect,
        args: Args::Any,
        reason: "grow this thread's malloc arena within its reservation",
    },
    Entry {
        name: "madvise",
        nr: libc::SYS_madvise,
        args: Args::Any,
        reason: "give freed arena pages back",
    },
    Entry {
        name: "munmap",
        nr: libc::SYS_munmap,
        args: Args::Any,
        reason: "drop a heap of this thread's arena",
    },
    Entry {
        name: "futex",
        nr: libc::SYS_futex,
        args: Args::Any,
        reason: "wait for the stderr lock the gRPC threads also take",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("start the DHCP thread: {0}")]
    Thread(std::io::Error),
}

/// Binds the servers `handoff` asks for and serves them on a new thread, for the life of the
/// process. Returns once the sockets are bound (so a bind error reaches the caller).
pub fn start(handoff: &Handoff) -> Result<usize, DhcpError> {
    let (v4, v6) = servers(handoff);
    let count = v4.len() + v6.len();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), DhcpError>>();
    std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            let setup = serve::Loop::new(v4, v6)
                .map_err(DhcpError::from)
                .and_then(|lp| {
                    let prog = seccomp::filter_with(
                        &lp.fds(),
                        THREAD_EXTRA,
                        seccompiler::SeccompAction::KillProcess,
                        None,
                    )?;
                    seccomp::install(&prog)?;
                    Ok(lp)
                });
            let mut lp = match setup {
                Ok(lp) => {
                    let _ = ready_tx.send(Ok(()));
                    lp
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                    return;
                }
            };
            if let Err(err) = lp.run() {
                tracing::error!(error = %err, "DHCP stopped");
            }
        })
        .map_err(DhcpError::Thread)?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(DhcpError::Thread(std::io::Error::other("the thread ended"))))?;
    Ok(count)
}

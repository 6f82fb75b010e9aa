//! `netbind-vm-exec PROGRAM [ARG...]`: the first process of a VM-side sandbox (the launcher,
//! QEMU, libvirtd, virsh). It runs as the VM uid with no capability, after setpriv, as PID 1
//! of the sandbox's PID namespace. It installs the VM sandbox's syscall filter
//! (`netbind_launcher::sandbox`), which the program inherits for good, starts the program as
//! its child, and then does what a PID 1 must: reap every orphan (libvirt daemonizes QEMU
//! for its capability probe; a PID 1 that never reaps leaves it a zombie libvirt waits on),
//! pass SIGTERM / SIGINT on to the program (the kernel only delivers to PID 1 the signals it
//! handles), and exit with the program's status.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};

/// The last SIGTERM / SIGINT received, to be passed on.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

fn fail(what: &str, code: u8) -> ExitCode {
    eprintln!(
        "netbind-vm-exec: {what}: {}",
        std::io::Error::last_os_error()
    );
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: netbind-vm-exec PROGRAM [ARG...]");
        return ExitCode::from(2);
    };
    let args: Vec<_> = args.collect();
    // An unprivileged process may install a filter only with no_new_privs (setpriv set it
    // already; setting it again is harmless).
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return fail("set no_new_privs", 126);
    }
    if let Err(error) = netbind_launcher::sandbox::install() {
        eprintln!("netbind-vm-exec: {error}");
        return ExitCode::from(126);
    }
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // Without SA_RESTART, so that waitpid below returns EINTR and the signal is passed on
        // at once. SAFETY: the handler only stores to an atomic; it is installed before the
        // fork, and exec resets it in the child.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: this process has one thread; the child only execs (or exits).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return fail("fork", 126);
    }
    if child == 0 {
        let err = Command::new(&program).args(&args).exec();
        eprintln!("netbind-vm-exec: exec {}: {err}", program.to_string_lossy());
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(127) };
    }
    loop {
        let mut status = 0;
        // SAFETY: waitpid for any child, with a status out-parameter.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        let sig = PENDING.swap(0, Ordering::SeqCst);
        if sig != 0 {
            // SAFETY: kill with our own child's pid.
            unsafe { libc::kill(child, sig) };
        }
        if pid == child {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            return ExitCode::from(1);
        }
    }
}

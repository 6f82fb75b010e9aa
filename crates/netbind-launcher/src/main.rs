//! `netbind-launcher --handoff DIR [--domain-out FILE]`: phase 2, run with no privilege.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use netbind_launcher::{
    LauncherError, domain_xml, privilege, read_handoff, seccomp, serve, servers,
};

#[derive(Parser, Debug)]
#[command(
    name = "netbind-launcher",
    version,
    about = "netbind phase 2: unprivileged DHCP and domain XML"
)]
struct Cli {
    /// The hand-off directory phase 1 wrote (holds handoff.json).
    #[arg(long)]
    handoff: PathBuf,
    /// Write the libvirt <interface> elements here.
    #[arg(long)]
    domain_out: Option<PathBuf>,
    /// Test hook: leave this entry out of the seccomp allow-list (tests prove each is needed).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    seccomp_skip: Option<String>,
}

/// The allow-list entry the tests leave out (`--seccomp-skip`, test builds only).
#[cfg(feature = "test-hooks")]
fn skip(cli: &Cli) -> Option<&str> {
    cli.seccomp_skip.as_deref()
}

#[cfg(not(feature = "test-hooks"))]
fn skip(_: &Cli) -> Option<&str> {
    None
}

/// Exit status when the launcher holds a privilege.
const EXIT_PRIVILEGED: u8 = 3;

fn run(cli: &Cli) -> Result<(), LauncherError> {
    privilege::check()?;
    privilege::set_nondumpable()?;
    let handoff = read_handoff(&cli.handoff)?;
    if let Some(out) = &cli.domain_out {
        std::fs::write(out, domain_xml(&handoff)).map_err(|source| LauncherError::Domain {
            path: out.display().to_string(),
            source,
        })?;
    }
    let (v4, v6) = servers(&handoff);
    let mut lp = serve::Loop::new(v4, v6)?;
    serve::install_stop_handler();
    if lp.is_empty() {
        tracing::info!("no DHCP to serve (IPAM-less networks only)");
    }
    // From here on the launcher can only wait, receive and send on its DHCP sockets, and log.
    let prog = seccomp::filter(
        &lp.fds(),
        seccompiler::SeccompAction::KillProcess,
        skip(cli),
    )?;
    // Give the initialisation's heap back before serving: a smaller resident set, and the
    // heap top that datagrams grow from is the same on every start, so the tests that prove
    // `brk` is needed see it used whatever the initialisation left behind.
    // SAFETY: malloc_trim only returns free memory at the top of the heap to the kernel.
    unsafe { libc::malloc_trim(0) };
    seccomp::install(&prog)?;
    // The line a supervisor waits for: sockets bound, domain XML written, sandbox complete.
    // A supervisor that stopped reading must not stop the DHCP server: errors are ignored.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "{{\"event\":\"ready\",\"vmi\":{:?},\"interfaces\":{}}}",
            handoff.vmi,
            handoff.interfaces.len()
        );
        let _ = out.flush();
    }
    // Leave with exit_group alone: no socket close, no runtime teardown (sigaltstack, munmap)
    // — none of it is in the allow-list, and the kernel releases everything at exit anyway.
    let code = match lp.run() {
        Ok(()) => {
            tracing::info!("stopping on signal");
            0
        }
        Err(err) => {
            eprintln!("netbind-launcher: {err}");
            1
        }
    };
    // SAFETY: _exit ends the process immediately; nothing needs to run after this point.
    unsafe { libc::_exit(code) }
}

fn main() -> ExitCode {
    netbind_log::init("info");
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netbind-launcher: {err}");
            match err {
                LauncherError::Privilege(privilege::PrivilegeError::Holds(_)) => {
                    ExitCode::from(EXIT_PRIVILEGED)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

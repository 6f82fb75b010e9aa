//! `netbind-launcher --handoff DIR [--domain-out FILE]`: phase 2, run with no privilege.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use netbind_launcher::{LauncherError, domain_xml, privilege, read_handoff, serve, servers};

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
}

/// Exit status when the launcher holds a privilege.
const EXIT_PRIVILEGED: u8 = 3;

fn run(cli: &Cli) -> Result<(), LauncherError> {
    privilege::check()?;
    privilege::set_nondumpable()?;
    let h = read_handoff(&cli.handoff)?;
    if let Some(out) = &cli.domain_out {
        std::fs::write(out, domain_xml(&h)).map_err(|source| LauncherError::Domain {
            path: out.display().to_string(),
            source,
        })?;
    }
    let (v4, v6) = servers(&h);
    let mut lp = serve::Loop::new(v4, v6)?;
    // The line a supervisor waits for: sockets are bound, the domain XML is written.
    println!(
        "{{\"event\":\"ready\",\"vmi\":{:?},\"interfaces\":{}}}",
        h.vmi,
        h.interfaces.len()
    );
    if lp.is_empty() {
        tracing::info!("no DHCP to serve (IPAM-less networks only)");
        loop {
            std::thread::park();
        }
    }
    lp.run()?;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETBIND_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbind-launcher: {e}");
            match e {
                LauncherError::Privilege(privilege::PrivilegeError::Holds(_)) => {
                    ExitCode::from(EXIT_PRIVILEGED)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

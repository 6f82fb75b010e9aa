//! netbind phase 2: the untrusted, unprivileged launcher. It refuses to run with any privilege,
//! reads the hand-off record phase 1 wrote, writes the libvirt interface XML for the
//! pre-created taps, and serves DHCPv4 / DHCPv6 to the guest from plain UDP sockets.
//!
//! It must not link netlink, nftables or setns code: CI checks `cargo tree -p
//! netbind-launcher` (see scripts/check-boundaries.sh).

pub mod dhcp4;
pub mod dhcp6;
pub mod privilege;
pub mod ra;
pub mod sandbox;
pub mod seccomp;
pub mod serve;

use std::path::Path;

use netbind_contract::handoff::{HANDOFF_FILE, Handoff};

/// The record is small; anything bigger is refused before parsing.
pub const MAX_HANDOFF_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error(transparent)]
    Privilege(#[from] privilege::PrivilegeError),
    #[error("read {0}")]
    Read(#[from] netbind_contract::input::InputError),
    #[error("{path}: {source}")]
    Handoff {
        path: String,
        source: netbind_contract::handoff::HandoffError,
    },
    #[error("write domain XML {path}: {source}")]
    Domain {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

pub fn read_handoff(dir: &Path) -> Result<Handoff, LauncherError> {
    let path = dir.join(HANDOFF_FILE);
    let shown = path.display().to_string();
    let bytes = netbind_contract::input::read_regular(&path, MAX_HANDOFF_BYTES)?;
    Handoff::from_json(&bytes).map_err(|source| LauncherError::Handoff {
        path: shown,
        source,
    })
}

/// The `<interface>` elements for every tap of the record.
pub fn domain_xml(handoff: &Handoff) -> String {
    let ds: Vec<_> = handoff
        .interfaces
        .iter()
        .map(|i| i.domain.clone())
        .collect();
    netbind_contract::domxml::render_interfaces(&ds, 0)
}

/// The servers the record asks for: (listen interface, server) per family.
#[allow(clippy::type_complexity)]
pub fn servers(
    handoff: &Handoff,
) -> (
    Vec<(String, dhcp4::server::Server)>,
    Vec<(String, dhcp6::Server)>,
) {
    let v4 = handoff
        .interfaces
        .iter()
        .filter_map(|i| i.dhcpv4.clone())
        .map(|c| (c.interface.to_string(), dhcp4::server::Server::new(c)))
        .collect();
    let v6 = handoff
        .interfaces
        .iter()
        .filter_map(|i| i.dhcpv6.clone())
        .map(|c| (c.interface.to_string(), dhcp6::Server::new(c)))
        .collect();
    (v4, v6)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;

    /// A hand-off record that is a FIFO (or a symlink to /dev/zero) is refused at once instead
    /// of blocking the launcher or filling its memory.
    #[test]
    fn special_handoff_records_are_refused() {
        let dir = std::env::temp_dir().join(format!("netbind-launcher-ho-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rec = dir.join(HANDOFF_FILE);
        std::os::unix::fs::symlink("/dev/zero", &rec).unwrap();
        let err = read_handoff(&dir).expect_err("/dev/zero").to_string();
        assert!(err.contains("is a character device"), "{err}");
        std::fs::remove_file(&rec).unwrap();
        if std::process::Command::new("mkfifo")
            .arg(&rec)
            .status()
            .is_ok_and(|s| s.success())
        {
            let err = read_handoff(&dir).expect_err("fifo").to_string();
            assert!(err.contains("is a FIFO"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

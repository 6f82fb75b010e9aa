//! The launcher proves it holds nothing before it touches the network.
//!
//! Stages, in order (all before any thread is spawned, since capabilities are per thread):
//! 1. `check`: all five capability sets (effective, permitted, inheritable, ambient and
//!    bounding) are empty on every thread, and `no_new_privs` is set. Otherwise refuse to
//!    run, naming what is held. Should: read /proc/self/task/*/status, the kernel's view.
//!    Mustn't: try to drop anything itself: a launcher that starts privileged was started
//!    wrong, and dropping late would hide it.
//! 2. `set_nondumpable`: same-uid processes (the VM's QEMU runs as the same uid) cannot
//!    ptrace it or read its memory.
//!
//! Nothing is granted: port 67/547 come from `net.ipv4.ip_unprivileged_port_start`, set by
//! the handler in the pod netns, not from CAP_NET_BIND_SERVICE.

const SETS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

/// Capability names by bit (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("refusing to run with privileges: {0}")]
    Holds(String),
    #[error("prctl(PR_SET_DUMPABLE, 0): {0}")]
    Dumpable(std::io::Error),
}

pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| {
            CAP_NAMES
                .get(b)
                .map_or_else(|| format!("cap_{b}"), |n| format!("cap_{n}"))
        })
        .collect()
}

/// What one thread's status says it holds (empty when nothing).
pub fn held(status: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in status.lines() {
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim();
        if SETS.contains(&key) {
            let mask = u64::from_str_radix(val, 16).unwrap_or(u64::MAX);
            if mask != 0 {
                out.push(format!("{key}={}", cap_names(mask).join(",")));
            }
        } else if key == "NoNewPrivs" && val != "1" {
            out.push("no_new_privs is not set".into());
        }
    }
    if !status.contains("NoNewPrivs:") {
        out.push("no_new_privs unknown".into());
    }
    out
}

/// Stage 1: every thread holds nothing and has no_new_privs.
pub fn check() -> Result<(), PrivilegeError> {
    let dir = "/proc/self/task";
    let entries = std::fs::read_dir(dir).map_err(|source| PrivilegeError::Read {
        path: dir.into(),
        source,
    })?;
    let mut problems = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PrivilegeError::Read {
            path: dir.into(),
            source,
        })?;
        let path = entry.path().join("status");
        let status = std::fs::read_to_string(&path).map_err(|source| PrivilegeError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let held_caps = held(&status);
        if !held_caps.is_empty() {
            problems.push(format!(
                "thread {}: {}",
                entry.file_name().to_string_lossy(),
                held_caps.join("; ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Holds(problems.join(" | ")))
    }
}

/// Stage 2.
pub fn set_nondumpable() -> Result<(), PrivilegeError> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivilegeError::Dumpable(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";

    #[test]
    fn clean_status_holds_nothing() {
        assert!(held(CLEAN).is_empty());
    }

    #[test]
    fn names_what_is_held() {
        let status = CLEAN
            .replace("CapEff:\t0000000000000000", "CapEff:\t0000000000000400")
            .replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert_eq!(
            held(&status),
            vec![
                "CapEff=cap_net_bind_service".to_string(),
                "no_new_privs is not set".to_string()
            ]
        );
        let status = CLEAN.replace("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff");
        assert!(held(&status)[0].starts_with("CapBnd=cap_chown,cap_dac_override"));
        assert!(held(&status)[0].ends_with("cap_checkpoint_restore"));
    }
}

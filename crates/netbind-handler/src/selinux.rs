//! The tap is created under the launcher's SELinux label, so libvirt / QEMU in the launcher's
//! context may use it without a `tun_socket relabelfrom` permission (KubeVirt PR #3290).
//!
//! The label is per thread: it is written to `/proc/thread-self/attr/sockcreate` right before
//! `/dev/net/tun` is opened (the tun socket takes the label) and cleared right after.
//! Paths are injected (`SelinuxEnv`) so the plumbing is tested without SELinux.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct SelinuxEnv {
    /// selinuxfs mount point (`/sys/fs/selinux`); SELinux is enabled when `enforce` exists.
    pub selinuxfs: PathBuf,
    /// procfs mount point (`/proc`).
    pub proc: PathBuf,
}

impl Default for SelinuxEnv {
    fn default() -> Self {
        Self {
            selinuxfs: "/sys/fs/selinux".into(),
            proc: "/proc".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelinuxError {
    #[error("read SELinux label of pid {pid}: {source}")]
    ReadLabel { pid: u32, source: std::io::Error },
    #[error("launcher pid {pid} ended while its SELinux label was read; its label is not used")]
    LauncherGone { pid: u32 },
    #[error("set socket-creation label {label:?}: {source}")]
    SetSockCreate {
        label: String,
        source: std::io::Error,
    },
}

/// What to do about labels for this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelDecision {
    /// SELinux is not enabled on this host: nothing to do.
    Disabled,
    /// No launcher pid was given (namespace entered by path): the tap gets the default label.
    NoLauncher,
    /// Create the tap under this label.
    Label(String),
}

impl SelinuxEnv {
    pub fn enabled(&self) -> bool {
        self.selinuxfs.join("enforce").exists()
    }

    /// Decides the tap label from the launcher's `/proc/PID/attr/current`.
    pub fn decide(&self, launcher_pid: Option<u32>) -> Result<LabelDecision, SelinuxError> {
        if !self.enabled() {
            return Ok(LabelDecision::Disabled);
        }
        let Some(pid) = launcher_pid else {
            return Ok(LabelDecision::NoLauncher);
        };
        // The label is read under the pid's directory in /proc, which another process takes
        // over if the launcher is reaped and its pid reused: a pidfd held across the read
        // says whether the process it was opened on is still the pid's afterwards.
        let pidfd = crate::process::pidfd_open(pid)
            .map_err(|source| SelinuxError::ReadLabel { pid, source })?;
        let raw = std::fs::read(self.proc.join(pid.to_string()).join("attr/current"))
            .map_err(|source| SelinuxError::ReadLabel { pid, source })?;
        if !crate::process::still_there(&pidfd) {
            return Err(SelinuxError::LauncherGone { pid });
        }
        let label = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\0', '\n'])
            .to_string();
        if label.is_empty() || label == "unlabeled" {
            return Ok(LabelDecision::NoLauncher);
        }
        Ok(LabelDecision::Label(label))
    }

    /// Sets the calling thread's socket-creation label until the guard is dropped.
    pub fn sockcreate(&self, label: &str) -> Result<SockCreateGuard, SelinuxError> {
        let path = self.proc.join("thread-self/attr/sockcreate");
        std::fs::write(&path, label).map_err(|source| SelinuxError::SetSockCreate {
            label: label.into(),
            source,
        })?;
        Ok(SockCreateGuard { path })
    }
}

/// Clears the socket-creation label on drop, so later sockets get the default again.
#[derive(Debug)]
pub struct SockCreateGuard {
    path: PathBuf,
}

impl Drop for SockCreateGuard {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(&self.path, "") {
            tracing::warn!(error = %err, "could not clear the socket-creation SELinux label");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> (tempfile::TempDir, SelinuxEnv) {
        let dir = tempfile::tempdir().expect("tmp");
        let env = SelinuxEnv {
            selinuxfs: dir.path().join("selinux"),
            proc: dir.path().join("proc"),
        };
        std::fs::create_dir_all(env.proc.join("thread-self/attr")).expect("mkdir");
        std::fs::create_dir_all(env.proc.join(format!("{}/attr", own_pid()))).expect("mkdir");
        (dir, env)
    }

    /// A launcher that is alive for the whole test: this process.
    fn own_pid() -> u32 {
        std::process::id()
    }

    #[test]
    fn disabled_without_selinuxfs() {
        let (_d, env) = fake();
        assert_eq!(
            env.decide(Some(own_pid())).expect("decide"),
            LabelDecision::Disabled
        );
    }

    #[test]
    fn label_read_from_launcher_and_set_then_cleared() {
        let (_d, env) = fake();
        std::fs::create_dir_all(&env.selinuxfs).expect("mkdir");
        std::fs::write(env.selinuxfs.join("enforce"), "1").expect("enforce");
        std::fs::write(
            env.proc.join(format!("{}/attr/current", own_pid())),
            "system_u:system_r:virt_launcher.process:s0:c1,c2\0",
        )
        .expect("label");
        let decision = env.decide(Some(own_pid())).expect("decide");
        assert_eq!(
            decision,
            LabelDecision::Label("system_u:system_r:virt_launcher.process:s0:c1,c2".into())
        );
        assert_eq!(env.decide(None).expect("decide"), LabelDecision::NoLauncher);
        let sock = env.proc.join("thread-self/attr/sockcreate");
        {
            let _g = env
                .sockcreate("system_u:system_r:virt_launcher.process:s0:c1,c2")
                .expect("set");
            assert_eq!(
                std::fs::read_to_string(&sock).expect("read"),
                "system_u:system_r:virt_launcher.process:s0:c1,c2"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&sock).expect("read"),
            "",
            "cleared on drop"
        );
    }

    #[test]
    fn no_label_is_taken_from_a_pid_without_a_process() {
        let (_d, env) = fake();
        std::fs::create_dir_all(&env.selinuxfs).expect("mkdir");
        std::fs::write(env.selinuxfs.join("enforce"), "1").expect("enforce");
        // Above the kernel's largest pid_max: no process can have it, whatever /proc says.
        let gone = 4_194_305;
        let attr = env.proc.join(format!("{gone}/attr"));
        std::fs::create_dir_all(&attr).expect("mkdir");
        std::fs::write(attr.join("current"), "system_u:system_r:unconfined_t:s0\0").expect("label");
        let err = env
            .decide(Some(gone))
            .expect_err("no process behind the pid");
        assert!(err.to_string().contains(&format!("pid {gone}")), "{err}");
    }

    #[test]
    fn unreadable_label_is_an_error_naming_the_pid() {
        let (_d, env) = fake();
        std::fs::create_dir_all(&env.selinuxfs).expect("mkdir");
        std::fs::write(env.selinuxfs.join("enforce"), "1").expect("enforce");
        // A live pid whose label file is missing (the fake /proc has none for it).
        let err = env.decide(Some(own_pid())).expect_err("no label file");
        assert!(
            err.to_string().contains(&format!("pid {}", own_pid())),
            "{err}"
        );
    }
}

//! nftables through libnftables' JSON interface: the whole ruleset is ONE `nft -j -f -`
//! transaction (it either all applies or nothing does), run from a thread inside the pod
//! netns so the child inherits that namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables transaction ({what}): the nft binary {bin} is not available: {source}")]
    Spawn {
        what: String,
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("nftables transaction ({what}) failed: {stderr}")]
    Failed { what: String, stderr: String },
}

/// Locates the nft binary before any change is made, so a missing tool fails up front.
pub fn locate(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A transaction handed to nft and not yet finished.
#[derive(Debug)]
pub struct Pending {
    child: std::process::Child,
    what: String,
    bin: PathBuf,
}

/// Starts a JSON batch as one transaction; `what` names it in errors (the tables touched).
/// The kernel work may overlap with the caller's (e.g. its own RCU waits) until `wait`.
pub fn start(bin: &Path, batch: &serde_json::Value, what: &str) -> Result<Pending, NftError> {
    let mut child = Command::new(bin)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            what: what.into(),
            bin: bin.into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's own failure when waited for.
        let _ = stdin.write_all(batch.to_string().as_bytes());
    }
    Ok(Pending {
        child,
        what: what.into(),
        bin: bin.into(),
    })
}

impl Pending {
    pub fn wait(self) -> Result<(), NftError> {
        let Pending { child, what, bin } = self;
        let out = child.wait_with_output().map_err(|source| NftError::Spawn {
            what: what.clone(),
            bin,
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let stderr = if stderr.is_empty() {
                format!("exit status {}", out.status)
            } else {
                stderr
            };
            return Err(NftError::Failed { what, stderr });
        }
        Ok(())
    }
}

/// Applies a JSON batch as one transaction and waits for it.
pub fn apply(bin: &Path, batch: &serde_json::Value, what: &str) -> Result<(), NftError> {
    start(bin, batch, what)?.wait()
}

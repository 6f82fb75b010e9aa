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

/// Applies a JSON batch as one transaction. `what` names it in errors (the tables touched).
pub fn apply(bin: &Path, batch: &serde_json::Value, what: &str) -> Result<(), NftError> {
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
    let text = batch.to_string();
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's own failure below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NftError::Spawn {
        what: what.into(),
        bin: bin.into(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let stderr = if stderr.is_empty() {
            format!("exit status {}", out.status)
        } else {
            stderr
        };
        return Err(NftError::Failed {
            what: what.into(),
            stderr,
        });
    }
    Ok(())
}

//! Sysctls of the pod netns: plain reads and writes under /proc/sys from a thread inside the
//! netns (the file resolves to the namespace of the thread that opens it).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {path}: invalid path")]
    BadPath { path: String },
    #[error("read sysctl {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("write sysctl {path}={value}: {source}")]
    Write {
        path: String,
        value: String,
        source: std::io::Error,
    },
}

fn full(path: &str) -> Result<PathBuf, SysctlError> {
    let ok = path.starts_with("net/")
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !ok {
        return Err(SysctlError::BadPath { path: path.into() });
    }
    Ok(PathBuf::from("/proc/sys").join(path))
}

pub fn read(path: &str) -> Result<String, SysctlError> {
    std::fs::read_to_string(full(path)?)
        .map(|s| s.trim().to_string())
        .map_err(|source| SysctlError::Read {
            path: path.into(),
            source,
        })
}

/// Writes `value` unless it is already set.
pub fn write(path: &str, value: &str) -> Result<(), SysctlError> {
    if read(path)? == value {
        return Ok(());
    }
    std::fs::write(full(path)?, value).map_err(|source| SysctlError::Write {
        path: path.into(),
        value: value.into(),
        source,
    })
}

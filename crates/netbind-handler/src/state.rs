//! The handler's own record of a pod (root-only directory): written before the first change,
//! so a crash at any point leaves enough to re-run or tear down.

use std::path::{Path, PathBuf};

use netbind_model::pod::ObservedPod;
use netbind_plan::PodNetPlan;
use serde::{Deserialize, Serialize};

use crate::files::{self, FileError};

pub const STATE_VERSION: u32 = 1;
const STATE_FILE: &str = "state.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Changes may be half-applied.
    Started,
    /// The plan was applied completely.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerState {
    pub version: u32,
    pub phase: Phase,
    /// The pod as it was before netbind touched it: every re-run plans from this, and
    /// teardown restores it.
    pub observed: ObservedPod,
    /// Sysctl values before the first change (`None`: the file did not exist yet).
    pub sysctls_before: Vec<(String, Option<String>)>,
    /// What was (being) applied.
    pub plan: PodNetPlan,
    /// The router-advertisement responders started for it, stopped by teardown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responders: Vec<crate::ra::Responder>,
    /// What an earlier run took out of the plan and left to a detached helper (a network's
    /// DEL while the pod lives on): its links, tables and sysctls, none of them in `plan`.
    /// Whoever holds the pod's lock next with this still recorded removes it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_removal: Option<PendingRemoval>,
}

/// A removal handed to a detached helper: the part of an earlier plan to take away (its pod
/// interfaces already given back, placeholders under the names they were renamed to), and the
/// values to put back in its sysctls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRemoval {
    pub part: PodNetPlan,
    pub sysctls_before: Vec<(String, Option<String>)>,
}

impl PendingRemoval {
    /// Nothing to remove (the part taken away was only pod interfaces, already given back).
    pub fn is_empty(&self) -> bool {
        self.part.links.is_empty()
            && self.part.nftables.ruleset.is_empty()
            && self.sysctls_before.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("serialise the state file {path}: {source}")]
    Serialize {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Never from a crash (the file is replaced by a rename); from an edit, a disk, or a
    /// netbind that wrote fields this one does not know. The operator decides: nothing of
    /// what the file records is guessed at.
    #[error(
        "state file {path} is corrupt: {source} (nothing was changed; repair it, or remove it \
         to go on without it: the pod's links and tables then go with its namespace, and RA \
         responders it records must be stopped by hand)"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub fn load(dir: &Path) -> Result<Option<HandlerState>, StateError> {
    let Some(bytes) = files::read_nofollow(dir, STATE_FILE)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Corrupt {
            path: dir.join(STATE_FILE),
            source,
        })
}

pub fn save(dir: &Path, state: &HandlerState) -> Result<(), StateError> {
    // An empty or partial state file would lose the record of what to undo: fail instead.
    // Compact: it is written twice on every setup's path (half the bytes of the indented
    // form); `jq . state.json` shows it to a person.
    let json = serde_json::to_vec(state).map_err(|source| StateError::Serialize {
        path: dir.join(STATE_FILE),
        source,
    })?;
    files::write_atomic(dir, 0o700, STATE_FILE, &json, 0o600)?;
    Ok(())
}

/// Removes the state (the caller holds the pod's lock, whose file goes with the directory).
/// Where a detached teardown that failed leaves its error (the state stays for a retry).
pub const HELPER_ERROR_FILE: &str = "teardown-error.txt";

pub fn remove(dir: &Path) -> Result<(), StateError> {
    files::remove(dir, STATE_FILE)?;
    files::remove(dir, HELPER_ERROR_FILE)?;
    files::remove(dir, files::LOCK_FILE)?;
    // The directory is per pod; leave nothing behind once it is empty.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)] // test code
    use super::*;

    /// A state that cannot be read stops the run with the file named and what the operator
    /// may do, and stays as it is for them.
    #[test]
    fn a_corrupt_state_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, br#"{"version":1,"pha"#).expect("write");
        let err = load(dir.path()).expect_err("corrupt");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("nothing was changed") && text.contains("remove it"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).expect("kept"), br#"{"version":1,"pha"#);
    }
}

//! Load + default + admit in one call, with every violation located in the source file.

use crate::admission::ClusterConfig;
use crate::admitted::{AdmittedVmi, admit};
use crate::yaml::{LoadError, LoadedVmi, Pos, load_vmi};

/// One admission violation, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            out,
            "{}:{}: {}: {}",
            self.line, self.column, self.field, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file is not a readable KubeVirt object (YAML or type error).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The object decodes but admission rejects it.
    #[error("{} admission error(s)", .0.len())]
    Invalid(Vec<Finding>),
}

/// Decodes, applies KubeVirt's defaulting and runs every admission rule.
/// On success returns the typed spec, defaults filled in.
pub fn check_vmi(text: &str, cfg: &ClusterConfig) -> Result<AdmittedVmi, CheckError> {
    let vmi = load_vmi(text)?;
    let LoadedVmi {
        metadata,
        spec,
        status,
        spec_path,
        positions,
        ..
    } = vmi;
    admit(metadata, spec, &status, spec_path, cfg).map_err(|violations| {
        CheckError::Invalid(
            violations
                .into_iter()
                .map(|v| {
                    let Pos { line, column } = positions.lookup(&v.field);
                    Finding {
                        line,
                        column,
                        field: v.field,
                        message: v.message,
                    }
                })
                .collect(),
        )
    })
}

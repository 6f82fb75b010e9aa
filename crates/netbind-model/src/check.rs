//! Load + default + admit in one call, with every violation located in the source file.

use crate::admission::{ClusterConfig, apply_defaults, validate};
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
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
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
/// On success the returned VMI has its defaults filled in.
pub fn check_vmi(text: &str, cfg: &ClusterConfig) -> Result<LoadedVmi, CheckError> {
    let mut vmi = load_vmi(text)?;
    let violations = match apply_defaults(&mut vmi.spec, vmi.spec_path, cfg) {
        Err(v) => vec![v],
        Ok(()) => validate(&vmi.spec, vmi.spec_path, cfg),
    };
    if violations.is_empty() {
        return Ok(vmi);
    }
    let findings = violations
        .into_iter()
        .map(|v| {
            let Pos { line, column } = vmi.positions.lookup(&v.field);
            Finding {
                line,
                column,
                field: v.field,
                message: v.message,
            }
        })
        .collect();
    Err(CheckError::Invalid(findings))
}

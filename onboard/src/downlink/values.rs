//! Science-value tables: TOML with a `[values]` table mapping class name to a number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a values file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// Unreadable file.
    #[error("{path}: cannot read the values file: {source}")]
    Io {
        /// Values file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Not TOML, or no `[values]` table of numbers.
    #[error("{path}: {what}; expected a `[values]` table of `\"class name\" = number`")]
    Format {
        /// Values file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A class name that the bundle does not know.
    #[error("{path}: unknown class {name:?}; known classes: {known}")]
    UnknownClass {
        /// Values file.
        path: PathBuf,
        /// Offending name.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
}

/// Reads a values file and returns one value per class of `classes` (in id order): the file's
/// value where given, `default(id)` otherwise. Values must be finite and >= 0.
pub fn read_values(
    path: &Path,
    classes: &[String],
    default: impl Fn(usize) -> f64,
) -> Result<Vec<f64>, ValuesError> {
    values_from(&load_table(path)?, path, classes, default)
}

/// Reads and parses a values file (TOML) as a table.
pub fn load_table(path: &Path) -> Result<toml::Table, ValuesError> {
    let text = std::fs::read_to_string(path).map_err(|source| ValuesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ValuesError::Format {
            path: path.to_path_buf(),
            what: e.message().to_string(),
        })
}

/// Largest science value a values file may give a class.
pub const MAX_VALUE: f64 = 1e6;

/// The `[values]` table of a parsed values file (`path` names it in errors), as in
/// [`read_values`].
pub fn values_from(
    doc: &toml::Table,
    path: &Path,
    classes: &[String],
    default: impl Fn(usize) -> f64,
) -> Result<Vec<f64>, ValuesError> {
    let fmt = |what: String| ValuesError::Format {
        path: path.to_path_buf(),
        what,
    };
    let table = doc
        .get("values")
        .and_then(|v| v.as_table())
        .ok_or_else(|| fmt("no [values] table".into()))?;
    let mut given = BTreeMap::new();
    for (name, v) in table {
        let x = v
            .as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .ok_or_else(|| fmt(format!("value of {name:?} is not a number")))?;
        // Values are relative weights; the bound keeps every product with a probability and
        // the planner's factors far inside f32.
        if !(x.is_finite() && (0.0..=MAX_VALUE).contains(&x)) {
            return Err(fmt(format!(
                "value of {name:?} is {x:?}; it must be within 0..={MAX_VALUE}"
            )));
        }
        if !classes.iter().any(|c| c == name) {
            return Err(ValuesError::UnknownClass {
                path: path.to_path_buf(),
                name: name.clone(),
                known: classes.join(", "),
            });
        }
        given.insert(name.clone(), x);
    }
    Ok(classes
        .iter()
        .enumerate()
        .map(|(i, c)| given.get(c).copied().unwrap_or_else(|| default(i)))
        .collect())
}

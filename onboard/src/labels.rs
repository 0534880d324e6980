//! Labeled split files: one `RELATIVE/PATH.JPG CLASS_ID` per line.

use std::path::{Path, PathBuf};

/// Why a labels file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read.
    #[error("{path}: cannot read the labels file: {source}; pass an existing split file")]
    Io {
        /// Labels file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {what}; expected `calibrated/NAME.JPG CLASS_ID`")]
    Line {
        /// Labels file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// One labeled item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeled {
    /// Path relative to the dataset root.
    pub file: String,
    /// Class id.
    pub class: usize,
}

/// Reads a labels file, keeping file order; blank lines are ignored.
pub fn read_labels(path: &Path) -> Result<Vec<Labeled>, LabelsError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_labels(&text).map_err(|(line, what)| LabelsError::Line {
        path: path.to_path_buf(),
        line,
        what,
    })
}

/// Parses labels text; on error returns the 1-based line number and what is wrong.
pub fn parse_labels(text: &str) -> Result<Vec<Labeled>, (usize, String)> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(file), Some(id), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err((n + 1, format!("malformed line {line:?}")));
        };
        let class = id.parse().map_err(|_| {
            (
                n + 1,
                format!("class id {id:?} is not a non-negative integer"),
            )
        })?;
        items.push(Labeled {
            file: file.to_string(),
            class,
        });
    }
    Ok(items)
}

/// Reads the synset file (`ID<whitespace>NAME` per line) into names indexed by id; ids must be
/// exactly `0..n` in order.
pub fn read_synset(path: &Path) -> Result<Vec<String>, LabelsError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |what: String| LabelsError::Line {
            path: path.to_path_buf(),
            line: n + 1,
            what,
        };
        let (id, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(format!("malformed synset line {line:?}")))?;
        let id: usize = id
            .parse()
            .map_err(|_| err(format!("id {id:?} is not a number")))?;
        if id != names.len() {
            return Err(err(format!(
                "id {id} out of order (expected {})",
                names.len()
            )));
        }
        names.push(name.trim().to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_line_numbers() {
        let items = parse_labels("a.JPG 3\n\nb.JPG 0\n").unwrap();
        assert_eq!(
            items[1],
            Labeled {
                file: "b.JPG".into(),
                class: 0
            }
        );
        assert_eq!(parse_labels("a.JPG 3\nb.JPG x\n").unwrap_err().0, 2);
        assert_eq!(parse_labels("a.JPG 1 2\n").unwrap_err().0, 1);
    }
}

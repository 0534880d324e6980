//! Crash-safe journal of per-image decisions: one JSON record per line, appended and synced
//! before the next image is touched. A record torn by a crash (an unterminated last line: every
//! record is written with its newline last) is dropped when the journal is reopened, and its
//! size reported ([`Journal::dropped_tail`]); a complete line that does not parse is corruption,
//! wherever it is, and the journal refuses to open rather than delete it; compaction rewrites the file through a
//! synced temporary file and an atomic rename, so the last good state always stays readable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapt::{AdaptState, StreamAdapter};
use crate::pipeline::Analysis;
use lock::JournalLock;

pub mod lock;

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Record {
    /// Analysed; waiting in the backlog until downlinked.
    Analysed {
        /// File name.
        file: String,
        /// File size in bytes.
        bytes: u64,
        /// The analysis.
        analysis: Analysis,
    },
    /// Could not be analysed.
    Skipped {
        /// File name.
        file: String,
        /// Why.
        reason: String,
    },
    /// Sent to the ground; leaves the backlog.
    Downlinked {
        /// File name.
        file: String,
    },
    /// The stream adaptation's whole state after every adapted record before it (written at
    /// the end of a pass and on compaction; later adapted records are replayed onto it).
    Adaptation {
        /// The state.
        state: AdaptState,
    },
}

impl Record {
    /// The file the record is about (none for [`Record::Adaptation`]).
    pub fn file(&self) -> Option<&str> {
        match self {
            Record::Analysed { file, .. }
            | Record::Skipped { file, .. }
            | Record::Downlinked { file } => Some(file),
            Record::Adaptation { .. } => None,
        }
    }
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O operation failed.
    #[error("{path}: {what}: {source}; free space or make the folder writable, the journal's earlier records are intact")]
    Io {
        /// Journal path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A complete record line does not parse (only an unterminated last line is a torn write).
    #[error("{path}:{line}: corrupt journal record: {message}; restore the journal from a copy or move it aside")]
    Corrupt {
        /// Journal path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// Another process holds the journal's lock.
    #[error("{path}: the journal is in use by {holder} (lock file {path}.lock); wait for that pass to end, or stop it")]
    Locked {
        /// Journal path.
        path: PathBuf,
        /// Who holds it (`pid N`).
        holder: String,
    },
    /// The stream adaptation the journal holds cannot be resumed by this run.
    #[error("{path}: cannot resume the stream adaptation: {message}; use a new journal for this bundle and precision, or run with --adapt off")]
    Adaptation {
        /// Journal path.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
}

/// An open journal: its records in order and the file, positioned for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
    dropped_tail: u64,
    _lock: JournalLock,
}

impl Journal {
    /// Opens (creating) the journal at `path`, dropping a torn last record, and holds its
    /// exclusive lock ([`lock::JournalLock`]) until dropped: a second process fails at once.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let io = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, what, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("cannot open the journal"))?;
        let meta = file.metadata().map_err(io("cannot stat the journal"))?;
        if !meta.is_file() {
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                what: "not a regular file",
                source: std::io::Error::other("the journal must be a plain file"),
            });
        }
        let lock = JournalLock::take(path)?;
        let mut records = Vec::new();
        let mut good_len = 0u64;
        let mut offset = 0u64;
        let mut lines = Vec::new();
        let mut reader = BufReader::new(&file);
        loop {
            let mut buf = Vec::new();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(io("cannot read the journal"))?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            lines.push((buf, offset));
        }
        let count = lines.len();
        for (i, (buf, end)) in lines.into_iter().enumerate() {
            let parsed = if buf.last() == Some(&b'\n') {
                serde_json::from_slice::<Record>(&buf).map_err(|e| e.to_string())
            } else {
                Err("unterminated record".to_string())
            };
            let terminated = buf.last() == Some(&b'\n');
            match parsed {
                Ok(r) => {
                    records.push(r);
                    good_len = end;
                }
                Err(_) if i + 1 == count && !terminated => break,
                Err(message) => {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message,
                    })
                }
            }
        }
        if good_len != offset {
            file.set_len(good_len)
                .map_err(io("cannot drop the torn last record"))?;
            file.sync_all().map_err(io("cannot sync the journal"))?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(io("cannot seek the journal"))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records,
            dropped_tail: offset - good_len,
            _lock: lock,
        })
    }

    /// Bytes of a torn last record (an unterminated line left by an interrupted append) that
    /// opening dropped; 0 when the journal ended cleanly.
    pub fn dropped_tail(&self) -> u64 {
        self.dropped_tail
    }

    /// The records, oldest first.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Appends one record and syncs it to disk before returning.
    pub fn append(&mut self, record: Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(&record).map_err(|e| JournalError::Io {
            path: self.path.clone(),
            what: "cannot encode a record",
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let io = |what: &'static str, source| JournalError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        self.file
            .write_all(&line)
            .map_err(|e| io("cannot append to the journal", e))?;
        self.file
            .sync_data()
            .map_err(|e| io("cannot sync the journal", e))?;
        self.records.push(record);
        Ok(())
    }

    /// The latest record of every file, in first-seen order.
    pub fn latest(&self) -> Vec<&Record> {
        let mut pos: HashMap<&str, usize> = HashMap::new();
        let mut out: Vec<&Record> = Vec::new();
        for r in &self.records {
            let Some(file) = r.file() else { continue };
            match pos.get(file) {
                Some(&i) => out[i] = r,
                None => {
                    pos.insert(file, out.len());
                    out.push(r);
                }
            }
        }
        out
    }

    /// What rebuilds the stream adaptation: the last saved state, if any, and the analyses
    /// adapted after it, in order (their latents and calibrated probabilities replay onto it).
    pub fn adaptation(&self) -> (Option<&AdaptState>, Vec<&Analysis>) {
        let start = self
            .records
            .iter()
            .rposition(|r| matches!(r, Record::Adaptation { .. }));
        let state = start.and_then(|i| match &self.records[i] {
            Record::Adaptation { state } => Some(state),
            _ => None,
        });
        let after = start.map_or(0, |i| i + 1);
        let replay = self.records[after..]
            .iter()
            .filter_map(|r| match r {
                Record::Analysed { analysis, .. } if analysis.calibrated_probs.is_some() => {
                    Some(analysis)
                }
                _ => None,
            })
            .collect();
        (state, replay)
    }

    /// Rewrites the journal with only the latest record of each file and, last, `adaptation`
    /// (the stream adaptation's current state, when there is one: the caller rebuilds it from
    /// [`Self::adaptation`] first) (synced temporary file, atomic rename, synced folder); on
    /// failure the old journal is untouched.
    pub fn compact(&mut self, adaptation: Option<AdaptState>) -> Result<(), JournalError> {
        let mut latest: Vec<Record> = self.latest().into_iter().cloned().collect();
        latest.extend(adaptation.map(|state| Record::Adaptation { state }));
        let mut text = Vec::new();
        for r in &latest {
            text.extend(serde_json::to_vec(r).unwrap_or_default());
            text.push(b'\n');
        }
        let io = |what: &'static str, source| JournalError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        crate::bundle::write_atomic(&self.path, &text)
            .map_err(|e| io("cannot compact the journal", e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync the journal's folder", e))?;
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| io("cannot reopen the journal", e))?;
        file.seek(SeekFrom::End(0))
            .map_err(|e| io("cannot seek the journal", e))?;
        self.file = file;
        self.records = latest;
        Ok(())
    }
}

impl Journal {
    /// Rebuilds the stream adaptation the journal holds: `ground` (the bundle's ground state)
    /// with the last saved state put back and the adapted analyses after it replayed, so it
    /// stands exactly where the last synced image left it. `None` when the journal holds no
    /// adaptation (no saved state, no adapted analysis). `model` is the run's
    /// [`crate::pipeline::Analyzer::fingerprint`]: a state of another bundle or precision is
    /// an error.
    pub fn resume_adaptation(
        &self,
        mut ground: StreamAdapter,
        model: &str,
    ) -> Result<Option<StreamAdapter>, JournalError> {
        let (state, replay) = self.adaptation();
        if state.is_none() && replay.is_empty() {
            return Ok(None);
        }
        let fail = |message: String| JournalError::Adaptation {
            path: self.path.clone(),
            message,
        };
        if let Some(s) = state {
            ground.restore(s, model).map_err(|e| fail(e.to_string()))?;
        }
        for a in replay {
            let probs = a.calibrated_probs.as_deref().unwrap_or_default();
            ground
                .replay(&a.latent, probs)
                .map_err(|e| fail(format!("an adapted record does not replay: {e}")))?;
        }
        Ok(Some(ground))
    }
}

#[cfg(test)]
mod tests;

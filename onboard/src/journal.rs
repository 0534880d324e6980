//! Crash-safe journal of per-image decisions: one JSON record per line, appended and synced
//! before the next image is touched. A record torn by a crash (an unterminated last line: every
//! record is written with its newline last) is dropped when the journal is reopened, and its
//! size reported ([`Journal::dropped_tail`]); a complete line that does not parse is corruption,
//! wherever it is, and the journal refuses to open rather than delete it; compaction rewrites the file through a
//! synced temporary file and an atomic rename, so the last good state always stays readable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::adapt::{AdaptState, StreamAdapter};
use crate::analysis::Analysis;
use lock::JournalLock;
pub use name::FileName;

pub mod lock;
pub mod name;

/// What says a file is still the one a record is about: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch (negative before it).
    pub mtime_ns: i64,
}

impl Stamp {
    /// The stamp of a file's metadata (`None` when the platform gives no modification time).
    pub fn of(meta: &std::fs::Metadata) -> Option<Self> {
        let t = meta.modified().ok()?;
        let ns = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).ok()?,
            Err(e) => i64::try_from(e.duration().as_nanos()).ok()?.checked_neg()?,
        };
        Some(Self {
            bytes: meta.len(),
            mtime_ns: ns,
        })
    }
}

/// What happened to one image. Records written before stamps and model names existed load
/// with `None` there (see [`Record::is_current`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Record {
    /// Analysed; waiting in the backlog until downlinked.
    Analysed {
        /// File name.
        file: FileName,
        /// File size in bytes.
        bytes: u64,
        /// Modification time of the file analysed (ns since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime_ns: Option<i64>,
        /// The analyzer that made it (`pipeline::Analyzer::fingerprint`: precision
        /// and manifest hash).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// The analysis (its `content_hash` identifies the bytes analysed).
        analysis: Analysis,
    },
    /// Could not be analysed; retried when the file's stamp changes.
    Skipped {
        /// File name.
        file: FileName,
        /// Why.
        reason: String,
        /// The file's stamp when it was tried (`None`: it could not be read at all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// Sent to the ground; leaves the backlog.
    Downlinked {
        /// File name.
        file: FileName,
        /// The stamp of the version that was sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
    },
    /// Dropped from a backlog over its capacity (lowest value per byte first); leaves the
    /// backlog unless the file changes.
    Expired {
        /// File name.
        file: FileName,
        /// The stamp of the version that expired.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
        /// Why (the capacity).
        reason: String,
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
    pub fn file(&self) -> Option<&FileName> {
        match self {
            Record::Analysed { file, .. }
            | Record::Skipped { file, .. }
            | Record::Downlinked { file, .. }
            | Record::Expired { file, .. } => Some(file),
            Record::Adaptation { .. } => None,
        }
    }

    /// The stamp of the file version the record is about.
    pub fn stamp(&self) -> Option<Stamp> {
        match self {
            Record::Analysed {
                bytes, mtime_ns, ..
            } => mtime_ns.map(|mtime_ns| Stamp {
                bytes: *bytes,
                mtime_ns,
            }),
            Record::Skipped { stamp, .. }
            | Record::Downlinked { stamp, .. }
            | Record::Expired { stamp, .. } => *stamp,
            Record::Adaptation { .. } => None,
        }
    }

    /// Whether this record (the file's latest) still holds for the file as it is now (`now`,
    /// `None` when it cannot be read) and the analyzer `model`: an analysis only for the same
    /// stamp and model, a skip only for the same stamp; a downlink or an expiry for the same
    /// stamp, or for any when the record has none (written before stamps existed: the image
    /// is not sent twice). Anything else is analysed again.
    pub fn is_current(&self, now: Option<Stamp>, model: &str) -> bool {
        match self {
            Record::Analysed { model: m, .. } => {
                now.is_some() && self.stamp() == now && m.as_deref() == Some(model)
            }
            Record::Skipped { stamp, .. } => now.is_some() && *stamp == now,
            Record::Downlinked { stamp, .. } | Record::Expired { stamp, .. } => {
                stamp.is_none() || *stamp == now
            }
            Record::Adaptation { .. } => false,
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

/// The records of a journal's bytes.
#[derive(Debug)]
pub struct Parsed {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Bytes up to the end of the last good record: all of them unless the last line is
    /// unterminated (a record torn by a crash), which is left out.
    pub good_len: u64,
}

/// Parses a journal's bytes, one JSON record per `\n`-terminated line. Only an unterminated
/// last line is a torn record (left out of [`Parsed`]); a complete line that does not parse is
/// an error `(1-based line, message)`. Never panics, whatever the bytes.
pub fn parse_records(bytes: &[u8]) -> Result<Parsed, (usize, String)> {
    let mut records = Vec::new();
    let mut good_len = 0u64;
    let mut start = 0usize;
    let mut line = 0usize;
    while start < bytes.len() {
        line += 1;
        let Some(len) = bytes[start..].iter().position(|&b| b == b'\n') else {
            break; // torn: unterminated last line
        };
        let end = start + len + 1;
        let r = serde_json::from_slice::<Record>(&bytes[start..end])
            .map_err(|e| (line, e.to_string()))?;
        records.push(r);
        good_len = end as u64;
        start = end;
    }
    Ok(Parsed { records, good_len })
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
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io("cannot read the journal"))?;
        let offset = bytes.len() as u64;
        let Parsed { records, good_len } =
            parse_records(&bytes).map_err(|(line, message)| JournalError::Corrupt {
                path: path.to_path_buf(),
                line,
                message,
            })?;
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
        let mut pos: HashMap<&FileName, usize> = HashMap::new();
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
    /// adapted after it, in order, each with the analyzer that made it (their latents and
    /// calibrated probabilities replay onto it).
    pub fn adaptation(&self) -> (Option<&AdaptState>, Vec<(&Analysis, Option<&str>)>) {
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
                Record::Analysed {
                    analysis, model, ..
                } if analysis.calibrated_probs.is_some() => Some((analysis, model.as_deref())),
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
    /// `pipeline::Analyzer::fingerprint`: a state of another bundle or precision is
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
        for (a, made_by) in replay {
            if let Some(other) = made_by.filter(|m| *m != model) {
                return Err(fail(format!(
                    "an adapted record was made by {other}, this run is {model}"
                )));
            }
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

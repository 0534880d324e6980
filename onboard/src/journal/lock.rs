//! The journal's exclusive lock: an advisory lock (`flock`) on a sibling file `JOURNAL.lock`,
//! held for the whole pass, with the holder's pid written into it so a second process can say
//! who holds it. A sibling file and not the journal itself, because compaction renames a new
//! file over the journal and a lock on the old one would no longer exclude anyone.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::JournalError;

/// The held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

/// The lock file of the journal at `journal`: the same path with `.lock` appended.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl JournalLock {
    /// Takes the lock of `journal` without waiting; a lock held by another process is
    /// [`JournalError::Locked`] naming its pid.
    pub fn take(journal: &Path) -> Result<Self, JournalError> {
        let path = lock_path(journal);
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| JournalError::Io { path, what, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("cannot open the journal's lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(JournalError::Locked {
                    path: journal.to_path_buf(),
                    holder: if holder.is_empty() {
                        "an unknown process".into()
                    } else {
                        format!("pid {holder}")
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(io("cannot lock the journal's lock file")(e));
            }
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data())
            .map_err(io("cannot write the journal's lock file"))?;
        Ok(Self { _file: file })
    }
}

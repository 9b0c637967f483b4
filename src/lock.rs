//! One sync at a time per database, across processes: an OS file lock (`flock`) on a lock file
//! beside the database. Never on the .db file itself, whose locks belong to SQLite.
//! The kernel releases the lock when the holder exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Held for the whole of one sync run.
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
    path: PathBuf,
}

/// `rooms.db` -> `rooms.db.lock`.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl SyncLock {
    /// Takes the lock without waiting: `Ok(None)` when another sync holds it.
    pub fn try_acquire(database: &Path) -> io::Result<Option<SyncLock>> {
        let path = lock_path(database);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SyncLock { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rooms.db");
        let first = SyncLock::try_acquire(&db).unwrap().expect("free at first");
        assert_eq!(first.path(), dir.path().join("rooms.db.lock"));
        assert!(
            SyncLock::try_acquire(&db).unwrap().is_none(),
            "held by the first"
        );
        drop(first);
        assert!(SyncLock::try_acquire(&db).unwrap().is_some(), "free again");
        assert!(
            !db.exists(),
            "the database file is never created by locking"
        );
    }
}

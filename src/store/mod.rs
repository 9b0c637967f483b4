//! The SQLite mirror: opening it safely and migrating it. The run and error records live in
//! [`runs`], the fingerprints of synced rooms in [`fingerprints`], staging and the
//! all-or-nothing apply in [`staging`] and [`apply`].

pub mod apply;
pub mod availability;
pub mod budget;
pub mod fingerprints;
pub mod runs;
pub mod staging;
mod wal;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

/// The schema's migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another connection's lock before giving up. Readers never
/// block a WAL writer; this covers another writer (the error recorder, a second process).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The size SQLite trims the `-wal` file back to when roomsync restarts the WAL after a
/// checkpoint (the start of every run, [`runs::start_run`]). Without it the file keeps the size
/// of the largest transaction ever written (an initial sync of a large organisation) for as
/// long as roomsync runs. 4 MiB: about the 1,000 pages at which SQLite and Litestream
/// checkpoint.
pub const WAL_SIZE_LIMIT: u64 = 4 * 1024 * 1024;

/// Why the mirror could not be opened; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is not an SQLite database; refusing to touch it")]
    NotSqlite { path: PathBuf },
    #[error("{path} is an SQLite database but not a roomsync one (it has tables and no roomsync migrations); refusing to touch it")]
    Foreign { path: PathBuf },
    #[error("{path} has schema version {found}, newer than this roomsync knows ({known}); upgrade roomsync. The file was not changed")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the database directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Sqlx { path: PathBuf, source: sqlx::Error },
    #[error("database {path} cannot be written ({source}); check the owner and mode of the file, its -wal and -shm files and its directory")]
    NotWritable { path: PathBuf, source: sqlx::Error },
    #[error("database {path}: migration failed: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
}

/// An open, migrated mirror database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when absent) and migrates the database at `path`. A file that is not a
    /// roomsync database, or has a newer schema, is refused before anything is written to it.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        // A lock held for a moment (a checkpoint as another process closes the database) is
        // waited out; every other error is final.
        let started = std::time::Instant::now();
        loop {
            match Self::try_open(path).await {
                Err(e) if e.is_locked() && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                result => return result,
            }
        }
    }

    async fn try_open(path: &Path) -> Result<Store, StoreError> {
        let already_wal = preflight(path).await?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                path: dir.into(),
                source,
            })?;
        }
        let sqlx_err = |source| StoreError::Sqlx {
            path: path.into(),
            source,
        };
        let mut options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // NORMAL is durable across application crashes in WAL mode and much cheaper than FULL.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // The -wal file shrinks back to this size when roomsync restarts the WAL. roomsync's
            // checkpoints are all PASSIVE (SQLite's automatic ones, one as a run starts): no
            // TRUNCATE, RESTART or VACUUM, as Litestream asks (docs/replication.md).
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .foreign_keys(true);
        if !already_wal {
            // WAL: readers keep reading the previous state while a sync applies the new one.
            // Switching takes an exclusive lock that the busy timeout does not wait for, so it
            // is only asked of a database that is not in WAL mode yet.
            options = options.journal_mode(SqliteJournalMode::Wal);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // One connection stays open for the life of the process, so the -wal and -shm files
            // stay in place: readers without write access to the directory can still open the
            // database read-only while roomsync runs.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // ... and stay when roomsync stops: see `wal`.
            .after_connect(|conn, _| Box::pin(wal::keep_wal_files(conn)))
            .connect_with(options)
            .await
            .map_err(sqlx_err)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.into(),
                source,
            })?;
        Ok(Store {
            pool,
            path: path.into(),
        })
    }

    /// Proves the database, its `-wal` and `-shm` files can be written: a write transaction
    /// that records nothing. (`BEGIN IMMEDIATE` alone is not enough: in WAL mode it only takes
    /// the write lock in the `-shm` file, and succeeds on a database file it cannot write.)
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let sqlx_err = |source| StoreError::NotWritable {
            path: self.path.clone(),
            source,
        };
        let mut conn = self.pool.acquire().await.map_err(sqlx_err)?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(sqlx_err)?;
        sqlx::query("CREATE TABLE main.roomsync_write_check (x INTEGER)")
            .execute(&mut *tx)
            .await
            .map_err(sqlx_err)?;
        tx.rollback().await.map_err(sqlx_err)
    }

    /// The connection pool (one connection stays open while the store is).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The newest migration this binary knows.
pub fn known_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A read-only connection that never creates or changes the file (it may wait out a lock for up
/// to [`BUSY_TIMEOUT`]).
pub async fn open_read_only(path: &Path) -> sqlx::Result<sqlx::SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
}

/// Looks at an existing file without changing it: the SQLite header, then (read-only) the
/// migration table. Returns whether the file is already in WAL mode.
async fn preflight(path: &Path) -> Result<bool, StoreError> {
    let mut header = [0u8; 20];
    let len = match std::fs::File::open(path) {
        Ok(mut f) => f.read(&mut header).map_err(|source| StoreError::Sqlx {
            path: path.into(),
            source: sqlx::Error::Io(source),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StoreError::Sqlx {
                path: path.into(),
                source: sqlx::Error::Io(source),
            })
        }
    };
    if len == 0 {
        return Ok(false); // SQLite treats an empty file as an empty database.
    }
    if len < 20 || &header[..16] != b"SQLite format 3\0" {
        return Err(StoreError::NotSqlite { path: path.into() });
    }
    // Header bytes 18 and 19, the file format's write and read versions, are 2 in WAL mode.
    let wal = header[18] == 2 && header[19] == 2;
    let sqlx_err = |source| StoreError::Sqlx {
        path: path.into(),
        source,
    };
    let mut conn = open_read_only(path).await.map_err(sqlx_err)?;
    // Litestream's bookkeeping tables (`_litestream_seq`, `_litestream_lock`) say nothing about
    // whose database it is: Litestream may create them before roomsync's first migration.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
           AND name NOT IN ('_litestream_seq', '_litestream_lock')",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(sqlx_err)?;
    let result = if tables.iter().any(|t| t == "_sqlx_migrations") {
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .map_err(sqlx_err)?;
        let known = known_schema_version();
        match found {
            Some(found) if found > known => Err(StoreError::NewerSchema {
                path: path.into(),
                found,
                known,
            }),
            _ => Ok(()),
        }
    } else if tables.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Foreign { path: path.into() })
    };
    conn.close().await.map_err(sqlx_err)?;
    result.map(|()| wal)
}

impl StoreError {
    /// SQLITE_BUSY or SQLITE_LOCKED (or one of their extended codes): another connection held
    /// a lock.
    fn is_locked(&self) -> bool {
        let source = match self {
            StoreError::Sqlx { source, .. } => source,
            StoreError::Migrate {
                source: sqlx::migrate::MigrateError::Execute(source),
                ..
            } => source,
            _ => return false,
        };
        source
            .as_database_error()
            .and_then(|e| e.code())
            .and_then(|code| code.parse::<u32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATOR;

    /// sqlx refuses a database whose applied migrations differ from the binary's by checksum:
    /// editing a released migration, even a comment in it, would lock every existing mirror
    /// out. Add a migration instead.
    #[test]
    fn released_migrations_never_change() {
        let released = [
            (1, "99e9afc1687b2f4e"),
            (2, "e6f44dc014611aee"),
            (3, "305d1c67bdf1fcf5"),
            (4, "9cbba6d118ff93f6"),
            (5, "5e8f79bb8cb85f25"),
            (6, "bd746068ea3fd7c7"),
            (7, "3aaa1b4dc754d772"),
            (8, "94025a20003dc053"),
        ];
        for (version, checksum) in released {
            let migration = MIGRATOR
                .iter()
                .find(|m| m.version == version)
                .expect("released migrations stay");
            let hex: String = migration.checksum[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(hex, checksum, "migration {version} was edited");
        }
    }
}

//! The SQLite mirror: opening it safely, migrations, and the run/error records.
//!
//! Staging and the all-or-nothing apply live in [`staging`] and [`apply`].

pub mod apply;
pub mod fingerprints;
pub mod runs;
pub mod staging;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another connection's lock before giving up. Readers never
/// block a WAL writer; this covers another writer (the error recorder, a second process).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
        preflight(path).await?;
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
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            // WAL: readers keep reading the previous state while a sync applies the new one.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode and much cheaper than FULL.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // One connection stays open for the life of the process, so the -wal and -shm files
            // stay in place: readers without write access to the directory can still open the
            // database read-only while roomsync runs.
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
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

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The newest migration this binary knows.
pub fn known_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Looks at an existing file without changing it: the SQLite header, then (read-only) the
/// migration table.
async fn preflight(path: &Path) -> Result<(), StoreError> {
    let mut header = [0u8; 16];
    let len = match std::fs::File::open(path) {
        Ok(mut f) => f.read(&mut header).map_err(|source| StoreError::Sqlx {
            path: path.into(),
            source: sqlx::Error::Io(source),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Sqlx {
                path: path.into(),
                source: sqlx::Error::Io(source),
            })
        }
    };
    if len == 0 {
        return Ok(()); // SQLite treats an empty file as an empty database.
    }
    if len < 16 || &header != b"SQLite format 3\0" {
        return Err(StoreError::NotSqlite { path: path.into() });
    }
    let sqlx_err = |source| StoreError::Sqlx {
        path: path.into(),
        source,
    };
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(sqlx_err)?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
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
    result
}

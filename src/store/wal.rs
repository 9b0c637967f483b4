//! Persistent WAL: the database's `-wal` and `-shm` files stay in place when the last
//! connection closes, so that a reader who may not create files in the database's directory
//! (a member of group `roomsync`, with `/var/lib/roomsync` at 0750) can open the mirror
//! read-only while roomsync is stopped, not only while it runs. Without it SQLite deletes both
//! files on the last close, and a read-only reader of a WAL database can then neither find nor
//! create them ("attempt to write a readonly database").

use std::ffi::{c_int, c_void};

use sqlx::sqlite::SqliteConnection;

/// Sets persistent WAL on `conn` (every connection of the pool, so that whichever closes last
/// leaves the files). With the journal size limit the store sets on every connection
/// ([`super::WAL_SIZE_LIMIT`], not negative), the last close also truncates the checkpointed
/// log to zero bytes rather than leaving it at its size.
pub(super) async fn keep_wal_files(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let mut on: c_int = 1;
    // SAFETY: `db` is the open handle sqlx lent us for the life of `handle`; "main" is a
    // NUL-terminated schema name; SQLITE_FCNTL_PERSIST_WAL reads and writes one int through
    // the pointer, which points to `on` for the duration of the call.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            libsqlite3_sys::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut c_int).cast::<c_void>(),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!(
            "cannot keep the WAL files (sqlite3_file_control PERSIST_WAL returned {rc})"
        )));
    }
    Ok(())
}

//! Digests of tables (rows and an XXH3 hash of them, in key order), the comparison of two
//! databases table by table, and the data state of a database as of its last successful run.

use std::collections::BTreeMap;
use std::path::Path;

use roomsync::store::open_read_only;
use sqlx::{Connection, SqliteConnection};

use crate::{DATA_TABLES, NAMED_TABLES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub table: String,
    pub rows: usize,
    pub hash: u64,
}

/// Rows of `table` as `quote(col)|...` in key order (the order of all columns).
async fn table_rows(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let expr = cols
        .iter()
        .map(|c| format!("quote(\"{c}\")"))
        .collect::<Vec<_>>()
        .join(" || '|' || ");
    let order = cols
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {expr} FROM \"{table}\" ORDER BY {order}"
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

async fn digest(conn: &mut SqliteConnection, table: &str) -> TableDigest {
    let rows = table_rows(conn, table).await;
    TableDigest {
        table: table.into(),
        rows: rows.len(),
        hash: xxhash_rust::xxh3::xxh3_64(rows.join("\n").as_bytes()),
    }
}

/// Every table of roomsync's (all but SQLite's and Litestream's), read in one transaction: the
/// named ones first, then the others by name.
pub async fn full_digest(db: &Path) -> Vec<TableDigest> {
    let mut conn = open_read_only(db).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table'
           AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_litestream\\_%' ESCAPE '\\'
         ORDER BY name",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tables.sort_by_key(|t| {
        NAMED_TABLES
            .iter()
            .position(|n| n == t)
            .unwrap_or(NAMED_TABLES.len())
    });
    let mut digests = Vec::new();
    for table in &tables {
        digests.push(digest(&mut tx, table).await);
    }
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    digests
}

/// The primary's and a restore's digests side by side.
pub fn comparison(primary: &[TableDigest], restored: &[TableDigest]) -> String {
    let mut out = format!(
        "  {:<28} {:>8} {:>16}   {:>8} {:>16}  {}\n",
        "table", "primary", "hash", "restored", "hash", ""
    );
    for p in primary {
        let r = restored.iter().find(|r| r.table == p.table);
        let (rows, hash) = r.map_or(("-".into(), "-".into()), |r| {
            (r.rows.to_string(), format!("{:016x}", r.hash))
        });
        let verdict = if r == Some(p) { "equal" } else { "DIFFERENT" };
        out.push_str(&format!(
            "  {:<28} {:>8} {:016x}   {rows:>8} {hash:>16}  {verdict}\n",
            p.table, p.rows, p.hash
        ));
    }
    out
}

/// What a database holds as of its latest successful run: that run's id (0: none yet) and one
/// digest of the data tables (a table not created yet counts as empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataState {
    pub last_success: i64,
    pub data: u64,
}

/// The database's [`DataState`], read in one transaction; None (and no digest computed) when
/// its latest successful run is in `known`.
pub async fn data_state(
    conn: &mut SqliteConnection,
    known: &BTreeMap<i64, u64>,
) -> sqlx::Result<Option<DataState>> {
    let mut tx = conn.begin().await?;
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut *tx)
            .await?;
    let last_success = if tables.iter().any(|t| t == "sync_runs") {
        sqlx::query_scalar(
            "SELECT IFNULL(MAX(run_id), 0) FROM sync_runs WHERE status = 'succeeded'",
        )
        .fetch_one(&mut *tx)
        .await?
    } else {
        0
    };
    if known.contains_key(&last_success) {
        return Ok(None);
    }
    let mut text = String::new();
    for table in DATA_TABLES {
        text.push_str(table);
        text.push('\n');
        if tables.iter().any(|t| t == table) {
            for row in table_rows(&mut tx, table).await {
                text.push_str(&row);
                text.push('\n');
            }
        }
    }
    tx.rollback().await?;
    Ok(Some(DataState {
        last_success,
        data: xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
    }))
}

/// The data digest of a database whose data tables are all empty or absent.
pub fn empty_data() -> u64 {
    let text: String = DATA_TABLES.iter().map(|t| format!("{t}\n")).collect();
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// `sync_runs` rows with run_id <= `upto`, by run id (none when the table is not there yet).
pub async fn sync_runs_rows(db: &Path, upto: i64) -> BTreeMap<i64, String> {
    let mut conn = open_read_only(db).await.unwrap();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT run_id, quote(run_id) || '|' || quote(trigger) || '|' || quote(started_at) || '|'
                || quote(finished_at) || '|' || quote(status) || '|' || quote(pages_fetched) || '|'
                || quote(rooms_seen) || '|' || quote(rooms_added) || '|' || quote(rooms_updated)
                || '|' || quote(rooms_removed) || '|' || quote(error)
         FROM sync_runs WHERE run_id <= ?1 ORDER BY run_id",
    )
    .bind(upto)
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    conn.close().await.unwrap();
    rows.into_iter().collect()
}

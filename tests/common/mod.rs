//! Shared test fixtures: a wiremock DingTalk, a config file pointing at it, a real SQLite file.
#![allow(dead_code)] // each test binary uses its own subset

pub mod daemon;
pub mod scrape;

use std::process::{Command, Output};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use roomsync::config::Settings;
use roomsync::store::runs::Trigger;
use roomsync::sync::{run_once, RunReport, SyncOptions};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_roomsync");

pub const APP_KEY: &str = "test-app-key";
pub const SECRET: &str = "sEcReT-app-secret-4f9a2c71";
pub const TOKEN: &str = "tOkEn-access-8d3e61b0c2";
pub const TOKEN_2: &str = "tOkEn-renewed-5a7c09e4f1";
pub const UNION_ID: &str = "union-0042";
pub const ROOMS_PATH: &str = "/v1.0/rooms/meetingRoomLists";
pub const TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";
pub const GROUPS_PATH: &str = "/v1.0/rooms/groupLists";

pub struct TestEnv {
    pub dir: TempDir,
    pub server: MockServer,
    pub db: PathBuf,
    pub config: PathBuf,
    /// The config's `page_size`, which the listing mocks expect as `maxResults`.
    pub page_size: std::cell::Cell<u32>,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        Self::with("", "").await
    }

    /// `dingtalk` adds keys to the `[dingtalk]` table; `tail` adds whole sections.
    pub async fn with(dingtalk: &str, tail: &str) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let server = MockServer::start().await;
        let db = dir.path().join("rooms.db");
        let config = dir.path().join("roomsync.toml");
        let env = TestEnv {
            dir,
            server,
            db,
            config,
            page_size: std::cell::Cell::new(2),
        };
        env.write_config(dingtalk, tail);
        env
    }

    /// Writes the config file: page size 2, three attempts, 1 ms retry delay, unless `dingtalk`
    /// sets those keys itself.
    pub fn write_config(&self, dingtalk: &str, tail: &str) {
        let defaults = [
            format!("base_url = \"{}\"", self.server.uri()),
            format!("app_key = \"{APP_KEY}\""),
            format!("app_secret = \"{SECRET}\""),
            format!("union_id = \"{UNION_ID}\""),
            "page_size = 2".to_string(),
            "timeout_secs = 5".to_string(),
            "max_attempts = 3".to_string(),
            "retry_base_delay_ms = 1".to_string(),
            "requests_per_second = 1000".to_string(),
        ];
        let overridden: Vec<&str> = dingtalk
            .lines()
            .filter_map(|l| l.split('=').next())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        let mut text = String::from("[dingtalk]\n");
        for line in defaults
            .iter()
            .filter(|l| !overridden.contains(&l.split(' ').next().unwrap()))
        {
            text.push_str(line);
            text.push('\n');
        }
        let page_size = dingtalk
            .lines()
            .find_map(|l| l.strip_prefix("page_size = ")?.trim().parse().ok())
            .unwrap_or(2);
        self.page_size.set(page_size);
        text.push_str(dingtalk);
        text.push_str(&format!(
            "\n\n[database]\npath = \"{}\"\n\n{tail}\n",
            self.db.display()
        ));
        // No API budget unless a test sets one: pacing depends on the day of the month.
        if !tail.contains("[budget]") {
            text.push_str("\n[budget]\nmonthly_calls = 0\n");
        }
        std::fs::write(&self.config, text).unwrap();
        // It holds the secret: readable by its owner only, as an operator would keep it.
        std::fs::set_permissions(
            &self.config,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }

    /// Points the config at a running stand-in: its address and credentials, pages of 100.
    pub fn use_standin(&self, base_url: &str) {
        self.point_at(base_url.trim_end_matches('/'));
        let config = std::fs::read_to_string(&self.config).unwrap();
        let config = config
            .replace(
                &format!("app_key = \"{APP_KEY}\""),
                &format!("app_key = \"{}\"", roomsync::standin::APP_KEY),
            )
            .replace(
                &format!("app_secret = \"{SECRET}\""),
                &format!("app_secret = \"{}\"", roomsync::standin::APP_SECRET),
            )
            .replace(
                &format!("union_id = \"{UNION_ID}\""),
                &format!("union_id = \"{}\"", roomsync::standin::UNION_ID),
            )
            .replace("page_size = 2", "page_size = 100");
        std::fs::write(&self.config, config).unwrap();
        self.page_size.set(100);
    }

    /// Points the config at `base_url` instead of the mock server.
    pub fn point_at(&self, base_url: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, text.replace(&self.server.uri(), base_url)).unwrap();
    }

    pub fn settings(&self) -> Settings {
        Settings::load_with_env(Some(&self.config), &HashMap::new()).expect("test config is valid")
    }

    /// One run through the real sync path, trigger `manual`.
    pub async fn sync(&self) -> RunReport {
        self.sync_with(false).await
    }

    pub async fn sync_with(&self, allow_mass_removal: bool) -> RunReport {
        self.sync_settings(self.settings(), allow_mass_removal)
            .await
    }

    /// One run with `settings` as given (the library takes values the config file's ranges
    /// keep out, such as a timeout below a second).
    pub async fn sync_settings(&self, settings: Settings, allow_mass_removal: bool) -> RunReport {
        let options = SyncOptions {
            trigger: Trigger::Manual,
            allow_mass_removal,
        };
        let report = run_once(&settings, options, CancellationToken::new())
            .await
            .expect("run recorded");
        assert_foreign_keys_hold(&settings.database.path).await;
        report
    }

    /// Serves the token endpoint only.
    pub async fn mount_token_only(&self) {
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"accessToken": TOKEN, "expireIn": 7200})),
            )
            .mount(&self.server)
            .await;
    }

    /// Serves the token endpoint (exactly `times` token requests are expected when Some) and an
    /// empty group list: what every run needs besides the room pages.
    pub async fn mount_token(&self, times: Option<u64>) {
        let mock = Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .and(body_json(json!({"appKey": APP_KEY, "appSecret": SECRET})))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"accessToken": TOKEN, "expireIn": 7200})),
            );
        match times {
            Some(n) => mock.expect(n).mount(&self.server).await,
            None => mock.mount(&self.server).await,
        }
        self.mount_groups(json!({"result": []})).await;
    }

    /// Serves `body` as the answer of `groupLists`.
    pub async fn mount_groups(&self, body: Value) {
        Mock::given(method("GET"))
            .and(path(GROUPS_PATH))
            .and(header("x-acs-dingtalk-access-token", TOKEN))
            .and(query_param("unionId", UNION_ID))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    /// Serves a complete listing split in pages; page k>0 is reached with nextToken = 100 + k.
    /// Each page is expected exactly `expect` times when Some.
    pub async fn mount_listing(&self, pages: &[Vec<Value>], expect: Option<u64>) {
        for (k, rooms) in pages.iter().enumerate() {
            let next_token = (k + 1 < pages.len()).then_some(101 + k as i64);
            let mock =
                page_request_of(k, self.page_size.get()).respond_with(page(rooms, next_token));
            match expect {
                Some(n) => mock.expect(n).mount(&self.server).await,
                None => mock.mount(&self.server).await,
            };
        }
    }

    /// Replaces every mock: the next sync sees a new upstream.
    pub async fn reset_upstream(&self, pages: &[Vec<Value>]) {
        self.server.reset().await;
        self.mount_token(None).await;
        self.mount_listing(pages, None).await;
    }

    /// Replaces the upstream with one whose page 0 renames a room and whose page 1 does not
    /// answer for a minute: a sync that gets there can only be interrupted.
    pub async fn hang_on_page_one(&self) {
        self.server.reset().await;
        self.mount_token(None).await;
        let mut pages = rooms_in_pages(3);
        pages[0][0]["roomName"] = json!("Renamed, never applied");
        page_request(0)
            .respond_with(page(&pages[0], Some(101)))
            .mount(&self.server)
            .await;
        page_request(1)
            .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(60)))
            .mount(&self.server)
            .await;
    }

    /// Whether page 1 of the listing has been asked for.
    pub async fn page_one_requested(&self) -> bool {
        let requests = self.server.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .any(|r| r.url.query().unwrap_or("").contains("nextToken=101"))
    }

    pub async fn pool(&self) -> SqlitePool {
        open_pool(&self.db).await
    }

    /// Every data row of the mirror (not the run records), for "nothing changed" checks.
    pub async fn data_snapshot(&self) -> String {
        data_snapshot_of(&self.db).await
    }

    pub async fn rows(&self, sql: &str) -> Vec<String> {
        let pool = self.pool().await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows.into_iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .unwrap_or_else(|_| r.get::<i64, _>(0).to_string())
            })
            .collect()
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.try_scalar(sql).await.unwrap()
    }

    /// Like [`TestEnv::scalar`], for a database that another process may still be creating
    /// (no file or no tables yet).
    pub async fn try_scalar(&self, sql: &str) -> sqlx::Result<i64> {
        let options = SqliteConnectOptions::new()
            .filename(&self.db)
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await;
        pool.close().await;
        n
    }

    /// `sync_errors` rows of a run as `stage|page|http_status|error_code|retried`.
    pub async fn errors_of(&self, run_id: i64) -> Vec<String> {
        self.rows(&format!(
            "SELECT stage || '|' || IFNULL(page, '-') || '|' || IFNULL(http_status, '-') || '|'
                    || IFNULL(error_code, '-') || '|' || retried
             FROM sync_errors WHERE run_id = {run_id} ORDER BY error_id"
        ))
        .await
    }
}

/// A page of the listing: `hasMore` with `next_token` when there is one, else the last page.
pub fn page(rooms: &[Value], next_token: Option<i64>) -> ResponseTemplate {
    let mut body = json!({"hasMore": next_token.is_some(), "result": rooms});
    if let Some(t) = next_token {
        body["nextToken"] = json!(t);
    }
    ResponseTemplate::new(200).set_body_json(body)
}

/// The request for page `k` of the listing, with the token header and query the API wants.
pub fn page_request(k: usize) -> wiremock::MockBuilder {
    page_request_of(k, 2)
}

/// Like [`page_request`], for a config whose `page_size` is `size`.
pub fn page_request_of(k: usize, size: u32) -> wiremock::MockBuilder {
    let m = Mock::given(method("GET"))
        .and(path(ROOMS_PATH))
        .and(header("x-acs-dingtalk-access-token", TOKEN))
        .and(query_param("unionId", UNION_ID))
        .and(query_param("maxResults", size.to_string()));
    if k == 0 {
        m.and(query_param_is_missing("nextToken"))
    } else {
        m.and(query_param("nextToken", (100 + k as i64).to_string()))
    }
}

/// Every reference in the mirror resolves. The apply writes with SQLite's foreign-key
/// enforcement off (it only writes references to rows it keeps or writes itself); every
/// sync in the tests checks that this holds.
pub async fn assert_foreign_keys_hold(db: &Path) {
    let pool = open_pool(db).await;
    let violations: Vec<String> = sqlx::query_scalar(
        "SELECT \"table\" || ' row ' || rowid || ' -> ' || parent FROM pragma_foreign_key_check",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(violations.is_empty(), "dangling references: {violations:?}");
}

/// Runs SQL (several statements allowed) on its own writable connection to `db`, creating the
/// file if needed: how tests play another writer or tamper with the mirror.
pub async fn write_sql(db: &Path, sql: &str) {
    use sqlx::ConnectOptions;
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Every data row of the mirror at `db` (not the run records), for "nothing changed" checks.
pub async fn data_snapshot_of(db: &Path) -> String {
    let pool = open_pool(db).await;
    let mut out = String::new();
    for table in [
        "rooms",
        "labels",
        "room_labels",
        "room_groups",
        "room_changes",
    ] {
        out.push_str(&format!("[{table}]\n"));
        for row in table_rows(&pool, table).await {
            out.push_str(&row);
            out.push('\n');
        }
    }
    pool.close().await;
    out
}

pub async fn open_pool(db: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

/// Rows of a table, each as `quote(col)|quote(col)|...`, in key order.
pub async fn table_rows(pool: &SqlitePool, table: &str) -> Vec<String> {
    let cols: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let expr = cols
        .iter()
        .map(|c| format!("quote({c})"))
        .collect::<Vec<_>>()
        .join(" || '|' || ");
    let order = cols.join(", ");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {expr} FROM {table} ORDER BY {order}"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A room record as DingTalk sends it.
pub fn room(id: &str, name: &str, labels: &[i64], group: Option<i64>) -> Value {
    let mut r = json!({
        "roomId": id,
        "corpId": "ding-corp",
        "roomName": name,
        "roomStatus": 0,
        "roomCapacity": 8,
        "roomLocation": {"title": "HQ", "desc": "Floor 3"},
        "roomLabels": labels.iter().map(|l| json!({"labelId": l, "labelName": label_name(*l)})).collect::<Vec<_>>(),
    });
    if let Some(g) = group {
        r["roomGroup"] = json!({"groupId": g, "groupName": format!("Group {g}"), "parentId": 0});
    }
    r
}

pub fn label_name(id: i64) -> String {
    match id {
        1 => "TV".into(),
        2 => "Phone".into(),
        3 => "Projector".into(),
        4 => "Whiteboard".into(),
        5 => "Video Meeting".into(),
        n => format!("Custom {n}"),
    }
}

/// `n` rooms `r000`.. split into pages of two.
pub fn rooms_in_pages(n: usize) -> Vec<Vec<Value>> {
    let rooms: Vec<Value> = (0..n)
        .map(|i| room(&format!("r{i:03}"), &format!("Room {i}"), &[1], Some(1)))
        .collect();
    rooms.chunks(2).map(|c| c.to_vec()).collect()
}

/// The real binary with `args`, `envs` set and the environment of the test run cleared of
/// roomsync's own variables.
pub fn roomsync(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("ROOMSYNC_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `roomsync --sync-now --config <env's config>` run off the async runtime.
pub async fn sync_now(env: &TestEnv, extra_env: &[(&str, &str)]) -> Output {
    let config = env.config.to_str().unwrap().to_string();
    let extra: Vec<(String, String)> = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        roomsync(&["--sync-now", "--config", &config], &envs)
    })
    .await
    .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A mirror holding a first complete sync (3 rooms), with a clean upstream mock removed.
pub async fn synced_env() -> (TestEnv, String) {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    assert_eq!(env.sync().await.status.as_str(), "succeeded");
    let snapshot = env.data_snapshot().await;
    env.server.reset().await;
    (env, snapshot)
}

/// Checks the run failed, changed nothing, and says `expected` in its error.
pub async fn assert_failed_untouched(
    env: &TestEnv,
    before: &str,
    report: &RunReport,
    expected: &str,
) {
    assert_eq!(report.status.as_str(), "failed", "{report}");
    let error = report.error.as_deref().unwrap();
    assert!(
        error.contains(expected),
        "error {error:?} should mention {expected:?}"
    );
    assert_eq!(
        env.data_snapshot().await,
        before,
        "a failed run must not change the mirror"
    );
    let row = env
        .rows(&format!(
            "SELECT status || '|' || error FROM sync_runs WHERE run_id = {}",
            report.run_id
        ))
        .await;
    assert_eq!(row, vec![format!("failed|{error}")]);
}

/// Makes every later write to the mirrored tables visible in `write_log`.
pub async fn log_writes(env: &TestEnv) {
    let mut sql = String::from("CREATE TABLE write_log (tbl TEXT, op TEXT);");
    for table in ["rooms", "labels", "room_labels", "room_groups"] {
        for op in ["INSERT", "UPDATE", "DELETE"] {
            sql.push_str(&format!(
                "CREATE TRIGGER log_{table}_{op} AFTER {op} ON {table} BEGIN
                   INSERT INTO write_log VALUES ('{table}', '{op}'); END;"
            ));
        }
    }
    write_sql(&env.db, &sql).await;
}

/// A GET from the tests' own HTTP client, built as roomsync builds its clients (reqwest's
/// `get` would find no TLS provider installed).
pub async fn http_get(url: &str) -> reqwest::Result<reqwest::Response> {
    let client = roomsync::http::client_builder().build()?;
    client.get(url).send().await
}
